/**
 * A small incremental parser for Server-Sent Events (text/event-stream).
 *
 * EventSource cannot send the Authorization header JupyterLab uses, so the
 * stream is fetched through ServerConnection.makeRequest and its body is fed
 * to this parser chunk by chunk. Follows the WHATWG "event stream
 * interpretation" rules: lines end with CRLF, LF or CR; blank lines dispatch;
 * lines starting with ':' are comments (heartbeats); `event`, `data`, `id` and
 * `retry` fields; one leading space of a value is dropped.
 */

/** One dispatched server-sent event. */
export interface IServerSentEvent {
  /** The event type (`message` when the stream gave none). */
  event: string;
  /** The data lines joined with `\n`. */
  data: string;
  /** The last event id seen on the stream (may be ''). */
  id: string;
}

/** Callbacks of the parser. */
export interface ISSEParserOptions {
  onEvent: (event: IServerSentEvent) => void;
  onComment?: (comment: string) => void;
  onRetry?: (milliseconds: number) => void;
}

/** Incremental SSE parser: feed it decoded text in any chunking. */
export class SSEParser {
  constructor(options: ISSEParserOptions) {
    this._options = options;
  }

  /** The last event id seen (the `id` field). */
  get lastEventId(): string {
    return this._lastEventId;
  }

  /** Feed the next chunk of decoded text. */
  feed(chunk: string): void {
    if (!chunk) {
      return;
    }
    let text = chunk;
    if (this._first) {
      this._first = false;
      if (text.charCodeAt(0) === 0xfeff) {
        text = text.slice(1);
      }
    }
    // A CR ending the previous chunk may be the first half of a CRLF.
    if (this._pendingCR) {
      this._pendingCR = false;
      if (text[0] === '\n') {
        text = text.slice(1);
      }
    }
    let buffer = this._buffer + text;
    let start = 0;
    for (let i = 0; i < buffer.length; i++) {
      const ch = buffer[i];
      if (ch !== '\n' && ch !== '\r') {
        continue;
      }
      this._processLine(buffer.slice(start, i));
      if (ch === '\r') {
        if (i + 1 < buffer.length) {
          if (buffer[i + 1] === '\n') {
            i++;
          }
        } else {
          this._pendingCR = true;
        }
      }
      start = i + 1;
    }
    buffer = buffer.slice(start);
    this._buffer = buffer;
  }

  /**
   * The stream ended. An incomplete event (no terminating blank line) is
   * discarded, as the specification requires.
   */
  end(): void {
    this._buffer = '';
    this._data = [];
    this._eventType = '';
    this._pendingCR = false;
  }

  private _processLine(line: string): void {
    if (line === '') {
      this._dispatch();
      return;
    }
    if (line[0] === ':') {
      this._options.onComment?.(line.slice(1).replace(/^ /, ''));
      return;
    }
    const colon = line.indexOf(':');
    let field: string;
    let value: string;
    if (colon === -1) {
      field = line;
      value = '';
    } else {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === ' ') {
        value = value.slice(1);
      }
    }
    switch (field) {
      case 'event':
        this._eventType = value;
        break;
      case 'data':
        this._data.push(value);
        break;
      case 'id':
        if (value.indexOf('\0') === -1) {
          this._lastEventId = value;
        }
        break;
      case 'retry':
        if (/^\d+$/.test(value)) {
          this._options.onRetry?.(parseInt(value, 10));
        }
        break;
      default:
        // Unknown fields are ignored.
        break;
    }
  }

  private _dispatch(): void {
    const data = this._data;
    const eventType = this._eventType;
    this._data = [];
    this._eventType = '';
    if (data.length === 0) {
      return;
    }
    this._options.onEvent({
      event: eventType || 'message',
      data: data.join('\n'),
      id: this._lastEventId
    });
  }

  private _options: ISSEParserOptions;
  private _buffer = '';
  private _data: string[] = [];
  private _eventType = '';
  private _lastEventId = '';
  private _pendingCR = false;
  private _first = true;
}

/**
 * Read a fetch body stream to its end, feeding the parser.
 *
 * Resolves when the stream ends (or is aborted through the response's signal,
 * in which case the read rejects with an AbortError).
 */
export async function readEventStream(
  body: ReadableStream<Uint8Array>,
  parser: SSEParser
): Promise<void> {
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
    parser.end();
    try {
      reader.releaseLock();
    } catch {
      // The reader may already be released after an abort.
    }
  }
}
