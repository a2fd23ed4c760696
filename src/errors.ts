// Typed errors of CLaaS. Each has a stable `code`; native errors are mapped onto these classes.

export class ClaasError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** config.json is missing, unreadable, or has values the engine does not support. */
export class ConfigError extends ClaasError {
  constructor(message: string) {
    super('E_CONFIG', message);
  }
}

/** A weights file is missing, its header is corrupt, or its data lies outside the file. */
export class WeightsError extends ClaasError {
  constructor(message: string) {
    super('E_WEIGHTS', message);
  }
}

/** A tensor has the wrong shape for the configuration. */
export class ShapeError extends ClaasError {
  constructor(message: string) {
    super('E_SHAPE', message);
  }
}

/** A LoRA adapter folder or request is invalid (unknown target module, bad rank, …). */
export class AdapterError extends ClaasError {
  constructor(message: string) {
    super('E_ADAPTER', message);
  }
}

/** A call's arguments are invalid (empty response, token id out of range, non-finite learning rate, …). */
export class InputError extends ClaasError {
  constructor(message: string) {
    super('E_INPUT', message);
  }
}

/** A named model, adapter or record does not exist. */
export class NotFoundError extends ClaasError {
  constructor(message: string) {
    super('E_NOT_FOUND', message);
  }
}

/** A vLLM (or other OpenAI-compatible) server refused a call or could not be reached. */
export class UpstreamError extends ClaasError {
  constructor(
    message: string,
    readonly status: number | null = null,
  ) {
    super('E_UPSTREAM', message);
  }
}

/** A bounded queue is full; the request may be retried after `retryAfter` seconds (nothing was stored). */
export class BusyError extends ClaasError {
  constructor(
    message: string,
    readonly retryAfter: number,
  ) {
    super('E_BUSY', message);
  }
}

/** Anything else the native engine reported. */
export class EngineError extends ClaasError {}

/** Turns an error thrown or rejected by the addon into the matching typed error. */
export function fromNative(err: unknown): ClaasError {
  if (err instanceof ClaasError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  switch (e?.code) {
    case 'E_CONFIG':
      return new ConfigError(message);
    case 'E_WEIGHTS':
      return new WeightsError(message);
    case 'E_SHAPE':
      return new ShapeError(message);
    case 'E_INPUT':
      return new InputError(message);
    default:
      return new EngineError(typeof e?.code === 'string' ? e.code : 'E_INTERNAL', message);
  }
}
