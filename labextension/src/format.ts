/**
 * Pure formatting helpers shared by the widgets (and unit tested).
 */
import {
  IApproval,
  IJobView,
  isTerminal,
  ISummaryLike,
  IUsage,
  IUsageTotal,
  IUsageTotals
} from './api';
import { ConnectionState } from './model';

/** What the status bar shows. */
export interface IStatusView {
  text: string;
  /** `idle` (nothing happening), `active`, `unreachable` or `connecting`. */
  state: 'idle' | 'active' | 'unreachable' | 'connecting';
  title: string;
}

/** Number of pending approvals of a summary. */
export function pendingApprovals(summary: ISummaryLike | null): number {
  if (!summary) {
    return 0;
  }
  if (typeof summary.pending_approvals === 'number') {
    return summary.pending_approvals;
  }
  return summary.counts?.awaiting_approval ?? 0;
}

/**
 * Status bar text about the jobs of every provider, e.g.
 * "Agents: 2 running · 1 queued · 1 needs approval".
 */
export function statusView(
  summary: ISummaryLike | null,
  connection: ConnectionState
): IStatusView {
  if (connection === 'unreachable') {
    return {
      text: 'Agents: gateway unreachable',
      state: 'unreachable',
      title: 'The llmgw gateway does not answer; retrying with backoff.'
    };
  }
  if (!summary) {
    return {
      text: 'Agents',
      state: 'connecting',
      title: 'Connecting to the llmgw gateway…'
    };
  }
  const policyError = policyErrorText(summary);
  if (policyError) {
    return {
      text: 'Agents: owner policy broken',
      state: 'unreachable',
      title: policyError
    };
  }
  const running = summary.counts?.running ?? 0;
  const queued = summary.counts?.queued ?? 0;
  const approvals = pendingApprovals(summary);
  const parts: string[] = [];
  if (running) {
    parts.push(`${running} running`);
  }
  if (queued) {
    parts.push(`${queued} queued`);
  }
  if (approvals) {
    parts.push(
      approvals === 1 ? '1 needs approval' : `${approvals} need approval`
    );
  }
  const how =
    connection === 'streaming' ? 'live updates' : 'polling for updates';
  if (parts.length === 0) {
    return {
      text: 'Agents: idle',
      state: 'idle',
      title: `No agent job is running or waiting (${how}). Click to open the jobs panel.`
    };
  }
  return {
    text: `Agents: ${parts.join(' · ')}`,
    state: 'active',
    title: `Agent jobs (${how}). Click to open the jobs panel.`
  };
}

/**
 * Why the owner policy file did not load ('' when it did): every tool call is
 * refused until it is fixed and the server restarted.
 */
export function policyErrorText(summary: ISummaryLike | null): string {
  return summary?.policy_error ?? '';
}

/** What a job's state in words is made of (a status this version may not know yet). */
export interface IJobStateFields {
  status: IJobView['status'] | string;
  cancel_reason?: string | null;
}

/** "owner" or the grant name of a "grant:NAME" caller. */
export function callerLabel(caller: string | null | undefined): string {
  if (!caller) {
    return '';
  }
  if (caller.startsWith('grant:')) {
    return caller.slice('grant:'.length);
  }
  return caller;
}

/** Format a duration in seconds as "4s", "2m 05s", "1h 02m". */
export function formatDuration(seconds: number): string {
  if (!isFinite(seconds) || seconds < 0) {
    seconds = 0;
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  }
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, '0')}m`;
}

/**
 * Elapsed time of a job: from start (or creation while waiting) to finish
 * (or now while it runs).
 */
export function jobElapsed(job: IJobView, now: number = Date.now()): string {
  const start = Date.parse(job.started_at ?? job.created_at ?? '');
  if (isNaN(start)) {
    return '';
  }
  const endParsed = Date.parse(job.finished_at ?? '');
  const end = isNaN(endParsed) ? now : endParsed;
  return formatDuration((end - start) / 1000);
}

/** "tokens: 1,234 in (1,000 cached) · 56 out (12 reasoning) · $0.0123". */
export function formatUsage(usage: IUsage | null | undefined): string {
  if (!usage) {
    return '';
  }
  const n = (value: number | null | undefined) =>
    (value ?? 0).toLocaleString('en-US');
  const parts: string[] = [];
  if (usage.input_tokens !== null && usage.input_tokens !== undefined) {
    let text = `${n(usage.input_tokens)} in`;
    if (usage.cached_input_tokens) {
      text += ` (${n(usage.cached_input_tokens)} cached)`;
    }
    parts.push(text);
  }
  if (usage.output_tokens !== null && usage.output_tokens !== undefined) {
    let text = `${n(usage.output_tokens)} out`;
    if (usage.reasoning_output_tokens) {
      text += ` (${n(usage.reasoning_output_tokens)} reasoning)`;
    }
    parts.push(text);
  }
  let text = parts.length ? `tokens: ${parts.join(' · ')}` : '';
  if (usage.cost_usd !== null && usage.cost_usd !== undefined) {
    // The run's cost where the CLI reports it (Claude Code does, Codex does not).
    text += `${text ? ' · ' : ''}$${usage.cost_usd.toFixed(4)}`;
  }
  return text;
}

/** Display names of the providers this version knows; others show as registered. */
const PROVIDER_LABELS: { readonly [name: string]: string } = {
  codex: 'Codex',
  claude: 'Claude'
};

/** "Codex", "Claude", or a provider's registered name ("fake"). */
export function providerLabel(provider: string | null | undefined): string {
  if (!provider) {
    return '';
  }
  return PROVIDER_LABELS[provider] ?? provider;
}

/** A token count with thousands separators ("1,234"). */
function count(value: number): string {
  return value.toLocaleString('en-US');
}

/** One row of the usage totals, ready to show. */
export interface IUsageRow {
  /** The caller or provider as registered ("grant:ci", "claude"). */
  name: string;
  /** What the row is called ("ci", "Claude"). */
  label: string;
  jobs: string;
  tokensIn: string;
  /** How many of the input tokens were cached ('' when none): the cell's tooltip. */
  tokensInTitle: string;
  tokensOut: string;
  /** "$0.7500", "$0.2500 (1 of 3 jobs)" or "—" when no job reported a cost. */
  cost: string;
  /** Why the cost reads as it does (the cell's tooltip). */
  costTitle: string;
}

/**
 * The cost of a total: summed over the jobs that reported one (Claude Code
 * does, Codex does not), saying so when that is not every job.
 */
export function formatTotalCost(total: IUsageTotal): {
  text: string;
  title: string;
} {
  if (total.cost_usd === null || total.cost_usd === undefined) {
    return { text: '—', title: 'no job reported a cost' };
  }
  const text = `$${total.cost_usd.toFixed(4)}`;
  if (total.priced_jobs >= total.jobs) {
    return { text, title: 'every job reported its cost' };
  }
  const part = `${total.priced_jobs} of ${total.jobs} jobs`;
  return {
    text: `${text} (${part})`,
    title: `only ${part} reported a cost: the others are not counted`
  };
}

/** The rows of one view of the totals ("caller" or "provider"). */
export function usageRows(
  totals: IUsageTotals | null | undefined,
  by: 'caller' | 'provider'
): IUsageRow[] {
  const entries =
    (by === 'caller' ? totals?.by_caller : totals?.by_provider) ?? [];
  const label = by === 'caller' ? callerLabel : providerLabel;
  return entries.map(total => {
    const cost = formatTotalCost(total);
    return {
      name: total.name,
      label: label(total.name),
      jobs: count(total.jobs),
      tokensIn: count(total.input_tokens),
      tokensInTitle: total.cached_input_tokens
        ? `${count(total.cached_input_tokens)} of them cached`
        : '',
      tokensOut: count(total.output_tokens),
      cost: cost.text,
      costTitle: cost.title
    };
  });
}

/**
 * One line over every job: "12 jobs · 1,234 in · 56 out · $0.7500" ('' when
 * there are no jobs). The providers' totals add up to it.
 */
export function usageHeadline(totals: IUsageTotals | null | undefined): string {
  const all = totals?.by_provider ?? [];
  if (all.length === 0) {
    return '';
  }
  const sum = (pick: (total: IUsageTotal) => number) =>
    all.reduce((acc, total) => acc + pick(total), 0);
  const jobs = sum(t => t.jobs);
  let text =
    `${count(jobs)} ${jobs === 1 ? 'job' : 'jobs'} · ` +
    `${count(sum(t => t.input_tokens))} in · ${count(sum(t => t.output_tokens))} out`;
  const priced = all.filter(
    t => t.cost_usd !== null && t.cost_usd !== undefined
  );
  if (priced.length > 0) {
    text += ` · $${priced.reduce((acc, t) => acc + (t.cost_usd ?? 0), 0).toFixed(4)}`;
  }
  return text;
}

/** Milliseconds since the epoch of an ISO timestamp, or null when it is missing or invalid. */
function parseTime(iso: string | null | undefined): number | null {
  const t = Date.parse(iso ?? '');
  return isNaN(t) ? null : t;
}

/** "14:03:07" (local time, 24 h) of an ISO timestamp; '' when invalid. */
export function formatTime(iso: string | null | undefined): string {
  const t = parseTime(iso);
  if (t === null) {
    return '';
  }
  const d = new Date(t);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A short session id for display. */
export function shortId(id: string | null | undefined, length = 8): string {
  if (!id) {
    return '';
  }
  return id.length > length ? id.slice(0, length) : id;
}

/** Human label of a status. */
export function statusLabel(status: string): string {
  return status.replace(/_/g, ' ');
}

/** The prompt of a job: its arguments' prompt or the preview. */
export function jobPrompt(job: IJobView): string {
  const prompt = job.args?.prompt;
  if (typeof prompt === 'string') {
    return prompt;
  }
  return job.prompt_preview ?? '';
}

/**
 * What the status bar says about the model jobs use ('' when nothing to say).
 * The summary's model is Codex's only (a Claude echo model is not reported), so
 * the notice names Codex.
 */
export function modelView(summary: ISummaryLike | null): {
  text: string;
  title: string;
} {
  const model = summary?.model;
  if (!model || !model.local_echo) {
    return { text: '', title: '' };
  }
  return {
    text: 'local echo model',
    title:
      'Codex jobs use the bundled local echo model: answers repeat the prompt. ' +
      'Give Codex credentials (and restart) to use a real model.'
  };
}

/** Whole seconds from ``now`` until a timestamp (negative when past), null when invalid. */
function secondsUntil(
  iso: string | null | undefined,
  now: number
): number | null {
  const t = parseTime(iso);
  return t === null ? null : Math.trunc((t - now) / 1000);
}

/** "12s ago", "3 min ago", "2 h ago", "4 d ago" from a past timestamp. */
export function formatAge(
  iso: string | null | undefined,
  now: number = Date.now()
): string {
  const until = secondsUntil(iso, now);
  if (until === null) {
    return '';
  }
  const seconds = Math.max(0, -until);
  if (seconds < 60) {
    return `${seconds}s ago`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ago`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return `${hours} h ago`;
  }
  return `${Math.floor(hours / 24)} d ago`;
}

/** "in 9 min", "in 40s", "in 2 h" (or "expired") until a future timestamp. */
export function formatExpiry(
  iso: string | null | undefined,
  now: number = Date.now()
): string {
  const seconds = secondsUntil(iso, now);
  if (seconds === null) {
    return '';
  }
  if (seconds <= 0) {
    return 'expired';
  }
  if (seconds < 60) {
    return `in ${seconds}s`;
  }
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) {
    return `in ${minutes} min`;
  }
  return `in ${Math.round(minutes / 60)} h`;
}

/** The exact local date and time of a timestamp, for tooltips ('' when invalid). */
export function formatLocal(iso: string | null | undefined): string {
  const t = parseTime(iso);
  if (t === null) {
    return '';
  }
  return new Date(t).toLocaleString();
}

/**
 * Tooltip of a job's age: when it was created and how long it ran (or has
 * been running).
 */
export function ageTitle(job: IJobView, now: number = Date.now()): string {
  const created = formatLocal(job.created_at);
  const duration = jobElapsed(job, now);
  const parts: string[] = [];
  if (created) {
    parts.push(`created ${created}`);
  }
  if (duration) {
    const verb = isTerminal(job.status)
      ? 'ran for'
      : job.status === 'running'
        ? 'running for'
        : 'waiting for';
    parts.push(`${verb} ${duration}`);
  }
  return parts.join('; ');
}

/**
 * The state a job is shown in: what happened, not only the runtime status.
 * A job cancelled because its approval was denied is "denied", and so on.
 */
export function jobState(job: IJobStateFields): {
  state: string;
  label: string;
} {
  if (job.status === 'cancelled') {
    switch (job.cancel_reason) {
      case 'approval_denied':
        return { state: 'denied', label: 'denied' };
      case 'approval_expired':
        return { state: 'approval_expired', label: 'approval expired' };
      case 'grant_revoked':
        return { state: 'grant_revoked', label: 'grant revoked' };
      default:
        return { state: 'cancelled', label: 'cancelled' };
    }
  }
  return { state: job.status, label: statusLabel(job.status) };
}

/**
 * Why a job ended without an answer, in words: "denied by owner: too
 * expensive", "the approval expired", "cancelled: gateway shutdown".
 * `decision` is the job's approval record when known.
 */
export function outcomeText(
  job: IJobStateFields,
  decision: IApproval | null | undefined
): string {
  if (job.status !== 'cancelled') {
    return '';
  }
  const { state } = jobState(job);
  if (state === 'denied') {
    let text = 'denied';
    if (decision?.decided_by) {
      text += ` by ${callerLabel(decision.decided_by)}`;
    }
    if (decision?.decided_at) {
      text += ` at ${formatTime(decision.decided_at)}`;
    }
    return decision?.reason ? `${text}: ${decision.reason}` : text;
  }
  if (state === 'approval_expired') {
    return 'the approval request expired before anyone decided';
  }
  if (state === 'grant_revoked') {
    return "cancelled: the caller's grant was revoked";
  }
  const reason = job.cancel_reason;
  return reason && reason !== 'cancelled'
    ? `cancelled: ${reason}`
    : 'cancelled';
}
