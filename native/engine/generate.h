// Generation: per-sequence KV caches and a batched forward over new tokens of several sequences
// (prefill chunks and single decode tokens mixed in one pass, each sequence on its own adapter or the
// base model), then sampling.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "cpu/sample.h"
#include "engine/model.h"

namespace claas {

struct KvCache {
  int length = 0;    // tokens stored
  int capacity = 0;  // tokens that fit before the next growth
  std::vector<float> k, v;  // [layers][capacity][kvHeads * headDim], RoPE already applied to k

  // Grows (doubling, contents kept) so that `needed` tokens fit.
  void ensure(const ModelConfig& cfg, int needed);
  size_t bytes() const { return (k.capacity() + v.capacity()) * sizeof(float); }
  float* kLayer(const ModelConfig& cfg, int l) { return k.data() + static_cast<size_t>(l) * capacity * cfg.kvHeads * cfg.headDim; }
  float* vLayer(const ModelConfig& cfg, int l) { return v.data() + static_cast<size_t>(l) * capacity * cfg.kvHeads * cfg.headDim; }
};

struct Sequence {
  KvCache cache;
  std::mt19937_64 rng;
};

struct DecodeEntry {
  Sequence* seq;
  LoraView lora;             // the adapter this sequence decodes with (empty: the base model)
  std::vector<int32_t> ids;  // new tokens to append (a prompt chunk, or the last sampled token)
  cpu::SamplingParams sampling;
  cpu::SampledToken out;     // filled by decode_step
};

// Appends every entry's new tokens to its cache in one batched pass, then samples the next token of
// each entry from the logits of its last new token. Rows are laid out adapter by adapter, so the
// LoRA branch is one product per adapter over its rows while the base projections run once.
void decode_step(const Model& model, std::vector<DecodeEntry>& entries);

}  // namespace claas
