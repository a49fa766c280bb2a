/**
 * The llmgw wire contract: generated from llmgw_jupyter/contract.py by
 * scripts/gen_contract.py (json-schema-to-typescript). Do not edit by hand.
 */

/**
 * Why a job or a call failed. The values are user-visible (job records, REST and MCP
 * error bodies, the lab panel): never rename one.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "ErrorCategory".
 */
export type ErrorCategory =
  | 'spawn_error'
  | 'cli_error'
  | 'auth_error'
  | 'timeout'
  | 'output_overflow'
  | 'isolation_error'
  | 'disk_full'
  | 'invalid_input'
  | 'not_found'
  | 'conflict'
  | 'saturated'
  | 'limit_exceeded'
  | 'grant_revoked'
  | 'policy_denied'
  | 'rate_limited'
  | 'approval_denied'
  | 'approval_expired'
  | 'unauthorized'
  | 'forbidden'
  | 'unavailable'
  | 'policy_error'
  | 'internal'
  | 'http_error'
  | 'unreachable'
  | 'error';

/**
 * Every wire model (the root only lists them).
 */
export interface IContract {
  ApprovalView?: IApprovalView;
  ApprovalsPage?: IApprovalsPage;
  AuditEntryView?: IAuditEntryView;
  AuditPage?: IAuditPage;
  ErrorBody?: IErrorBody;
  ErrorCategory?: ErrorCategory;
  ErrorDetail?: IErrorDetail;
  ErrorView?: IErrorView;
  EventView?: IEventView;
  GrantCreated?: IGrantCreated;
  GrantView?: IGrantView;
  GrantsPage?: IGrantsPage;
  JobCancelOutput?: IJobCancelOutput;
  JobEventsOutput?: IJobEventsOutput;
  JobEventsPage?: IJobEventsPage;
  JobListOutput?: IJobListOutput;
  JobResultOutput?: IJobResultOutput;
  JobView?: IJobView;
  JobsPage?: IJobsPage;
  ModelInfo?: IModelInfo;
  OutputPageView?: IOutputPageView;
  OwnerPolicyView?: IOwnerPolicyView;
  PolicyState?: IPolicyState;
  RequestOutput?: IRequestOutput;
  SessionListOutput?: ISessionListOutput;
  SessionView?: ISessionView;
  SubmitOutput?: ISubmitOutput;
  Summary?: ISummary;
  ToolCallAnswer?: IToolCallAnswer;
  UsageTotal?: IUsageTotal;
  UsageTotals?: IUsageTotals;
  UsageView?: IUsageView;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "ApprovalView".
 */
export interface IApprovalView {
  id: string;
  caller: string;
  tool: string;
  arguments: {
    [k: string]: unknown;
  };
  job_id: string | null;
  status: string;
  created_at: string;
  expires_at: string;
  decided_by: string | null;
  decided_at: string | null;
  reason: string | null;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "ApprovalsPage".
 */
export interface IApprovalsPage {
  approvals: IApprovalView[];
}
/**
 * One audit record: the arguments' keys and hash, never their values.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "AuditEntryView".
 */
export interface IAuditEntryView {
  id: number;
  ts: string;
  caller: string;
  tool: string;
  decision: string;
  rule: string;
  message: string;
  arg_keys: string[];
  args_sha256: string;
  approval_id: string | null;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "AuditPage".
 */
export interface IAuditPage {
  records: IAuditEntryView[];
}
/**
 * The one REST error shape, whatever refused (status by category: ``errors.HTTP_STATUS``).
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "ErrorBody".
 */
export interface IErrorBody {
  error: IErrorDetail;
}
/**
 * Every refusal's error object: REST bodies, failed tool results, the MCP endpoint's 503.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "ErrorDetail".
 */
export interface IErrorDetail {
  category: ErrorCategory;
  message: string;
  field: string | null;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "ErrorView".
 */
export interface IErrorView {
  category: string | null;
  message: string | null;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "EventView".
 */
export interface IEventView {
  job_id: string;
  seq: number;
  ts: string;
  type: string;
  summary: string;
  data: {
    [k: string]: unknown;
  };
}
/**
 * ``POST grants``: the token is shown this once.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "GrantCreated".
 */
export interface IGrantCreated {
  name: string;
  token: string;
  grant: IGrantView;
}
/**
 * A grant as the owner sees it: the token's hash stays inside.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "GrantView".
 */
export interface IGrantView {
  name: string;
  policy: {
    [k: string]: unknown;
  } | null;
  created_at: string;
  revoked_at: string | null;
  active: boolean;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "GrantsPage".
 */
export interface IGrantsPage {
  grants: IGrantView[];
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "JobCancelOutput".
 */
export interface IJobCancelOutput {
  job: IJobView;
}
/**
 * A job as every caller sees it (``JobRecord.to_dict()``), arguments trimmed outside
 * submission answers and ``llm_job_status`` with ``include_args`` (see ``LIGHT_ARG_KEYS``).
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "JobView".
 */
export interface IJobView {
  id: string;
  provider: string;
  tool: string;
  kind: string;
  caller: string;
  status:
    | 'awaiting_approval'
    | 'queued'
    | 'running'
    | 'succeeded'
    | 'failed'
    | 'cancelled'
    | 'timed_out'
    | 'interrupted';
  args: {
    [k: string]: unknown;
  };
  /**
   * Arguments left out of args here; llm_job_status with include_args: true returns them.
   */
  omitted_args: string[];
  argv: string[] | null;
  working_dir: string | null;
  idempotency_key: string | null;
  prompt_preview: string;
  created_at: string;
  queued_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
  exit_code: number | null;
  pid: number | null;
  session_id: string | null;
  parent_session_id: string | null;
  usage: IUsageView;
  final_message: string | null;
  error: IErrorView | null;
  cancel_reason: string | null;
  last_seq: number;
  stdout_bytes: number;
  stderr_bytes: number;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "UsageView".
 */
export interface IUsageView {
  input_tokens: number | null;
  cached_input_tokens: number | null;
  output_tokens: number | null;
  reasoning_output_tokens: number | null;
  /**
   * What the run cost in US dollars, where the CLI reports it.
   */
  cost_usd: number | null;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "JobEventsOutput".
 */
export interface IJobEventsOutput {
  job: IJobView;
  events: IEventView[];
  next_after_seq: number;
  done: boolean;
}
/**
 * ``GET jobs/{id}/events``: events after a sequence number and the job (light view).
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "JobEventsPage".
 */
export interface IJobEventsPage {
  events: IEventView[];
  job: IJobView;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "JobListOutput".
 */
export interface IJobListOutput {
  jobs: IJobView[];
  total: number;
  limit: number;
  offset: number;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "JobResultOutput".
 */
export interface IJobResultOutput {
  done: boolean;
  job: IJobView;
  final_message: string | null;
  session_id: string | null;
  usage: IUsageView;
  exit_code: number | null;
  error: IErrorView | null;
  output: IOutputPageView;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "OutputPageView".
 */
export interface IOutputPageView {
  stream: string;
  offset: number;
  data: string;
  next_offset: number;
  size: number;
  eof: boolean;
}
/**
 * ``GET jobs``: light job views, newest first, and how many match.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "JobsPage".
 */
export interface IJobsPage {
  jobs: IJobView[];
  total: number;
}
/**
 * What the status bar says about the model jobs use.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "ModelInfo".
 */
export interface IModelInfo {
  local_echo: boolean;
  label: string;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "OwnerPolicyView".
 */
export interface IOwnerPolicyView {
  path: string | null;
  loaded: boolean;
  generation: number;
  policy: {
    [k: string]: unknown;
  };
}
/**
 * ``GET policy``: the owner policy in force and the last load error.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "PolicyState".
 */
export interface IPolicyState {
  owner: IOwnerPolicyView;
  last_error: string | null;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "RequestOutput".
 */
export interface IRequestOutput {
  done: boolean;
  job: IJobView;
  final_message: string | null;
  session_id: string | null;
  usage: IUsageView | null;
  approval: IApprovalView | null;
  message: string;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "SessionListOutput".
 */
export interface ISessionListOutput {
  sessions: ISessionView[];
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "SessionView".
 */
export interface ISessionView {
  session_id: string;
  provider: string;
  caller: string;
  parent_session_id: string | null;
  children: string[];
  working_dir: string | null;
  created_at: string;
  created_by_job: string | null;
  last_job_id: string | null;
  last_used_at: string;
}
/**
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "SubmitOutput".
 */
export interface ISubmitOutput {
  job: IJobView;
  approval: IApprovalView | null;
  message: string;
}
/**
 * ``GET summary``: counts for the status bar, a broken owner policy to show, and the
 * usage totals of the jobs panel.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "Summary".
 */
export interface ISummary {
  counts: {
    [k: string]: number;
  };
  pending_approvals: number;
  mcp_url: string | null;
  /**
   * Why the owner policy file did not load (every tool call is then refused).
   */
  policy_error: string | null;
  model: IModelInfo | null;
  usage: IUsageTotals | null;
}
/**
 * Tokens and cost of every job the gateway keeps, per caller and per provider.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "UsageTotals".
 */
export interface IUsageTotals {
  by_caller: IUsageTotal[];
  by_provider: IUsageTotal[];
}
/**
 * Usage summed over the jobs of one caller or one provider (``name``).
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "UsageTotal".
 */
export interface IUsageTotal {
  name: string;
  jobs: number;
  input_tokens: number;
  cached_input_tokens: number;
  output_tokens: number;
  reasoning_output_tokens: number;
  /**
   * Summed over the jobs that reported a cost; null if none did.
   */
  cost_usd: number | null;
  /**
   * How many of the jobs reported a cost.
   */
  priced_jobs: number;
}
/**
 * ``POST tools/{tool}`` and ``POST jobs``: a tool result; a failure adds ``error``.
 *
 * This interface was referenced by `IContract`'s JSON-Schema
 * via the `definition` "ToolCallAnswer".
 */
export interface IToolCallAnswer {
  is_error: boolean;
  text: string;
  structured: {
    [k: string]: unknown;
  } | null;
  /**
   * Failures only.
   */
  error?: IErrorDetail | null;
}

/** Every job status, in the server's order. */
export const JOB_STATUSES: readonly IJobView['status'][] = [
  'awaiting_approval',
  'queued',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
  'interrupted'
];
