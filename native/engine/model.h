// The Qwen3-family decoder (Qwen2 / Llama variants are config flags): configuration, frozen weights,
// LoRA adapters, and the forward / backward passes used by training and scoring.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/weights.h"

namespace claas {

enum Module : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kModuleCount };

struct ModelConfig {
  int vocab = 0, hidden = 0, layers = 0, heads = 0, kvHeads = 0, headDim = 0, intermediate = 0;
  double ropeTheta = 10000.0;
  float rmsEps = 1e-6f;
  bool tieEmbeddings = false;
  bool qkNorm = true;
  bool bias[4] = {false, false, false, false};  // q, k, v, o

  int moduleIn(int m) const;
  int moduleOut(int m) const;
};

struct LayerWeights {
  const float* inNorm = nullptr;
  const float* postNorm = nullptr;
  const float* qNorm = nullptr;
  const float* kNorm = nullptr;
  const float* W[kModuleCount] = {};
  const float* b[4] = {};  // q, k, v, o biases (null when absent)
};

struct Model {
  ModelConfig cfg;
  int threads = 1;
  const float* embed = nullptr;
  const float* finalNorm = nullptr;
  const float* lmHead = nullptr;
  std::vector<LayerWeights> layers;
  WeightStore store;
};

// Where each LoRA tensor lives inside one flat parameter buffer.
struct LoraLayout {
  int layers = 0;
  int rank = 0;
  float alpha = 0.0f;
  float scale = 0.0f;  // alpha / rank
  bool target[kModuleCount] = {};
  std::vector<size_t> offA, offB;  // [layer * kModuleCount + module]; valid where target[module]
  size_t total = 0;
};

LoraLayout make_lora_layout(const ModelConfig& cfg, int rank, float alpha, const bool* target);

// A trainable adapter with its AdamW state and EMA copy, all laid out like `params`.
struct Adapter {
  LoraLayout layout;
  std::vector<float> params, grads, m, v, ema;
  int64_t step = 0;
};

// PEFT's default init: A ~ Kaiming-uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0.
void init_lora(Adapter& adapter, const ModelConfig& cfg, uint64_t seed);

// Which LoRA weights a forward pass uses: none (base model), or a flat buffer in some layout.
struct LoraView {
  const LoraLayout* layout = nullptr;
  const float* params = nullptr;
};

// Rows [row0, row0 + rows) of a batch and the LoRA weights they use. A batch is any number of such
// segments: the base projections run once over every row, the LoRA branch once per segment (rows
// of different adapters, or of the base model, in one pass). Rows outside every segment, or in a
// segment whose view is empty, get the base model.
struct LoraSegment {
  int row0 = 0;
  int rows = 0;
  LoraView view;
};
using LoraSegments = std::vector<LoraSegment>;

// Activations of one layer that the backward needs.
struct LayerActs {
  std::vector<float> x, xn1, rstd1, qRaw, kRaw, rstdQ, rstdK, q, k, v, attn, lse, h1, xn2, rstd2, g, u, act;
  // u = x A^T of each segment, one after another (segment s at sum over earlier segments of rows * rank).
  std::vector<float> loraU[kModuleCount];
};

struct Activations {
  int T = 0;
  std::vector<LayerActs> layers;  // one per layer when kept for a backward, else one reused
  std::vector<float> xLast, rstdF, xf, cos, sin;
};

// Fills a.attn [T, N*D] from a.q (after RoPE), a.k and a.v.
using AttendFn = std::function<void(LayerActs& a)>;

// One decoder layer on the residual stream x_TH in place; a keeps what a backward would need.
void layer_forward(const Model& model, const LoraSegments& lora, int l, float* x_TH, int T, const float* cos_TD2,
                   const float* sin_TD2, LayerActs& a, const AttendFn& attend);

// Runs the decoder on ids[0..T); leaves the final normalized hidden states in acts.xf [T, H].
void forward(const Model& model, const LoraView& lora, const int32_t* ids, int T, Activations& acts, bool keep);

// logits_RV = xf rows [row0, row0 + R) times the LM head.
void lm_head(const Model& model, float* logits_RV, const float* xf_TH, int row0, int R);

// Back-propagates dxf [T, H] (gradient of the final normalized hidden states) to the adapter's
// LoRA gradients (accumulated into grads, laid out like the adapter's params).
void backward(const Model& model, const LoraView& lora, float* grads, Activations& acts, const float* dxf_TH);

}  // namespace claas
