/**
 * Types and request helpers for the llmgw REST API (see docs/architecture.md).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Path of the gateway API below the Jupyter server's base URL. */
export const API_NAMESPACE = 'llmgw/api';

/**
 * The wire types, generated from the server's contract (llmgw_jupyter/contract.py)
 * into ./contract.ts by scripts/gen_contract.py: never written by hand here.
 */
import {
  JOB_STATUSES,
  type IApprovalView,
  type IErrorDetail,
  type IEventView,
  type IJobView,
  type ISummary,
  type IToolCallAnswer,
  type IUsageView
} from './contract';

export type {
  ErrorCategory,
  IErrorBody,
  IErrorDetail,
  IJobEventsPage,
  IJobResultOutput,
  IJobsPage,
  IJobView,
  IModelInfo,
  ISummary,
  IUsageTotal,
  IUsageTotals
} from './contract';

/** Token usage of a job. */
export type IUsage = IUsageView;

/** One progress event of a job (REST events and the event stream's `event`). */
export type IJobEvent = IEventView;

/** A job event as carried by the event stream (`event: event`). */
export type IStreamJobEvent = IEventView;

/** A pending (or decided) approval. */
export type IApproval = IApprovalView;

/** `POST tools/{tool}`. */
export type IToolResult = IToolCallAnswer;

/** A job's status name. */
export type JobStatus = IJobView['status'];

/** The error object of a refusal. */
export type IGatewayError = IErrorDetail;

/** The summary before the first answer, or after an older server's. */
export type ISummaryLike = Pick<ISummary, 'counts' | 'pending_approvals'> &
  Partial<ISummary>;

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

/** Every job status (the contract's), offered in the state filter. */
export const KNOWN_STATUSES: readonly string[] = JOB_STATUSES;

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

/** Arguments claude_request_async accepts (ClaudeArgs, session_id for a resume). */
export const CLAUDE_REQUEST_ARGUMENTS: readonly string[] = [
  'prompt',
  'model',
  'permission_mode',
  'allowed_tools',
  'disallowed_tools',
  'max_turns',
  'working_dir',
  'add_dirs',
  'output_schema',
  'timeout_seconds',
  'session_id'
];

/** What a provider this version does not know surely accepts in a request. */
export const COMMON_REQUEST_ARGUMENTS: readonly string[] = [
  'prompt',
  'model',
  'working_dir',
  'timeout_seconds',
  'session_id'
];

/** The request arguments of a provider's `<provider>_request_async`. */
export function requestArgumentsOf(provider: string): readonly string[] {
  switch (provider) {
    case 'codex':
      return REQUEST_ARGUMENTS;
    case 'claude':
      return CLAUDE_REQUEST_ARGUMENTS;
    default:
      return COMMON_REQUEST_ARGUMENTS;
  }
}

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
