// CUDA implementations of the engine ops, named as their CPU twins in native/cpu/ops.h (which define
// the semantics). Every pointer is device memory; every op is queued on stream s (the GEMM ops: on the
// stream of their cuBLAS handle) and returns at once.
// Frozen weight matrices are bf16; activations, LoRA parameters and optimizer state are fp32 and all
// accumulation is fp32. Shape letters as on the CPU: T tokens, H hidden, I/O in/out features, R LoRA
// rank or rows, V vocab, N heads, NKV kv heads, D head dim, K top-k.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/blas.h"

namespace claas::cuda {

using bf16 = __nv_bfloat16;

// convert.cu (device only: GEMM inputs are bf16 copies of fp32 activations).
void to_bf16(cudaStream_t s, bf16* out_n, const float* in_n, size_t n);
void to_float(cudaStream_t s, float* out_n, const bf16* in_n, size_t n);

// add.cu — y += x (residual connections; inline loops on the CPU).
void add(cudaStream_t s, float* y_n, const float* x_n, size_t n);

// embedding.cu
void embedding(cudaStream_t s, float* out_TH, const bf16* table_VH, const int32_t* ids_T, int T, int H);

// rmsnorm.cu
void rmsnorm(cudaStream_t s, float* y_ND, float* rstd_N, const float* x_ND, const float* w_D, int N, int D, float eps);
void rmsnorm_backward(cudaStream_t s, float* dx_ND, const float* dy_ND, const float* x_ND, const float* rstd_N,
                      const float* w_D, int N, int D, bool accumulate);

// linear.cu — y = x W^T + b through cuBLAS (bf16 inputs, fp32 output and accumulation).
void linear(const Blas& blas, float* y_TO, const bf16* x_TI, const bf16* W_OI, const float* b_O, int T, int I, int O);
void linear_backward_input(const Blas& blas, float* dx_TI, const bf16* dy_TO, const bf16* W_OI, int T, int I, int O,
                           bool accumulate);

// lora.cu — fp32 throughout (the adapter is small and trained).
void lora(const Blas& blas, float* y_TO, float* u_TR, const float* x_TI, const float* A_RI, const float* B_OR, int T,
          int I, int O, int R, float scale);
void lora_backward(const Blas& blas, float* dx_TI, float* dA_RI, float* dB_OR, const float* dy_TO, const float* x_TI,
                   const float* u_TR, const float* A_RI, const float* B_OR, int T, int I, int O, int R, float scale,
                   float* scratch_TR);

// rope.cu — tables come from cpu::rope_tables (uploaded).
void rope(cudaStream_t s, float* x_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D);
void rope_backward(cudaStream_t s, float* dx_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D);

// attention.cu — causal GQA, flash-style (online softmax over key tiles, no T x T matrix); k/v hold
// q0 + T rows (earlier ones from a KV cache).
void attention(cudaStream_t s, float* out_TND, float* lse_NT, const float* q_TND, const float* k_TMD,
               const float* v_TMD, int T, int N, int NKV, int D, int q0 = 0);
// Recomputes the probabilities from lse; scratch holds attention_backward_scratch(T, N, NKV, D) floats
// (delta per query row, and with GQA the per-head dK / dV shares of each kv group, N*T*D floats each).
size_t attention_backward_scratch(int T, int N, int NKV, int D);
void attention_backward(cudaStream_t s, float* dq_TND, float* dk_TMD, float* dv_TMD, const float* dout_TND,
                        const float* q_TND, const float* k_TMD, const float* v_TMD, const float* out_TND,
                        const float* lse_NT, int T, int N, int NKV, int D, float* scratch);

// swiglu.cu
void swiglu(cudaStream_t s, float* h_n, const float* g_n, const float* u_n, size_t n);
void swiglu_backward(cudaStream_t s, float* dg_n, float* du_n, const float* dh_n, const float* g_n, const float* u_n,
                     size_t n);

// log_softmax.cu — in place allowed; lse_R may be null.
void log_softmax(cudaStream_t s, float* out_RV, float* lse_R, const float* logits_RV, int R, int V);
void log_softmax_backward(cudaStream_t s, float* dlogits_RV, const float* ds_RV, const float* logp_RV, int R, int V);
// out_R[r] = x_RV[r, ids_R[r]]
void gather_rows(cudaStream_t s, float* out_R, const float* x_RV, const int32_t* ids_R, int R, int V);

// topk.cu — descending, ties to the lower index (a radix select for K <= 1024, serial rounds above).
void topk(cudaStream_t s, int32_t* idx_RK, float* val_RK, const float* x_RV, int R, int V, int K);

// sdpo_loss.cu — per-row SDPO loss (see cpu/sdpo_loss.h) over R rows at once.
struct SdpoLossOptions {
  float alpha = 0.5f;
  bool tail = true;
  bool sampledToken = false;
  float isClip = 2.0f;
  float beta = 0.0f;
};
// Per row: D, w, k3, clipped (0/1), in this order.
constexpr int kSdpoRowValues = 4;
// ds_RV: coef * d(w*D + beta*k3)/ds for each row of student log-probs s_RV. old_R may be null (unknown).
void sdpo_loss(cudaStream_t s, float* ds_RV, double* values_R4, const float* s_RV, int R, int V, const int32_t* y_R,
               const int32_t* tIdx_RK, const float* tLogp_RK, const float* tTail_R, const float* tToken_R, int K,
               const float* old_R, const float* base_R, const SdpoLossOptions& opt, double coef);
// Teacher targets from teacher log-probs: the log of the mass outside idx_RK, and logp of y.
void sdpo_teacher_tail(cudaStream_t s, float* tail_R, float* token_R, const float* logp_RV, const int32_t* idx_RK,
                       const int32_t* y_R, int R, int V, int K);

// adamw.cu — torch.optim.AdamW on g * gradScale (gradScale carries the global-norm clip).
void adamw(cudaStream_t s, float* p, float* m, float* v, const float* g, size_t n, float lr, float beta1, float beta2,
           float eps, float weightDecay, int64_t step, float gradScale = 1.0f);
// out[0] += sum of g^2 (double).
void sum_squares(cudaStream_t s, double* out, const float* g, size_t n);
// ema = (1 - rate) ema + rate p
void ema_update(cudaStream_t s, float* ema, const float* p, size_t n, float rate);

}  // namespace claas::cuda
