// GEMMs through cuBLAS opened at run time (dlopen), so neither its headers nor a link-time
// dependency are needed: only the entry points and enum values used here are declared.
// All matrices are row-major; the wrapper maps them onto cuBLAS's column-major convention.
#pragma once
#include <cuda_runtime.h>
#include <library_types.h>

#include <string>

namespace claas::cuda {

// Empty when libcublas could be opened, else why not.
std::string blas_unavailable_reason();

enum class Trans { N, T };

// C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C, fp32 accumulation. A and B share one element type
// (CUDA_R_16BF or CUDA_R_32F); C is fp32. lda/ldb/ldc are row strides of the stored matrices.
void gemm(cudaStream_t s, Trans ta, Trans tb, int M, int N, int K, float alpha, const void* A, int lda,
          const void* B, int ldb, cudaDataType abType, float beta, float* C, int ldc);

}  // namespace claas::cuda
