// The one error type the Tinker client throws. It is an UpstreamError (the API answers 502) that
// also says what kind of failure it was, so callers can tell a refused key from a lost future
// from a training error without parsing messages.
import { UpstreamError } from '../../errors.js';
import type { ErrorCategory } from './wire.js';

export type TinkerFailure =
  /** Tinker refused the credentials (401/403). */
  | 'auth'
  /** Tinker refused the request itself (4xx other than auth and 410). */
  | 'rejected'
  /** The queued request ran and failed; `category` says whose fault Tinker thinks it was. */
  | 'failed'
  /** The future is gone on Tinker's side (410): the request must be sent again. */
  | 'expired'
  /** The future did not finish within futureTimeoutMs. */
  | 'timeout'
  /** Tinker could not be reached, or kept failing (5xx, timeouts) past the retries. */
  | 'unreachable'
  /** Tinker answered something this client cannot read. */
  | 'protocol';

export class TinkerError extends UpstreamError {
  constructor(
    message: string,
    status: number | null,
    readonly failure: TinkerFailure,
    /** For 'failed': Tinker's RequestErrorCategory ('user': the request was bad; 'server': Tinker's fault). */
    readonly category: ErrorCategory | null = null,
    readonly requestId: string | null = null,
  ) {
    super(message, status);
  }
}
