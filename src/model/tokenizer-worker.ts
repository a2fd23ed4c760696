// The thread that tokenizes long texts for `Tokenizer.encodeAsync`, so a request with a huge prompt
// does not hold the event loop (and every other tenant's requests) while it is tokenized.
import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

interface Job {
  id: number;
  text: string;
  addSpecialTokens: boolean;
}

const { tokenizerJson, config } = workerData as { tokenizerJson: Record<string, unknown>; config: Record<string, unknown> };
const hf = new HfTokenizer(tokenizerJson, config);
parentPort!.on('message', (job: Job) => {
  try {
    const ids = Int32Array.from(hf.encode(job.text, { add_special_tokens: job.addSpecialTokens }).ids);
    // Moved, not copied: the event loop on the other side should spend nothing on a long answer.
    parentPort!.postMessage({ id: job.id, ids }, [ids.buffer]);
  } catch (err) {
    parentPort!.postMessage({ id: job.id, error: err instanceof Error ? err.message : String(err) });
  }
});
