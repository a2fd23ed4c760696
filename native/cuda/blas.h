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

// A cuBLAS handle bound to one stream for its whole life. cuBLAS promises run-to-run identical
// results with several streams active only when each stream has its own handle (or workspace): a
// handle's default workspace is then never shared between streams, and its algorithm choice does
// not depend on what else runs. A handle must not be used by two threads at once, so its owner
// (a model lane, an op call) uses it from one thread at a time.
class Blas {
 public:
  explicit Blas(cudaStream_t s);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cudaStream_t stream() const { return s_; }

 private:
  friend void gemm(const Blas&, Trans, Trans, int, int, int, float, const void*, int, const void*, int, cudaDataType,
                   float, float*, int);
  void* h_ = nullptr;  // cublasHandle_t
  cudaStream_t s_ = nullptr;
};

// C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C, fp32 accumulation, queued on blas's stream. A
// and B share one element type (CUDA_R_16BF or CUDA_R_32F); C is fp32. lda/ldb/ldc are row strides
// of the stored matrices.
void gemm(const Blas& blas, Trans ta, Trans tb, int M, int N, int K, float alpha, const void* A, int lda,
          const void* B, int ldb, cudaDataType abType, float beta, float* C, int ldc);

}  // namespace claas::cuda
