import { describe, expect, it } from 'vitest';

import { IJobView } from '../api';
import {
  callerLabel,
  formatDuration,
  formatTotalCost,
  formatUsage,
  jobElapsed,
  policyErrorText,
  providerLabel,
  statusView,
  usageHeadline,
  usageRows
} from '../format';
import { makeJob, usageTotals } from './fakegateway';

function job(partial: Partial<IJobView>): IJobView {
  return makeJob('j', { status: 'running', args: {}, ...partial });
}

describe('statusView', () => {
  it('lists running, queued and approvals', () => {
    const view = statusView(
      {
        counts: { running: 2, queued: 1, awaiting_approval: 1, succeeded: 9 },
        pending_approvals: 1
      },
      'streaming'
    );
    expect(view.text).toBe('Agents: 2 running · 1 queued · 1 needs approval');
    expect(view.state).toBe('active');
  });

  it('is quiet when nothing happens', () => {
    const view = statusView(
      { counts: { succeeded: 3 }, pending_approvals: 0 },
      'polling'
    );
    expect(view.text).toBe('Agents: idle');
    expect(view.state).toBe('idle');
  });

  it('says when the gateway is unreachable', () => {
    const view = statusView(
      { counts: { running: 1 }, pending_approvals: 0 },
      'unreachable'
    );
    expect(view.text).toBe('Agents: gateway unreachable');
    expect(view.state).toBe('unreachable');
  });

  it('says when the owner policy is broken, with the reason', () => {
    const reason = 'owner-policy.json did not load: /default: bad value';
    const view = statusView(
      { counts: { running: 1 }, pending_approvals: 0, policy_error: reason },
      'streaming'
    );
    expect(view.text).toBe('Agents: owner policy broken');
    expect(view.title).toBe(reason);
    expect(policyErrorText({ counts: {}, pending_approvals: 0 })).toBe('');
  });

  it('uses the plural for several approvals', () => {
    expect(
      statusView({ counts: {}, pending_approvals: 3 }, 'polling').text
    ).toBe('Agents: 3 need approval');
  });

  it("names no provider: it counts every provider's jobs", () => {
    const views = [
      statusView(null, 'streaming'),
      statusView({ counts: {}, pending_approvals: 0 }, 'streaming'),
      statusView({ counts: { running: 1 }, pending_approvals: 0 }, 'polling'),
      statusView({ counts: {}, pending_approvals: 0 }, 'unreachable')
    ];
    expect(views.map(view => view.text)).toEqual([
      'Agents',
      'Agents: idle',
      'Agents: 1 running',
      'Agents: gateway unreachable'
    ]);
    expect(views[1].title).toBe(
      'No agent job is running or waiting (live updates). Click to open the jobs panel.'
    );
    expect(views[2].title).toBe(
      'Agent jobs (polling for updates). Click to open the jobs panel.'
    );
    for (const view of views) {
      expect(`${view.text} ${view.title}`).not.toMatch(/codex|claude/i);
    }
  });
});

describe('formatting', () => {
  it('formats callers', () => {
    expect(callerLabel('owner')).toBe('owner');
    expect(callerLabel('grant:ci-bot')).toBe('ci-bot');
  });

  it('formats durations', () => {
    expect(formatDuration(4.2)).toBe('4s');
    expect(formatDuration(125)).toBe('2m 05s');
    expect(formatDuration(3720)).toBe('1h 02m');
  });

  it('computes elapsed time', () => {
    const now = Date.parse('2025-01-01T00:01:00Z');
    expect(jobElapsed(job({ started_at: '2025-01-01T00:00:30Z' }), now)).toBe(
      '30s'
    );
    expect(
      jobElapsed(
        job({
          started_at: '2025-01-01T00:00:00Z',
          finished_at: '2025-01-01T00:00:10Z'
        }),
        now
      )
    ).toBe('10s');
    expect(jobElapsed(job({ status: 'queued' }), now)).toBe('1m 00s');
  });

  it('formats usage', () => {
    expect(
      formatUsage({
        input_tokens: 1234,
        cached_input_tokens: 1000,
        output_tokens: 56,
        reasoning_output_tokens: 0,
        cost_usd: null
      })
    ).toBe('tokens: 1,234 in (1,000 cached) · 56 out');
    expect(
      formatUsage({
        input_tokens: 10,
        cached_input_tokens: 0,
        output_tokens: 5,
        reasoning_output_tokens: null,
        cost_usd: 0.01234
      })
    ).toBe('tokens: 10 in · 5 out · $0.0123');
    expect(formatUsage(null)).toBe('');
  });
});

describe('usage totals', () => {
  const usage = (
    input: number,
    output: number,
    cost: number | null = null
  ) => ({
    input_tokens: input,
    cached_input_tokens: input > 1000 ? 1000 : 0,
    output_tokens: output,
    reasoning_output_tokens: 0,
    cost_usd: cost
  });
  const totals = usageTotals([
    job({ provider: 'codex', caller: 'owner', usage: usage(1234, 56) }),
    job({ provider: 'claude', caller: 'owner', usage: usage(10, 5, 0.5) }),
    job({ provider: 'claude', caller: 'grant:ci', usage: usage(20, 5, 0.25) }),
    job({ provider: 'fake', caller: 'grant:ci', usage: usage(3, 1) })
  ]);

  it('names providers', () => {
    expect(providerLabel('codex')).toBe('Codex');
    expect(providerLabel('claude')).toBe('Claude');
    expect(providerLabel('fake')).toBe('fake');
    expect(providerLabel(null)).toBe('');
  });

  it('shows a row per provider, the cost where every job reported one', () => {
    const rows = usageRows(totals, 'provider');
    expect(
      rows.map(row => [
        row.label,
        row.jobs,
        row.tokensIn,
        row.tokensOut,
        row.cost
      ])
    ).toEqual([
      ['Claude', '2', '30', '10', '$0.7500'],
      ['Codex', '1', '1,234', '56', '—'],
      ['fake', '1', '3', '1', '—']
    ]);
    expect(rows[1].costTitle).toBe('no job reported a cost');
    expect(rows[1].tokensInTitle).toBe('1,000 of them cached');
    expect(rows[0].tokensInTitle).toBe('');
  });

  it('shows a row per caller, saying when only some jobs were priced', () => {
    const rows = usageRows(totals, 'caller');
    expect(rows.map(row => [row.name, row.label, row.cost])).toEqual([
      ['grant:ci', 'ci', '$0.2500 (1 of 2 jobs)'],
      ['owner', 'owner', '$0.5000 (1 of 2 jobs)']
    ]);
    expect(rows[0].costTitle).toContain('the others are not counted');
  });

  it('sums every job in one line', () => {
    expect(usageHeadline(totals)).toBe('4 jobs · 1,267 in · 67 out · $0.7500');
    expect(usageHeadline(usageTotals([job({ usage: usage(7, 2) })]))).toBe(
      '1 job · 7 in · 2 out'
    );
    expect(usageHeadline(null)).toBe('');
    expect(usageHeadline({ by_caller: [], by_provider: [] })).toBe('');
    expect(usageRows(null, 'caller')).toEqual([]);
  });

  it('prices a total', () => {
    const [claude] = totals.by_provider;
    expect(formatTotalCost(claude)).toEqual({
      text: '$0.7500',
      title: 'every job reported its cost'
    });
  });
});
