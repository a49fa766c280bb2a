import { describe, expect, it } from 'vitest';

import { EventSourceMessage, readEventStream } from '../sse';

/** A body stream that delivers `text` in chunks of `size` bytes. */
function body(text: string, size: number): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  return new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < bytes.length; i += size) {
        controller.enqueue(bytes.slice(i, i + size));
      }
      controller.close();
    }
  });
}

async function read(
  text: string,
  size = text.length
): Promise<{
  events: EventSourceMessage[];
  comments: string[];
  retries: number[];
}> {
  const events: EventSourceMessage[] = [];
  const comments: string[] = [];
  const retries: number[] = [];
  await readEventStream(body(text, Math.max(1, size)), {
    onEvent: e => events.push(e),
    onComment: c => comments.push(c),
    onRetry: ms => retries.push(ms)
  });
  return { events, comments, retries };
}

describe('readEventStream', () => {
  it('gives the gateway’s named events with their JSON data', async () => {
    const { events } = await read(
      ': connected\n\nevent: job\ndata: {"id":"j1"}\n\n' +
        'event: event\ndata: {"job_id":"j1","seq":1}\n\n'
    );
    expect(events.map(e => [e.event, JSON.parse(e.data)])).toEqual([
      ['job', { id: 'j1' }],
      ['event', { job_id: 'j1', seq: 1 }]
    ]);
  });

  it('handles any chunking, CRLF split across chunks included', async () => {
    const text =
      'event: job\r\ndata: {"a":1}\r\n\r\n: heartbeat\r\nevent: job\r\ndata: {"a":2}\r\n\r\n';
    for (let size = 1; size <= text.length; size++) {
      const { events, comments } = await read(text, size);
      expect(events.map(e => e.data)).toEqual(['{"a":1}', '{"a":2}']);
      expect(comments).toEqual(['heartbeat']);
    }
  });

  it('keeps heartbeats out of the events and passes retry on', async () => {
    const { events, comments, retries } = await read(
      ': heartbeat\n\nretry: 1500\nretry: soon\n\n'
    );
    expect(events).toEqual([]);
    expect(comments).toEqual(['heartbeat']);
    expect(retries).toEqual([1500]);
  });

  it('discards an event the stream left unterminated', async () => {
    const { events } = await read('data: complete\n\ndata: partial');
    expect(events.map(e => e.data)).toEqual(['complete']);
  });

  it('decodes UTF-8 split across chunks', async () => {
    const { events } = await read(
      'event: event\ndata: {"summary":"héllo ✓"}\n\n',
      1
    );
    expect(events).toHaveLength(1);
    expect(JSON.parse(events[0].data).summary).toBe('héllo ✓');
  });
});
