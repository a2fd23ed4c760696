// Retention: completion records and the feedback text of finished jobs expire after a set time.
// Queued and running feedback is never expired (nothing accepted is dropped).
import type { FeedbackJobs } from '../orchestrator/feedback-jobs.js';
import type { CompletionStore } from './completions.js';

export interface RetentionResult {
  completions: number;
  feedbackItems: number;
}

export function sweep(store: CompletionStore, jobs: FeedbackJobs | null, maxAgeMs: number, now = Date.now()): RetentionResult {
  const before = now - maxAgeMs;
  return { completions: store.deleteOlderThan(before), feedbackItems: jobs ? jobs.purgeFeedback({ before }) : 0 };
}

/** Sweeps now and then every `everyMs`; returns a function that stops it. */
export function startRetention(store: CompletionStore, jobs: FeedbackJobs | null, maxAgeMs: number, onSweep: (r: RetentionResult) => void = () => {}, everyMs = 3_600_000): () => void {
  const run = () => onSweep(sweep(store, jobs, maxAgeMs));
  run();
  const timer = setInterval(run, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
