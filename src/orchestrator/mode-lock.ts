// The one process-wide switch between serving and updating, with explicit states. In embedded mode
// serving continues on the current version while the next one trains (admission never waits); a
// backend that must free the accelerator for training (vLLM) waits for `serving` before admitting.
export type Mode = 'serving' | 'draining' | 'updating' | 'resuming';

export class ModeLock {
  private mode: Mode = 'serving';
  private holder: Promise<void> = Promise.resolve();
  private readonly waiters: (() => void)[] = [];
  readonly transitions: { mode: Mode; at: number }[] = [];

  get state(): Mode {
    return this.mode;
  }

  private set(mode: Mode): void {
    this.mode = mode;
    this.transitions.push({ mode, at: Date.now() });
    if (this.transitions.length > 100) this.transitions.shift();
    if (mode === 'serving') this.waiters.splice(0).forEach((w) => w());
  }

  /** Resolves when requests may be admitted to a backend that cannot serve during an update. */
  async admitExclusive(): Promise<void> {
    if (this.mode === 'serving') return;
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /**
   * Runs one update exclusively: serving -> draining (drain() resolves when the backend may be
   * taken) -> updating (update()) -> resuming (resume()) -> serving. Updates queue behind each other.
   */
  runUpdate<T>(drain: () => Promise<void>, update: () => Promise<T>, resume: (result: T | undefined) => Promise<void>): Promise<T> {
    const run = async (): Promise<T> => {
      let result: T | undefined;
      this.set('draining');
      try {
        await drain();
        this.set('updating');
        result = await update();
        return result;
      } finally {
        this.set('resuming');
        try {
          await resume(result);
        } finally {
          this.set('serving');
        }
      }
    };
    const next = this.holder.then(run, run);
    this.holder = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  }
}
