// Waiting for SIGINT or SIGTERM and stopping once: what `claas serve` and `claas train-worker` do
// when asked to stop (a second signal while stopping is ignored; the stop's error is printed).
export function untilStopped(stop: (signal: string) => Promise<unknown>): Promise<void> {
  return new Promise<void>((done) => {
    let closing = false;
    const shutdown = (signal: string) => {
      if (closing) return;
      closing = true;
      stop(signal).then(
        () => {
          console.log('stopped');
          done();
        },
        (err: unknown) => {
          console.error(err);
          done();
        },
      );
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
  });
}
