// The tokenizer of a Hugging Face model folder (tokenizer.json + tokenizer_config.json) on top of
// @huggingface/tokenizers: encode/decode with checked ids, the special token ids, and a streaming detokenizer.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ConfigError, InputError } from '../errors.js';

export interface EncodeOptions {
  /** Let the tokenizer's post-processor add BOS/EOS-style tokens (Qwen's adds none). Default true, as in HF. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop tokens marked special (for Qwen3 <|im_end|> and friends, not <think> or <tool_call>). Default false. */
  skipSpecialTokens?: boolean;
}

/** Turns sampled ids into text as they arrive. The deltas, concatenated, equal `decode(allIds)`. */
export interface StreamDecoder {
  /** Adds one id and returns the text it completes; '' while a multi-byte character is still incomplete. */
  push(id: number): string;
  /** Returns whatever is still held back (an unfinished character decodes to U+FFFD, as in `decode`). */
  flush(): string;
}

/** Reads and parses one JSON object file of a model folder; absent optional files give undefined. */
export function readJsonObject(path: string, required: boolean): Record<string, unknown> | undefined {
  if (!existsSync(path)) {
    if (required) throw new ConfigError(`${path} not found`);
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`${path} must hold a JSON object`);
  return parsed as Record<string, unknown>;
}

/** tokenizer_config.json names special tokens either as a string or as a serialized AddedToken ({content: ...}). */
export function specialTokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

/**
 * Texts longer than this are tokenized on a worker thread by `encodeAsync` (about 1 ms of event loop
 * per 250 characters here: a 100,000-character prompt held every other request for 0.4 s).
 */
export const ASYNC_ENCODE_CHARS = 8192;

/** U+FFFD at the end of a decoded window means the last character's bytes are not all there yet. */
const INCOMPLETE = '\uFFFD';

export class Tokenizer {
  /** One more than the largest token id (learned vocabulary plus added tokens). */
  readonly vocabSize: number;
  readonly eosTokenId: number | undefined;
  /** Ids that end a turn according to the tokenizer; generation_config.json may list more. */
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number | undefined;
  readonly bosTokenId: number | undefined;
  /** Ids of the added tokens marked special. */
  readonly specialTokenIds: ReadonlySet<number>;
  /** Strings the chat template may refer to (bos_token, eos_token, pad_token, unk_token). */
  readonly specialTokens: Readonly<Record<string, string>>;

  private worker: Worker | null = null;
  private readonly waiting = new Map<number, { resolve: (ids: number[]) => void; reject: (err: unknown) => void }>();
  private nextJob = 0;

  private constructor(
    private readonly hf: HfTokenizer,
    private readonly config: Record<string, unknown>,
    private readonly source: string,
    private readonly json: Record<string, unknown>,
  ) {
    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.specialTokenIds = new Set([...hf.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id));
    const named: Record<string, string> = {};
    const resolve = (key: string): number | undefined => {
      const text = specialTokenText(config[key]);
      if (text === undefined) return undefined;
      const id = hf.token_to_id(text);
      if (id === undefined) throw new ConfigError(`${source}: ${key} ${JSON.stringify(text)} is not in the vocabulary`);
      named[key] = text;
      return id;
    };
    this.bosTokenId = resolve('bos_token');
    this.eosTokenId = resolve('eos_token');
    this.padTokenId = resolve('pad_token');
    resolve('unk_token');
    this.specialTokens = named;
    this.eosTokenIds = this.eosTokenId === undefined ? [] : [this.eosTokenId];
  }

  /** Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a model folder. */
  static fromDir(modelDir: string): Tokenizer {
    const tokenizerPath = join(modelDir, 'tokenizer.json');
    const configPath = join(modelDir, 'tokenizer_config.json');
    const json = readJsonObject(tokenizerPath, true)!;
    const config = readJsonObject(configPath, false) ?? {};
    return Tokenizer.fromJSON(json, config, modelDir);
  }

  /** Builds a tokenizer from already parsed tokenizer.json / tokenizer_config.json objects. */
  static fromJSON(tokenizerJson: Record<string, unknown>, config: Record<string, unknown> = {}, source = 'tokenizer'): Tokenizer {
    if (typeof tokenizerJson.model !== 'object' || tokenizerJson.model === null) {
      throw new ConfigError(`${source}: tokenizer.json has no "model" section`);
    }
    // The library iterates added_tokens unconditionally; older files may omit the list.
    const json = { added_tokens: [], ...tokenizerJson };
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
    } catch (e) {
      throw new ConfigError(`${source}: tokenizer.json could not be loaded: ${(e as Error).message}`);
    }
    return new Tokenizer(hf, config, source, json);
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new InputError(`encode: text must be a string (got ${typeof text})`);
    return this.hf.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /**
   * The same ids as `encode`; a long text is tokenized on a worker thread, so the event loop goes on
   * serving other requests meanwhile.
   */
  async encodeAsync(text: string, options: EncodeOptions = {}): Promise<number[]> {
    if (typeof text !== 'string' || text.length <= ASYNC_ENCODE_CHARS) return this.encode(text, options);
    const worker = this.startWorker();
    const id = this.nextJob++;
    const ids = new Promise<number[]>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    if (this.waiting.size === 1) worker.ref();
    worker.postMessage({ id, text, addSpecialTokens: options.addSpecialTokens ?? true });
    return ids;
  }

  private startWorker(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL('./tokenizer-worker.js', import.meta.url), { workerData: { tokenizerJson: this.json, config: this.config } });
    worker.unref();
    worker.on('message', (m: { id: number; ids?: Int32Array; error?: string }) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) worker.unref();
      if (!w) return;
      if (m.ids) {
        // A plain loop: Array.from over a typed array is several times slower on long prompts.
        const out = new Array<number>(m.ids.length);
        for (let i = 0; i < out.length; i++) out[i] = m.ids[i]!;
        w.resolve(out);
      }
      else w.reject(new InputError(`the text could not be tokenized: ${m.error ?? 'unknown error'}`));
    });
    // A worker that dies fails what it held; the next long text starts another.
    const fail = (err: unknown) => {
      if (this.worker === worker) this.worker = null;
      for (const w of this.waiting.values()) w.reject(err instanceof Error ? err : new Error(String(err)));
      this.waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the tokenizer thread exited (${code})`)));
    this.worker = worker;
    return worker;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (!Array.isArray(ids)) throw new InputError('decode: ids must be an array of token ids');
    for (const id of ids) this.checkId(id, 'decode');
    if (ids.length === 0) return '';
    // Never "clean up tokenization spaces": that BERT-era rewrite (" ." -> ".") corrupts code and would make the
    // streamed text differ from the decoded one.
    return this.hf.decode(ids as number[], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return Number.isInteger(id) ? this.hf.id_to_token(id) : undefined;
  }

  isSpecial(id: number): boolean {
    return this.specialTokenIds.has(id);
  }

  /**
   * A detokenizer for one generated sequence. Each push decodes only a short window: the tokens since the last
   * emitted boundary plus the ones emitted just before (as context, since some decoders render a token differently
   * at the start of a text), so streaming a long reply stays linear. Text is held back while the window ends in
   * U+FFFD, i.e. while a character's bytes are split across tokens that have not all arrived.
   */
  createStreamDecoder(options: DecodeOptions = {}): StreamDecoder {
    const ids: number[] = [];
    let prefixStart = 0; // first id of the context window
    let readStart = 0; // ids before this one have been emitted
    const decodeRange = (from: number, to: number) => (to > from ? this.decode(ids.slice(from, to), options) : '');
    const take = (final: boolean): string => {
      const prefix = decodeRange(prefixStart, readStart);
      const text = decodeRange(prefixStart, ids.length);
      if (!final && (text.length <= prefix.length || text.endsWith(INCOMPLETE))) return '';
      prefixStart = readStart;
      readStart = ids.length;
      // Byte-level (and SentencePiece) decoders only ever extend the window's text; a decoder that rewrote earlier
      // text could not be streamed exactly, so emit from where the two diverge rather than repeat text.
      let same = 0;
      while (same < prefix.length && prefix[same] === text[same]) same++;
      return text.slice(same);
    };
    return {
      push: (id: number) => {
        this.checkId(id, 'stream decoder');
        ids.push(id);
        return take(false);
      },
      flush: () => take(true),
    };
  }

  private checkId(id: number, where: string): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.hf.id_to_token(id) === undefined) {
      throw new InputError(`${where}: token id ${String(id)} is not in the vocabulary of ${this.source} (size ${this.vocabSize})`);
    }
  }
}
