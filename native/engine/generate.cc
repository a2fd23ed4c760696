// Batched forward over KV-cached sequences: the projections and MLP run once over the new rows of
// every sequence, the LoRA branches once per adapter over its rows; attention runs per sequence
// against its cache.
#include "engine/generate.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "cpu/ops.h"
#include "engine/errors.h"

namespace claas {

void KvCache::ensure(const ModelConfig& cfg, int needed) {
  if (needed <= capacity) return;
  int cap = std::max(capacity, 64);
  while (cap < needed) cap *= 2;
  const size_t row = static_cast<size_t>(cfg.kvHeads) * cfg.headDim;
  std::vector<float> nk(static_cast<size_t>(cfg.layers) * cap * row), nv(nk.size());
  for (int l = 0; l < cfg.layers && length > 0; ++l) {
    std::memcpy(nk.data() + l * cap * row, k.data() + l * capacity * row, sizeof(float) * length * row);
    std::memcpy(nv.data() + l * cap * row, v.data() + l * capacity * row, sizeof(float) * length * row);
  }
  k.swap(nk);
  v.swap(nv);
  capacity = cap;
}

void decode_step(const Model& model, std::vector<DecodeEntry>& entries) {
  omp_set_num_threads(model.threads);
  const ModelConfig& c = model.cfg;
  const int H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, V = c.vocab;
  const size_t kvRow = static_cast<size_t>(M) * D;
  // Entries grouped by adapter, in order of each adapter's first appearance (stable within a group).
  std::vector<size_t> order;
  std::vector<const float*> seen;
  for (const DecodeEntry& e : entries) {
    if (std::find(seen.begin(), seen.end(), e.lora.params) == seen.end()) seen.push_back(e.lora.params);
  }
  for (const float* p : seen) {
    for (size_t b = 0; b < entries.size(); ++b) {
      if (entries[b].lora.params == p) order.push_back(b);
    }
  }
  std::vector<int> rowStart(entries.size());
  std::vector<int32_t> ids, positions;
  LoraSegments segments;
  for (const size_t b : order) {
    DecodeEntry& e = entries[b];
    if (e.ids.empty()) throw EngineError("E_INPUT", "a decode entry has no new tokens");
    const int row0 = static_cast<int>(ids.size()), n = static_cast<int>(e.ids.size());
    rowStart[b] = row0;
    if (segments.empty() || segments.back().view.params != e.lora.params) segments.push_back(LoraSegment{row0, 0, e.lora});
    segments.back().rows += n;
    for (int i = 0; i < n; ++i) positions.push_back(e.seq->cache.length + i);
    ids.insert(ids.end(), e.ids.begin(), e.ids.end());
    e.seq->cache.ensure(c, e.seq->cache.length + n);
  }
  const int T = static_cast<int>(ids.size());
  std::vector<float> cos(static_cast<size_t>(T) * D / 2), sin(cos.size());
  cpu::rope_tables(cos.data(), sin.data(), positions.data(), T, D, c.ropeTheta);
  std::vector<float> x(static_cast<size_t>(T) * H);
  cpu::embedding(x.data(), model.embed, ids.data(), T, H);

  LayerActs a;
  std::vector<float> lse;
  for (int l = 0; l < c.layers; ++l) {
    const AttendFn attend = [&](LayerActs& acts) {
      for (size_t b = 0; b < entries.size(); ++b) {
        KvCache& kv = entries[b].seq->cache;
        const int n = static_cast<int>(entries[b].ids.size()), r0 = rowStart[b];
        float* kl = kv.kLayer(c, l);
        float* vl = kv.vLayer(c, l);
        std::memcpy(kl + kv.length * kvRow, acts.k.data() + r0 * kvRow, sizeof(float) * n * kvRow);
        std::memcpy(vl + kv.length * kvRow, acts.v.data() + r0 * kvRow, sizeof(float) * n * kvRow);
        lse.resize(static_cast<size_t>(N) * n);
        const size_t qOff = static_cast<size_t>(r0) * N * D;
        cpu::attention(acts.attn.data() + qOff, lse.data(), acts.q.data() + qOff, kl, vl, n, N, M, D, kv.length);
      }
    };
    layer_forward(model, segments, l, x.data(), T, cos.data(), sin.data(), a, attend);
  }

  // Only the last new row of each sequence is scored.
  const int B = static_cast<int>(entries.size());
  std::vector<float> last(static_cast<size_t>(B) * H), normed(last.size()), logits(static_cast<size_t>(B) * V);
  for (int b = 0; b < B; ++b) {
    const int row = rowStart[b] + static_cast<int>(entries[b].ids.size()) - 1;
    std::memcpy(last.data() + static_cast<size_t>(b) * H, x.data() + static_cast<size_t>(row) * H, sizeof(float) * H);
  }
  cpu::rmsnorm(normed.data(), nullptr, last.data(), model.finalNorm, B, H, c.rmsEps);
  cpu::linear(logits.data(), normed.data(), model.lmHead, nullptr, B, H, V);
  for (int b = 0; b < B; ++b) {
    DecodeEntry& e = entries[b];
    e.seq->cache.length += static_cast<int>(e.ids.size());
    e.out = cpu::sample(logits.data() + static_cast<size_t>(b) * V, V, e.sampling, e.seq->rng);
  }
}

}  // namespace claas
