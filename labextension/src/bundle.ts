/**
 * The job bundle of notebook outputs (`application/vnd.llmgw.job+json`):
 * `{"version": 1, "job_id": "<id>", "via": "server" | "embedded"}`, emitted
 * by the kernel's magics next to the widget and a Markdown fallback.
 */
import type { IRenderMime } from '@jupyterlab/rendermime';

export const JOB_MIME_TYPE = 'application/vnd.llmgw.job+json';

/** Before the ipywidgets renderer (-10): the live view needs no kernel. */
export const JOB_RENDERER_RANK = -50;

const JOB_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** The data of a job bundle. */
export interface IJobBundle {
  version: 1;
  job_id: string;
  via: 'server' | 'embedded';
}

/**
 * A job bundle's data checked against its allow list; null (and the
 * Markdown fallback) for anything else.
 */
export function parseJobBundle(data: unknown): IJobBundle | null {
  if (!data || typeof data !== 'object' || Array.isArray(data)) {
    return null;
  }
  const { version, job_id, via } = data as { [key: string]: unknown };
  if (version !== 1 || typeof job_id !== 'string' || !JOB_ID.test(job_id)) {
    return null;
  }
  if (via !== 'server' && via !== 'embedded') {
    return null;
  }
  return { version, job_id, via };
}

/** What an output shows in place of the live view: the saved Markdown or text. */
export function fallbackSource(data: IRenderMime.IMimeModel['data']): string {
  const markdown = data['text/markdown'];
  if (typeof markdown === 'string') {
    return markdown;
  }
  const plain = data['text/plain'];
  return typeof plain === 'string' ? plain : '';
}
