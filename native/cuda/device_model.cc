// Forward, backward, SDPO step and decode of the decoder on the device; each function mirrors its
// CPU twin in native/engine (model.cc, sdpo_step.cc, generate.cc) so the two read side by side.
#include "cuda/device_model.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>

#include "cpu/ops.h"
#include "engine/errors.h"

namespace claas::cuda {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

size_t sz(size_t a, size_t b = 1, size_t c = 1) { return a * b * c; }

template <typename T>
void copy_d2d(cudaStream_t s, T* dst, const T* src, size_t n) {
  if (n) CLAAS_CUDA(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, s));
}

// Device activations of one layer that the backward needs (as LayerActs on the CPU).
struct Acts {
  DeviceBuffer<float> x, xn1, rstd1, qRaw, kRaw, rstdQ, rstdK, q, k, v, attn, lse, h1, xn2, rstd2, g, u, act;
  DeviceBuffer<float> loraU[kModuleCount];
};

struct Forward {
  int T = 0;
  std::vector<Acts> layers;                  // per layer when kept (one when checkpointing or not kept)
  std::vector<DeviceBuffer<float>> inputs;   // layer inputs when checkpointing
  DeviceBuffer<float> xLast, rstdF, xf, cos, sin;
  DeviceBuffer<bf16> xfB;                    // bf16 copy of xf for the LM head
  DeviceBuffer<int32_t> ids;
};

// bf16 staging for GEMM inputs, grown on demand.
struct Staging {
  DeviceBuffer<bf16> buf;
  bf16* of(cudaStream_t s, const float* x, size_t n) {
    buf.resize(n);
    to_bf16(s, buf.get(), x, n);
    return buf.get();
  }
};

// Rows [row0, row0 + rows) of a batch and the LoRA weights they use (as claas::LoraSegment). The
// base projections run once over every row, the LoRA branch once per segment: rows of different
// adapters and of the base model share one pass. A segment with an empty view gets the base model.
struct Segment {
  int row0 = 0;
  int rows = 0;
  DeviceLoraView view;
  bool targets(int m) const { return view.params && view.layout->target[m]; }
};
using Segments = std::vector<Segment>;

// Projection m of layer l: the frozen GEMM over all T rows, then each segment's LoRA branch on its
// rows. u holds each targeting segment's x A^T one after another, so with one segment over every
// row (training) it is the [T, R] matrix the backward reads. xB is the bf16 copy of x.
void project(const DeviceModel& dm, Lane& lane, const Segments& segs, int l, int m, float* y, DeviceBuffer<float>& u,
             const float* x, const bf16* xB, int T) {
  const ModelConfig& c = dm.cfg;
  const int I = c.moduleIn(m), O = c.moduleOut(m);
  const DeviceLayer& w = dm.layers[l];
  linear(lane.blas, y, xB, w.W[m].get(), m <= kO && c.bias[m] ? w.b[m].get() : nullptr, T, I, O);
  size_t uRows = 0;
  for (const Segment& g : segs) {
    if (g.targets(m)) uRows += sz(g.rows, g.view.layout->rank);
  }
  if (uRows == 0) return;
  u.resize(uRows);
  const size_t i = static_cast<size_t>(l) * kModuleCount + m;
  size_t uOff = 0;
  for (const Segment& g : segs) {
    if (!g.targets(m)) continue;
    const LoraLayout& L = *g.view.layout;
    lora(lane.blas, y + sz(g.row0, O), u.get() + uOff, x + sz(g.row0, I), g.view.params + L.offA[i],
         g.view.params + L.offB[i], g.rows, I, O, L.rank, L.scale);
    uOff += sz(g.rows, L.rank);
  }
}

// Input gradient of projection m (into dx, accumulated when asked) plus its LoRA gradients.
void project_backward(const DeviceModel& dm, Lane& lane, const DeviceLoraView& view, float* grads, int l, int m,
                      float* dx, const float* dy, const float* x, const DeviceBuffer<float>& u, int T, bool accumulate,
                      Staging& st, DeviceBuffer<float>& scratch) {
  const ModelConfig& c = dm.cfg;
  const cudaStream_t s = lane.stream.get();
  const int I = c.moduleIn(m), O = c.moduleOut(m);
  linear_backward_input(lane.blas, dx, st.of(s, dy, sz(T, O)), dm.layers[l].W[m].get(), T, I, O, accumulate);
  if (view.params && view.layout->target[m]) {
    const LoraLayout& L = *view.layout;
    const size_t i = static_cast<size_t>(l) * kModuleCount + m;
    scratch.resize(sz(T, L.rank));
    lora_backward(lane.blas, dx, grads + L.offA[i], grads + L.offB[i], dy, x, u.get(), view.params + L.offA[i],
                  view.params + L.offB[i], T, I, O, L.rank, L.scale, scratch.get());
  }
}

// Attention of a layer: fills a.attn from a.q, a.k, a.v (after RoPE).
using Attend = std::function<void(Acts& a)>;

// One decoder layer on the residual stream x_TH (device) in place, as claas::layer_forward.
void layer_forward(const DeviceModel& dm, Lane& lane, const Segments& segs, int l, float* x_TH, int T,
                   const float* cos_TD2, const float* sin_TD2, Acts& a, const Attend& attend, Staging& st) {
  const ModelConfig& c = dm.cfg;
  const cudaStream_t s = lane.stream.get();
  const int H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, F = c.intermediate;
  const size_t TH = sz(T, H);
  const DeviceLayer& w = dm.layers[l];
  a.x.resize(TH);
  copy_d2d(s, a.x.get(), x_TH, TH);
  a.xn1.resize(TH);
  a.rstd1.resize(T);
  rmsnorm(s, a.xn1.get(), a.rstd1.get(), a.x.get(), w.inNorm.get(), T, H, c.rmsEps);
  a.q.resize(sz(T, N, D));
  a.k.resize(sz(T, M, D));
  a.v.resize(sz(T, M, D));
  const bf16* xn1B = st.of(s, a.xn1.get(), TH);  // one bf16 copy serves q, k and v
  project(dm, lane, segs, l, kQ, a.q.get(), a.loraU[kQ], a.xn1.get(), xn1B, T);
  project(dm, lane, segs, l, kK, a.k.get(), a.loraU[kK], a.xn1.get(), xn1B, T);
  project(dm, lane, segs, l, kV, a.v.get(), a.loraU[kV], a.xn1.get(), xn1B, T);
  if (c.qkNorm) {
    a.qRaw.resize(a.q.size());
    a.kRaw.resize(a.k.size());
    copy_d2d(s, a.qRaw.get(), a.q.get(), a.q.size());
    copy_d2d(s, a.kRaw.get(), a.k.get(), a.k.size());
    a.rstdQ.resize(sz(T, N));
    a.rstdK.resize(sz(T, M));
    rmsnorm(s, a.q.get(), a.rstdQ.get(), a.qRaw.get(), w.qNorm.get(), T * N, D, c.rmsEps);
    rmsnorm(s, a.k.get(), a.rstdK.get(), a.kRaw.get(), w.kNorm.get(), T * M, D, c.rmsEps);
  }
  rope(s, a.q.get(), cos_TD2, sin_TD2, T, N, D);
  rope(s, a.k.get(), cos_TD2, sin_TD2, T, M, D);
  a.attn.resize(sz(T, N, D));
  attend(a);

  a.h1.resize(TH);
  project(dm, lane, segs, l, kO, a.h1.get(), a.loraU[kO], a.attn.get(), st.of(s, a.attn.get(), sz(T, N, D)), T);
  add(s, a.h1.get(), a.x.get(), TH);
  a.xn2.resize(TH);
  a.rstd2.resize(T);
  rmsnorm(s, a.xn2.get(), a.rstd2.get(), a.h1.get(), w.postNorm.get(), T, H, c.rmsEps);
  a.g.resize(sz(T, F));
  a.u.resize(sz(T, F));
  a.act.resize(sz(T, F));
  const bf16* xn2B = st.of(s, a.xn2.get(), TH);
  project(dm, lane, segs, l, kGate, a.g.get(), a.loraU[kGate], a.xn2.get(), xn2B, T);
  project(dm, lane, segs, l, kUp, a.u.get(), a.loraU[kUp], a.xn2.get(), xn2B, T);
  swiglu(s, a.act.get(), a.g.get(), a.u.get(), sz(T, F));
  project(dm, lane, segs, l, kDown, x_TH, a.loraU[kDown], a.act.get(), st.of(s, a.act.get(), sz(T, F)), T);
  add(s, x_TH, a.h1.get(), TH);
}

void upload_rope(const DeviceModel& dm, Lane& lane, Forward& f, const std::vector<int32_t>& positions) {
  const int T = static_cast<int>(positions.size()), D = dm.cfg.headDim;
  std::vector<float> c(sz(T, D / 2)), sn(c.size());
  cpu::rope_tables(c.data(), sn.data(), positions.data(), T, D, dm.cfg.ropeTheta);
  f.cos.upload(c.data(), c.size(), lane.stream.get());
  f.sin.upload(sn.data(), sn.size(), lane.stream.get());
}

// The decoder on ids; leaves the final normalized hidden states in f.xf (and f.xfB).
void forward(const DeviceModel& dm, Lane& lane, const DeviceLoraView& view, const std::vector<int32_t>& ids,
             Forward& f, bool keep, Staging& st) {
  const ModelConfig& c = dm.cfg;
  const cudaStream_t s = lane.stream.get();
  const int T = static_cast<int>(ids.size()), H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim;
  f.T = T;
  const bool perLayer = keep && !dm.checkpoint;
  f.layers.resize(perLayer ? c.layers : 1);
  f.inputs.resize(keep && dm.checkpoint ? c.layers : 0);
  std::vector<int32_t> positions(T);
  for (int t = 0; t < T; ++t) positions[t] = t;
  upload_rope(dm, lane, f, positions);
  f.ids.upload(ids.data(), ids.size(), s);
  f.xLast.resize(sz(T, H));
  embedding(s, f.xLast.get(), dm.embed.get(), f.ids.get(), T, H);
  const Attend attend = [&](Acts& a) {
    a.lse.resize(sz(N, T));
    attention(s, a.attn.get(), a.lse.get(), a.q.get(), a.k.get(), a.v.get(), T, N, M, D);
  };
  // Training and scoring: one view over every row.
  const Segments all{Segment{0, T, view}};
  for (int l = 0; l < c.layers; ++l) {
    if (!f.inputs.empty()) {
      f.inputs[l].resize(sz(T, H));
      copy_d2d(s, f.inputs[l].get(), f.xLast.get(), sz(T, H));
    }
    layer_forward(dm, lane, all, l, f.xLast.get(), T, f.cos.get(), f.sin.get(), f.layers[perLayer ? l : 0], attend, st);
  }
  f.rstdF.resize(T);
  f.xf.resize(sz(T, H));
  rmsnorm(s, f.xf.get(), f.rstdF.get(), f.xLast.get(), dm.finalNorm.get(), T, H, c.rmsEps);
  f.xfB.resize(sz(T, H));
  to_bf16(s, f.xfB.get(), f.xf.get(), sz(T, H));
}

// Gradient buffers of the backward (every one is written before it is read).
struct Grads {
  DeviceBuffer<float> dx, dh1, dxn, dact, dg, du, dattn, dq, dk, dv, dqRaw, dkRaw, scratch, attnScratch, xTmp;
};

// Back-propagates dxf [T, H] to the LoRA gradients (accumulated into grads), as claas::backward.
void backward(const DeviceModel& dm, Lane& lane, const DeviceLoraView& view, float* grads, Forward& f,
              const float* dxf_TH, Staging& st, Grads& g) {
  const ModelConfig& c = dm.cfg;
  const cudaStream_t s = lane.stream.get();
  const int T = f.T, H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, F = c.intermediate;
  const size_t TH = sz(T, H);
  for (DeviceBuffer<float>* b : {&g.dx, &g.dh1, &g.dxn}) b->resize(TH);
  for (DeviceBuffer<float>* b : {&g.dact, &g.dg, &g.du}) b->resize(sz(T, F));
  for (DeviceBuffer<float>* b : {&g.dattn, &g.dq}) b->resize(sz(T, N, D));
  for (DeviceBuffer<float>* b : {&g.dk, &g.dv}) b->resize(sz(T, M, D));
  g.attnScratch.resize(attention_backward_scratch(T, N, M, D));
  DeviceBuffer<float>&dx = g.dx, &dh1 = g.dh1, &dxn = g.dxn, &dact = g.dact, &dg = g.dg, &du = g.du, &dattn = g.dattn,
  &dq = g.dq, &dk = g.dk, &dv = g.dv, &dqRaw = g.dqRaw, &dkRaw = g.dkRaw, &scratch = g.scratch,
  &attnScratch = g.attnScratch, &xTmp = g.xTmp;
  rmsnorm_backward(s, dx.get(), dxf_TH, f.xLast.get(), f.rstdF.get(), dm.finalNorm.get(), T, H, false);
  const Attend attend = [&](Acts& a) {
    a.lse.resize(sz(N, T));
    attention(s, a.attn.get(), a.lse.get(), a.q.get(), a.k.get(), a.v.get(), T, N, M, D);
  };

  const Segments all{Segment{0, T, view}};
  for (int l = c.layers - 1; l >= 0; --l) {
    Acts* ap = &f.layers[dm.checkpoint ? 0 : l];
    if (dm.checkpoint) {  // recompute this layer's activations from its saved input
      xTmp.resize(TH);
      copy_d2d(s, xTmp.get(), f.inputs[l].get(), TH);
      layer_forward(dm, lane, all, l, xTmp.get(), T, f.cos.get(), f.sin.get(), *ap, attend, st);
    }
    Acts& a = *ap;
    const DeviceLayer& w = dm.layers[l];
    project_backward(dm, lane, view, grads, l, kDown, dact.get(), dx.get(), a.act.get(), a.loraU[kDown], T, false, st, scratch);
    swiglu_backward(s, dg.get(), du.get(), dact.get(), a.g.get(), a.u.get(), sz(T, F));
    project_backward(dm, lane, view, grads, l, kGate, dxn.get(), dg.get(), a.xn2.get(), a.loraU[kGate], T, false, st, scratch);
    project_backward(dm, lane, view, grads, l, kUp, dxn.get(), du.get(), a.xn2.get(), a.loraU[kUp], T, true, st, scratch);
    copy_d2d(s, dh1.get(), dx.get(), TH);
    rmsnorm_backward(s, dh1.get(), dxn.get(), a.h1.get(), a.rstd2.get(), w.postNorm.get(), T, H, true);

    project_backward(dm, lane, view, grads, l, kO, dattn.get(), dh1.get(), a.attn.get(), a.loraU[kO], T, false, st, scratch);
    attention_backward(s, dq.get(), dk.get(), dv.get(), dattn.get(), a.q.get(), a.k.get(), a.v.get(), a.attn.get(),
                       a.lse.get(), T, N, M, D, attnScratch.get());
    rope_backward(s, dq.get(), f.cos.get(), f.sin.get(), T, N, D);
    rope_backward(s, dk.get(), f.cos.get(), f.sin.get(), T, M, D);
    const float* dqIn = dq.get();
    const float* dkIn = dk.get();
    if (c.qkNorm) {
      dqRaw.resize(dq.size());
      dkRaw.resize(dk.size());
      rmsnorm_backward(s, dqRaw.get(), dq.get(), a.qRaw.get(), a.rstdQ.get(), w.qNorm.get(), T * N, D, false);
      rmsnorm_backward(s, dkRaw.get(), dk.get(), a.kRaw.get(), a.rstdK.get(), w.kNorm.get(), T * M, D, false);
      dqIn = dqRaw.get();
      dkIn = dkRaw.get();
    }
    project_backward(dm, lane, view, grads, l, kQ, dxn.get(), dqIn, a.xn1.get(), a.loraU[kQ], T, false, st, scratch);
    project_backward(dm, lane, view, grads, l, kK, dxn.get(), dkIn, a.xn1.get(), a.loraU[kK], T, true, st, scratch);
    project_backward(dm, lane, view, grads, l, kV, dxn.get(), dv.get(), a.xn1.get(), a.loraU[kV], T, true, st, scratch);
    copy_d2d(s, dx.get(), dh1.get(), TH);
    rmsnorm_backward(s, dx.get(), dxn.get(), a.x.get(), a.rstd1.get(), w.inNorm.get(), T, H, true);
  }
}

// Log-probs of rows [row0, row0 + R) of f.xf, `rows` at a time: fn(r0, n, logp_nV) sees each chunk.
template <typename Fn>
void logprob_chunks(const DeviceModel& dm, Lane& lane, const Forward& f, int row0, int R, DeviceBuffer<float>& chunk,
                    Fn&& fn) {
  const cudaStream_t s = lane.stream.get();
  const int H = dm.cfg.hidden, V = dm.cfg.vocab;
  for (int r0 = 0; r0 < R; r0 += dm.logitRows) {
    const int n = std::min(dm.logitRows, R - r0);
    chunk.resize(sz(n, V));
    linear(lane.blas, chunk.get(), f.xfB.get() + sz(row0 + r0, H), dm.lmHead, nullptr, n, H, V);
    log_softmax(s, chunk.get(), nullptr, chunk.get(), n, V);
    fn(r0, n, chunk.get());
  }
}

// Teacher targets of one sample, on the device.
struct Targets {
  int K = 0;
  DeviceBuffer<int32_t> idx;
  DeviceBuffer<float> logp, tail, token;
};

}  // namespace

// One per lane: the decode lane grows only the decode buffers (and st), the other lane the rest.
struct Workspace {
  Forward kept, scratch;  // the student's forward (kept for the backward) and any other
  Grads grads;
  Staging st, stLogits;
  DeviceBuffer<float> chunk, ds;
  // decode
  Forward rope;
  Acts acts;
  DeviceBuffer<float> x, lse, last, normed, logits;
};

namespace {
Workspace& workspace(Lane& lane) {
  if (!lane.work) lane.work = std::make_shared<Workspace>();
  return *lane.work;
}
}  // namespace

void upload_bf16(Lane& lane, DeviceBuffer<bf16>& dst, const uint8_t* data, DType dtype, size_t count) {
  constexpr size_t kSlice = size_t{1} << 24;
  dst.resize(count);
  std::vector<bf16> host(std::min(count, kSlice));
  for (size_t i0 = 0; i0 < count; i0 += kSlice) {
    const size_t n = std::min(kSlice, count - i0);
    if (dtype == DType::BF16) {
      std::memcpy(host.data(), data + 2 * i0, 2 * n);
    } else {
      for (size_t i = 0; i < n; ++i) {
        float f;
        if (dtype == DType::F32) {
          std::memcpy(&f, data + 4 * (i0 + i), 4);
        } else {
          uint16_t h;
          std::memcpy(&h, data + 2 * (i0 + i), 2);
          f = half_to_float(h);
        }
        host[i] = __float2bfloat16_rn(f);
      }
    }
    CLAAS_CUDA(cudaMemcpyAsync(dst.get() + i0, host.data(), n * sizeof(bf16), cudaMemcpyHostToDevice, lane.stream.get()));
    lane.stream.sync();  // host is refilled next
  }
}

void upload_vectors(DeviceModel& dm, Lane& lane, const Model& host) {
  const ModelConfig& c = dm.cfg;
  const cudaStream_t s = lane.stream.get();
  const auto f32 = [&](DeviceBuffer<float>& d, const float* x, size_t n) {
    if (x) d.upload(x, n, s);
  };
  f32(dm.finalNorm, host.finalNorm, c.hidden);
  dm.layers.resize(c.layers);
  for (int l = 0; l < c.layers; ++l) {
    const LayerWeights& w = host.layers[l];
    DeviceLayer& d = dm.layers[l];
    f32(d.inNorm, w.inNorm, c.hidden);
    f32(d.postNorm, w.postNorm, c.hidden);
    f32(d.qNorm, w.qNorm, c.headDim);
    f32(d.kNorm, w.kNorm, c.headDim);
    for (int b = 0; b < 4; ++b) f32(d.b[b], w.b[b], c.moduleOut(b));
  }
  lane.stream.sync();
}

std::shared_ptr<DeviceAdapter> upload_adapter(Lane& lane, const Adapter& host) {
  auto a = std::make_shared<DeviceAdapter>();
  const cudaStream_t s = lane.stream.get();
  a->layout = host.layout;
  a->params.upload(host.params.data(), host.params.size(), s);
  a->grads.upload(host.grads.data(), host.grads.size(), s);
  a->m.upload(host.m.data(), host.m.size(), s);
  a->v.upload(host.v.data(), host.v.size(), s);
  a->ema.upload(host.ema.data(), host.ema.size(), s);
  a->step = host.step;
  lane.stream.sync();
  return a;
}

Adapter download_adapter(Lane& lane, const DeviceAdapter& a) {
  Adapter h;
  const cudaStream_t s = lane.stream.get();
  h.layout = a.layout;
  h.params = a.params.download(s);
  h.grads = a.grads.download(s);
  h.m = a.m.download(s);
  h.v = a.v.download(s);
  h.ema = a.ema.download(s);
  h.step = a.step;
  return h;
}

std::vector<float> forward_logits(const DeviceModel& dm, Lane& lane, const DeviceLoraView& view,
                                  const std::vector<int32_t>& ids) {
  Workspace& ws = workspace(lane);
  Forward& f = ws.scratch;
  forward(dm, lane, view, ids, f, false, ws.st);
  const int T = static_cast<int>(ids.size()), H = dm.cfg.hidden, V = dm.cfg.vocab;
  DeviceBuffer<float> logits(sz(T, V));
  linear(lane.blas, logits.get(), f.xfB.get(), dm.lmHead, nullptr, T, H, V);
  return logits.download(lane.stream.get());
}

std::vector<float> token_logprobs(const DeviceModel& dm, Lane& lane, const DeviceLoraView& view,
                                  const std::vector<int32_t>& ids, int start) {
  Workspace& ws = workspace(lane);
  Forward& f = ws.scratch;
  forward(dm, lane, view, ids, f, false, ws.st);
  const cudaStream_t s = lane.stream.get();
  const int R = static_cast<int>(ids.size()) - start, V = dm.cfg.vocab;
  DeviceBuffer<int32_t> next;
  next.upload(ids.data() + start, R, s);
  DeviceBuffer<float> out(R);
  logprob_chunks(dm, lane, f, start - 1, R, ws.chunk, [&](int r0, int n, const float* logp) {
    gather_rows(s, out.get() + r0, logp, next.get() + r0, n, V);
  });
  return out.download(s);
}

SdpoStepResult sdpo_step(const DeviceModel& dm, Lane& lane, DeviceAdapter& ad, const std::vector<SdpoSample>& batch,
                         const SdpoStepOptions& opt) {
  SdpoStepResult res;
  const cudaStream_t s = lane.stream.get();
  const int B = static_cast<int>(batch.size()), V = dm.cfg.vocab, H = dm.cfg.hidden;
  const LoraLayout& L = ad.layout;
  Workspace& ws = workspace(lane);
  Staging &st = ws.st, &stLogits = ws.stLogits;
  DeviceBuffer<float>&chunk = ws.chunk, &ds = ws.ds;
  const auto joined = [](const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    std::vector<int32_t> ids(a);
    ids.insert(ids.end(), b.begin(), b.end());
    return ids;
  };
  std::vector<DeviceBuffer<int32_t>> y(B);
  for (int b = 0; b < B; ++b) y[b].upload(batch[b].response.data(), batch[b].response.size(), s);

  // Teacher targets, before any update (so "current" reads the live parameters).
  auto t0 = Clock::now();
  DeviceLoraView teacherView;
  if (opt.teacher == TeacherMode::Current) teacherView = DeviceLoraView{&L, ad.params.get()};
  if (opt.teacher == TeacherMode::Ema) teacherView = DeviceLoraView{&L, ad.ema.get()};
  std::vector<Targets> targets(B);
  for (int b = 0; b < B; ++b) {
    const SdpoSample& smp = batch[b];
    const int T = static_cast<int>(smp.response.size());
    Targets& tt = targets[b];
    if (smp.teacherK > 0) {  // supplied: the tail is what the top-K leaves of the teacher's mass
      const int K = tt.K = smp.teacherK;
      std::vector<float> tail(T);
      for (int t = 0; t < T; ++t) {
        double inK = 0.0;
        for (int k = 0; k < K; ++k) inK += std::exp(static_cast<double>(smp.teacherTopLogprobs[sz(t, K) + k]));
        const double rest = 1.0 - inK;
        tail[t] = rest > 1e-12 ? static_cast<float>(std::log(rest)) : -INFINITY;
      }
      tt.idx.upload(smp.teacherTopIds.data(), smp.teacherTopIds.size(), s);
      tt.logp.upload(smp.teacherTopLogprobs.data(), smp.teacherTopLogprobs.size(), s);
      tt.token.upload(smp.teacherTokenLogprobs.data(), smp.teacherTokenLogprobs.size(), s);
      tt.tail.upload(tail.data(), tail.size(), s);
      lane.stream.sync();  // tail is freed on return
      continue;
    }
    const int K = tt.K = opt.topK;
    tt.idx.resize(sz(T, K));
    tt.logp.resize(sz(T, K));
    tt.tail.resize(T);
    tt.token.resize(T);
    Forward& f = ws.scratch;
    forward(dm, lane, teacherView, joined(smp.teacherPrompt, smp.response), f, false, st);
    logprob_chunks(dm, lane, f, static_cast<int>(smp.teacherPrompt.size()) - 1, T, chunk, [&](int r0, int n, const float* lp) {
      topk(s, tt.idx.get() + sz(r0, K), tt.logp.get() + sz(r0, K), lp, n, V, K);
      sdpo_teacher_tail(s, tt.tail.get() + r0, tt.token.get() + r0, lp, tt.idx.get() + sz(r0, K), y[b].get() + r0, n,
                        V, K);
    });
  }
  lane.stream.sync();
  res.teacherMs = ms_since(t0);

  t0 = Clock::now();
  std::vector<DeviceBuffer<float>> baseLogp(B);
  for (int b = 0; b < B; ++b) {
    const SdpoSample& smp = batch[b];
    const int T = static_cast<int>(smp.response.size());
    Forward& f = ws.scratch;
    forward(dm, lane, DeviceLoraView{}, joined(smp.prompt, smp.response), f, false, st);
    baseLogp[b].resize(T);
    logprob_chunks(dm, lane, f, static_cast<int>(smp.prompt.size()) - 1, T, chunk, [&](int r0, int n, const float* lp) {
      gather_rows(s, baseLogp[b].get() + r0, lp, y[b].get() + r0, n, V);
    });
  }
  lane.stream.sync();
  res.baseMs = ms_since(t0);

  const SdpoLossOptions lossOpt{opt.loss.alpha, opt.loss.tail, opt.loss.sampledToken, opt.loss.isClip, opt.loss.beta};
  DeviceBuffer<float> firstGrads;
  DeviceBuffer<double> sq(1);
  for (int step = 0; step < opt.steps; ++step) {
    ad.grads.zero(s);
    const DeviceLoraView student{&L, ad.params.get()};
    double loss = 0, distill = 0, kl = 0, wSum = 0, tsKl = 0;
    int64_t tokens = 0, clipped = 0;
    for (int b = 0; b < B; ++b) {
      const SdpoSample& smp = batch[b];
      const int T = static_cast<int>(smp.response.size()), P = static_cast<int>(smp.prompt.size());
      const Targets& tt = targets[b];
      auto tf = Clock::now();
      Forward& f = ws.kept;
      forward(dm, lane, student, joined(smp.prompt, smp.response), f, true, st);
      lane.stream.sync();
      res.studentForwardMs += ms_since(tf);

      auto tb = Clock::now();
      const double coef = 1.0 / (static_cast<double>(T) * B);
      DeviceBuffer<float> old, dxf(sz(f.T, H));
      dxf.zero(s);
      if (!smp.oldLogprobs.empty()) old.upload(smp.oldLogprobs.data(), smp.oldLogprobs.size(), s);
      DeviceBuffer<double> values(sz(T, kSdpoRowValues));
      logprob_chunks(dm, lane, f, P - 1, T, chunk, [&](int r0, int n, const float* lp) {
        ds.resize(sz(n, V));
        sdpo_loss(s, ds.get(), values.get() + sz(r0, kSdpoRowValues), lp, n, V, y[b].get() + r0,
                  tt.idx.get() + sz(r0, tt.K), tt.logp.get() + sz(r0, tt.K), tt.tail.get() + r0, tt.token.get() + r0,
                  tt.K, old.size() ? old.get() + r0 : nullptr, baseLogp[b].get() + r0, lossOpt, coef);
        log_softmax_backward(s, ds.get(), ds.get(), lp, n, V);
        linear_backward_input(lane.blas, dxf.get() + sz(P - 1 + r0, H), stLogits.of(s, ds.get(), sz(n, V)), dm.lmHead, n, H, V,
                              false);
      });
      backward(dm, lane, student, ad.grads.get(), f, dxf.get(), st, ws.grads);
      const std::vector<double> v = values.download(s);
      double sD = 0, sWD = 0, sK = 0;
      for (int t = 0; t < T; ++t) {
        const double* r = v.data() + sz(t, kSdpoRowValues);
        sD += r[0];
        sWD += r[1] * r[0];
        sK += r[2];
        wSum += r[1];
        clipped += r[3] != 0.0 ? 1 : 0;
      }
      tokens += T;
      distill += sWD / T;
      kl += sK / T;
      tsKl += sD / T;
      loss += sWD / T + opt.loss.beta * sK / T;
      lane.stream.sync();
      res.backwardMs += ms_since(tb);
    }
    loss /= B;
    res.stepLosses.push_back(loss);

    auto to = Clock::now();
    sq.zero(s);
    sum_squares(s, sq.get(), ad.grads.get(), L.total);
    const double gradNorm = std::sqrt(sq.download(s)[0]);
    if (step == 0) {
      res.loss = loss;
      res.distillLoss = distill / B;
      res.klToBase = kl / B;
      res.teacherStudentKl = tsKl / B;
      res.meanIsWeight = wSum / static_cast<double>(tokens);
      res.clipFraction = static_cast<double>(clipped) / static_cast<double>(tokens);
      res.gradNorm = gradNorm;
      res.tokens = tokens;
      if (opt.steps > 1) {
        firstGrads.resize(L.total);
        copy_d2d(s, firstGrads.get(), ad.grads.get(), L.total);
      }
    }
    // torch.nn.utils.clip_grad_norm_ semantics, applied inside the AdamW kernel.
    const double clipCoef = opt.maxGradNorm / (gradNorm + 1e-6);
    ad.step += 1;
    adamw(s, ad.params.get(), ad.m.get(), ad.v.get(), ad.grads.get(), L.total, opt.learningRate, opt.beta1, opt.beta2,
          opt.eps, opt.weightDecay, ad.step, clipCoef < 1.0 ? static_cast<float>(clipCoef) : 1.0f);
    ema_update(s, ad.ema.get(), ad.params.get(), L.total, opt.emaRate);
    lane.stream.sync();
    res.optimizerMs += ms_since(to);
  }
  if (opt.steps > 1) copy_d2d(s, ad.grads.get(), firstGrads.get(), L.total);
  lane.stream.sync();
  return res;
}

namespace {
// Grows (doubling, contents kept) so that `needed` tokens fit.
void ensure(const DeviceModel& dm, Lane& lane, DeviceSequence& seq, int needed) {
  if (needed <= seq.capacity) return;
  const ModelConfig& c = dm.cfg;
  int cap = std::max(seq.capacity, 64);
  while (cap < needed) cap *= 2;
  const size_t row = sz(c.kvHeads, c.headDim);
  std::vector<DeviceBuffer<float>> nk(c.layers), nv(c.layers);
  for (int l = 0; l < c.layers; ++l) {
    nk[l].resize(sz(cap, row));
    nv[l].resize(sz(cap, row));
    if (seq.length > 0) {
      copy_d2d(lane.stream.get(), nk[l].get(), seq.k[l].get(), sz(seq.length, row));
      copy_d2d(lane.stream.get(), nv[l].get(), seq.v[l].get(), sz(seq.length, row));
    }
  }
  lane.stream.sync();
  seq.k.swap(nk);
  seq.v.swap(nv);
  seq.capacity = cap;
}
}  // namespace

void decode_step(const DeviceModel& dm, Lane& lane, std::vector<DeviceDecodeEntry>& entries) {
  const ModelConfig& c = dm.cfg;
  const cudaStream_t s = lane.stream.get();
  const int H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, V = c.vocab;
  const size_t kvRow = sz(M, D);
  for (const DeviceDecodeEntry& e : entries) {
    if (e.ids.empty()) throw EngineError("E_INPUT", "a decode entry has no new tokens");
  }
  // Rows grouped by adapter (groups in order of first appearance, entries in order within each), so
  // each adapter's rows are contiguous and its LoRA branch is one product; results map back by entry.
  std::vector<size_t> order;
  Segments segs;
  std::vector<bool> placed(entries.size(), false);
  for (size_t b = 0; b < entries.size(); ++b) {
    if (placed[b]) continue;
    const float* params = entries[b].lora.params;
    Segment g{0, 0, entries[b].lora};
    for (size_t j = b; j < entries.size(); ++j) {
      if (placed[j] || entries[j].lora.params != params) continue;
      placed[j] = true;
      order.push_back(j);
      g.rows += static_cast<int>(entries[j].ids.size());
    }
    segs.push_back(g);
  }
  std::vector<int> rowStart(entries.size());
  std::vector<int32_t> ids, positions;
  for (size_t b : order) {
    DeviceDecodeEntry& e = entries[b];
    rowStart[b] = static_cast<int>(ids.size());
    for (size_t i = 0; i < e.ids.size(); ++i) positions.push_back(e.seq->length + static_cast<int>(i));
    ids.insert(ids.end(), e.ids.begin(), e.ids.end());
    ensure(dm, lane, *e.seq, e.seq->length + static_cast<int>(e.ids.size()));
  }
  for (size_t g = 1; g < segs.size(); ++g) segs[g].row0 = segs[g - 1].row0 + segs[g - 1].rows;
  const int T = static_cast<int>(ids.size());
  Workspace& ws = workspace(lane);
  Forward& f = ws.rope;
  upload_rope(dm, lane, f, positions);
  f.ids.upload(ids.data(), ids.size(), s);
  DeviceBuffer<float>&x = ws.x, &lse = ws.lse;
  x.resize(sz(T, H));
  embedding(s, x.get(), dm.embed.get(), f.ids.get(), T, H);
  Acts& a = ws.acts;
  Staging& st = ws.st;
  for (int l = 0; l < c.layers; ++l) {
    const Attend attend = [&](Acts& acts) {
      for (size_t b = 0; b < entries.size(); ++b) {
        DeviceSequence& seq = *entries[b].seq;
        const int n = static_cast<int>(entries[b].ids.size()), r0 = rowStart[b];
        copy_d2d(s, seq.k[l].get() + sz(seq.length, kvRow), acts.k.get() + sz(r0, kvRow), sz(n, kvRow));
        copy_d2d(s, seq.v[l].get() + sz(seq.length, kvRow), acts.v.get() + sz(r0, kvRow), sz(n, kvRow));
        lse.resize(sz(N, n));
        const size_t qOff = sz(r0, N, D);
        attention(s, acts.attn.get() + qOff, lse.get(), acts.q.get() + qOff, seq.k[l].get(), seq.v[l].get(), n, N, M,
                  D, seq.length);
      }
    };
    layer_forward(dm, lane, segs, l, x.get(), T, f.cos.get(), f.sin.get(), a, attend, st);
  }

  // Only the last new row of each sequence is scored.
  const int B = static_cast<int>(entries.size());
  DeviceBuffer<float>&last = ws.last, &normed = ws.normed, &logits = ws.logits;
  last.resize(sz(B, H));
  normed.resize(sz(B, H));
  logits.resize(sz(B, V));
  for (int b = 0; b < B; ++b) {
    const int row = rowStart[b] + static_cast<int>(entries[b].ids.size()) - 1;
    copy_d2d(s, last.get() + sz(b, H), x.get() + sz(row, H), H);
  }
  rmsnorm(s, normed.get(), nullptr, last.get(), dm.finalNorm.get(), B, H, c.rmsEps);
  linear(lane.blas, logits.get(), st.of(s, normed.get(), sz(B, H)), dm.lmHead, nullptr, B, H, V);
  const std::vector<float> host = logits.download(s);
  for (int b = 0; b < B; ++b) {
    DeviceDecodeEntry& e = entries[b];
    e.seq->length += static_cast<int>(e.ids.size());
    e.out = cpu::sample(host.data() + sz(b, V), V, e.sampling, e.seq->rng);
  }
}

size_t weight_bytes(const DeviceModel& dm) {
  size_t n = (dm.embed.size() + dm.lmHeadOwned.size()) * sizeof(bf16) + dm.finalNorm.size() * sizeof(float);
  for (const DeviceLayer& w : dm.layers) {
    for (const DeviceBuffer<bf16>& m : w.W) n += m.size() * sizeof(bf16);
    for (const DeviceBuffer<float>* v : {&w.inNorm, &w.postNorm, &w.qNorm, &w.kNorm}) n += v->size() * sizeof(float);
    for (const DeviceBuffer<float>& b : w.b) n += b.size() * sizeof(float);
  }
  return n;
}

size_t adapter_bytes(const DeviceAdapter& a) {
  return (a.params.size() + a.grads.size() + a.m.size() + a.v.size() + a.ema.size()) * sizeof(float);
}

size_t sequence_bytes(const DeviceSequence& seq) {
  size_t n = 0;
  for (const auto* kv : {&seq.k, &seq.v}) {
    for (const DeviceBuffer<float>& b : *kv) n += b.size() * sizeof(float);
  }
  return n;
}

}  // namespace claas::cuda
