import { describe, expect, it } from 'vitest';

import { IJobView } from '../api';
import {
  callerLabel,
  formatDuration,
  formatUsage,
  jobElapsed,
  policyErrorText,
  statusView
} from '../format';
import { makeJob } from './fakegateway';

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
    expect(view.text).toBe('Codex: 2 running · 1 queued · 1 needs approval');
    expect(view.state).toBe('active');
  });

  it('is quiet when nothing happens', () => {
    const view = statusView(
      { counts: { succeeded: 3 }, pending_approvals: 0 },
      'polling'
    );
    expect(view.text).toBe('Codex: idle');
    expect(view.state).toBe('idle');
  });

  it('says when the gateway is unreachable', () => {
    const view = statusView(
      { counts: { running: 1 }, pending_approvals: 0 },
      'unreachable'
    );
    expect(view.text).toBe('Codex: gateway unreachable');
    expect(view.state).toBe('unreachable');
  });

  it('says when the owner policy is broken, with the reason', () => {
    const reason = 'owner-policy.json did not load: /default: bad value';
    const view = statusView(
      { counts: { running: 1 }, pending_approvals: 0, policy_error: reason },
      'streaming'
    );
    expect(view.text).toBe('Codex: owner policy broken');
    expect(view.title).toBe(reason);
    expect(policyErrorText({ counts: {}, pending_approvals: 0 })).toBe('');
  });

  it('uses the plural for several approvals', () => {
    expect(
      statusView({ counts: {}, pending_approvals: 3 }, 'polling').text
    ).toBe('Codex: 3 need approval');
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
