// `cpuOps`: every CPU op of cpu/ops.h, plus sdpo_loss_row, as synchronous functions on typed arrays,
// so other backends can be compared with the reference op by op. Arguments follow ops.h exactly
// (outputs first, typed arrays where the C++ takes pointers, null where it takes an optional one).
// Every array length is checked against the dimensions, so a wrong call throws instead of reading or
// writing out of bounds.
#include "addon/cpu_ops.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "cpu/ops.h"
#include "cpu/sdpo_loss.h"

namespace claas {
namespace {

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op, size_t count) : info_(info), op_(op) {
    if (info.Length() < count) {
      throw_error("expects " + std::to_string(count) + " arguments, got " + std::to_string(info.Length()));
    }
  }

  [[noreturn]] void throw_error(const std::string& message) const {
    throw Napi::TypeError::New(info_.Env(), std::string("cpuOps.") + op_ + ": " + message);
  }

  // A Float32Array of at least `need` elements (or null when `optional` and the argument is null).
  float* f32(size_t i, const char* name, size_t need, bool optional = false) const {
    if (optional && (info_[i].IsNull() || info_[i].IsUndefined())) return nullptr;
    if (!info_[i].IsTypedArray() || info_[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      throw_error(std::string(name) + " must be a Float32Array" + (optional ? " or null" : ""));
    }
    auto a = info_[i].As<Napi::Float32Array>();
    if (a.ElementLength() < need) too_short(name, a.ElementLength(), need);
    return a.Data();
  }

  int32_t* i32(size_t i, const char* name, size_t need) const {
    if (!info_[i].IsTypedArray() || info_[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
      throw_error(std::string(name) + " must be an Int32Array");
    }
    auto a = info_[i].As<Napi::Int32Array>();
    if (a.ElementLength() < need) too_short(name, a.ElementLength(), need);
    return a.Data();
  }

  // A non-negative integer dimension small enough for the int the ops take.
  int dim(size_t i, const char* name) const {
    const double v = number(i, name);
    if (!(v >= 0 && v <= 2147483647.0) || v != std::floor(v)) {
      throw_error(std::string(name) + " must be a non-negative integer");
    }
    return static_cast<int>(v);
  }

  size_t count(size_t i, const char* name) const {
    const double v = number(i, name);
    if (!(v >= 0 && v <= 9007199254740991.0) || v != std::floor(v)) {
      throw_error(std::string(name) + " must be a non-negative integer");
    }
    return static_cast<size_t>(v);
  }

  double number(size_t i, const char* name) const {
    if (!info_[i].IsNumber()) throw_error(std::string(name) + " must be a number");
    return info_[i].As<Napi::Number>().DoubleValue();
  }

  bool flag(size_t i, const char* name) const {
    if (!info_[i].IsBoolean()) throw_error(std::string(name) + " must be a boolean");
    return info_[i].As<Napi::Boolean>().Value();
  }

  Napi::Object object(size_t i, const char* name) const {
    if (!info_[i].IsObject()) throw_error(std::string(name) + " must be an object");
    return info_[i].As<Napi::Object>();
  }

  // Element counts of the dimensions multiplied, refused when the product overflows.
  size_t mul(size_t a, size_t b, size_t c = 1) const {
    size_t ab = 0, abc = 0;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc)) {
      throw_error("dimensions too large");
    }
    return abc;
  }

  void check_ids(const int32_t* ids, size_t n, int limit, const char* name) const {
    for (size_t k = 0; k < n; ++k) {
      if (ids[k] < 0 || ids[k] >= limit) {
        throw_error(std::string(name) + "[" + std::to_string(k) + "] = " + std::to_string(ids[k]) + " is outside 0.." +
                    std::to_string(limit - 1));
      }
    }
  }

 private:
  [[noreturn]] void too_short(const char* name, size_t have, size_t need) const {
    throw_error(std::string(name) + " has " + std::to_string(have) + " elements, needs " + std::to_string(need));
  }

  const Napi::CallbackInfo& info_;
  const char* op_;
};

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Args a(info, "embedding", 5);
  const int T = a.dim(3, "T"), H = a.dim(4, "H");
  float* out = a.f32(0, "out_TH", a.mul(T, H));
  const float* table = a.f32(1, "table_VH", 0);
  const int32_t* ids = a.i32(2, "ids_T", T);
  const size_t tableLen = info[1].As<Napi::Float32Array>().ElementLength();
  const size_t V = H > 0 ? tableLen / H : 0;
  a.check_ids(ids, T, static_cast<int>(std::min<size_t>(V, 2147483647)), "ids_T");
  cpu::embedding(out, table, ids, T, H);
  return info.Env().Undefined();
}

Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
  Args a(info, "rmsnorm", 7);
  const int N = a.dim(4, "N"), D = a.dim(5, "D");
  const float eps = static_cast<float>(a.number(6, "eps"));
  cpu::rmsnorm(a.f32(0, "y_ND", a.mul(N, D)), a.f32(1, "rstd_N", N, true), a.f32(2, "x_ND", a.mul(N, D)),
               a.f32(3, "w_D", D), N, D, eps);
  return info.Env().Undefined();
}

Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  Args a(info, "rmsnorm_backward", 8);
  const int N = a.dim(5, "N"), D = a.dim(6, "D");
  cpu::rmsnorm_backward(a.f32(0, "dx_ND", a.mul(N, D)), a.f32(1, "dy_ND", a.mul(N, D)), a.f32(2, "x_ND", a.mul(N, D)),
                        a.f32(3, "rstd_N", N), a.f32(4, "w_D", D), N, D, a.flag(7, "accumulate"));
  return info.Env().Undefined();
}

Napi::Value Linear(const Napi::CallbackInfo& info) {
  Args a(info, "linear", 7);
  const int T = a.dim(4, "T"), I = a.dim(5, "I"), O = a.dim(6, "O");
  cpu::linear(a.f32(0, "y_TO", a.mul(T, O)), a.f32(1, "x_TI", a.mul(T, I)), a.f32(2, "W_OI", a.mul(O, I)),
              a.f32(3, "b_O", O, true), T, I, O);
  return info.Env().Undefined();
}

Napi::Value LinearBackwardInput(const Napi::CallbackInfo& info) {
  Args a(info, "linear_backward_input", 7);
  const int T = a.dim(3, "T"), I = a.dim(4, "I"), O = a.dim(5, "O");
  cpu::linear_backward_input(a.f32(0, "dx_TI", a.mul(T, I)), a.f32(1, "dy_TO", a.mul(T, O)), a.f32(2, "W_OI", a.mul(O, I)),
                             T, I, O, a.flag(6, "accumulate"));
  return info.Env().Undefined();
}

Napi::Value Lora(const Napi::CallbackInfo& info) {
  Args a(info, "lora", 10);
  const int T = a.dim(5, "T"), I = a.dim(6, "I"), O = a.dim(7, "O"), R = a.dim(8, "R");
  const float scale = static_cast<float>(a.number(9, "scale"));
  cpu::lora(a.f32(0, "y_TO", a.mul(T, O)), a.f32(1, "u_TR", a.mul(T, R)), a.f32(2, "x_TI", a.mul(T, I)),
            a.f32(3, "A_RI", a.mul(R, I)), a.f32(4, "B_OR", a.mul(O, R)), T, I, O, R, scale);
  return info.Env().Undefined();
}

Napi::Value LoraBackward(const Napi::CallbackInfo& info) {
  Args a(info, "lora_backward", 14);
  const int T = a.dim(8, "T"), I = a.dim(9, "I"), O = a.dim(10, "O"), R = a.dim(11, "R");
  const float scale = static_cast<float>(a.number(12, "scale"));
  cpu::lora_backward(a.f32(0, "dx_TI", a.mul(T, I)), a.f32(1, "dA_RI", a.mul(R, I)), a.f32(2, "dB_OR", a.mul(O, R)),
                     a.f32(3, "dy_TO", a.mul(T, O)), a.f32(4, "x_TI", a.mul(T, I)), a.f32(5, "u_TR", a.mul(T, R)),
                     a.f32(6, "A_RI", a.mul(R, I)), a.f32(7, "B_OR", a.mul(O, R)), T, I, O, R, scale,
                     a.f32(13, "scratch_TR", a.mul(T, R)));
  return info.Env().Undefined();
}

Napi::Value RopeTables(const Napi::CallbackInfo& info) {
  Args a(info, "rope_tables", 6);
  const int T = a.dim(3, "T"), D = a.dim(4, "D");
  if (D % 2 != 0) a.throw_error("D must be even");
  cpu::rope_tables(a.f32(0, "cos_TD2", a.mul(T, D / 2)), a.f32(1, "sin_TD2", a.mul(T, D / 2)), a.i32(2, "positions_T", T),
                   T, D, a.number(5, "theta"));
  return info.Env().Undefined();
}

template <void (*Op)(float*, const float*, const float*, int, int, int)>
Napi::Value RopeLike(const Napi::CallbackInfo& info, const char* name) {
  Args a(info, name, 6);
  const int T = a.dim(3, "T"), N = a.dim(4, "N"), D = a.dim(5, "D");
  if (D % 2 != 0) a.throw_error("D must be even");
  Op(a.f32(0, "x_TND", a.mul(T, N, D)), a.f32(1, "cos_TD2", a.mul(T, D / 2)), a.f32(2, "sin_TD2", a.mul(T, D / 2)), T, N,
     D);
  return info.Env().Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) { return RopeLike<cpu::rope>(info, "rope"); }
Napi::Value RopeBackward(const Napi::CallbackInfo& info) { return RopeLike<cpu::rope_backward>(info, "rope_backward"); }

void check_heads(const Args& a, int N, int NKV) {
  if (NKV == 0 || N % NKV != 0) a.throw_error("N must be a positive multiple of NKV");
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  Args a(info, "attention", 9);
  const int T = a.dim(5, "T"), N = a.dim(6, "N"), NKV = a.dim(7, "NKV"), D = a.dim(8, "D");
  const int q0 = info.Length() > 9 && !info[9].IsUndefined() ? a.dim(9, "q0") : 0;
  check_heads(a, N, NKV);
  const size_t M = static_cast<size_t>(q0) + T;
  cpu::attention(a.f32(0, "out_TND", a.mul(T, N, D)), a.f32(1, "lse_NT", a.mul(N, T)), a.f32(2, "q_TND", a.mul(T, N, D)),
                 a.f32(3, "k_TMD", a.mul(M, NKV, D)), a.f32(4, "v_TMD", a.mul(M, NKV, D)), T, N, NKV, D, q0);
  return info.Env().Undefined();
}

Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Args a(info, "attention_backward", 14);
  const int T = a.dim(9, "T"), N = a.dim(10, "N"), NKV = a.dim(11, "NKV"), D = a.dim(12, "D");
  check_heads(a, N, NKV);
  const size_t q = a.mul(T, N, D), kv = a.mul(T, NKV, D);
  cpu::attention_backward(a.f32(0, "dq_TND", q), a.f32(1, "dk_TMD", kv), a.f32(2, "dv_TMD", kv),
                          a.f32(3, "dout_TND", q), a.f32(4, "q_TND", q), a.f32(5, "k_TMD", kv), a.f32(6, "v_TMD", kv),
                          a.f32(7, "out_TND", q), a.f32(8, "lse_NT", a.mul(N, T)), T, N, NKV, D,
                          a.f32(13, "scratch", a.mul(2, q)));
  return info.Env().Undefined();
}

Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  Args a(info, "swiglu", 4);
  const size_t n = a.count(3, "n");
  cpu::swiglu(a.f32(0, "h_n", n), a.f32(1, "g_n", n), a.f32(2, "u_n", n), n);
  return info.Env().Undefined();
}

Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  Args a(info, "swiglu_backward", 6);
  const size_t n = a.count(5, "n");
  cpu::swiglu_backward(a.f32(0, "dg_n", n), a.f32(1, "du_n", n), a.f32(2, "dh_n", n), a.f32(3, "g_n", n),
                       a.f32(4, "u_n", n), n);
  return info.Env().Undefined();
}

Napi::Value LogSoftmax(const Napi::CallbackInfo& info) {
  Args a(info, "log_softmax", 5);
  const int R = a.dim(3, "R"), V = a.dim(4, "V");
  cpu::log_softmax(a.f32(0, "out_RV", a.mul(R, V)), a.f32(1, "lse_R", R, true), a.f32(2, "logits_RV", a.mul(R, V)), R, V);
  return info.Env().Undefined();
}

Napi::Value LogSoftmaxBackward(const Napi::CallbackInfo& info) {
  Args a(info, "log_softmax_backward", 5);
  const int R = a.dim(3, "R"), V = a.dim(4, "V");
  cpu::log_softmax_backward(a.f32(0, "dlogits_RV", a.mul(R, V)), a.f32(1, "ds_RV", a.mul(R, V)),
                            a.f32(2, "logp_RV", a.mul(R, V)), R, V);
  return info.Env().Undefined();
}

Napi::Value Topk(const Napi::CallbackInfo& info) {
  Args a(info, "topk", 6);
  const int R = a.dim(3, "R"), V = a.dim(4, "V"), K = a.dim(5, "K");
  if (K > V) a.throw_error("K must not exceed V");
  cpu::topk(a.i32(0, "idx_RK", a.mul(R, K)), a.f32(1, "val_RK", a.mul(R, K)), a.f32(2, "x_RV", a.mul(R, V)), R, V, K);
  return info.Env().Undefined();
}

Napi::Value Adamw(const Napi::CallbackInfo& info) {
  Args a(info, "adamw", 11);
  const size_t n = a.count(4, "n");
  const double step = a.number(10, "step");
  if (!(step >= 1) || step != std::floor(step)) a.throw_error("step must be a positive integer");
  cpu::adamw(a.f32(0, "p", n), a.f32(1, "m", n), a.f32(2, "v", n), a.f32(3, "g", n), n,
             static_cast<float>(a.number(5, "lr")), static_cast<float>(a.number(6, "beta1")),
             static_cast<float>(a.number(7, "beta2")), static_cast<float>(a.number(8, "eps")),
             static_cast<float>(a.number(9, "weightDecay")), static_cast<int64_t>(step));
  return info.Env().Undefined();
}

// sdpo_loss_row(ds_V, s_V, V, y, teacher {idx_K, logp_K, tailLogp, tokenLogp, K}, oldLogp, baseLogp,
// options {alpha, tail, sampledToken, isClip, beta}, coef) -> {D, w, k3, clipped}
Napi::Value SdpoLossRow(const Napi::CallbackInfo& info) {
  Args a(info, "sdpo_loss_row", 9);
  const int V = a.dim(2, "V");
  const double y = a.number(3, "y");
  if (!(y >= 0 && y < V) || y != std::floor(y)) a.throw_error("y must be a token id below V");
  Napi::Object t = a.object(4, "teacher");
  Napi::Object o = a.object(7, "options");
  auto num = [&](const Napi::Object& obj, const char* key) {
    Napi::Value v = obj.Get(key);
    if (!v.IsNumber()) a.throw_error(std::string(key) + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  auto flag = [&](const char* key) {
    Napi::Value v = o.Get(key);
    if (!v.IsBoolean()) a.throw_error(std::string("options.") + key + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  };
  cpu::SdpoLossOptions opt;
  opt.alpha = static_cast<float>(num(o, "alpha"));
  opt.tail = flag("tail");
  opt.sampledToken = flag("sampledToken");
  opt.isClip = static_cast<float>(num(o, "isClip"));
  opt.beta = static_cast<float>(num(o, "beta"));
  const double K = num(t, "K");
  if (!(K >= 0 && K <= V) || K != std::floor(K)) a.throw_error("teacher.K must be an integer in 0..V");
  cpu::SdpoTeacherRow row{};
  row.K = static_cast<int>(K);
  Napi::Value idx = t.Get("idx_K"), logp = t.Get("logp_K");
  if (!idx.IsTypedArray() || idx.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      idx.As<Napi::Int32Array>().ElementLength() < static_cast<size_t>(row.K)) {
    a.throw_error("teacher.idx_K must be an Int32Array of at least K ids");
  }
  if (!logp.IsTypedArray() || logp.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
      logp.As<Napi::Float32Array>().ElementLength() < static_cast<size_t>(row.K)) {
    a.throw_error("teacher.logp_K must be a Float32Array of at least K values");
  }
  row.idx_K = idx.As<Napi::Int32Array>().Data();
  row.logp_K = logp.As<Napi::Float32Array>().Data();
  a.check_ids(row.idx_K, row.K, V, "teacher.idx_K");
  row.tailLogp = static_cast<float>(num(t, "tailLogp"));
  row.tokenLogp = static_cast<float>(num(t, "tokenLogp"));
  const cpu::SdpoRowValues r =
      cpu::sdpo_loss_row(a.f32(0, "ds_V", V), a.f32(1, "s_V", V), V, static_cast<int32_t>(y), row,
                         static_cast<float>(a.number(5, "oldLogp")), static_cast<float>(a.number(6, "baseLogp")),
                         opt, a.number(8, "coef"));
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("D", r.D);
  out.Set("w", r.w);
  out.Set("k3", r.k3);
  out.Set("clipped", r.clipped);
  return out;
}

}  // namespace

Napi::Object CpuOps(Napi::Env env) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("embedding", Napi::Function::New(env, Embedding, "embedding"));
  ops.Set("rmsnorm", Napi::Function::New(env, Rmsnorm, "rmsnorm"));
  ops.Set("rmsnorm_backward", Napi::Function::New(env, RmsnormBackward, "rmsnorm_backward"));
  ops.Set("linear", Napi::Function::New(env, Linear, "linear"));
  ops.Set("linear_backward_input", Napi::Function::New(env, LinearBackwardInput, "linear_backward_input"));
  ops.Set("lora", Napi::Function::New(env, Lora, "lora"));
  ops.Set("lora_backward", Napi::Function::New(env, LoraBackward, "lora_backward"));
  ops.Set("rope_tables", Napi::Function::New(env, RopeTables, "rope_tables"));
  ops.Set("rope", Napi::Function::New(env, Rope, "rope"));
  ops.Set("rope_backward", Napi::Function::New(env, RopeBackward, "rope_backward"));
  ops.Set("attention", Napi::Function::New(env, Attention, "attention"));
  ops.Set("attention_backward", Napi::Function::New(env, AttentionBackward, "attention_backward"));
  ops.Set("swiglu", Napi::Function::New(env, Swiglu, "swiglu"));
  ops.Set("swiglu_backward", Napi::Function::New(env, SwigluBackward, "swiglu_backward"));
  ops.Set("log_softmax", Napi::Function::New(env, LogSoftmax, "log_softmax"));
  ops.Set("log_softmax_backward", Napi::Function::New(env, LogSoftmaxBackward, "log_softmax_backward"));
  ops.Set("topk", Napi::Function::New(env, Topk, "topk"));
  ops.Set("adamw", Napi::Function::New(env, Adamw, "adamw"));
  ops.Set("sdpo_loss_row", Napi::Function::New(env, SdpoLossRow, "sdpo_loss_row"));
  return ops;
}

}  // namespace claas
