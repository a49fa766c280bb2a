/**
 * Types and request helpers for the llmgw REST API (see docs/architecture.md).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Path of the gateway API below the Jupyter server's base URL. */
export const API_NAMESPACE = 'llmgw/api';

/** Token usage of a job. */
export interface IUsage {
  input_tokens?: number | null;
  cached_input_tokens?: number | null;
  output_tokens?: number | null;
  reasoning_output_tokens?: number | null;
}

/** A job as returned by `JobRecord.to_dict()`. */
export interface IJobView {
  id: string;
  provider: string;
  tool: string;
  kind: string;
  caller: string;
  status: string;
  args: { [key: string]: any };
  /** Arguments left out of `args` in light views (lists, streams); GET jobs/{id} has them. */
  omitted_args?: string[];
  argv?: string[] | null;
  working_dir?: string | null;
  created_at: string | null;
  queued_at?: string | null;
  started_at?: string | null;
  finished_at?: string | null;
  updated_at?: string | null;
  exit_code?: number | null;
  pid?: number | null;
  session_id?: string | null;
  parent_session_id?: string | null;
  usage?: IUsage | null;
  final_message?: string | null;
  error?: { category: string; message: string } | null;
  cancel_reason?: string | null;
  last_seq?: number;
  prompt_preview?: string | null;
}

/** One progress event of a job. */
export interface IJobEvent {
  seq: number;
  ts: string;
  type: string;
  summary: string;
  data?: any;
}

/**
 * A job event as carried by the event stream (`event: event`). The contract
 * names the job; events without `job_id` belong to the preceding `job`.
 */
export interface IStreamJobEvent extends IJobEvent {
  job_id?: string;
}

/** `GET summary`. */
export interface ISummary {
  counts: { [status: string]: number };
  pending_approvals: number;
  mcp_url?: string;
  /** The model jobs use: the bundled local echo model or another one. */
  model?: { local_echo: boolean; label: string } | null;
}

/** A pending (or decided) approval. */
export interface IApproval {
  id: string;
  caller: string;
  tool: string;
  arguments: any;
  job_id?: string | null;
  created_at?: string | null;
  expires_at?: string | null;
  status: string;
  decided_by?: string | null;
  decided_at?: string | null;
  reason?: string | null;
}

/** `POST tools/{tool}`. */
export interface IToolResult {
  is_error: boolean;
  text: string;
  structured?: { [key: string]: any } | null;
}

/** Job states that are over: no further events are expected. */
export const TERMINAL_STATUSES: ReadonlySet<string> = new Set([
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
  'interrupted'
]);

/** Job states that can still be cancelled. */
export const CANCELLABLE_STATUSES: ReadonlySet<string> = new Set([
  'awaiting_approval',
  'queued',
  'running'
]);

/** Every job status (runtime JobStatus), offered in the state filter. */
export const KNOWN_STATUSES: readonly string[] = [
  'awaiting_approval',
  'queued',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
  'interrupted'
];

/** Arguments codex_request_async accepts (CodexRequestAsyncInput). */
export const REQUEST_ARGUMENTS: readonly string[] = [
  'prompt',
  'model',
  'sandbox',
  'working_dir',
  'add_dirs',
  'config_overrides',
  'output_schema',
  'timeout_seconds',
  'session_id'
];

/** Whether a job status is final. */
export function isTerminal(status: string): boolean {
  return TERMINAL_STATUSES.has(status);
}

/** An error answered by the gateway or raised by the network. */
export class GatewayRequestError extends Error {
  constructor(
    message: string,
    readonly status: number | null = null,
    readonly category: string | null = null,
    readonly field: string | null = null
  ) {
    super(message);
    this.name = 'GatewayRequestError';
  }
}

/**
 * Build the full URL of an API endpoint.
 *
 * @param settings - server settings (for the base URL)
 * @param path - endpoint path below `llmgw/api/`
 * @param query - optional query parameters (undefined/null/'' are dropped)
 */
export function apiUrl(
  settings: ServerConnection.ISettings,
  path: string,
  query?: { [key: string]: string | number | null | undefined }
): string {
  let url = URLExt.join(settings.baseUrl, API_NAMESPACE, path);
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== '') {
        params.append(key, String(value));
      }
    }
    const encoded = params.toString();
    if (encoded) {
      url += '?' + encoded;
    }
  }
  return url;
}

/**
 * Call the gateway API and decode its JSON answer.
 *
 * Errors (network or HTTP status >= 400) reject with a GatewayRequestError
 * carrying the gateway's `{"error": {...}}` message when there is one.
 */
export async function requestAPI<T>(
  settings: ServerConnection.ISettings,
  path: string,
  init: RequestInit = {},
  query?: { [key: string]: string | number | null | undefined }
): Promise<T> {
  const url = apiUrl(settings, path, query);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new GatewayRequestError(
      `Gateway unreachable: ${(error as Error).message ?? error}`
    );
  }
  const text = await response.text();
  let data: any = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const err = data && typeof data === 'object' ? data.error : null;
    if (err && typeof err === 'object') {
      throw new GatewayRequestError(
        String(err.message ?? response.statusText),
        response.status,
        err.category ?? null,
        err.field ?? null
      );
    }
    const message =
      (data && typeof data === 'object' && data.message) ||
      `${response.status} ${response.statusText}`.trim();
    throw new GatewayRequestError(String(message), response.status);
  }
  return data as T;
}
