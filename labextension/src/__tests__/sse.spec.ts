import { describe, expect, it } from 'vitest';

import { IServerSentEvent, readEventStream, SSEParser } from '../sse';

function collect(): {
  events: IServerSentEvent[];
  comments: string[];
  retries: number[];
  parser: SSEParser;
} {
  const events: IServerSentEvent[] = [];
  const comments: string[] = [];
  const retries: number[] = [];
  const parser = new SSEParser({
    onEvent: e => events.push(e),
    onComment: c => comments.push(c),
    onRetry: ms => retries.push(ms)
  });
  return { events, comments, retries, parser };
}

describe('SSEParser', () => {
  it('parses named events with JSON data', () => {
    const { events, parser } = collect();
    parser.feed('event: job\ndata: {"id": "j1"}\n\n');
    parser.feed('event: event\ndata: {"job_id": "j1", "seq": 1}\n\n');
    expect(events).toEqual([
      { event: 'job', data: '{"id": "j1"}', id: '' },
      { event: 'event', data: '{"job_id": "j1", "seq": 1}', id: '' }
    ]);
  });

  it('defaults the event type to message and joins data lines', () => {
    const { events, parser } = collect();
    parser.feed('data: first\ndata: second\ndata\n\n');
    expect(events).toEqual([
      { event: 'message', data: 'first\nsecond\n', id: '' }
    ]);
  });

  it('handles any chunking, including split CRLF', () => {
    const text =
      'event: job\r\ndata: {"a":1}\r\n\r\n: heartbeat\r\nevent: job\r\ndata: {"a":2}\r\n\r\n';
    for (let size = 1; size <= text.length; size++) {
      const { events, comments, parser } = collect();
      for (let i = 0; i < text.length; i += size) {
        parser.feed(text.slice(i, i + size));
      }
      expect(events.map(e => e.data)).toEqual(['{"a":1}', '{"a":2}']);
      expect(comments).toEqual(['heartbeat']);
    }
  });

  it('accepts lone CR line endings', () => {
    const { events, parser } = collect();
    parser.feed('event: job\rdata: x\r\rdata: y\r\r');
    expect(events.map(e => [e.event, e.data])).toEqual([
      ['job', 'x'],
      ['message', 'y']
    ]);
  });

  it('ignores comments (heartbeats) and unknown fields', () => {
    const { events, comments, parser } = collect();
    parser.feed(': keep-alive\n\nfoo: bar\n\n:\n');
    expect(events).toEqual([]);
    expect(comments).toEqual(['keep-alive', '']);
  });

  it('keeps only one leading space of a value', () => {
    const { events, parser } = collect();
    parser.feed('data:no-space\n\ndata:  two-spaces\n\n');
    expect(events.map(e => e.data)).toEqual(['no-space', ' two-spaces']);
  });

  it('tracks id and retry fields', () => {
    const { events, retries, parser } = collect();
    parser.feed('id: 42\nretry: 1500\nretry: soon\ndata: x\n\n');
    expect(events[0].id).toBe('42');
    expect(parser.lastEventId).toBe('42');
    expect(retries).toEqual([1500]);
  });

  it('resets the event type after each dispatch and skips empty events', () => {
    const { events, parser } = collect();
    parser.feed('event: job\n\ndata: plain\n\n');
    expect(events).toEqual([{ event: 'message', data: 'plain', id: '' }]);
  });

  it('strips a leading byte order mark', () => {
    const { events, parser } = collect();
    parser.feed('\ufeffdata: x\n\n');
    expect(events.map(e => e.data)).toEqual(['x']);
  });

  it('discards an unterminated event at the end of the stream', () => {
    const { events, parser } = collect();
    parser.feed('data: complete\n\ndata: partial');
    parser.end();
    parser.feed('\n\n');
    expect(events.map(e => e.data)).toEqual(['complete']);
  });
});

describe('readEventStream', () => {
  it('decodes UTF-8 split across chunks', async () => {
    const bytes = new TextEncoder().encode(
      'event: event\ndata: {"summary":"héllo ✓"}\n\n'
    );
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const byte of bytes) {
          controller.enqueue(new Uint8Array([byte]));
        }
        controller.close();
      }
    });
    const { events, parser } = collect();
    await readEventStream(stream, parser);
    expect(events).toHaveLength(1);
    expect(JSON.parse(events[0].data).summary).toBe('héllo ✓');
  });
});
