import { describe, expect, it } from 'vitest';

import { fallbackSource, parseJobBundle } from '../bundle';
import {
  formatAge,
  formatExpiry,
  jobState,
  modelView,
  outcomeText
} from '../format';

const NOW = Date.parse('2025-01-01T12:00:00Z');

describe('jobState', () => {
  it('says what happened to a cancelled job', () => {
    const of = (cancel_reason: string | null) =>
      jobState({ status: 'cancelled', cancel_reason });
    expect(of('approval_denied')).toEqual({ state: 'denied', label: 'denied' });
    expect(of('approval_expired')).toEqual({
      state: 'approval_expired',
      label: 'approval expired'
    });
    expect(of('grant_revoked').label).toBe('grant revoked');
    expect(of('cancelled').label).toBe('cancelled');
    expect(of(null).label).toBe('cancelled');
  });

  it('keeps other statuses, in words', () => {
    expect(jobState({ status: 'awaiting_approval' })).toEqual({
      state: 'awaiting_approval',
      label: 'awaiting approval'
    });
  });
});

describe('outcomeText', () => {
  const denied = { status: 'cancelled', cancel_reason: 'approval_denied' };

  it('names who denied and why when the approval record has them', () => {
    const text = outcomeText(denied, {
      id: 'a',
      caller: 'grant:bot',
      tool: 'codex_request_async',
      arguments: {},
      job_id: null,
      created_at: '2025-01-01T00:00:00Z',
      expires_at: '2025-01-01T01:00:00Z',
      status: 'denied',
      decided_by: 'owner',
      decided_at: null,
      reason: 'too expensive'
    });
    expect(text).toBe('denied by owner: too expensive');
  });

  it('says denied without a record, and nothing for a job that ran', () => {
    expect(outcomeText(denied, null)).toBe('denied');
    expect(outcomeText({ status: 'succeeded' }, null)).toBe('');
    expect(
      outcomeText(
        { status: 'cancelled', cancel_reason: 'gateway shutdown' },
        null
      )
    ).toBe('cancelled: gateway shutdown');
  });
});

describe('ages and expiries', () => {
  it('shows how long ago a job was created', () => {
    expect(formatAge('2025-01-01T11:59:48Z', NOW)).toBe('12s ago');
    expect(formatAge('2025-01-01T11:57:00Z', NOW)).toBe('3 min ago');
    expect(formatAge('2025-01-01T09:00:00Z', NOW)).toBe('3 h ago');
    expect(formatAge('2024-12-28T12:00:00Z', NOW)).toBe('4 d ago');
    expect(formatAge('not a date', NOW)).toBe('');
  });

  it('shows expiry as "in 9 min"', () => {
    expect(formatExpiry('2025-01-01T12:09:00Z', NOW)).toBe('in 9 min');
    expect(formatExpiry('2025-01-01T12:00:40Z', NOW)).toBe('in 40s');
    expect(formatExpiry('2025-01-01T11:00:00Z', NOW)).toBe('expired');
  });
});

describe('modelView', () => {
  it('speaks only of the local echo model', () => {
    const summary = (local_echo: boolean) => ({
      counts: {},
      pending_approvals: 0,
      model: { local_echo, label: local_echo ? 'local echo model' : 'gpt-5' }
    });
    expect(modelView(summary(true)).text).toBe('local echo model');
    expect(modelView(summary(false)).text).toBe('');
    expect(modelView(null).text).toBe('');
  });

  it("says the echo model is Codex's (the summary's model is Codex's only)", () => {
    const summary = {
      counts: {},
      pending_approvals: 0,
      model: { local_echo: true, label: 'local echo model' }
    };
    expect(modelView(summary).title).toMatch(/^Codex jobs use the bundled/);
  });
});

describe('parseJobBundle', () => {
  it('accepts version 1 with a job id and a known path', () => {
    expect(
      parseJobBundle({ version: 1, job_id: 'abc123def456', via: 'server' })
    ).toEqual({ version: 1, job_id: 'abc123def456', via: 'server' });
    expect(
      parseJobBundle({ version: 1, job_id: 'x', via: 'embedded' })
    ).not.toBe(null);
  });

  it('refuses anything else', () => {
    for (const data of [
      null,
      'abc',
      [],
      { version: 2, job_id: 'abc', via: 'server' },
      { version: 1, job_id: '../../api/kernels', via: 'server' },
      { version: 1, job_id: 'a'.repeat(65), via: 'server' },
      { version: 1, job_id: 'abc', via: 'elsewhere' },
      { version: 1, via: 'server' }
    ]) {
      expect(parseJobBundle(data)).toBe(null);
    }
  });

  it('falls back to the Markdown, else the plain text', () => {
    expect(
      fallbackSource({ 'text/markdown': '**x**', 'text/plain': 'x' })
    ).toBe('**x**');
    expect(fallbackSource({ 'text/plain': 'x' })).toBe('x');
    expect(fallbackSource({})).toBe('');
  });
});
