// LoRA branch of a projection: y += s (x A^T) B^T, and its gradients for A, B and the input.
#include <cblas.h>

#include "cpu/ops.h"

namespace claas::cpu {

void lora(float* y_TO, float* u_TR, const float* x_TI, const float* A_RI, const float* B_OR, int T, int I,
          int O, int R, float scale) {
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
