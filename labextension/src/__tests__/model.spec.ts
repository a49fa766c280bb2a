import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { IApproval, IJobEvent, IJobView } from '../api';
import { ConnectionState, GatewayModel, rerunArguments } from '../model';
import { FakeGateway, makeEvent, makeJob } from './fakegateway';

/** Wait until `predicate` holds (polling the event loop). */
async function until(
  predicate: () => boolean,
  timeout = 3000,
  what = 'condition'
): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeout) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise(resolve => setTimeout(resolve, 5));
  }
}

function approval(id: string, partial: Partial<IApproval> = {}): IApproval {
  return {
    id,
    caller: 'grant:ci',
    tool: 'codex_request_async',
    arguments: { prompt: 'rm -rf?', sandbox: 'workspace-write' },
    job_id: null,
    created_at: '2025-01-01T00:00:00Z',
    expires_at: '2025-01-01T01:00:00Z',
    status: 'pending',
    decided_by: null,
    decided_at: null,
    reason: null,
    ...partial
  };
}

describe('GatewayModel', () => {
  let gateway: FakeGateway;
  let model: GatewayModel;

  beforeEach(() => {
    gateway = new FakeGateway();
  });

  afterEach(() => {
    model?.dispose();
  });

  function create(options: Partial<GatewayModel.IOptions> = {}): GatewayModel {
    model = new GatewayModel({
      serverSettings: gateway.settings(),
      pollInterval: 60,
      useStream: false,
      standby: 'never',
      debounce: 1,
      streamRetry: 10,
      ...options
    });
    return model;
  }

  describe('refresh', () => {
    it('loads summary, jobs newest first and pending approvals', async () => {
      gateway.jobs = [
        makeJob('old', {
          created_at: '2025-01-01T00:00:00Z',
          status: 'succeeded'
        }),
        makeJob('new', {
          created_at: '2025-01-01T00:05:00Z',
          status: 'running'
        }),
        makeJob('mid', {
          created_at: '2025-01-01T00:02:00Z',
          caller: 'grant:ci'
        })
      ];
      gateway.approvals = [approval('a1')];
      create();
      const seen: string[] = [];
      model.jobsChanged.connect(() => seen.push('jobs'));
      model.summaryChanged.connect(() => seen.push('summary'));
      model.approvalsChanged.connect(() => seen.push('approvals'));
      const states: ConnectionState[] = [];
      model.connectionChanged.connect((_, s) => states.push(s));

      await model.refresh();

      expect(model.jobs.map(j => j.id)).toEqual(['new', 'mid', 'old']);
      expect(model.totalJobs).toBe(3);
      expect(model.summary?.counts).toEqual({
        succeeded: 1,
        running: 1,
        queued: 1
      });
      expect(model.summary?.pending_approvals).toBe(1);
      expect(model.approvals.map(a => a.id)).toEqual(['a1']);
      expect(seen.sort()).toEqual(['approvals', 'jobs', 'summary']);
      expect(states).toEqual(['polling']);
      expect(model.callers).toEqual(['grant:ci', 'owner']);
    });

    it('keeps the reason a broken owner policy gives', async () => {
      gateway.policyError = 'owner-policy.json did not load';
      create();
      await model.refresh();
      expect(model.summary?.policy_error).toBe(
        'owner-policy.json did not load'
      );
      gateway.policyError = null;
      await model.refresh();
      expect(model.summary?.policy_error).toBeNull();
    });

    it('goes through ServerConnection (base URL, token, query)', async () => {
      create();
      await model.refresh();
      const jobs = gateway.requestsTo('GET', 'jobs');
      expect(jobs).toHaveLength(1);
      expect(jobs[0].query.get('limit')).toBe('100');
      expect(jobs[0].headers.get('Authorization')).toBe('token secret-token');
      expect(
        gateway.requestsTo('GET', 'approvals')[0].query.get('status')
      ).toBe('pending');
      expect(gateway.requestsTo('GET', 'summary')).toHaveLength(1);
    });

    it('does not emit when nothing changed', async () => {
      gateway.jobs = [makeJob('a')];
      create();
      await model.refresh();
      let emitted = 0;
      model.jobsChanged.connect(() => emitted++);
      model.summaryChanged.connect(() => emitted++);
      model.approvalsChanged.connect(() => emitted++);
      await model.refresh();
      expect(emitted).toBe(0);
    });

    it('reports an unreachable gateway and recovers', async () => {
      gateway.down = true;
      create();
      await expect(model.refresh()).rejects.toThrow(/unreachable/i);
      expect(model.connection).toBe('unreachable');
      expect(model.lastError).toMatch(/Failed to fetch/);
      gateway.down = false;
      await model.refresh();
      expect(model.connection).toBe('polling');
      expect(model.lastError).toBe('');
    });

    it('surfaces the gateway error message', async () => {
      create();
      gateway.toolAnswer = () =>
        new Response(
          JSON.stringify({
            error: {
              category: 'invalid_input',
              message: 'prompt is empty',
              field: 'prompt'
            }
          }),
          { status: 400 }
        );
      await expect(
        model.callTool('codex_request_async', {})
      ).rejects.toMatchObject({
        message: 'prompt is empty',
        status: 400,
        category: 'invalid_input',
        field: 'prompt'
      });
    });
  });

  describe('polling', () => {
    it('polls with the configured interval and backs off on failure', async () => {
      gateway.down = true;
      create({ pollInterval: 0.2 });
      const rejected: number[] = [];
      model.poll.ticked.connect((_, state) => {
        if (state.phase === 'rejected') {
          rejected.push(state.interval);
        }
      });
      await model.start();
      expect(model.connection).toBe('unreachable');
      expect(model.poll.frequency.interval).toBe(200);
      expect(model.poll.frequency.backoff).toBe(true);
      await until(
        () => model.poll.state.phase === 'rejected',
        2000,
        'rejected'
      );
      // Backoff: failed attempts get spaced out beyond the base interval.
      await until(() => rejected.some(i => i > 400), 5000, 'backoff');

      gateway.down = false;
      gateway.jobs = [makeJob('x')];
      await model.refreshNow();
      expect(model.connection).toBe('polling');
      expect(model.jobs.map(j => j.id)).toEqual(['x']);
    });

    it('picks up changes on the next tick', async () => {
      create({ pollInterval: 0.2 });
      await model.start();
      expect(model.jobs).toHaveLength(0);
      gateway.jobs = [makeJob('later', { status: 'running' })];
      await until(() => model.jobs.length === 1, 3000, 'poll tick');
      expect(model.summary?.counts.running).toBe(1);
    });

    it('applies a new poll interval', () => {
      create({ pollInterval: 5 });
      model.pollInterval = 2;
      expect(model.poll.frequency.interval).toBe(2000);
      expect(model.poll.frequency.max).toBeGreaterThanOrEqual(2000);
    });

    it('uses standby when-hidden by default', () => {
      model = new GatewayModel({ serverSettings: gateway.settings() });
      expect(model.poll.standby).toBe('when-hidden');
    });
  });

  describe('filters', () => {
    it('sends state and caller filters to the server', async () => {
      gateway.jobs = [
        makeJob('a', { status: 'running', caller: 'owner' }),
        makeJob('b', { status: 'running', caller: 'grant:ci' }),
        makeJob('c', { status: 'queued', caller: 'grant:ci' })
      ];
      create();
      await model.refresh();
      const filters: unknown[] = [];
      model.filterChanged.connect((_, f) => filters.push(f));
      model.setFilter({ status: 'running', caller: 'grant:ci' });
      await until(() => model.jobs.length === 1, 2000, 'filtered list');
      expect(model.jobs[0].id).toBe('b');
      const last = gateway.requestsTo('GET', 'jobs').pop()!;
      expect(last.query.get('status')).toBe('running');
      expect(last.query.get('caller')).toBe('grant:ci');
      expect(filters).toEqual([{ status: 'running', caller: 'grant:ci' }]);

      model.setFilter({ status: '', caller: '' });
      await until(() => model.jobs.length === 3, 2000, 'unfiltered list');
    });

    it('filters by provider, with the state filter, on the server', async () => {
      gateway.jobs = [
        makeJob('a', { provider: 'codex', status: 'running' }),
        makeJob('b', { provider: 'claude', status: 'running' }),
        makeJob('c', { provider: 'claude', status: 'queued' })
      ];
      create();
      await model.refresh();
      expect(model.providers).toEqual(['claude', 'codex']);
      model.setFilter({ provider: 'claude' });
      await until(() => model.jobs.length === 2, 2000, 'claude jobs');
      expect(model.jobs.map(job => job.provider)).toEqual(['claude', 'claude']);
      let last = gateway.requestsTo('GET', 'jobs').pop()!;
      expect(last.query.get('provider')).toBe('claude');

      model.setFilter({ ...model.filter, status: 'running' });
      await until(() => model.jobs.length === 1, 2000, 'running claude job');
      expect(model.jobs[0].id).toBe('b');
      expect(model.filter).toEqual({
        status: 'running',
        caller: undefined,
        provider: 'claude'
      });
      last = gateway.requestsTo('GET', 'jobs').pop()!;
      expect(last.query.get('provider')).toBe('claude');
      expect(last.query.get('status')).toBe('running');

      // Every refresh keeps asking for the filtered list.
      await model.refresh();
      expect(
        gateway.requestsTo('GET', 'jobs').pop()!.query.get('provider')
      ).toBe('claude');
      model.setFilter({ status: '', provider: '' });
      await until(() => model.jobs.length === 3, 2000, 'every job');
      expect(
        gateway.requestsTo('GET', 'jobs').pop()!.query.has('provider')
      ).toBe(false);
    });
  });

  describe('usage totals', () => {
    const used = (
      input: number,
      output: number,
      cost: number | null = null
    ): IJobView['usage'] => ({
      input_tokens: input,
      cached_input_tokens: 0,
      output_tokens: output,
      reasoning_output_tokens: 0,
      cost_usd: cost
    });

    it('keeps the totals of the summary and learns callers and providers from them', async () => {
      gateway.jobs = [
        makeJob('a', { provider: 'codex', usage: used(100, 10) }),
        makeJob('b', {
          provider: 'claude',
          caller: 'grant:ci',
          usage: used(20, 5, 0.25)
        })
      ];
      create();
      const changes: unknown[] = [];
      model.summaryChanged.connect((_, summary) =>
        changes.push(summary?.usage)
      );
      // A filtered list does not show grant:ci's Claude job; the totals still name them.
      model.setFilter({ caller: 'owner' });
      await model.refresh();
      expect(model.jobs.map(job => job.id)).toEqual(['a']);
      expect(model.usage?.by_provider.map(t => [t.name, t.jobs])).toEqual([
        ['claude', 1],
        ['codex', 1]
      ]);
      expect(
        model.usage?.by_caller.find(t => t.name === 'grant:ci')
      ).toMatchObject({
        input_tokens: 20,
        output_tokens: 5,
        cost_usd: 0.25,
        priced_jobs: 1
      });
      expect(model.providers).toEqual(['claude', 'codex']);
      expect(model.callers).toEqual(['grant:ci', 'owner']);

      // New usage on the server: the next summary replaces the totals, once.
      gateway.jobs[0].usage = used(150, 20);
      await model.refresh();
      await model.refresh();
      expect(changes).toHaveLength(2);
      expect(
        model.usage?.by_provider.find(t => t.name === 'codex')?.input_tokens
      ).toBe(150);
    });

    it('reads an older server without totals as none', async () => {
      create();
      const summary = gateway.summary();
      gateway.summary = () => ({ ...summary, usage: undefined as any });
      await model.refresh();
      expect(model.summary).not.toBeNull();
      expect(model.usage).toBeNull();
    });
  });

  describe('approvals', () => {
    it('announces approvals that arrive after the first load', async () => {
      gateway.approvals = [approval('a1')];
      create();
      const arrived: string[][] = [];
      model.approvalsArrived.connect((_, list) =>
        arrived.push(list.map(a => a.id))
      );
      await model.refresh();
      expect(arrived).toEqual([]);
      gateway.approvals.push(approval('a2'));
      await model.refresh();
      expect(arrived).toEqual([['a2']]);
      await model.refresh();
      expect(arrived).toEqual([['a2']]);
    });

    it('approves and denies', async () => {
      gateway.approvals = [approval('a1'), approval('a2')];
      create();
      await model.refresh();
      await model.approve('a1');
      expect(gateway.requestsTo('POST', 'approvals/a1/approve')).toHaveLength(
        1
      );
      expect(model.approvals.map(a => a.id)).toEqual(['a2']);
      await model.deny('a2');
      expect(gateway.requestsTo('POST', 'approvals/a2/deny')).toHaveLength(1);
      expect(model.approvals).toEqual([]);
      await expect(model.approve('zzz')).rejects.toThrow('no approval');
    });
  });

  describe('actions', () => {
    it('cancels a job', async () => {
      gateway.jobs = [makeJob('j1', { status: 'running' })];
      create();
      await model.refresh();
      const job = await model.cancelJob('j1');
      expect(job.status).toBe('cancelled');
      expect(gateway.requestsTo('POST', 'jobs/j1/cancel')).toHaveLength(1);
      expect(model.getJob('j1')?.status).toBe('cancelled');
    });

    it('forks a session', async () => {
      create();
      const result = await model.fork('sess-1', 'try again');
      expect(result.structured?.job_id).toBe('new-codex_fork_session');
      const [req] = gateway.requestsTo('POST', 'tools/codex_fork_session');
      expect(req.body).toEqual({ session_id: 'sess-1', prompt: 'try again' });
    });

    it('re-runs a job with its arguments and a new prompt', async () => {
      create();
      const job = makeJob('j1', {
        args: {
          prompt: 'old',
          sandbox: 'read-only',
          model: null,
          working_dir: '/w'
        }
      });
      await model.rerun(job, 'new prompt');
      const [req] = gateway.requestsTo('POST', 'tools/codex_request_async');
      expect(req.body).toEqual({
        prompt: 'new prompt',
        sandbox: 'read-only',
        working_dir: '/w'
      });
    });

    it("forks and re-runs a Claude job with Claude's tools and arguments", async () => {
      create();
      await model.fork(
        '4c1b0f7e-0000-4000-8000-000000000001',
        'again',
        'claude'
      );
      const [fork] = gateway.requestsTo('POST', 'tools/claude_fork_session');
      expect(fork.body).toEqual({
        session_id: '4c1b0f7e-0000-4000-8000-000000000001',
        prompt: 'again'
      });
      const job = makeJob('c1', {
        provider: 'claude',
        tool: 'claude_request',
        args: {
          prompt: 'old',
          permission_mode: 'plan',
          allowed_tools: ['Read'],
          max_turns: 3,
          sandbox: 'read-only',
          wait_seconds: 30,
          idempotency_key: 'k'
        }
      });
      await model.rerun(job, 'new');
      expect(
        gateway.requestsTo('POST', 'tools/codex_request_async')
      ).toHaveLength(0);
      const [rerun] = gateway.requestsTo('POST', 'tools/claude_request_async');
      expect(rerun.body).toEqual({
        prompt: 'new',
        permission_mode: 'plan',
        allowed_tools: ['Read'],
        max_turns: 3
      });
      const other = makeJob('f1', {
        provider: 'fake',
        args: { prompt: 'x', model: 'm', delay: 3, working_dir: '/w' }
      });
      expect(rerunArguments(other, 'y')).toEqual({
        prompt: 'y',
        model: 'm',
        working_dir: '/w'
      });
    });

    it('rejects tool answers flagged is_error', async () => {
      create();
      gateway.toolAnswer = () =>
        new Response(
          JSON.stringify({ is_error: true, text: 'policy says no' }),
          {
            status: 200
          }
        );
      await expect(model.fork('s', 'p')).rejects.toThrow('policy says no');
    });

    it('re-runs only with arguments codex_request_async accepts', () => {
      const job = makeJob('r', {
        kind: 'resume',
        args: {
          prompt: 'x',
          session_id: 's1',
          idempotency_key: 'k1',
          wait_seconds: 45,
          add_dirs: ['/data'],
          model: null
        }
      });
      expect(rerunArguments(job, 'y')).toEqual({
        prompt: 'y',
        session_id: 's1',
        add_dirs: ['/data']
      });
      const fork = makeJob('f', {
        kind: 'fork',
        args: { prompt: 'x', session_id: 'parent', last: false }
      });
      expect(rerunArguments(fork, 'z')).toEqual({ prompt: 'z' });
    });
  });

  describe('job events', () => {
    it('loads events of a watched job page by page', async () => {
      gateway.jobs = [makeJob('j1', { status: 'running', last_seq: 5 })];
      gateway.events.set(
        'j1',
        [1, 2, 3, 4, 5].map(seq => makeEvent(seq))
      );
      gateway.eventsPage = 2;
      create();
      await model.refresh();
      const changes: number[] = [];
      model.jobEventsChanged.connect((_, c) => changes.push(c.events.length));
      await model.watchJob('j1');
      expect(model.eventsFor('j1').map(e => e.seq)).toEqual([1, 2, 3, 4, 5]);
      expect(changes).toEqual([2, 4, 5]);
      const afters = gateway
        .requestsTo('GET', 'jobs/j1/events')
        .map(r => r.query.get('after'));
      expect(afters).toEqual(['0', '2', '4']);
    });

    it('fetches new events of watched jobs when polling', async () => {
      gateway.jobs = [makeJob('j1', { status: 'running', last_seq: 1 })];
      gateway.events.set('j1', [makeEvent(1)]);
      create();
      await model.refresh();
      await model.watchJob('j1');
      gateway.events
        .get('j1')!
        .push(makeEvent(2), makeEvent(3, 'turn.completed'));
      gateway.jobs[0] = {
        ...gateway.jobs[0],
        status: 'succeeded',
        last_seq: 3,
        updated_at: '2025-01-01T00:01:00Z',
        final_message: '**done**'
      };
      await model.refresh();
      await until(() => model.eventsFor('j1').length === 3, 2000, 'events');
      expect(model.getJob('j1')?.final_message).toBe('**done**');
      model.unwatchJob('j1');
      expect(model.eventsFor('j1')).toEqual([]);
    });
  });

  describe('event stream', () => {
    it('streams job changes and events', async () => {
      gateway.jobs = [makeJob('j1', { status: 'queued' })];
      create({ useStream: true });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      await until(() => model.connection === 'streaming', 2000, 'streaming');
      expect(model.streamConnected).toBe(true);
      // With the stream open, polling slows down to the safety interval.
      expect(model.poll.frequency.interval).toBe(60000);

      const stream = gateway.requestsTo('GET', 'stream')[0];
      expect(stream.headers.get('Authorization')).toBe('token secret-token');
      expect(stream.headers.get('Accept')).toBe('text/event-stream');

      await model.watchJob('j1');
      const running: IJobView = {
        ...gateway.jobs[0],
        status: 'running',
        updated_at: '2025-01-01T00:00:05Z',
        last_seq: 1
      };
      gateway.jobs[0] = running;
      gateway.push('job', running);
      gateway.push('event', makeEvent(1, 'turn.started', 'j1'));
      await until(
        () => model.getJob('j1')?.status === 'running',
        2000,
        'job update'
      );
      await until(() => model.eventsFor('j1').length === 1, 2000, 'event');
      // Events of jobs nobody watches are not kept.
      gateway.push('event', makeEvent(1, 'item.completed', 'other'));
      // A new job appears at the top.
      gateway.jobs.push(makeJob('j2', { created_at: '2025-01-01T00:09:00Z' }));
      gateway.push('job', gateway.jobs[1]);
      await until(() => model.jobs[0]?.id === 'j2', 2000, 'new job');
      expect(model.eventsFor('other')).toEqual([]);
      // Status changes refresh the summary (debounced).
      await until(
        () => gateway.requestsTo('GET', 'summary').length >= 2,
        2000,
        'summary refresh'
      );
    });

    it('reloads everything when the server says the stream lost changes', async () => {
      gateway.jobs = [makeJob('j1', { status: 'queued' })];
      create({ useStream: true });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      await until(() => model.connection === 'streaming', 2000, 'streaming');
      await model.watchJob('j1');
      const jobsBefore = gateway.requestsTo('GET', 'jobs').length;
      // Changes the stream never delivered: j1 ended with two events, j2 appeared.
      gateway.jobs[0] = {
        ...gateway.jobs[0],
        status: 'succeeded',
        last_seq: 2,
        updated_at: '2025-01-01T00:00:09Z'
      };
      gateway.events.set('j1', [
        makeEvent(1, 'turn.started', 'j1'),
        makeEvent(2, 'turn.completed', 'j1')
      ]);
      gateway.jobs.push(makeJob('j2', { created_at: '2025-01-01T00:09:00Z' }));
      gateway.push('resync', {});
      await until(
        () => gateway.requestsTo('GET', 'jobs').length > jobsBefore,
        2000,
        'jobs reloaded'
      );
      await until(() => model.jobs.length === 2, 2000, 'new job listed');
      await until(
        () => model.getJob('j1')?.status === 'succeeded',
        2000,
        'ended job'
      );
      await until(
        () => model.eventsFor('j1').length === 2,
        2000,
        'missed events'
      );
    });

    it('keeps streamed jobs that a slower refresh did not know yet', async () => {
      create({ useStream: true });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      // A refresh leaves; the answer comes back only after a job was streamed.
      let release!: () => void;
      const gate = new Promise<void>(resolve => (release = resolve));
      const fetch = gateway.fetch.bind(gateway);
      gateway.fetch = async (input, init) => {
        const answer = await fetch(input, init);
        if (String((input as Request).url ?? input).includes('/jobs?')) {
          await gate;
        }
        return answer;
      };
      const refreshing = model.refresh();
      await new Promise(resolve => setTimeout(resolve, 20));
      gateway.push('job', makeJob('fresh'));
      await until(() => model.jobs.length === 1, 2000, 'streamed job');
      release();
      await refreshing;
      expect(model.jobs.map(j => j.id)).toEqual(['fresh']);
    });

    it('attributes events without job_id to the preceding job message', async () => {
      gateway.jobs = [
        makeJob('j1', { status: 'running' }),
        makeJob('j2', { status: 'running' })
      ];
      create({ useStream: true });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      await model.watchJob('j1');
      await model.watchJob('j2');
      gateway.jobs[0].last_seq = 1;
      gateway.push('job', gateway.jobs[0]);
      // An older server's events: no job_id.
      const bare = (event: IJobEvent) => ({ ...event, job_id: undefined });
      gateway.push('event', bare(makeEvent(1, 'turn.started')));
      gateway.jobs[1].last_seq = 2;
      gateway.push('job', gateway.jobs[1]);
      gateway.push('event', bare(makeEvent(1)));
      gateway.push('event', bare(makeEvent(2)));
      await until(() => model.eventsFor('j2').length === 2, 2000, 'j2 events');
      expect(model.eventsFor('j1').map(e => e.type)).toEqual(['turn.started']);
    });

    it('moves status counts as soon as a streamed job changes state', async () => {
      gateway.jobs = [makeJob('j1', { status: 'queued' })];
      create({ useStream: true, debounce: 10000 });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      expect(model.summary?.counts).toEqual({ queued: 1 });
      gateway.push('job', {
        ...gateway.jobs[0],
        status: 'running',
        updated_at: '2025-01-01T00:00:09Z'
      });
      await until(() => model.summary?.counts.running === 1, 2000, 'counts');
      expect(model.summary?.counts).toEqual({ running: 1 });
    });

    it('fills gaps in the event sequence from the REST API', async () => {
      gateway.jobs = [makeJob('j1', { status: 'running', last_seq: 1 })];
      gateway.events.set('j1', [makeEvent(1)]);
      create({ useStream: true });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      await model.watchJob('j1');
      gateway.events.get('j1')!.push(makeEvent(2), makeEvent(3));
      gateway.jobs[0].last_seq = 3;
      gateway.push('event', makeEvent(3, 'item.completed', 'j1'));
      await until(() => model.eventsFor('j1').length === 3, 2000, 'gap fill');
      expect(model.eventsFor('j1').map(e => e.seq)).toEqual([1, 2, 3]);
    });

    it('ignores heartbeats and malformed data', async () => {
      create({ useStream: true });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      gateway.pushRaw(': heartbeat\n\n');
      gateway.pushRaw('event: job\ndata: not json\n\n');
      gateway.jobs.push(makeJob('ok'));
      gateway.push('job', gateway.jobs[0]);
      await until(() => model.jobs.length === 1, 2000, 'job');
    });

    it('drops streamed jobs that do not match the filter', async () => {
      gateway.jobs = [makeJob('j1', { status: 'running' })];
      create({ useStream: true });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      model.setFilter({ status: 'running' });
      await until(() => model.jobs.length === 1, 2000, 'filtered');
      gateway.push('job', {
        ...gateway.jobs[0],
        status: 'succeeded',
        updated_at: '2025-01-01T00:03:00Z'
      });
      await until(() => model.jobs.length === 0, 2000, 'dropped');
      gateway.jobs.push(
        makeJob('q', { status: 'queued' }),
        makeJob('r', { status: 'running' })
      );
      gateway.push('job', gateway.jobs[1]);
      gateway.push('job', gateway.jobs[2]);
      await until(() => model.jobs.length === 1, 2000, 'added');
      expect(model.jobs[0].id).toBe('r');
    });

    it('reconnects after the stream ends and falls back to polling meanwhile', async () => {
      create({ useStream: true, pollInterval: 10 });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      await until(() => model.connection === 'streaming', 2000, 'streaming');
      expect(model.poll.frequency.interval).toBe(30000);
      const states: ConnectionState[] = [];
      model.connectionChanged.connect((_, s) => states.push(s));
      gateway.closeStreams();
      await until(() => states.includes('polling'), 2000, 'polling');
      expect(model.poll.frequency.interval).toBe(10000);
      await gateway.streamOpen();
      await until(() => model.connection === 'streaming', 2000, 'reconnected');
      expect(gateway.requestsTo('GET', 'stream').length).toBe(2);
    });

    it('keeps polling when the server has no stream', async () => {
      gateway.streamStatus = 404;
      create({ useStream: true, pollInterval: 0.2 });
      await model.start();
      await until(
        () => gateway.requestsTo('GET', 'stream').length >= 2,
        2000,
        'stream retries'
      );
      expect(model.connection).toBe('polling');
      expect(model.poll.frequency.interval).toBe(200);
    });

    it('closes the stream on dispose', async () => {
      create({ useStream: true });
      const started = model.start();
      await gateway.streamOpen();
      await started;
      expect(gateway.openStreams).toBe(1);
      model.dispose();
      await until(() => gateway.openStreams === 0, 2000, 'closed');
      expect(model.isDisposed).toBe(true);
    });
  });

  it('counts followers of a job: one unwatch keeps the events of another', async () => {
    gateway.jobs = [makeJob('j1', { status: 'running', last_seq: 2 })];
    gateway.events.set('j1', [makeEvent(1), makeEvent(2)]);
    create();
    await model.watchJob('j1');
    await model.watchJob('j1');
    model.unwatchJob('j1');
    expect(model.isWatched('j1')).toBe(true);
    expect(model.eventsFor('j1').map(e => e.seq)).toEqual([1, 2]);
    model.unwatchJob('j1');
    expect(model.isWatched('j1')).toBe(false);
    expect(model.eventsFor('j1')).toEqual([]);
  });

  it('keeps a pinned job outside the list and tells of its changes', async () => {
    gateway.jobs = [makeJob('old', { status: 'succeeded' })];
    create();
    model.setFilter({ status: 'running' });
    model.pinJob('old');
    const seen: string[] = [];
    model.jobChanged.connect((_, job) => seen.push(`${job.id}:${job.status}`));
    const job = await model.fetchJob('old');
    expect(job.status).toBe('succeeded');
    expect(model.jobs).toEqual([]);
    expect(model.getJob('old')?.id).toBe('old');
    expect(seen).toEqual(['old:succeeded']);
    model.unpinJob('old');
    expect(model.getJob('old')).toBe(undefined);
  });

  it('rejects with 404 for a job the server does not know', async () => {
    create();
    await expect(model.fetchJob('nope')).rejects.toMatchObject({ status: 404 });
  });

  it("finds a denied job's decision and the approval a job waits for", async () => {
    gateway.approvals = [
      approval('a1', {
        job_id: 'j1',
        status: 'denied',
        decided_by: 'owner',
        reason: 'no'
      }),
      approval('a2', { job_id: 'j2' })
    ];
    create();
    expect((await model.decisionFor('j1'))?.reason).toBe('no');
    expect(await model.decisionFor('j2')).toBe(null);
    await model.refresh();
    expect(model.pendingApprovalFor('j2')?.id).toBe('a2');
    expect(model.pendingApprovalFor('j1')).toBe(undefined);
  });
});
