/**
 * An in-memory stand-in for the gateway's REST API and event stream, served
 * through the `fetch` of ServerConnection settings.
 */
import { ServerConnection } from '@jupyterlab/services';

import {
  IApproval,
  IJobEvent,
  IJobView,
  ISummary,
  IUsageTotal,
  IUsageTotals
} from '../api';

export const BASE_URL = 'http://localhost:8888/lab-base/';

export interface IRecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: any;
  headers: Headers;
}

export function makeJob(id: string, partial: Partial<IJobView> = {}): IJobView {
  return {
    id,
    provider: 'codex',
    tool: 'codex_request_async',
    kind: 'exec',
    caller: 'owner',
    status: 'queued',
    args: { prompt: `prompt of ${id}`, model: null, sandbox: 'read-only' },
    omitted_args: [],
    argv: null,
    working_dir: null,
    idempotency_key: null,
    prompt_preview: `prompt of ${id}`,
    created_at: '2025-01-01T00:00:00Z',
    queued_at: null,
    started_at: null,
    finished_at: null,
    updated_at: '2025-01-01T00:00:00Z',
    exit_code: null,
    pid: null,
    session_id: null,
    parent_session_id: null,
    usage: {
      input_tokens: null,
      cached_input_tokens: null,
      output_tokens: null,
      reasoning_output_tokens: null,
      cost_usd: null
    },
    final_message: null,
    error: null,
    cancel_reason: null,
    last_seq: 0,
    stdout_bytes: 0,
    stderr_bytes: 0,
    ...partial
  };
}

export function makeEvent(
  seq: number,
  type = 'item.completed',
  jobId = 'j1'
): IJobEvent {
  return {
    job_id: jobId,
    seq,
    ts: '2025-01-01T00:00:01Z',
    type,
    summary: `event ${seq}`,
    data: {}
  };
}

/** What the server's summary totals: the jobs' usage per caller and per provider. */
export function usageTotals(jobs: readonly IJobView[]): IUsageTotals {
  const fold = (key: 'caller' | 'provider'): IUsageTotal[] => {
    const totals = new Map<string, IUsageTotal>();
    for (const job of jobs) {
      const name = job[key];
      const total = totals.get(name) ?? {
        name,
        jobs: 0,
        input_tokens: 0,
        cached_input_tokens: 0,
        output_tokens: 0,
        reasoning_output_tokens: 0,
        cost_usd: null,
        priced_jobs: 0
      };
      total.jobs += 1;
      total.input_tokens += job.usage.input_tokens ?? 0;
      total.cached_input_tokens += job.usage.cached_input_tokens ?? 0;
      total.output_tokens += job.usage.output_tokens ?? 0;
      total.reasoning_output_tokens += job.usage.reasoning_output_tokens ?? 0;
      if (job.usage.cost_usd !== null && job.usage.cost_usd !== undefined) {
        total.cost_usd = (total.cost_usd ?? 0) + job.usage.cost_usd;
        total.priced_jobs += 1;
      }
      totals.set(name, total);
    }
    return [...totals.keys()].sort().map(name => totals.get(name)!);
  };
  return { by_caller: fold('caller'), by_provider: fold('provider') };
}

function json(data: any, status = 200): Response {
  return new Response(JSON.stringify(data), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });
}

export class FakeGateway {
  jobs: IJobView[] = [];
  approvals: IApproval[] = [];
  events = new Map<string, IJobEvent[]>();
  counts: { [status: string]: number } | null = null;
  /** The summary's policy_error: a broken owner policy file. */
  policyError: string | null = null;
  requests: IRecordedRequest[] = [];
  /** When set, every request fails like a dead network. */
  down = false;
  /** Status answered by `GET stream` (200 opens a stream). */
  streamStatus = 200;
  /** Page size of the events endpoint. */
  eventsPage = 200;
  /** Answers of `POST tools/{tool}`. */
  toolAnswer: (tool: string, body: any) => Response = tool =>
    json({
      is_error: false,
      text: 'ok',
      structured: { job_id: `new-${tool}` }
    });

  private _streams: ReadableStreamDefaultController<Uint8Array>[] = [];
  private _encoder = new TextEncoder();
  private _streamOpened: (() => void)[] = [];

  settings(): ServerConnection.ISettings {
    return ServerConnection.makeSettings({
      baseUrl: BASE_URL,
      token: 'secret-token',
      fetch: (input: RequestInfo | URL, init?: RequestInit) =>
        this.fetch(input, init)
    });
  }

  /** Number of open streams. */
  get openStreams(): number {
    return this._streams.length;
  }

  /** Resolves when a stream is (or is already) open. */
  streamOpen(): Promise<void> {
    if (this._streams.length > 0) {
      return Promise.resolve();
    }
    return new Promise(resolve => this._streamOpened.push(resolve));
  }

  /** Send one SSE message to every open stream. */
  push(event: string, data: any): void {
    const text = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const controller of this._streams) {
      controller.enqueue(this._encoder.encode(text));
    }
  }

  /** Send raw text to every open stream. */
  pushRaw(text: string): void {
    for (const controller of this._streams) {
      controller.enqueue(this._encoder.encode(text));
    }
  }

  /** Close every open stream (server restart). */
  closeStreams(): void {
    for (const controller of this._streams.splice(0)) {
      try {
        controller.close();
      } catch {
        // already closed
      }
    }
  }

  requestsTo(method: string, path: string): IRecordedRequest[] {
    return this.requests.filter(r => r.method === method && r.path === path);
  }

  summary(): ISummary {
    const counts: { [status: string]: number } = {};
    if (this.counts) {
      Object.assign(counts, this.counts);
    } else {
      for (const job of this.jobs) {
        counts[job.status] = (counts[job.status] ?? 0) + 1;
      }
    }
    return {
      counts,
      pending_approvals: this.approvals.filter(a => a.status === 'pending')
        .length,
      mcp_url: 'http://localhost:8888/lab-base/llmgw/mcp',
      policy_error: this.policyError,
      model: null,
      usage: usageTotals(this.jobs)
    };
  }

  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const request =
      input instanceof Request ? input : new Request(String(input), init);
    const url = new URL(request.url);
    const prefix = new URL(BASE_URL).pathname + 'llmgw/api/';
    const text = request.method === 'GET' ? '' : await request.text();
    let body: any = null;
    if (text) {
      body = JSON.parse(text);
    }
    const path = url.pathname.startsWith(prefix)
      ? url.pathname.slice(prefix.length)
      : url.pathname;
    this.requests.push({
      method: request.method,
      path,
      query: url.searchParams,
      body,
      headers: request.headers
    });
    if (this.down) {
      throw new TypeError('Failed to fetch');
    }
    return this._route(request, path, url.searchParams, body);
  }

  private _route(
    request: Request,
    path: string,
    query: URLSearchParams,
    body: any
  ): Response {
    const method = request.method;
    if (method === 'GET' && path === 'summary') {
      return json(this.summary());
    }
    if (method === 'GET' && path === 'jobs') {
      let jobs = [...this.jobs];
      const status = query.get('status');
      const caller = query.get('caller');
      const provider = query.get('provider');
      if (status) {
        jobs = jobs.filter(j => j.status === status);
      }
      if (caller) {
        jobs = jobs.filter(j => j.caller === caller);
      }
      if (provider) {
        jobs = jobs.filter(j => j.provider === provider);
      }
      // Oldest first on purpose: the model must sort.
      jobs.sort((a, b) =>
        (a.created_at ?? '').localeCompare(b.created_at ?? '')
      );
      const limit = Number(query.get('limit') ?? 50);
      return json({ jobs: jobs.slice(0, limit), total: jobs.length });
    }
    if (method === 'GET' && path === 'approvals') {
      const status = query.get('status') ?? 'pending';
      return json({
        approvals: this.approvals.filter(
          a => status === 'all' || a.status === status
        )
      });
    }
    if (method === 'GET' && path === 'stream') {
      if (this.streamStatus !== 200) {
        return json(
          { error: { category: 'not_found', message: 'no stream' } },
          this.streamStatus
        );
      }
      let ctrl: ReadableStreamDefaultController<Uint8Array>;
      const stream = new ReadableStream<Uint8Array>({
        start: controller => {
          ctrl = controller;
          this._streams.push(controller);
        },
        cancel: () => {
          this._streams = this._streams.filter(c => c !== ctrl);
        }
      });
      request.signal?.addEventListener('abort', () => {
        this._streams = this._streams.filter(c => c !== ctrl);
        try {
          ctrl.error(new DOMException('aborted', 'AbortError'));
        } catch {
          // closed
        }
      });
      queueMicrotask(() => {
        for (const resolve of this._streamOpened.splice(0)) {
          resolve();
        }
      });
      return new Response(stream, {
        status: 200,
        headers: { 'Content-Type': 'text/event-stream' }
      });
    }
    let m = /^jobs\/([^/]+)\/events$/.exec(path);
    if (method === 'GET' && m) {
      const id = decodeURIComponent(m[1]);
      const job = this.jobs.find(j => j.id === id);
      if (!job) {
        return json(
          { error: { category: 'not_found', message: 'no job' } },
          404
        );
      }
      const after = Number(query.get('after') ?? 0);
      const events = (this.events.get(id) ?? [])
        .filter(e => e.seq > after)
        .slice(0, this.eventsPage);
      return json({ events, job });
    }
    m = /^jobs\/([^/]+)$/.exec(path);
    if (method === 'GET' && m) {
      const id = decodeURIComponent(m[1]);
      const job = this.jobs.find(j => j.id === id);
      return job
        ? json(job)
        : json({ error: { category: 'not_found', message: 'no job' } }, 404);
    }
    m = /^jobs\/([^/]+)\/cancel$/.exec(path);
    if (method === 'POST' && m) {
      const id = decodeURIComponent(m[1]);
      const job = this.jobs.find(j => j.id === id);
      if (!job) {
        return json(
          { error: { category: 'not_found', message: 'no job' } },
          404
        );
      }
      job.status = 'cancelled';
      job.updated_at = '2025-01-01T00:10:00Z';
      return json(job);
    }
    m = /^approvals\/([^/]+)\/(approve|deny)$/.exec(path);
    if (method === 'POST' && m) {
      const approval = this.approvals.find(a => a.id === m![1]);
      if (!approval) {
        return json(
          { error: { category: 'not_found', message: 'no approval' } },
          404
        );
      }
      approval.status = m[2] === 'approve' ? 'approved' : 'denied';
      return json(approval);
    }
    m = /^tools\/([^/]+)$/.exec(path);
    if (method === 'POST' && m) {
      return this.toolAnswer(m[1], body);
    }
    return json({ error: { category: 'not_found', message: path } }, 404);
  }
}
