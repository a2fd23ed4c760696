// Op-level entry points for the parity tests: every CUDA op next to its CPU twin, called with the
// same named host arrays (cudaOps.<op>(args) and cpuOps.<op>(args) return the same named outputs).
// The CUDA side uploads, runs on its own stream, waits and downloads; inputs of bf16 GEMMs are
// rounded to bf16 on the device, as the engine does.
#include "cuda/ops_entry.h"

#include <cmath>
#include <cstring>
#include <memory>

#include "cpu/ops.h"
#include "cpu/sdpo_loss.h"
#include "cuda/blas.h"
#include "cuda/ops.h"
#include "cuda/runtime.h"
#include "engine/errors.h"

namespace claas::cuda {

namespace {

using Floats = std::vector<float>;
using Ints = std::vector<int32_t>;
using T_ = OpTensors;

// Device scratch for one op call, freed on return. Every allocation is followed by a guard band of
// a known byte pattern; reading results checks the bands, so a kernel writing past its output fails
// the op (E_BOUNDS) instead of passing unnoticed.
class Dev {
 public:
  ~Dev() {
    for (const Guarded& g : owned_) cudaFree(g.base);
  }
  cudaStream_t s() const { return stream_.get(); }
  // Made on first use: only the GEMM ops need a handle, and each op call has a stream of its own.
  const Blas& blas() {
    if (!blas_) blas_ = std::make_unique<Blas>(s());
    return *blas_;
  }
  template <typename X>
  X* alloc(size_t n) {
    const size_t bytes = n * sizeof(X);
    void* p = nullptr;
    CLAAS_CUDA(cudaMalloc(&p, bytes + kGuardBytes));
    owned_.push_back(Guarded{p, bytes});
    CLAAS_CUDA(cudaMemsetAsync(p, 0, bytes, s()));
    CLAAS_CUDA(cudaMemsetAsync(static_cast<char*>(p) + bytes, kGuardByte, kGuardBytes, s()));
    return static_cast<X*>(p);
  }
  template <typename X>
  X* in(const std::vector<X>& h) {
    X* p = alloc<X>(h.size());
    if (!h.empty()) CLAAS_CUDA(cudaMemcpyAsync(p, h.data(), h.size() * sizeof(X), cudaMemcpyHostToDevice, s()));
    return p;
  }
  bf16* in_bf16(const Floats& h) {
    const float* f = in(h);
    bf16* b = alloc<bf16>(h.size());
    to_bf16(s(), b, f, h.size());
    return b;
  }
  template <typename X>
  std::vector<X> get(const X* p, size_t n) {
    std::vector<X> out(n);
    if (n) CLAAS_CUDA(cudaMemcpyAsync(out.data(), p, n * sizeof(X), cudaMemcpyDeviceToHost, s()));
    stream_.sync();
    check_guards();
    return out;
  }

 private:
  static constexpr size_t kGuardBytes = 256;
  static constexpr int kGuardByte = 0xA5;
  struct Guarded {
    void* base;
    size_t bytes;
  };
  void check_guards() {
    std::vector<unsigned char> band(kGuardBytes);
    for (size_t i = 0; i < owned_.size(); ++i) {
      CLAAS_CUDA(cudaMemcpy(band.data(), static_cast<char*>(owned_[i].base) + owned_[i].bytes, kGuardBytes,
                            cudaMemcpyDeviceToHost));
      for (unsigned char b : band) {
        if (b != kGuardByte) {
          throw EngineError("E_BOUNDS", "an op wrote past the end of device buffer " + std::to_string(i) + " (" +
                                            std::to_string(owned_[i].bytes) + " bytes)");
        }
      }
    }
  }
  Stream stream_;
  std::unique_ptr<Blas> blas_;
  std::vector<Guarded> owned_;
};

size_t sz(int a, int b = 1, int c = 1) { return static_cast<size_t>(a) * b * c; }

// ---- embedding
T_ embedding_cpu(const T_& a) {
  const int V = a.integer("V"), T = a.integer("T"), H = a.integer("H");
  const Floats& table = a.floats("table", sz(V, H));
  const Ints& ids = a.ints("ids", T);
  T_ r;
  r.f["out"].resize(sz(T, H));
  cpu::embedding(r.f["out"].data(), table.data(), ids.data(), T, H);
  return r;
}
T_ embedding_cuda(const T_& a) {
  const int V = a.integer("V"), T = a.integer("T"), H = a.integer("H");
  Dev d;
  float* out = d.alloc<float>(sz(T, H));
  embedding(d.s(), out, d.in_bf16(a.floats("table", sz(V, H))), d.in(a.ints("ids", T)), T, H);
  T_ r;
  r.f["out"] = d.get(out, sz(T, H));
  return r;
}

// ---- rmsnorm
T_ rmsnorm_cpu(const T_& a) {
  const int N = a.integer("N"), D = a.integer("D");
  T_ r;
  r.f["y"].resize(sz(N, D));
  r.f["rstd"].resize(N);
  cpu::rmsnorm(r.f["y"].data(), r.f["rstd"].data(), a.floats("x", sz(N, D)).data(), a.floats("w", D).data(), N, D,
               static_cast<float>(a.number("eps")));
  return r;
}
T_ rmsnorm_cuda(const T_& a) {
  const int N = a.integer("N"), D = a.integer("D");
  Dev d;
  float* y = d.alloc<float>(sz(N, D));
  float* rstd = d.alloc<float>(N);
  rmsnorm(d.s(), y, rstd, d.in(a.floats("x", sz(N, D))), d.in(a.floats("w", D)), N, D,
          static_cast<float>(a.number("eps")));
  T_ r;
  r.f["y"] = d.get(y, sz(N, D));
  r.f["rstd"] = d.get(rstd, N);
  return r;
}
T_ rmsnorm_backward_cpu(const T_& a) {
  const int N = a.integer("N"), D = a.integer("D");
  T_ r;
  r.f["dx"] = a.floats("dx0", sz(N, D));
  cpu::rmsnorm_backward(r.f["dx"].data(), a.floats("dy", sz(N, D)).data(), a.floats("x", sz(N, D)).data(),
                        a.floats("rstd", N).data(), a.floats("w", D).data(), N, D, a.number("accumulate") != 0);
  return r;
}
T_ rmsnorm_backward_cuda(const T_& a) {
  const int N = a.integer("N"), D = a.integer("D");
  Dev d;
  float* dx = d.in(a.floats("dx0", sz(N, D)));
  rmsnorm_backward(d.s(), dx, d.in(a.floats("dy", sz(N, D))), d.in(a.floats("x", sz(N, D))), d.in(a.floats("rstd", N)),
                   d.in(a.floats("w", D)), N, D, a.number("accumulate") != 0);
  T_ r;
  r.f["dx"] = d.get(dx, sz(N, D));
  return r;
}

// ---- linear
T_ linear_cpu(const T_& a) {
  const int T = a.integer("T"), I = a.integer("I"), O = a.integer("O");
  const bool bias = a.f.count("b") > 0;
  T_ r;
  r.f["y"].resize(sz(T, O));
  cpu::linear(r.f["y"].data(), a.floats("x", sz(T, I)).data(), a.floats("W", sz(O, I)).data(),
              bias ? a.floats("b", O).data() : nullptr, T, I, O);
  return r;
}
T_ linear_cuda(const T_& a) {
  const int T = a.integer("T"), I = a.integer("I"), O = a.integer("O");
  Dev d;
  float* y = d.alloc<float>(sz(T, O));
  linear(d.blas(), y, d.in_bf16(a.floats("x", sz(T, I))), d.in_bf16(a.floats("W", sz(O, I))),
         a.f.count("b") ? d.in(a.floats("b", O)) : nullptr, T, I, O);
  T_ r;
  r.f["y"] = d.get(y, sz(T, O));
  return r;
}
T_ linear_backward_input_cpu(const T_& a) {
  const int T = a.integer("T"), I = a.integer("I"), O = a.integer("O");
  T_ r;
  r.f["dx"] = a.floats("dx0", sz(T, I));
  cpu::linear_backward_input(r.f["dx"].data(), a.floats("dy", sz(T, O)).data(), a.floats("W", sz(O, I)).data(), T, I,
                             O, a.number("accumulate") != 0);
  return r;
}
T_ linear_backward_input_cuda(const T_& a) {
  const int T = a.integer("T"), I = a.integer("I"), O = a.integer("O");
  Dev d;
  float* dx = d.in(a.floats("dx0", sz(T, I)));
  linear_backward_input(d.blas(), dx, d.in_bf16(a.floats("dy", sz(T, O))), d.in_bf16(a.floats("W", sz(O, I))), T, I, O,
                        a.number("accumulate") != 0);
  T_ r;
  r.f["dx"] = d.get(dx, sz(T, I));
  return r;
}

// ---- lora
T_ lora_cpu(const T_& a) {
  const int T = a.integer("T"), I = a.integer("I"), O = a.integer("O"), R = a.integer("R");
  T_ r;
  r.f["y"] = a.floats("y0", sz(T, O));
  r.f["u"].resize(sz(T, R));
  cpu::lora(r.f["y"].data(), r.f["u"].data(), a.floats("x", sz(T, I)).data(), a.floats("A", sz(R, I)).data(),
            a.floats("B", sz(O, R)).data(), T, I, O, R, static_cast<float>(a.number("scale")));
  return r;
}
T_ lora_cuda(const T_& a) {
  const int T = a.integer("T"), I = a.integer("I"), O = a.integer("O"), R = a.integer("R");
  Dev d;
  float* y = d.in(a.floats("y0", sz(T, O)));
  float* u = d.alloc<float>(sz(T, R));
  lora(d.blas(), y, u, d.in(a.floats("x", sz(T, I))), d.in(a.floats("A", sz(R, I))), d.in(a.floats("B", sz(O, R))), T, I,
       O, R, static_cast<float>(a.number("scale")));
  T_ r;
  r.f["y"] = d.get(y, sz(T, O));
  r.f["u"] = d.get(u, sz(T, R));
  return r;
}
T_ lora_backward_cpu(const T_& a) {
  const int T = a.integer("T"), I = a.integer("I"), O = a.integer("O"), R = a.integer("R");
  T_ r;
  r.f["dx"] = a.floats("dx0", sz(T, I));
  r.f["dA"] = a.floats("dA0", sz(R, I));
  r.f["dB"] = a.floats("dB0", sz(O, R));
  Floats scratch(sz(T, R));
  cpu::lora_backward(r.f["dx"].data(), r.f["dA"].data(), r.f["dB"].data(), a.floats("dy", sz(T, O)).data(),
                     a.floats("x", sz(T, I)).data(), a.floats("u", sz(T, R)).data(), a.floats("A", sz(R, I)).data(),
                     a.floats("B", sz(O, R)).data(), T, I, O, R, static_cast<float>(a.number("scale")), scratch.data());
  return r;
}
T_ lora_backward_cuda(const T_& a) {
  const int T = a.integer("T"), I = a.integer("I"), O = a.integer("O"), R = a.integer("R");
  Dev d;
  float* dx = d.in(a.floats("dx0", sz(T, I)));
  float* dA = d.in(a.floats("dA0", sz(R, I)));
  float* dB = d.in(a.floats("dB0", sz(O, R)));
  lora_backward(d.blas(), dx, dA, dB, d.in(a.floats("dy", sz(T, O))), d.in(a.floats("x", sz(T, I))),
                d.in(a.floats("u", sz(T, R))), d.in(a.floats("A", sz(R, I))), d.in(a.floats("B", sz(O, R))), T, I, O, R,
                static_cast<float>(a.number("scale")), d.alloc<float>(sz(T, R)));
  T_ r;
  r.f["dx"] = d.get(dx, sz(T, I));
  r.f["dA"] = d.get(dA, sz(R, I));
  r.f["dB"] = d.get(dB, sz(O, R));
  return r;
}

// ---- rope (tables from the CPU code in both cases)
void rope_tables_of(const T_& a, Floats& c, Floats& s) {
  const int T = a.integer("T"), D = a.integer("D");
  c.resize(sz(T, D / 2));
  s.resize(c.size());
  cpu::rope_tables(c.data(), s.data(), a.ints("positions", T).data(), T, D, a.number("theta"));
}
T_ rope_any(const T_& a, bool device, bool backward) {
  const int T = a.integer("T"), N = a.integer("N"), D = a.integer("D");
  Floats c, s;
  rope_tables_of(a, c, s);
  T_ r;
  if (!device) {
    r.f["x"] = a.floats("x", sz(T, N, D));
    (backward ? cpu::rope_backward : cpu::rope)(r.f["x"].data(), c.data(), s.data(), T, N, D);
    return r;
  }
  Dev d;
  float* x = d.in(a.floats("x", sz(T, N, D)));
  (backward ? rope_backward : rope)(d.s(), x, d.in(c), d.in(s), T, N, D);
  r.f["x"] = d.get(x, sz(T, N, D));
  return r;
}
T_ rope_cpu(const T_& a) { return rope_any(a, false, false); }
T_ rope_cuda(const T_& a) { return rope_any(a, true, false); }
T_ rope_backward_cpu(const T_& a) { return rope_any(a, false, true); }
T_ rope_backward_cuda(const T_& a) { return rope_any(a, true, true); }

// ---- attention
T_ attention_cpu(const T_& a) {
  const int T = a.integer("T"), N = a.integer("N"), M = a.integer("NKV"), D = a.integer("D"), q0 = a.integer("q0");
  T_ r;
  r.f["out"].resize(sz(T, N, D));
  r.f["lse"].resize(sz(N, T));
  cpu::attention(r.f["out"].data(), r.f["lse"].data(), a.floats("q", sz(T, N, D)).data(),
                 a.floats("k", sz(q0 + T, M, D)).data(), a.floats("v", sz(q0 + T, M, D)).data(), T, N, M, D, q0);
  return r;
}
T_ attention_cuda(const T_& a) {
  const int T = a.integer("T"), N = a.integer("N"), M = a.integer("NKV"), D = a.integer("D"), q0 = a.integer("q0");
  Dev d;
  float* out = d.alloc<float>(sz(T, N, D));
  float* lse = d.alloc<float>(sz(N, T));
  attention(d.s(), out, lse, d.in(a.floats("q", sz(T, N, D))), d.in(a.floats("k", sz(q0 + T, M, D))),
            d.in(a.floats("v", sz(q0 + T, M, D))), T, N, M, D, q0);
  T_ r;
  r.f["out"] = d.get(out, sz(T, N, D));
  r.f["lse"] = d.get(lse, sz(N, T));
  return r;
}
T_ attention_backward_cpu(const T_& a) {
  const int T = a.integer("T"), N = a.integer("N"), M = a.integer("NKV"), D = a.integer("D");
  T_ r;
  r.f["dq"].resize(sz(T, N, D));
  r.f["dk"].resize(sz(T, M, D));
  r.f["dv"].resize(sz(T, M, D));
  Floats scratch(2 * sz(N, T, D));
  cpu::attention_backward(r.f["dq"].data(), r.f["dk"].data(), r.f["dv"].data(), a.floats("dout", sz(T, N, D)).data(),
                          a.floats("q", sz(T, N, D)).data(), a.floats("k", sz(T, M, D)).data(),
                          a.floats("v", sz(T, M, D)).data(), a.floats("out", sz(T, N, D)).data(),
                          a.floats("lse", sz(N, T)).data(), T, N, M, D, scratch.data());
  return r;
}
T_ attention_backward_cuda(const T_& a) {
  const int T = a.integer("T"), N = a.integer("N"), M = a.integer("NKV"), D = a.integer("D");
  Dev d;
  float* dq = d.alloc<float>(sz(T, N, D));
  float* dk = d.alloc<float>(sz(T, M, D));
  float* dv = d.alloc<float>(sz(T, M, D));
  attention_backward(d.s(), dq, dk, dv, d.in(a.floats("dout", sz(T, N, D))), d.in(a.floats("q", sz(T, N, D))),
                     d.in(a.floats("k", sz(T, M, D))), d.in(a.floats("v", sz(T, M, D))),
                     d.in(a.floats("out", sz(T, N, D))), d.in(a.floats("lse", sz(N, T))), T, N, M, D,
                     d.alloc<float>(attention_backward_scratch(T, N, M, D)));
  T_ r;
  r.f["dq"] = d.get(dq, sz(T, N, D));
  r.f["dk"] = d.get(dk, sz(T, M, D));
  r.f["dv"] = d.get(dv, sz(T, M, D));
  return r;
}

// ---- swiglu
T_ swiglu_cpu(const T_& a) {
  const size_t n = a.f.count("g") ? a.f.at("g").size() : 0;
  T_ r;
  r.f["h"].resize(n);
  cpu::swiglu(r.f["h"].data(), a.floats("g", n).data(), a.floats("u", n).data(), n);
  return r;
}
T_ swiglu_cuda(const T_& a) {
  const size_t n = a.f.count("g") ? a.f.at("g").size() : 0;
  Dev d;
  float* h = d.alloc<float>(n);
  swiglu(d.s(), h, d.in(a.floats("g", n)), d.in(a.floats("u", n)), n);
  T_ r;
  r.f["h"] = d.get(h, n);
  return r;
}
T_ swiglu_backward_cpu(const T_& a) {
  const size_t n = a.f.count("g") ? a.f.at("g").size() : 0;
  T_ r;
  r.f["dg"].resize(n);
  r.f["du"].resize(n);
  cpu::swiglu_backward(r.f["dg"].data(), r.f["du"].data(), a.floats("dh", n).data(), a.floats("g", n).data(),
                       a.floats("u", n).data(), n);
  return r;
}
T_ swiglu_backward_cuda(const T_& a) {
  const size_t n = a.f.count("g") ? a.f.at("g").size() : 0;
  Dev d;
  float* dg = d.alloc<float>(n);
  float* du = d.alloc<float>(n);
  swiglu_backward(d.s(), dg, du, d.in(a.floats("dh", n)), d.in(a.floats("g", n)), d.in(a.floats("u", n)), n);
  T_ r;
  r.f["dg"] = d.get(dg, n);
  r.f["du"] = d.get(du, n);
  return r;
}

// ---- log_softmax
T_ log_softmax_cpu(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V");
  T_ r;
  r.f["out"].resize(sz(R, V));
  r.f["lse"].resize(R);
  cpu::log_softmax(r.f["out"].data(), r.f["lse"].data(), a.floats("logits", sz(R, V)).data(), R, V);
  return r;
}
T_ log_softmax_cuda(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V");
  Dev d;
  float* out = d.alloc<float>(sz(R, V));
  float* lse = d.alloc<float>(R);
  log_softmax(d.s(), out, lse, d.in(a.floats("logits", sz(R, V))), R, V);
  T_ r;
  r.f["out"] = d.get(out, sz(R, V));
  r.f["lse"] = d.get(lse, R);
  return r;
}
T_ log_softmax_backward_cpu(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V");
  T_ r;
  r.f["dlogits"].resize(sz(R, V));
  cpu::log_softmax_backward(r.f["dlogits"].data(), a.floats("ds", sz(R, V)).data(), a.floats("logp", sz(R, V)).data(),
                            R, V);
  return r;
}
T_ log_softmax_backward_cuda(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V");
  Dev d;
  float* dl = d.alloc<float>(sz(R, V));
  log_softmax_backward(d.s(), dl, d.in(a.floats("ds", sz(R, V))), d.in(a.floats("logp", sz(R, V))), R, V);
  T_ r;
  r.f["dlogits"] = d.get(dl, sz(R, V));
  return r;
}

// ---- topk
T_ topk_cpu(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V"), K = a.integer("K");
  if (K < 1 || K > V) throw EngineError("E_INPUT", "top-k must be in [1, vocab]");
  T_ r;
  r.i["idx"].resize(sz(R, K));
  r.f["val"].resize(sz(R, K));
  cpu::topk(r.i["idx"].data(), r.f["val"].data(), a.floats("x", sz(R, V)).data(), R, V, K);
  return r;
}
T_ topk_cuda(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V"), K = a.integer("K");
  Dev d;
  int32_t* idx = d.alloc<int32_t>(sz(R, K));
  float* val = d.alloc<float>(sz(R, K));
  topk(d.s(), idx, val, d.in(a.floats("x", sz(R, V))), R, V, K);
  T_ r;
  r.i["idx"] = d.get(idx, sz(R, K));
  r.f["val"] = d.get(val, sz(R, K));
  return r;
}

// ---- sdpo_loss (the CPU twin runs cpu::sdpo_loss_row per row)
SdpoLossOptions loss_options(const T_& a) {
  SdpoLossOptions o;
  o.alpha = static_cast<float>(a.number("alpha"));
  o.tail = a.number("tail") != 0;
  o.sampledToken = a.number("sampledToken") != 0;
  o.isClip = static_cast<float>(a.number("isClip"));
  o.beta = static_cast<float>(a.number("beta"));
  return o;
}
T_ sdpo_loss_cpu(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V"), K = a.integer("K");
  const SdpoLossOptions o = loss_options(a);
  const cpu::SdpoLossOptions co{o.alpha, o.tail, o.sampledToken, o.isClip, o.beta};
  const Floats& s = a.floats("s", sz(R, V));
  const Ints& y = a.ints("y", R);
  const Ints& idx = a.ints("tIdx", sz(R, K));
  const Floats& lp = a.floats("tLogp", sz(R, K));
  const Floats& tail = a.floats("tTail", R);
  const Floats& token = a.floats("tToken", R);
  const Floats* old = a.f.count("old") ? &a.floats("old", R) : nullptr;
  const Floats& base = a.floats("base", R);
  T_ r;
  r.f["ds"].resize(sz(R, V));
  r.d["values"].resize(sz(R, kSdpoRowValues));
  for (int row = 0; row < R; ++row) {
    const cpu::SdpoTeacherRow t{idx.data() + sz(row, K), lp.data() + sz(row, K), tail[row], token[row], K};
    const cpu::SdpoRowValues v = cpu::sdpo_loss_row(r.f["ds"].data() + sz(row, V), s.data() + sz(row, V), V, y[row], t,
                                                    old ? (*old)[row] : NAN, base[row], co, a.number("coef"));
    double* out = r.d["values"].data() + sz(row, kSdpoRowValues);
    out[0] = v.D, out[1] = v.w, out[2] = v.k3, out[3] = v.clipped ? 1.0 : 0.0;
  }
  return r;
}
T_ sdpo_loss_cuda(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V"), K = a.integer("K");
  Dev d;
  float* ds = d.alloc<float>(sz(R, V));
  double* values = d.alloc<double>(sz(R, kSdpoRowValues));
  sdpo_loss(d.s(), ds, values, d.in(a.floats("s", sz(R, V))), R, V, d.in(a.ints("y", R)), d.in(a.ints("tIdx", sz(R, K))),
            d.in(a.floats("tLogp", sz(R, K))), d.in(a.floats("tTail", R)), d.in(a.floats("tToken", R)), K,
            a.f.count("old") ? d.in(a.floats("old", R)) : nullptr, d.in(a.floats("base", R)), loss_options(a),
            a.number("coef"));
  T_ r;
  r.f["ds"] = d.get(ds, sz(R, V));
  r.d["values"] = d.get(values, sz(R, kSdpoRowValues));
  return r;
}
T_ sdpo_teacher_tail_cpu(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V"), K = a.integer("K");
  const Floats& lp = a.floats("logp", sz(R, V));
  const Ints& idx = a.ints("idx", sz(R, K));
  const Ints& y = a.ints("y", R);
  T_ r;
  r.f["tail"].resize(R);
  r.f["token"].resize(R);
  std::vector<uint8_t> inK(V);
  for (int row = 0; row < R; ++row) {
    std::fill(inK.begin(), inK.end(), 0);
    for (int k = 0; k < K; ++k) inK[idx[sz(row, K) + k]] = 1;
    double tail = 0.0;
    for (int v = 0; v < V; ++v) {
      if (!inK[v]) tail += std::exp(static_cast<double>(lp[sz(row, V) + v]));
    }
    r.f["tail"][row] = tail > 0.0 ? static_cast<float>(std::log(tail)) : -INFINITY;
    r.f["token"][row] = lp[sz(row, V) + y[row]];
  }
  return r;
}
T_ sdpo_teacher_tail_cuda(const T_& a) {
  const int R = a.integer("R"), V = a.integer("V"), K = a.integer("K");
  Dev d;
  float* tail = d.alloc<float>(R);
  float* token = d.alloc<float>(R);
  sdpo_teacher_tail(d.s(), tail, token, d.in(a.floats("logp", sz(R, V))), d.in(a.ints("idx", sz(R, K))),
                    d.in(a.ints("y", R)), R, V, K);
  T_ r;
  r.f["tail"] = d.get(tail, R);
  r.f["token"] = d.get(token, R);
  return r;
}

// ---- adamw
T_ adamw_cpu(const T_& a) {
  const size_t n = a.f.count("p") ? a.f.at("p").size() : 0;
  T_ r;
  r.f["p"] = a.floats("p", n);
  r.f["m"] = a.floats("m", n);
  r.f["v"] = a.floats("v", n);
  Floats g = a.floats("g", n);
  const float scale = static_cast<float>(a.number("gradScale"));
  for (float& x : g) x *= scale;
  cpu::adamw(r.f["p"].data(), r.f["m"].data(), r.f["v"].data(), g.data(), n, static_cast<float>(a.number("lr")),
             static_cast<float>(a.number("beta1")), static_cast<float>(a.number("beta2")),
             static_cast<float>(a.number("eps")), static_cast<float>(a.number("weightDecay")),
             static_cast<int64_t>(a.number("step")));
  return r;
}
T_ adamw_cuda(const T_& a) {
  const size_t n = a.f.count("p") ? a.f.at("p").size() : 0;
  Dev d;
  float* p = d.in(a.floats("p", n));
  float* m = d.in(a.floats("m", n));
  float* v = d.in(a.floats("v", n));
  adamw(d.s(), p, m, v, d.in(a.floats("g", n)), n, static_cast<float>(a.number("lr")),
        static_cast<float>(a.number("beta1")), static_cast<float>(a.number("beta2")),
        static_cast<float>(a.number("eps")), static_cast<float>(a.number("weightDecay")),
        static_cast<int64_t>(a.number("step")), static_cast<float>(a.number("gradScale")));
  T_ r;
  r.f["p"] = d.get(p, n);
  r.f["m"] = d.get(m, n);
  r.f["v"] = d.get(v, n);
  return r;
}

}  // namespace

const std::vector<OpEntry>& op_entries() {
  static const std::vector<OpEntry> entries = {
      {"embedding", embedding_cpu, embedding_cuda},
      {"rmsnorm", rmsnorm_cpu, rmsnorm_cuda},
      {"rmsnorm_backward", rmsnorm_backward_cpu, rmsnorm_backward_cuda},
      {"linear", linear_cpu, linear_cuda},
      {"linear_backward_input", linear_backward_input_cpu, linear_backward_input_cuda},
      {"lora", lora_cpu, lora_cuda},
      {"lora_backward", lora_backward_cpu, lora_backward_cuda},
      {"rope", rope_cpu, rope_cuda},
      {"rope_backward", rope_backward_cpu, rope_backward_cuda},
      {"attention", attention_cpu, attention_cuda},
      {"attention_backward", attention_backward_cpu, attention_backward_cuda},
      {"swiglu", swiglu_cpu, swiglu_cuda},
      {"swiglu_backward", swiglu_backward_cpu, swiglu_backward_cuda},
      {"log_softmax", log_softmax_cpu, log_softmax_cuda},
      {"log_softmax_backward", log_softmax_backward_cpu, log_softmax_backward_cuda},
      {"topk", topk_cpu, topk_cuda},
      {"sdpo_loss", sdpo_loss_cpu, sdpo_loss_cuda},
      {"sdpo_teacher_tail", sdpo_teacher_tail_cpu, sdpo_teacher_tail_cuda},
      {"adamw", adamw_cpu, adamw_cuda},
  };
  return entries;
}

}  // namespace claas::cuda
