// LoRA branch of a projection: y += s (x A^T) B^T, and its gradients for A, B and the input.
#include <cblas.h>

#include "cpu/ops.h"

namespace claas::cpu {

namespace {

constexpr int kLoraLoopRows = 4;

// The dot products of the few-row case, vectorized (the reduction may be reordered).
inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Compiled for AVX2 as well as the baseline, picked at load time, so the portable build keeps its speed.
__attribute__((target_clones("avx2", "default"))) void lora_rows(float* y_TO, float* u_TR, const float* x_TI, const float* A_RI, const float* B_OR, int T, int I,
               int O, int R, float scale) {
  for (int t = 0; t < T; ++t) {
    const float* x = x_TI + static_cast<size_t>(t) * I;
    float* u = u_TR + static_cast<size_t>(t) * R;
    for (int r = 0; r < R; ++r) u[r] = dot(x, A_RI + static_cast<size_t>(r) * I, I);
    float* y = y_TO + static_cast<size_t>(t) * O;
    for (int o = 0; o < O; ++o) y[o] += scale * dot(u, B_OR + static_cast<size_t>(o) * R, R);
  }
}

}  // namespace

void lora(float* y_TO, float* u_TR, const float* x_TI, const float* A_RI, const float* B_OR, int T, int I,
          int O, int R, float scale) {
  // A few rows (decoding: one per sequence of this adapter) are thin matrix-vector products, cheaper
  // as plain loops than as GEMM calls, whose fixed cost would dominate when a batch holds rows of
  // many adapters.
  if (T <= kLoraLoopRows) {
    lora_rows(y_TO, u_TR, x_TI, A_RI, B_OR, T, I, O, R, scale);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, R, I, 1.0f, x_TI, I, A_RI, I, 0.0f, u_TR, R);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, O, R, scale, u_TR, R, B_OR, R, 1.0f, y_TO, O);
}

void lora_backward(float* dx_TI, float* dA_RI, float* dB_OR, const float* dy_TO, const float* x_TI,
                   const float* u_TR, const float* A_RI, const float* B_OR, int T, int I, int O, int R,
                   float scale, float* scratch_TR) {
  // dB += s dy^T u
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, R, T, scale, dy_TO, O, u_TR, R, 1.0f, dB_OR, R);
  // du = s dy B
  float* du_TR = scratch_TR;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, R, O, scale, dy_TO, O, B_OR, R, 0.0f, du_TR, R);
  // dA += du^T x ; dx += du A
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, I, T, 1.0f, du_TR, R, x_TI, I, 1.0f, dA_RI, I);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, I, R, 1.0f, du_TR, R, A_RI, I, 1.0f, dx_TI, I);
}

}  // namespace claas::cpu
