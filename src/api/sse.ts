// Server-sent events on a hijacked reply: headers go out with the first event, so an error that
// happens before any token still gets a normal JSON error response.
import type { FastifyReply } from 'fastify';

/** A signal that fires if the response closes before it was finished: the client went away. */
export function abortOnDisconnect(reply: FastifyReply): AbortSignal {
  const abort = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) abort.abort();
  });
  return abort.signal;
}

export class SseWriter {
  private started = false;
  private closed = false;

  constructor(private readonly reply: FastifyReply) {
    reply.raw.on('close', () => {
      this.closed = true;
    });
  }

  get isStarted(): boolean {
    return this.started;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(data: unknown): void {
    if (this.closed) return;
    if (!this.started) {
      this.started = true;
      this.reply.hijack();
      this.reply.raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    }
    this.reply.raw.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (this.started && !this.closed) {
      this.reply.raw.write('data: [DONE]\n\n');
      this.reply.raw.end();
    }
  }
}
