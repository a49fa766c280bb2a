/**
 * Pure formatting helpers shared by the widgets (and unit tested).
 */
import { IJobView, ISummary, IUsage } from './api';
import { ConnectionState } from './model';

/** What the status bar shows. */
export interface IStatusView {
  text: string;
  /** `idle` (nothing happening), `active`, `unreachable` or `connecting`. */
  state: 'idle' | 'active' | 'unreachable' | 'connecting';
  title: string;
}

/** Number of pending approvals of a summary. */
export function pendingApprovals(summary: ISummary | null): number {
  if (!summary) {
    return 0;
  }
  if (typeof summary.pending_approvals === 'number') {
    return summary.pending_approvals;
  }
  return summary.counts?.awaiting_approval ?? 0;
}

/**
 * Status bar text, e.g. "Codex: 2 running · 1 queued · 1 needs approval".
 */
export function statusView(
  summary: ISummary | null,
  connection: ConnectionState
): IStatusView {
  if (connection === 'unreachable') {
    return {
      text: 'Codex: gateway unreachable',
      state: 'unreachable',
      title: 'The llmgw gateway does not answer; retrying with backoff.'
    };
  }
  if (!summary) {
    return {
      text: 'Codex',
      state: 'connecting',
      title: 'Connecting to the llmgw gateway…'
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
      text: 'Codex: idle',
      state: 'idle',
      title: `No Codex job is running or waiting (${how}). Click to open the jobs panel.`
    };
  }
  return {
    text: `Codex: ${parts.join(' · ')}`,
    state: 'active',
    title: `Codex jobs (${how}). Click to open the jobs panel.`
  };
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

/** "1,234 in (1,000 cached) · 56 out (12 reasoning)". */
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
  return parts.length ? `tokens: ${parts.join(' · ')}` : '';
}

/** "14:03:07" (local time, 24 h) of an ISO timestamp; '' when invalid. */
export function formatTime(iso: string | null | undefined): string {
  const t = Date.parse(iso ?? '');
  if (isNaN(t)) {
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
