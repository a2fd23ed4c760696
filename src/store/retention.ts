// Retention: completion records and the feedback text of finished jobs expire after a set time.
// Queued and running feedback is never expired (nothing accepted is dropped).
import type { CompletionStore } from './completions.js';
import type { JobStore } from './jobs.js';

export interface RetentionResult {
  completions: number;
  feedbackItems: number;
}

export async function sweep(completions: CompletionStore, jobs: JobStore | null, maxAgeMs: number, now = Date.now()): Promise<RetentionResult> {
  const before = now - maxAgeMs;
  return { completions: await completions.deleteOlderThan(before), feedbackItems: jobs ? await jobs.purgeFeedback({ before }) : 0 };
}

/**
 * Sweeps now and then every `everyMs`; returns a function that stops it. A sweep that fails (the
 * database unreachable for a while) is reported and tried again at the next.
 */
export function startRetention(
  completions: CompletionStore,
  jobs: JobStore | null,
  maxAgeMs: number,
  onSweep: (r: RetentionResult) => void = () => {},
  onError: (err: unknown) => void = (err) => console.error('retention sweep failed:', err),
  everyMs = 3_600_000,
): () => void {
  const run = () => void sweep(completions, jobs, maxAgeMs).then(onSweep, onError);
  run();
  const timer = setInterval(run, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
