// Forward and backward of the decoder with optional LoRA on any of the seven projections.
#include "engine/model.h"

#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "cpu/ops.h"

namespace claas {

int ModelConfig::moduleIn(int m) const {
  switch (m) {
    case kO: return heads * headDim;
    case kDown: return intermediate;
    default: return hidden;
  }
}

int ModelConfig::moduleOut(int m) const {
  switch (m) {
    case kQ: return heads * headDim;
    case kK:
    case kV: return kvHeads * headDim;
    case kGate:
    case kUp: return intermediate;
    default: return hidden;
  }
}

LoraLayout make_lora_layout(const ModelConfig& cfg, int rank, float alpha, const bool* target) {
  LoraLayout L;
  L.layers = cfg.layers;
  L.rank = rank;
  L.alpha = alpha;
  L.scale = alpha / static_cast<float>(rank);
  const size_t none = std::numeric_limits<size_t>::max();
  L.offA.assign(static_cast<size_t>(cfg.layers) * kModuleCount, none);
  L.offB.assign(static_cast<size_t>(cfg.layers) * kModuleCount, none);
  for (int m = 0; m < kModuleCount; ++m) L.target[m] = target[m];
  for (int l = 0; l < cfg.layers; ++l) {
    for (int m = 0; m < kModuleCount; ++m) {
      if (!target[m]) continue;
      const size_t i = static_cast<size_t>(l) * kModuleCount + m;
      L.offA[i] = L.total;
      L.total += static_cast<size_t>(rank) * cfg.moduleIn(m);
      L.offB[i] = L.total;
      L.total += static_cast<size_t>(cfg.moduleOut(m)) * rank;
    }
  }
  return L;
}

void init_lora(Adapter& adapter, const ModelConfig& cfg, uint64_t seed) {
  const LoraLayout& L = adapter.layout;
  std::mt19937_64 rng(seed);
  adapter.params.assign(L.total, 0.0f);
  for (int l = 0; l < L.layers; ++l) {
    for (int m = 0; m < kModuleCount; ++m) {
      if (!L.target[m]) continue;
      const int in = cfg.moduleIn(m);
      const float bound = 1.0f / std::sqrt(static_cast<float>(in));
      std::uniform_real_distribution<float> dist(-bound, bound);
      float* A = adapter.params.data() + L.offA[static_cast<size_t>(l) * kModuleCount + m];
      for (size_t i = 0; i < static_cast<size_t>(L.rank) * in; ++i) A[i] = dist(rng);
    }
  }
}

namespace {

// Projection m of layer l: the base weights over all T rows, then each segment's LoRA branch over
// its rows (u of segment s at uOff[s]).
void project(const Model& model, const LoraSegments& lora, int l, int m, float* y, float* u, const float* x, int T) {
  const ModelConfig& c = model.cfg;
  const LayerWeights& w = model.layers[l];
  const int I = c.moduleIn(m), O = c.moduleOut(m);
  cpu::linear(y, x, w.W[m], m <= kO ? w.b[m] : nullptr, T, I, O);
  size_t uOff = 0;
  for (const LoraSegment& s : lora) {
    if (!s.view.params || !s.view.layout->target[m]) continue;
    const LoraLayout& L = *s.view.layout;
    const size_t i = static_cast<size_t>(l) * kModuleCount + m;
    cpu::lora(y + static_cast<size_t>(s.row0) * O, u + uOff, x + static_cast<size_t>(s.row0) * I, s.view.params + L.offA[i],
              s.view.params + L.offB[i], s.rows, I, O, L.rank, L.scale);
    uOff += static_cast<size_t>(s.rows) * L.rank;
  }
}

// Input gradient of projection m (accumulated into dx) plus its LoRA gradients.
void project_backward(const Model& model, const LoraView& lora, float* grads, int l, int m, float* dx,
                      const float* dy, const float* x, const float* u, int T, bool accumulate,
                      std::vector<float>& scratch) {
  const ModelConfig& c = model.cfg;
  const int I = c.moduleIn(m), O = c.moduleOut(m);
  cpu::linear_backward_input(dx, dy, model.layers[l].W[m], T, I, O, accumulate);
  if (lora.params && lora.layout->target[m]) {
    const LoraLayout& L = *lora.layout;
    const size_t i = static_cast<size_t>(l) * kModuleCount + m;
    scratch.resize(static_cast<size_t>(T) * L.rank);
    cpu::lora_backward(dx, grads + L.offA[i], grads + L.offB[i], dy, x, u, lora.params + L.offA[i],
                       lora.params + L.offB[i], T, I, O, L.rank, L.scale, scratch.data());
  }
}

void sized(std::vector<float>& v, size_t n) {
  if (v.size() != n) v.resize(n);
}

}  // namespace

void layer_forward(const Model& model, const LoraSegments& lora, int l, float* x_TH, int T, const float* cos_TD2,
                   const float* sin_TD2, LayerActs& a, const AttendFn& attend) {
  const ModelConfig& c = model.cfg;
  const int H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, F = c.intermediate;
  const size_t TH = static_cast<size_t>(T) * H;
  const LayerWeights& w = model.layers[l];
  a.x.assign(x_TH, x_TH + TH);
  sized(a.xn1, TH);
  sized(a.rstd1, T);
  cpu::rmsnorm(a.xn1.data(), a.rstd1.data(), a.x.data(), w.inNorm, T, H, c.rmsEps);
  for (int m = 0; m < kModuleCount; ++m) {
    size_t n = 0;
    for (const LoraSegment& s : lora) {
      if (s.view.params && s.view.layout->target[m]) n += static_cast<size_t>(s.rows) * s.view.layout->rank;
    }
    sized(a.loraU[m], n);
  }
  sized(a.q, static_cast<size_t>(T) * N * D);
  sized(a.k, static_cast<size_t>(T) * M * D);
  sized(a.v, static_cast<size_t>(T) * M * D);
  project(model, lora, l, kQ, a.q.data(), a.loraU[kQ].data(), a.xn1.data(), T);
  project(model, lora, l, kK, a.k.data(), a.loraU[kK].data(), a.xn1.data(), T);
  project(model, lora, l, kV, a.v.data(), a.loraU[kV].data(), a.xn1.data(), T);
  if (c.qkNorm) {
    a.qRaw = a.q;
    a.kRaw = a.k;
    sized(a.rstdQ, static_cast<size_t>(T) * N);
    sized(a.rstdK, static_cast<size_t>(T) * M);
    cpu::rmsnorm(a.q.data(), a.rstdQ.data(), a.qRaw.data(), w.qNorm, T * N, D, c.rmsEps);
    cpu::rmsnorm(a.k.data(), a.rstdK.data(), a.kRaw.data(), w.kNorm, T * M, D, c.rmsEps);
  }
  cpu::rope(a.q.data(), cos_TD2, sin_TD2, T, N, D);
  cpu::rope(a.k.data(), cos_TD2, sin_TD2, T, M, D);
  sized(a.attn, static_cast<size_t>(T) * N * D);
  attend(a);

  sized(a.h1, TH);
  project(model, lora, l, kO, a.h1.data(), a.loraU[kO].data(), a.attn.data(), T);
  for (size_t i = 0; i < TH; ++i) a.h1[i] += a.x[i];
  sized(a.xn2, TH);
  sized(a.rstd2, T);
  cpu::rmsnorm(a.xn2.data(), a.rstd2.data(), a.h1.data(), w.postNorm, T, H, c.rmsEps);
  sized(a.g, static_cast<size_t>(T) * F);
  sized(a.u, static_cast<size_t>(T) * F);
  sized(a.act, static_cast<size_t>(T) * F);
  project(model, lora, l, kGate, a.g.data(), a.loraU[kGate].data(), a.xn2.data(), T);
  project(model, lora, l, kUp, a.u.data(), a.loraU[kUp].data(), a.xn2.data(), T);
  cpu::swiglu(a.act.data(), a.g.data(), a.u.data(), static_cast<size_t>(T) * F);
  project(model, lora, l, kDown, x_TH, a.loraU[kDown].data(), a.act.data(), T);
  for (size_t i = 0; i < TH; ++i) x_TH[i] += a.h1[i];
}

void forward(const Model& model, const LoraView& lora, const int32_t* ids, int T, Activations& acts, bool keep) {
  omp_set_num_threads(model.threads);
  const ModelConfig& c = model.cfg;
  const int H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim;
  acts.T = T;
  acts.layers.resize(keep ? c.layers : 1);
  sized(acts.cos, static_cast<size_t>(T) * D / 2);
  sized(acts.sin, static_cast<size_t>(T) * D / 2);
  std::vector<int32_t> positions(T);
  for (int t = 0; t < T; ++t) positions[t] = t;
  cpu::rope_tables(acts.cos.data(), acts.sin.data(), positions.data(), T, D, c.ropeTheta);

  std::vector<float> x(static_cast<size_t>(T) * H);
  cpu::embedding(x.data(), model.embed, ids, T, H);
  const AttendFn attend = [&](LayerActs& a) {
    sized(a.lse, static_cast<size_t>(N) * T);
    cpu::attention(a.attn.data(), a.lse.data(), a.q.data(), a.k.data(), a.v.data(), T, N, M, D);
  };
  // Training and scoring: one adapter (or none) over every row, so u is laid out [T, R] for the backward.
  const LoraSegments all{LoraSegment{0, T, lora}};
  for (int l = 0; l < c.layers; ++l) {
    layer_forward(model, all, l, x.data(), T, acts.cos.data(), acts.sin.data(), acts.layers[keep ? l : 0], attend);
  }
  acts.xLast = std::move(x);
  sized(acts.rstdF, T);
  sized(acts.xf, acts.xLast.size());
  cpu::rmsnorm(acts.xf.data(), acts.rstdF.data(), acts.xLast.data(), model.finalNorm, T, H, c.rmsEps);
}

void lm_head(const Model& model, float* logits_RV, const float* xf_TH, int row0, int R) {
  const ModelConfig& c = model.cfg;
  cpu::linear(logits_RV, xf_TH + static_cast<size_t>(row0) * c.hidden, model.lmHead, nullptr, R, c.hidden, c.vocab);
}

void backward(const Model& model, const LoraView& lora, float* grads, Activations& acts, const float* dxf_TH) {
  omp_set_num_threads(model.threads);
  const ModelConfig& c = model.cfg;
  const int T = acts.T, H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, F = c.intermediate;
  const size_t TH = static_cast<size_t>(T) * H;
  std::vector<float> dx(TH), dh1(TH), dxn(TH), dact(static_cast<size_t>(T) * F), dg(dact.size()),
      du(dact.size()), dattn(static_cast<size_t>(T) * N * D), dq(dattn.size()), dk(static_cast<size_t>(T) * M * D),
      dv(dk.size()), dqRaw, dkRaw, scratch, attnScratch(2 * static_cast<size_t>(N) * T * D);
  cpu::rmsnorm_backward(dx.data(), dxf_TH, acts.xLast.data(), acts.rstdF.data(), model.finalNorm, T, H, false);

  for (int l = c.layers - 1; l >= 0; --l) {
    LayerActs& a = acts.layers[l];
    const LayerWeights& w = model.layers[l];
    // MLP: x_out = h1 + down(swiglu(gate(xn2), up(xn2)))
    project_backward(model, lora, grads, l, kDown, dact.data(), dx.data(), a.act.data(), a.loraU[kDown].data(), T,
                     false, scratch);
    cpu::swiglu_backward(dg.data(), du.data(), dact.data(), a.g.data(), a.u.data(), static_cast<size_t>(T) * F);
    project_backward(model, lora, grads, l, kGate, dxn.data(), dg.data(), a.xn2.data(), a.loraU[kGate].data(), T,
                     false, scratch);
    project_backward(model, lora, grads, l, kUp, dxn.data(), du.data(), a.xn2.data(), a.loraU[kUp].data(), T, true,
                     scratch);
    dh1 = dx;
    cpu::rmsnorm_backward(dh1.data(), dxn.data(), a.h1.data(), a.rstd2.data(), w.postNorm, T, H, true);

    // Attention: h1 = x + o(attn(rope(norm(q)), rope(norm(k)), v))
    project_backward(model, lora, grads, l, kO, dattn.data(), dh1.data(), a.attn.data(), a.loraU[kO].data(), T,
                     false, scratch);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), dattn.data(), a.q.data(), a.k.data(), a.v.data(),
                            a.attn.data(), a.lse.data(), T, N, M, D, attnScratch.data());
    cpu::rope_backward(dq.data(), acts.cos.data(), acts.sin.data(), T, N, D);
    cpu::rope_backward(dk.data(), acts.cos.data(), acts.sin.data(), T, M, D);
    const float* dqIn = dq.data();
    const float* dkIn = dk.data();
    if (c.qkNorm) {
      sized(dqRaw, dq.size());
      sized(dkRaw, dk.size());
      cpu::rmsnorm_backward(dqRaw.data(), dq.data(), a.qRaw.data(), a.rstdQ.data(), w.qNorm, T * N, D, false);
      cpu::rmsnorm_backward(dkRaw.data(), dk.data(), a.kRaw.data(), a.rstdK.data(), w.kNorm, T * M, D, false);
      dqIn = dqRaw.data();
      dkIn = dkRaw.data();
    }
    project_backward(model, lora, grads, l, kQ, dxn.data(), dqIn, a.xn1.data(), a.loraU[kQ].data(), T, false,
                     scratch);
    project_backward(model, lora, grads, l, kK, dxn.data(), dkIn, a.xn1.data(), a.loraU[kK].data(), T, true,
                     scratch);
    project_backward(model, lora, grads, l, kV, dxn.data(), dv.data(), a.xn1.data(), a.loraU[kV].data(), T, true,
                     scratch);
    dx = dh1;
    cpu::rmsnorm_backward(dx.data(), dxn.data(), a.x.data(), a.rstd1.data(), w.inNorm, T, H, true);
  }
}

}  // namespace claas
