// CPU implementations of every engine op (the reference the other backends are tested against).
// Conventions: outputs first; row-major; shape letters in names (T tokens, H hidden, I in-features,
// O out-features, R LoRA rank or rows, V vocab, N heads, D head dim, K top-k).
#pragma once
#include <cstddef>
#include <cstdint>

namespace claas::cpu {

// embedding.cc
void embedding(float* out_TH, const float* table_VH, const int32_t* ids_T, int T, int H);

// rmsnorm.cc — y = w * x / sqrt(mean(x^2) + eps) per row; rstd_N kept for the backward.
void rmsnorm(float* y_ND, float* rstd_N, const float* x_ND, const float* w_D, int N, int D, float eps);
// dx = rstd * (g - xhat * mean(g * xhat)), g = dy * w. Adds into dx_ND when accumulate.
void rmsnorm_backward(float* dx_ND, const float* dy_ND, const float* x_ND, const float* rstd_N,
                      const float* w_D, int N, int D, bool accumulate);

// linear.cc — frozen base projection y = x W^T + b (b may be null).
void linear(float* y_TO, const float* x_TI, const float* W_OI, const float* b_O, int T, int I, int O);
void linear_backward_input(float* dx_TI, const float* dy_TO, const float* W_OI, int T, int I, int O,
                           bool accumulate);

// lora.cc — y += scale * (x A^T) B^T; u_TR = x A^T is kept for the backward.
void lora(float* y_TO, float* u_TR, const float* x_TI, const float* A_RI, const float* B_OR, int T, int I,
          int O, int R, float scale);
// Accumulates dA, dB and dx; scratch_TR holds T*R floats.
void lora_backward(float* dx_TI, float* dA_RI, float* dB_OR, const float* dy_TO, const float* x_TI,
                   const float* u_TR, const float* A_RI, const float* B_OR, int T, int I, int O, int R,
                   float scale, float* scratch_TR);

// rope.cc — rotate-half RoPE in place on x[T, N, D]; row t is at position positions_T[t].
void rope_tables(float* cos_TD2, float* sin_TD2, const int32_t* positions_T, int T, int D, double theta);
void rope(float* x_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D);
void rope_backward(float* dx_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D);

// attention.cc — causal GQA attention; q [T, N, D] for positions q0..q0+T-1, k/v [q0+T, NKV, D]
// (q0 > 0 when earlier keys come from a KV cache), out [T, N, D]; lse_NT kept for the backward.
void attention(float* out_TND, float* lse_NT, const float* q_TND, const float* k_TMD, const float* v_TMD, int T,
               int N, int NKV, int D, int q0 = 0);
// dq [T,N,D] written; dk/dv [T,NKV,D] written; scratch holds 2*N*T*D floats.
void attention_backward(float* dq_TND, float* dk_TMD, float* dv_TMD, const float* dout_TND,
                        const float* q_TND, const float* k_TMD, const float* v_TMD, const float* out_TND,
                        const float* lse_NT, int T, int N, int NKV, int D, float* scratch);

// swiglu.cc — h = silu(g) * u
void swiglu(float* h_n, const float* g_n, const float* u_n, size_t n);
void swiglu_backward(float* dg_n, float* du_n, const float* dh_n, const float* g_n, const float* u_n, size_t n);

// log_softmax.cc — in place allowed (out == logits); lse_R may be null.
void log_softmax(float* out_RV, float* lse_R, const float* logits_RV, int R, int V);
// dlogits = ds - softmax * sum(ds), softmax = exp(logp).
void log_softmax_backward(float* dlogits_RV, const float* ds_RV, const float* logp_RV, int R, int V);

// topk.cc — the K largest per row, descending; ties broken by the lower index.
void topk(int32_t* idx_RK, float* val_RK, const float* x_RV, int R, int V, int K);

// adamw.cc — torch.optim.AdamW semantics; step is the 1-based step count after this update.
void adamw(float* p, float* m, float* v, const float* g, size_t n, float lr, float beta1, float beta2, float eps,
           float weightDecay, int64_t step);

}  // namespace claas::cpu
