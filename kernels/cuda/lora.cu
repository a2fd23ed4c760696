// LoRA branch y += s (x A^T) B^T and its gradients, as fp32 cuBLAS GEMMs (the adapter is trained in fp32).
#include "cuda/blas.h"
#include "cuda/ops.h"

namespace claas::cuda {

void lora(const Blas& blas, float* y_TO, float* u_TR, const float* x_TI, const float* A_RI, const float* B_OR, int T,
          int I, int O, int R, float scale) {
  gemm(blas, Trans::N, Trans::T, T, R, I, 1.0f, x_TI, I, A_RI, I, CUDA_R_32F, 0.0f, u_TR, R);
  gemm(blas, Trans::N, Trans::T, T, O, R, scale, u_TR, R, B_OR, R, CUDA_R_32F, 1.0f, y_TO, O);
}

void lora_backward(const Blas& blas, float* dx_TI, float* dA_RI, float* dB_OR, const float* dy_TO, const float* x_TI,
                   const float* u_TR, const float* A_RI, const float* B_OR, int T, int I, int O, int R, float scale,
                   float* scratch_TR) {
  // dB += s dy^T u ; du = s dy B ; dA += du^T x ; dx += du A
  gemm(blas, Trans::T, Trans::N, O, R, T, scale, dy_TO, O, u_TR, R, CUDA_R_32F, 1.0f, dB_OR, R);
  gemm(blas, Trans::N, Trans::N, T, R, O, scale, dy_TO, O, B_OR, R, CUDA_R_32F, 0.0f, scratch_TR, R);
  gemm(blas, Trans::T, Trans::N, R, I, T, 1.0f, scratch_TR, R, x_TI, I, CUDA_R_32F, 1.0f, dA_RI, I);
  gemm(blas, Trans::N, Trans::N, T, I, R, 1.0f, scratch_TR, R, A_RI, I, CUDA_R_32F, 1.0f, dx_TI, I);
}

}  // namespace claas::cuda
