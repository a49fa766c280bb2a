/**
 * GatewayModel: owns every request to the gateway, the event stream, the
 * polling fallback and the client-side state. Widgets only follow its signals
 * and call its methods.
 */
import { ServerConnection } from '@jupyterlab/services';
import { PromiseDelegate } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { Debouncer, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  apiUrl,
  GatewayRequestError,
  IApproval,
  IJobEvent,
  IJobView,
  isTerminal,
  IStreamJobEvent,
  ISummary,
  ISummaryLike,
  IToolResult,
  IUsageTotals,
  requestAPI,
  requestArgumentsOf
} from './api';
import { EventSourceMessage, readEventStream } from './sse';

/**
 * How the model is connected:
 * - `connecting`: nothing answered yet
 * - `streaming`: the event stream is open (polling only as a slow safety net)
 * - `polling`: the stream is down, the REST API answers, updates come by polling
 * - `unreachable`: the last refresh failed
 */
export type ConnectionState =
  'connecting' | 'streaming' | 'polling' | 'unreachable';

/** Server-side filter of the jobs list. */
export interface IJobFilter {
  status?: string;
  caller?: string;
  provider?: string;
}

/** Payload of `jobEventsChanged`. */
export interface IJobEventsChange {
  jobId: string;
  events: readonly IJobEvent[];
}

/** The gateway model. */
export class GatewayModel implements IDisposable {
  constructor(options: GatewayModel.IOptions = {}) {
    this._serverSettings =
      options.serverSettings ?? ServerConnection.makeSettings();
    this._pollInterval = Math.max(0.2, options.pollInterval ?? 5);
    this._useStream = options.useStream ?? true;
    this._jobLimit = options.jobLimit ?? 100;
    this._streamSafetyInterval = options.streamSafetyInterval ?? 30;
    this._streamRetry = options.streamRetry ?? 1000;
    this._streamMaxRetry = options.streamMaxRetry ?? 30000;
    this._sideRefresh = new Debouncer(
      () => this._refreshSideData(),
      options.debounce ?? 100
    );
    this._poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: this._frequency(),
      name: 'llmgw-jupyter:gateway',
      standby: options.standby ?? 'when-hidden'
    });
  }

  /** Emitted when the jobs list changes. */
  get jobsChanged(): ISignal<this, readonly IJobView[]> {
    return this._jobsChanged;
  }

  /** Emitted when the summary (counts) changes. */
  get summaryChanged(): ISignal<this, ISummary | null> {
    return this._summaryChanged;
  }

  /** Emitted when the pending approvals change. */
  get approvalsChanged(): ISignal<this, readonly IApproval[]> {
    return this._approvalsChanged;
  }

  /** Emitted with approvals that appeared after the first load. */
  get approvalsArrived(): ISignal<this, readonly IApproval[]> {
    return this._approvalsArrived;
  }

  /** Emitted when the connection state changes. */
  get connectionChanged(): ISignal<this, ConnectionState> {
    return this._connectionChanged;
  }

  /** Emitted when the events of a watched job change. */
  get jobEventsChanged(): ISignal<this, IJobEventsChange> {
    return this._jobEventsChanged;
  }

  /** Emitted with every new view of any job (list, stream, fetch). */
  get jobChanged(): ISignal<this, IJobView> {
    return this._jobChanged;
  }

  /** Emitted when the jobs filter changes. */
  get filterChanged(): ISignal<this, IJobFilter> {
    return this._filterChanged;
  }

  /** The server settings used for every request. */
  get serverSettings(): ServerConnection.ISettings {
    return this._serverSettings;
  }

  /** Jobs of the current filter, newest first. */
  get jobs(): readonly IJobView[] {
    return this._jobs;
  }

  /** Total number of jobs matching the filter on the server. */
  get totalJobs(): number {
    return this._totalJobs;
  }

  /** Last summary (null before the first answer). */
  get summary(): ISummary | null {
    return this._summary;
  }

  /** Pending approvals, oldest first. */
  get approvals(): readonly IApproval[] {
    return this._approvals;
  }

  /** Connection state. */
  get connection(): ConnectionState {
    return this._connection;
  }

  /** Message of the last failed refresh ('' when the last one succeeded). */
  get lastError(): string {
    return this._lastError;
  }

  /** Whether the event stream is currently open. */
  get streamConnected(): boolean {
    return this._streamConnected;
  }

  /** Current jobs filter. */
  get filter(): IJobFilter {
    return { ...this._filter };
  }

  /** Callers seen so far ("owner", "grant:NAME"), sorted. */
  get callers(): string[] {
    return [...this._callers].sort();
  }

  /** Providers seen so far (in jobs or the usage totals), sorted. */
  get providers(): string[] {
    return [...this._providers].sort();
  }

  /** Usage totals per caller and per provider (null before the first summary). */
  get usage(): IUsageTotals | null {
    return this._summary?.usage ?? null;
  }

  /** Statuses seen so far (in jobs or summary counts), sorted. */
  get statuses(): string[] {
    return [...this._statuses].sort();
  }

  /** Fallback poll interval in seconds. */
  get pollInterval(): number {
    return this._pollInterval;
  }
  set pollInterval(seconds: number) {
    const value = Math.max(0.2, seconds);
    if (value === this._pollInterval) {
      return;
    }
    this._pollInterval = value;
    this._updateFrequency();
  }

  /** The underlying poll (exposed for tests and diagnostics). */
  get poll(): Poll {
    return this._poll;
  }

  /** Whether the model is disposed. */
  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Start polling and the event stream. Resolves after the first refresh
   * attempt. Safe to call more than once.
   */
  async start(): Promise<void> {
    if (this._started || this._isDisposed) {
      return;
    }
    this._started = true;
    void this._poll.start();
    if (this._useStream) {
      void this._runStream();
    }
    await this._firstRefresh.promise;
  }

  /**
   * Fetch summary, jobs and pending approvals. Rejects (and marks the
   * connection unreachable) when any request fails; the poll then backs off.
   */
  async refresh(): Promise<void> {
    if (this._isDisposed) {
      return;
    }
    try {
      const filter = { ...this._filter };
      const mark = this._mutations;
      const [summary, jobs, approvals] = await Promise.all([
        this._fetchSummary(),
        this._fetchJobs(filter),
        this._fetchApprovals()
      ]);
      if (this._isDisposed) {
        return;
      }
      this._setSummary(summary);
      if (this._sameFilter(filter)) {
        this._setJobs(jobs.jobs ?? [], jobs.total ?? 0, mark);
      }
      this._setApprovals(approvals.approvals ?? []);
      this._lastError = '';
      this._setConnection(this._streamConnected ? 'streaming' : 'polling');
      this._catchUpWatched();
    } catch (error) {
      if (this._isDisposed) {
        return;
      }
      this._lastError = (error as Error).message ?? String(error);
      this._setConnection('unreachable');
      throw error;
    } finally {
      this._firstRefresh.resolve();
    }
  }

  /** Ask for a refresh now (through the poll, so backoff stays coherent). */
  async refreshNow(): Promise<void> {
    if (!this._started) {
      return this.refresh();
    }
    await this._poll.refresh();
    await this._poll.tick;
  }

  /** Change the jobs filter and refetch the list. */
  setFilter(filter: IJobFilter): void {
    const next: IJobFilter = {
      status: filter.status || undefined,
      caller: filter.caller || undefined,
      provider: filter.provider || undefined
    };
    if (this._sameFilter(next)) {
      return;
    }
    this._filter = next;
    this._filterChanged.emit({ ...next });
    // Drop jobs that no longer match right away; the refetch fills the rest.
    this._jobs = this._jobs.filter(job => this._matches(job));
    this._jobsChanged.emit(this._jobs);
    const mark = this._mutations;
    void this._fetchJobs(next)
      .then(answer => {
        if (this._sameFilter(next) && !this._isDisposed) {
          this._setJobs(answer.jobs ?? [], answer.total ?? 0, mark);
        }
      })
      .catch(() => {
        // The next poll tick reports the error.
      });
  }

  /** A job by id from the list or the watched jobs. */
  getJob(jobId: string): IJobView | undefined {
    return (
      this._jobs.find(job => job.id === jobId) ??
      this._watchedJobs.get(jobId) ??
      this._pinnedJobs.get(jobId)
    );
  }

  /**
   * Keep a job's latest view at hand (a notebook output shows it) even when
   * it is not in the list; without its events. Counted like `watchJob`.
   */
  pinJob(jobId: string): void {
    this._pinned.set(jobId, (this._pinned.get(jobId) ?? 0) + 1);
  }

  /** Undo one `pinJob`. */
  unpinJob(jobId: string): void {
    const holders = (this._pinned.get(jobId) ?? 0) - 1;
    if (holders > 0) {
      this._pinned.set(jobId, holders);
      return;
    }
    this._pinned.delete(jobId);
    this._pinnedJobs.delete(jobId);
  }

  /** Events loaded so far for a watched job. */
  eventsFor(jobId: string): readonly IJobEvent[] {
    return this._events.get(jobId) ?? [];
  }

  /** Whether a job's events are followed. */
  isWatched(jobId: string): boolean {
    return this._watched.has(jobId);
  }

  /**
   * Follow a job's events (a panel row is expanded, a notebook output shows
   * it). Every call needs its own `unwatchJob`: followers are counted.
   */
  async watchJob(jobId: string): Promise<void> {
    this._watched.set(jobId, (this._watched.get(jobId) ?? 0) + 1);
    if (!this._events.has(jobId)) {
      this._events.set(jobId, []);
    }
    const job = this.getJob(jobId);
    if (job) {
      this._watchedJobs.set(jobId, job);
    }
    await this.fetchEvents(jobId);
  }

  /** Stop following a job's events; forget them when nobody follows it. */
  unwatchJob(jobId: string): void {
    const followers = (this._watched.get(jobId) ?? 0) - 1;
    if (followers > 0) {
      this._watched.set(jobId, followers);
      return;
    }
    this._watched.delete(jobId);
    this._watchedJobs.delete(jobId);
    this._events.delete(jobId);
  }

  /**
   * The full view of one job from the server (GET jobs/{id}); rejects with
   * a GatewayRequestError (status 404 for a job the server does not know).
   */
  async fetchJob(jobId: string): Promise<IJobView> {
    const job = await requestAPI<IJobView>(
      this._serverSettings,
      `jobs/${encodeURIComponent(jobId)}`
    );
    if (!job || typeof job !== 'object' || job.id !== jobId) {
      throw new GatewayRequestError(`job ${jobId}: unexpected answer`);
    }
    this._upsertJob(job);
    return this.getJob(jobId) ?? job;
  }

  /**
   * The approval record of a job that was denied or whose approval expired
   * (who decided, when and why); null when there is none. Cached per job:
   * a decision does not change.
   */
  decisionFor(jobId: string): Promise<IApproval | null> {
    let known = this._decisions.get(jobId);
    if (!known) {
      known = requestAPI<{ approvals: IApproval[] }>(
        this._serverSettings,
        'approvals',
        {},
        { status: 'all', limit: 1000 }
      ).then(
        answer =>
          (answer.approvals ?? []).find(
            a => a.job_id === jobId && a.status !== 'pending'
          ) ?? null
      );
      known.catch(() => this._decisions.delete(jobId));
      this._decisions.set(jobId, known);
    }
    return known;
  }

  /** The pending approval a job waits for, if it is in the list. */
  pendingApprovalFor(jobId: string): IApproval | undefined {
    return this._approvals.find(approval => approval.job_id === jobId);
  }

  /**
   * Fetch the events of a job after the last one known. Concurrent calls for
   * the same job are coalesced.
   */
  fetchEvents(jobId: string): Promise<void> {
    const running = this._eventFetches.get(jobId);
    if (running) {
      this._eventFetchAgain.add(jobId);
      return running;
    }
    const promise = this._fetchEventsLoop(jobId).finally(() => {
      this._eventFetches.delete(jobId);
      if (this._eventFetchAgain.delete(jobId) && this._watched.has(jobId)) {
        void this.fetchEvents(jobId);
      }
    });
    this._eventFetches.set(jobId, promise);
    return promise;
  }

  /** Cancel a job. */
  async cancelJob(jobId: string): Promise<IJobView> {
    const job = await requestAPI<IJobView>(
      this._serverSettings,
      `jobs/${encodeURIComponent(jobId)}/cancel`,
      { method: 'POST', body: '{}' }
    );
    this._upsertJob(job);
    this._sideRefresh.invoke().catch(() => undefined);
    return job;
  }

  /** Approve a pending approval. */
  approve(approvalId: string): Promise<IApproval> {
    return this._decide(approvalId, 'approve');
  }

  /** Deny a pending approval. */
  deny(approvalId: string): Promise<IApproval> {
    return this._decide(approvalId, 'deny');
  }

  /** Call a gateway tool as the owner. Rejects when the tool answers an error. */
  async callTool(
    tool: string,
    args: { [key: string]: any }
  ): Promise<IToolResult> {
    const result = await requestAPI<IToolResult>(
      this._serverSettings,
      `tools/${encodeURIComponent(tool)}`,
      { method: 'POST', body: JSON.stringify(args) }
    );
    if (result && result.is_error) {
      throw new GatewayRequestError(result.text || `${tool} failed`);
    }
    this._sideRefresh.invoke().catch(() => undefined);
    if (!this._streamConnected && this._started) {
      void this._poll.refresh();
    }
    return result;
  }

  /** Fork a session with a new prompt (`<provider>_fork_session`, Codex's by default). */
  fork(
    sessionId: string,
    prompt: string,
    provider = 'codex'
  ): Promise<IToolResult> {
    return this.callTool(`${provider}_fork_session`, {
      session_id: sessionId,
      prompt
    });
  }

  /** Run a job's request again with a new prompt (its provider's `_request_async`). */
  async rerun(job: IJobView, prompt: string): Promise<IToolResult> {
    // Lists and the stream carry light views (big arguments omitted): fetch the full job.
    const full = job.omitted_args?.length
      ? await requestAPI<IJobView>(
          this._serverSettings,
          `jobs/${encodeURIComponent(job.id)}`
        )
      : job;
    const provider = full.provider || 'codex';
    return this.callTool(
      `${provider}_request_async`,
      rerunArguments(full, prompt)
    );
  }

  /** Stop everything. */
  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._firstRefresh.resolve();
    this._poll.dispose();
    this._sideRefresh.dispose();
    this._streamAbort?.abort();
    this._wakeStream?.();
    Signal.clearData(this);
  }

  // ---------------------------------------------------------------- private

  private _fetchSummary(): Promise<ISummary> {
    return requestAPI<ISummary>(this._serverSettings, 'summary');
  }

  private _fetchJobs(
    filter: IJobFilter
  ): Promise<{ jobs: IJobView[]; total: number }> {
    return requestAPI(
      this._serverSettings,
      'jobs',
      {},
      {
        status: filter.status,
        caller: filter.caller,
        provider: filter.provider,
        limit: this._jobLimit
      }
    );
  }

  private _fetchApprovals(): Promise<{ approvals: IApproval[] }> {
    return requestAPI(
      this._serverSettings,
      'approvals',
      {},
      {
        status: 'pending'
      }
    );
  }

  private async _refreshSideData(): Promise<void> {
    if (this._isDisposed) {
      return;
    }
    try {
      const [summary, approvals] = await Promise.all([
        this._fetchSummary(),
        this._fetchApprovals()
      ]);
      if (this._isDisposed) {
        return;
      }
      this._setSummary(summary);
      this._setApprovals(approvals.approvals ?? []);
    } catch {
      // The poll reports persistent failures.
    }
  }

  private async _decide(
    approvalId: string,
    action: 'approve' | 'deny'
  ): Promise<IApproval> {
    const approval = await requestAPI<IApproval>(
      this._serverSettings,
      `approvals/${encodeURIComponent(approvalId)}/${action}`,
      { method: 'POST', body: '{}' }
    );
    const remaining = this._approvals.filter(a => a.id !== approvalId);
    if (remaining.length !== this._approvals.length) {
      this._approvals = remaining;
      this._approvalsChanged.emit(this._approvals);
    }
    this._sideRefresh.invoke().catch(() => undefined);
    if (!this._streamConnected && this._started) {
      void this._poll.refresh();
    }
    return approval;
  }

  private async _fetchEventsLoop(jobId: string): Promise<void> {
    for (let page = 0; page < 50; page++) {
      if (!this._watched.has(jobId) || this._isDisposed) {
        return;
      }
      const known = this._events.get(jobId) ?? [];
      const after = known.length ? known[known.length - 1].seq : 0;
      const answer = await requestAPI<{ events: IJobEvent[]; job: IJobView }>(
        this._serverSettings,
        `jobs/${encodeURIComponent(jobId)}/events`,
        {},
        { after }
      );
      if (!this._watched.has(jobId) || this._isDisposed) {
        return;
      }
      const added = this._appendEvents(jobId, answer.events ?? []);
      if (answer.job) {
        this._upsertJob(answer.job);
      }
      const last = this._lastSeq(jobId);
      const serverLast = answer.job?.last_seq ?? last;
      if (!added || last >= serverLast) {
        return;
      }
    }
  }

  private _appendEvents(jobId: string, events: IJobEvent[]): boolean {
    const known = this._events.get(jobId);
    if (!known) {
      return false;
    }
    let last = known.length ? known[known.length - 1].seq : 0;
    const fresh: IJobEvent[] = [];
    for (const event of [...events].sort((a, b) => a.seq - b.seq)) {
      if (event.seq > last) {
        fresh.push(event);
        last = event.seq;
      }
    }
    if (fresh.length === 0) {
      return false;
    }
    const next = known.concat(fresh);
    this._events.set(jobId, next);
    this._jobEventsChanged.emit({ jobId, events: next });
    return true;
  }

  private _lastSeq(jobId: string): number {
    const known = this._events.get(jobId) ?? [];
    return known.length ? known[known.length - 1].seq : 0;
  }

  /** After a refresh: fetch events of watched jobs that moved on. */
  private _catchUpWatched(): void {
    const listed = new Set(this._jobs.map(job => job.id));
    for (const jobId of this._watched.keys()) {
      const job = this.getJob(jobId);
      if (!job) {
        continue;
      }
      const serverLast = job.last_seq ?? 0;
      // A followed job outside the list (filtered out, or too old) has no
      // fresh view from the refresh: its events answer bring one.
      const stale = !listed.has(jobId) && !isTerminal(job.status);
      if (stale || serverLast > this._lastSeq(jobId)) {
        void this.fetchEvents(jobId).catch(() => undefined);
      }
    }
    if (this._streamConnected) {
      return;
    }
    for (const jobId of this._pinned.keys()) {
      const job = this._pinnedJobs.get(jobId);
      if (
        job &&
        !this._watched.has(jobId) &&
        !listed.has(jobId) &&
        !isTerminal(job.status)
      ) {
        void this.fetchJob(jobId).catch(() => undefined);
      }
    }
  }

  private _setSummary(summary: ISummaryLike): void {
    const normalized: ISummary = {
      counts: summary?.counts ?? {},
      pending_approvals: summary?.pending_approvals ?? 0,
      mcp_url: summary?.mcp_url ?? null,
      policy_error: summary?.policy_error ?? null,
      model: summary?.model ?? null,
      usage: summary?.usage ?? null
    };
    for (const status of Object.keys(normalized.counts)) {
      this._statuses.add(status);
    }
    for (const total of normalized.usage?.by_caller ?? []) {
      this._callers.add(total.name);
    }
    for (const total of normalized.usage?.by_provider ?? []) {
      this._providers.add(total.name);
    }
    if (JSON.stringify(normalized) === JSON.stringify(this._summary)) {
      return;
    }
    this._summary = normalized;
    this._summaryChanged.emit(normalized);
  }

  /**
   * Replace the list with a server answer. `mark` is the mutation counter
   * when the request left: jobs the stream changed since then are newer than
   * the answer and are kept.
   */
  private _setJobs(jobs: IJobView[], total: number, mark: number): void {
    const current = new Map(this._jobs.map(job => [job.id, job]));
    const fresh = (id: string): IJobView | undefined => {
      const touched = this._touched.get(id);
      return touched && touched.seq > mark ? touched.job : undefined;
    };
    const merged: IJobView[] = [];
    for (const job of jobs) {
      let pick = job;
      const existing = current.get(job.id);
      if (existing && isNewer(existing, job)) {
        pick = existing;
      }
      const streamed = fresh(job.id);
      if (streamed && !isNewer(job, streamed)) {
        pick = streamed;
      }
      if (this._matches(pick)) {
        merged.push(pick);
      } else {
        total = Math.max(0, total - 1);
      }
    }
    const answered = new Set(jobs.map(job => job.id));
    for (const job of this._jobs) {
      if (!answered.has(job.id) && fresh(job.id) && this._matches(job)) {
        merged.push(job);
        total += 1;
      }
    }
    for (const [id, touched] of this._touched) {
      if (touched.seq <= mark) {
        this._touched.delete(id);
      }
    }
    for (const job of merged) {
      this._noteJob(job);
    }
    const sorted = sortJobs(merged);
    this._totalJobs = total;
    if (sameJobs(sorted, this._jobs)) {
      return;
    }
    this._jobs = sorted;
    this._jobsChanged.emit(this._jobs);
  }

  private _setApprovals(approvals: IApproval[]): void {
    const pending = approvals.filter(a => !a.status || a.status === 'pending');
    const arrived = pending.filter(a => !this._seenApprovals.has(a.id));
    for (const approval of pending) {
      this._seenApprovals.add(approval.id);
    }
    const changed = JSON.stringify(pending) !== JSON.stringify(this._approvals);
    this._approvals = pending;
    if (changed) {
      this._approvalsChanged.emit(this._approvals);
    }
    if (this._approvalsLoaded && arrived.length > 0) {
      this._approvalsArrived.emit(arrived);
    }
    this._approvalsLoaded = true;
  }

  private _upsertJob(job: IJobView): void {
    this._noteJob(job);
    this._jobChanged.emit(job);
    this._touched.set(job.id, { seq: ++this._mutations, job });
    if (this._watched.has(job.id)) {
      const known = this._watchedJobs.get(job.id);
      if (!known || !isNewer(known, job)) {
        this._watchedJobs.set(job.id, job);
      }
    }
    if (this._pinned.has(job.id)) {
      const known = this._pinnedJobs.get(job.id);
      if (!known || !isNewer(known, job)) {
        this._pinnedJobs.set(job.id, job);
      }
    }
    const index = this._jobs.findIndex(j => j.id === job.id);
    if (index >= 0 && isNewer(this._jobs[index], job)) {
      return;
    }
    let next: IJobView[];
    if (this._matches(job)) {
      next =
        index >= 0
          ? this._jobs.map((j, i) => (i === index ? job : j))
          : sortJobs([job, ...this._jobs]).slice(0, this._jobLimit);
      if (index < 0) {
        this._totalJobs += 1;
      }
    } else if (index >= 0) {
      next = this._jobs.filter((_, i) => i !== index);
      this._totalJobs = Math.max(0, this._totalJobs - 1);
    } else {
      if (this._watched.has(job.id) || this._pinned.has(job.id)) {
        // Not in the list but followed: still tell the views.
        this._jobsChanged.emit(this._jobs);
      }
      return;
    }
    this._jobs = next;
    this._jobsChanged.emit(this._jobs);
  }

  private _noteJob(job: IJobView): void {
    if (job.status) {
      this._knownStatus.set(job.id, job.status);
    }
    if (job.caller) {
      this._callers.add(job.caller);
    }
    if (job.provider) {
      this._providers.add(job.provider);
    }
    if (job.status) {
      this._statuses.add(job.status);
    }
  }

  private _matches(job: IJobView): boolean {
    const { status, caller, provider } = this._filter;
    return (
      (!status || job.status === status) &&
      (!caller || job.caller === caller) &&
      (!provider || job.provider === provider)
    );
  }

  private _sameFilter(filter: IJobFilter): boolean {
    return (
      (filter.status || undefined) === (this._filter.status || undefined) &&
      (filter.caller || undefined) === (this._filter.caller || undefined) &&
      (filter.provider || undefined) === (this._filter.provider || undefined)
    );
  }

  /** Move one job between status counts right away (the live status bar). */
  private _moveCount(from: string, to: string): void {
    if (!this._summary) {
      return;
    }
    const counts = { ...this._summary.counts };
    if ((counts[from] ?? 0) > 0) {
      counts[from] -= 1;
      if (counts[from] === 0) {
        delete counts[from];
      }
    }
    counts[to] = (counts[to] ?? 0) + 1;
    this._summary = { ...this._summary, counts };
    this._summaryChanged.emit(this._summary);
  }

  private _setConnection(state: ConnectionState): void {
    if (state === this._connection) {
      return;
    }
    this._connection = state;
    this._connectionChanged.emit(state);
  }

  private _frequency(): IPollFrequency {
    const base = this._pollInterval * 1000;
    const interval = this._streamConnected
      ? Math.max(base, this._streamSafetyInterval * 1000)
      : base;
    return {
      interval,
      backoff: true,
      max: Math.max(interval * 6, 30 * 1000)
    };
  }

  private _updateFrequency(): void {
    if (!this._poll.isDisposed) {
      this._poll.frequency = this._frequency();
    }
  }

  private _setStreamConnected(connected: boolean): void {
    if (connected === this._streamConnected) {
      return;
    }
    this._streamConnected = connected;
    this._updateFrequency();
    if (connected) {
      if (this._connection !== 'unreachable') {
        this._setConnection('streaming');
      }
    } else if (this._connection === 'streaming') {
      this._setConnection('polling');
    }
  }

  private _handleStreamEvent(message: EventSourceMessage): void {
    let payload: any;
    try {
      payload = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!payload || typeof payload !== 'object') {
      return;
    }
    if (message.event === 'resync') {
      // The server's stream fell behind and lost changes: reload the list,
      // the counts and the events of watched jobs (refresh catches those up).
      void this._poll.refresh();
      return;
    }
    if (message.event === 'job') {
      const job = payload as IJobView;
      if (!job.id) {
        return;
      }
      this._streamJobId = job.id;
      const before = this._knownStatus.get(job.id);
      this._upsertJob(job);
      if (before !== job.status) {
        if (before !== undefined) {
          this._moveCount(before, job.status);
        }
        // The server's counts (and approvals) follow shortly.
        this._sideRefresh.invoke().catch(() => undefined);
      }
      if (
        this._watched.has(job.id) &&
        (job.last_seq ?? 0) > this._lastSeq(job.id) &&
        isTerminal(job.status)
      ) {
        // Make sure the tail of a finished job's events is there.
        void this.fetchEvents(job.id).catch(() => undefined);
      }
    } else if (message.event === 'event') {
      const event = payload as IStreamJobEvent;
      // The stream writes a job's events right after the job itself, so an
      // event without job_id belongs to the job of the last `job` message.
      const jobId = event.job_id || this._streamJobId;
      if (
        !jobId ||
        !this._watched.has(jobId) ||
        typeof event.seq !== 'number'
      ) {
        return;
      }
      const last = this._lastSeq(jobId);
      if (event.seq <= last) {
        return;
      }
      if (event.seq > last + 1) {
        // A gap: fetch what was missed (includes this event).
        void this.fetchEvents(jobId).catch(() => undefined);
        return;
      }
      this._appendEvents(jobId, [{ ...event, job_id: jobId }]);
    }
  }

  private async _runStream(): Promise<void> {
    let failures = 0;
    let retry = this._streamRetry;
    while (!this._isDisposed) {
      const controller = new AbortController();
      this._streamAbort = controller;
      let opened = false;
      try {
        const response = await ServerConnection.makeRequest(
          apiUrl(this._serverSettings, 'stream'),
          {
            method: 'GET',
            headers: { Accept: 'text/event-stream' },
            signal: controller.signal
          },
          this._serverSettings
        );
        if (!response.ok || !response.body) {
          try {
            await response.body?.cancel();
          } catch {
            // ignore
          }
          throw new GatewayRequestError(
            `event stream answered ${response.status}`,
            response.status
          );
        }
        opened = true;
        failures = 0;
        this._setStreamConnected(true);
        // Catch up on anything missed while disconnected.
        if (this._started && !this._poll.isDisposed) {
          void this._poll.refresh();
        }
        await readEventStream(response.body, {
          onEvent: message => this._handleStreamEvent(message),
          onRetry: ms => {
            retry = Math.max(100, ms);
          }
        });
      } catch {
        // Reconnect below.
      }
      this._streamAbort = null;
      if (this._isDisposed) {
        return;
      }
      this._setStreamConnected(false);
      if (!opened) {
        failures += 1;
      }
      const delay = Math.min(
        this._streamMaxRetry,
        retry * Math.pow(2, Math.max(0, failures - 1))
      );
      await new Promise<void>(resolve => {
        const timer = setTimeout(() => {
          this._wakeStream = null;
          resolve();
        }, delay);
        this._wakeStream = () => {
          clearTimeout(timer);
          this._wakeStream = null;
          resolve();
        };
      });
    }
  }

  private _serverSettings: ServerConnection.ISettings;
  private _pollInterval: number;
  private _useStream: boolean;
  private _jobLimit: number;
  private _streamSafetyInterval: number;
  private _streamRetry: number;
  private _streamMaxRetry: number;
  private _poll: Poll;
  private _sideRefresh: Debouncer<void, any>;
  private _started = false;
  private _firstRefresh = new PromiseDelegate<void>();
  private _isDisposed = false;
  private _streamConnected = false;
  private _streamAbort: AbortController | null = null;
  private _wakeStream: (() => void) | null = null;
  private _streamJobId = '';

  private _jobs: IJobView[] = [];
  private _mutations = 0;
  private _touched = new Map<string, { seq: number; job: IJobView }>();
  private _totalJobs = 0;
  private _summary: ISummary | null = null;
  private _approvals: IApproval[] = [];
  private _approvalsLoaded = false;
  private _seenApprovals = new Set<string>();
  private _connection: ConnectionState = 'connecting';
  private _lastError = '';
  private _filter: IJobFilter = {};
  private _callers = new Set<string>(['owner']);
  private _providers = new Set<string>();
  private _knownStatus = new Map<string, string>();
  private _statuses = new Set<string>();
  private _watched = new Map<string, number>();
  private _decisions = new Map<string, Promise<IApproval | null>>();
  private _watchedJobs = new Map<string, IJobView>();
  private _pinned = new Map<string, number>();
  private _pinnedJobs = new Map<string, IJobView>();
  private _events = new Map<string, IJobEvent[]>();
  private _eventFetches = new Map<string, Promise<void>>();
  private _eventFetchAgain = new Set<string>();

  private _jobsChanged = new Signal<this, readonly IJobView[]>(this);
  private _summaryChanged = new Signal<this, ISummary | null>(this);
  private _approvalsChanged = new Signal<this, readonly IApproval[]>(this);
  private _approvalsArrived = new Signal<this, readonly IApproval[]>(this);
  private _connectionChanged = new Signal<this, ConnectionState>(this);
  private _jobEventsChanged = new Signal<this, IJobEventsChange>(this);
  private _filterChanged = new Signal<this, IJobFilter>(this);
  private _jobChanged = new Signal<this, IJobView>(this);
}

type IPollFrequency = {
  interval: number;
  backoff: boolean | number;
  max: number;
};

/** Namespace for GatewayModel statics. */
export namespace GatewayModel {
  /** Construction options. */
  export interface IOptions {
    /** Server settings (defaults to `ServerConnection.makeSettings()`). */
    serverSettings?: ServerConnection.ISettings;
    /** Fallback poll interval in seconds (default 5). */
    pollInterval?: number;
    /** Open the SSE stream (default true). */
    useStream?: boolean;
    /** Maximum number of jobs listed (default 100). */
    jobLimit?: number;
    /** Poll interval in seconds while the stream is open (default 30). */
    streamSafetyInterval?: number;
    /** First reconnection delay of the stream in ms (default 1000). */
    streamRetry?: number;
    /** Largest reconnection delay of the stream in ms (default 30000). */
    streamMaxRetry?: number;
    /** Debounce of summary/approval refreshes after stream events, ms. */
    debounce?: number;
    /** Poll standby policy (default 'when-hidden'). */
    standby?: Poll.Standby | (() => boolean | Poll.Standby);
  }
}

/** Sort jobs newest first (created_at, then id). */
export function sortJobs(jobs: IJobView[]): IJobView[] {
  return [...jobs].sort((a, b) => {
    const ta = Date.parse(a.created_at ?? '') || 0;
    const tb = Date.parse(b.created_at ?? '') || 0;
    if (ta !== tb) {
      return tb - ta;
    }
    return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
  });
}

/** Whether `a` is a strictly newer view of the same job than `b`. */
function isNewer(a: IJobView, b: IJobView): boolean {
  const ta = Date.parse(a.updated_at ?? '') || 0;
  const tb = Date.parse(b.updated_at ?? '') || 0;
  if (ta !== tb) {
    return ta > tb;
  }
  return (a.last_seq ?? 0) > (b.last_seq ?? 0);
}

function sameJobs(a: readonly IJobView[], b: readonly IJobView[]): boolean {
  if (a.length !== b.length) {
    return false;
  }
  return a.every((job, i) => JSON.stringify(job) === JSON.stringify(b[i]));
}

/**
 * Arguments of a re-run: the job's arguments that its provider's
 * `_request_async` accepts (codex_request_async, claude_request_async), with
 * the new prompt. Null values are dropped (the tool fills its
 * defaults); so is the idempotency key (it would return the old job) and a
 * fork's session id (that is the parent session: a re-run starts anew).
 */
export function rerunArguments(
  job: IJobView,
  prompt: string
): { [key: string]: any } {
  const args: { [key: string]: any } = {};
  for (const key of requestArgumentsOf(job.provider || 'codex')) {
    const value = job.args?.[key];
    if (value !== null && value !== undefined) {
      args[key] = value;
    }
  }
  if (job.kind === 'fork') {
    delete args.session_id;
  }
  args.prompt = prompt;
  return args;
}
