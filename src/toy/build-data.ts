// Writes the toy model's folder minus its weights: config.json, a tokenizer whose merges are learned
// from the corpus, the chat template, generation_config.json; and the tokenized corpus (token ids,
// prompt lengths) in <dir>/.data for the trainer. Run: node dist/src/toy/build-data.js <dir> [seed] [samples]
// The second phase's corpus (styles nobody asked for, see corpus.ts) is tokenized with the first
// phase's tokenizer, left as it is, into <dir>/.data/unasked: ... <dir> <seed> <samples> --unasked <p>
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ChatTemplate } from '../model/chat-template.js';
import { Tokenizer } from '../model/tokenizer.js';
import { TOY_ASSISTANT_TEMPLATE, writeTokenizerFiles } from '../model/toy-tokenizer.js';
import { corpus, type CorpusOptions } from './corpus.js';
import { WORDS } from './tasks.js';

// 32k positions: clients such as OpenClaw send ~10k-token prompts (RoPE needs no trained table, though
// the model only ever saw short conversations).
export const TOY_SHAPE = { hidden: 128, layers: 4, heads: 4, kvHeads: 2, headDim: 32, intermediate: 384, maxPositions: 32768 };

function firstDifference(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  if (i === a.length) throw new Error('a styled reply and its alternative tokenize the same');
  return i;
}

/**
 * The forms a copy task's word takes in a reply: at a line's start or after a space, in lower case or
 * in capitals. Each is one token, so copying a word in capitals is a one-token lookup, as in lower case
 * (spelt in letter pieces, the model dropped or repeated a word in one capitals copy of twenty).
 */
const copyForms = (w: string) => [w, ` ${w}`, w.toUpperCase(), ` ${w.toUpperCase()}`];

/** The copy forms a tokenizer splits into more than one token (none, for the toy's). */
export function splitCopyForms(tokenizer: Tokenizer): string[] {
  return WORDS.flatMap(copyForms).filter((f) => tokenizer.encode(f, { addSpecialTokens: false }).length !== 1);
}

export function buildToyData(dir: string, seed: number, samples: number, options: CorpusOptions = {}): { vocab: number; tokens: number } {
  const data = corpus(seed, samples, options);
  const phase2 = (options.unasked ?? 0) > 0;
  if (!phase2) {
    // The merges come from the corpus, after a word list that puts every copy form first.
    const lexicon = WORDS.map((w) => `${w} ${w}\n${w.toUpperCase()} ${w.toUpperCase()}`).join('\n');
    const text = [
      ...Array.from({ length: 400 }, () => lexicon),
      ...data.slice(0, 2000).map((s) => `${s.messages.map((m) => String(m.content)).join('\n')}\n${s.reply}`),
    ].join('\n');
    writeTokenizerFiles(dir, { text, merges: 600, chatTemplate: TOY_ASSISTANT_TEMPLATE });
  }
  const tokenizer = Tokenizer.fromDir(dir);
  const vocab = tokenizer.vocabSize;
  const split = splitCopyForms(tokenizer);
  if (split.length > 0) throw new Error(`copy words the toy tokenizer splits: ${split.map((f) => JSON.stringify(f)).join(', ')}`);
  const template = ChatTemplate.fromDir(dir);
  const end = tokenizer.eosTokenId!;
  const ids: number[] = [];
  // [start, prompt length, sequence length, ...reply offsets left out of the loss]
  const index: number[][] = [];
  for (const s of data) {
    const prompt = tokenizer.encode(template.render(s.messages, { addGenerationPrompt: true, enableThinking: false }), { addSpecialTokens: false });
    const reply = [...tokenizer.encode(s.reply, { addSpecialTokens: false }), end];
    const skipped = new Set(s.alternatives.map((alt) => firstDifference(reply, tokenizer.encode(alt, { addSpecialTokens: false }))));
    index.push([ids.length, prompt.length, prompt.length + reply.length, ...[...skipped].sort((a, b) => a - b)]);
    ids.push(...prompt, ...reply);
  }
  const out = phase2 ? join(dir, '.data', 'unasked') : join(dir, '.data');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'tokens.bin'), Buffer.from(Int32Array.from(ids).buffer));
  writeFileSync(join(out, 'index.json'), JSON.stringify({ seed, index }));
  if (phase2) return { vocab, tokens: ids.length };
  const c = TOY_SHAPE;
  const config = {
    architectures: ['Qwen3ForCausalLM'],
    model_type: 'qwen3',
    vocab_size: vocab,
    hidden_size: c.hidden,
    intermediate_size: c.intermediate,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads,
    head_dim: c.headDim,
    hidden_act: 'silu',
    max_position_embeddings: c.maxPositions,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: true,
    attention_bias: false,
    torch_dtype: 'float32',
    bos_token_id: tokenizer.eosTokenIds.at(-1),
    eos_token_id: end,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  return { vocab, tokens: ids.length };
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  const args = process.argv.slice(2);
  const flag = args.indexOf('--unasked');
  const unasked = flag >= 0 ? Number(args.splice(flag, 2)[1]) : 0;
  if (!(unasked >= 0 && unasked < 1)) throw new Error('--unasked takes a probability in [0, 1)');
  const [dir = 'models/toy', seed = '1', samples = '24000'] = args;
  const t0 = performance.now();
  const r = buildToyData(resolve(dir), Number(seed), Number(samples), { unasked });
  console.log(`toy data: ${samples} samples, ${r.tokens} tokens, vocabulary ${r.vocab} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}
