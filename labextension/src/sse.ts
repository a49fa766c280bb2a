/**
 * Reading the gateway's event stream (text/event-stream).
 *
 * EventSource cannot send the Authorization header JupyterLab uses, so the
 * stream is fetched through ServerConnection.makeRequest and its body is
 * parsed by eventsource-parser (the WHATWG event stream rules: any chunking,
 * CRLF/LF/CR line ends, comments for heartbeats, `retry`).
 */
import {
  createParser,
  type EventSourceMessage,
  type ParserCallbacks
} from 'eventsource-parser';

export type { EventSourceMessage, ParserCallbacks };

/**
 * Read a fetch body stream to its end, parsing its events.
 *
 * Resolves when the stream ends (or rejects with an AbortError when it is
 * aborted through the request's signal). An event the stream left
 * unterminated is discarded, as the specification requires.
 */
export async function readEventStream(
  body: ReadableStream<Uint8Array>,
  callbacks: ParserCallbacks
): Promise<void> {
  const parser = createParser(callbacks);
  const reader = body.getReader();
  const decoder = new TextDecoder('utf-8');
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        break;
      }
      parser.feed(decoder.decode(value, { stream: true }));
    }
    parser.feed(decoder.decode());
  } finally {
    parser.reset();
    try {
      reader.releaseLock();
    } catch {
      // The reader may already be released after an abort.
    }
  }
}
