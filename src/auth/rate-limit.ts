// Per-key rate limits: a token bucket per (key, kind) refilled continuously. A refused request learns
// how long until it would be allowed (the Retry-After header).
export interface RateLimit {
  /** Requests per minute sustained (0: unlimited). */
  perMinute: number;
  /** Requests allowed at once after an idle spell. */
  burst: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly limits: Record<string, RateLimit>,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one request from the bucket; returns 0 when allowed, else seconds to wait. */
  take(kind: string, who: string): number {
    const limit = this.limits[kind];
    if (!limit || limit.perMinute <= 0) return 0;
    const key = `${kind}\u0000${who}`;
    const t = this.now();
    const rate = limit.perMinute / 60_000;
    const b = this.buckets.get(key) ?? { tokens: limit.burst, at: t };
    b.tokens = Math.min(limit.burst, b.tokens + (t - b.at) * rate);
    b.at = t;
    this.buckets.set(key, b);
    if (this.buckets.size > 100_000) this.buckets.delete(this.buckets.keys().next().value!);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / rate / 1000));
  }
}
