// Run-time binding of the cuBLAS entry points the backend calls; one handle per stream.
#include "cuda/blas.h"

#include <dlfcn.h>

#include <mutex>

#include "engine/errors.h"

namespace claas::cuda {

namespace {

// From cublas_api.h (stable ABI values since CUDA 11).
using Handle = struct cublasContext*;
using Status = int;
constexpr int kOpN = 0, kOpT = 1;
constexpr int kCompute32F = 68;  // CUBLAS_COMPUTE_32F
constexpr int kGemmDefault = -1;  // CUBLAS_GEMM_DEFAULT

using CreateFn = Status (*)(Handle*);
using DestroyFn = Status (*)(Handle);
using SetStreamFn = Status (*)(Handle, cudaStream_t);
using GemmExFn = Status (*)(Handle, int, int, int, int, int, const void*, const void*, cudaDataType, int, const void*,
                            cudaDataType, int, const void*, void*, cudaDataType, int, int, int);

struct Library {
  void* lib = nullptr;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn setStream = nullptr;
  GemmExFn gemmEx = nullptr;
  std::string error;
};

const Library& library() {
  static Library L;
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      L.lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (L.lib) break;
    }
    if (!L.lib) {
      L.error = std::string("cannot open libcublas (tried .so.13, .so.12, .so): ") + dlerror();
      return;
    }
    L.create = reinterpret_cast<CreateFn>(dlsym(L.lib, "cublasCreate_v2"));
    L.destroy = reinterpret_cast<DestroyFn>(dlsym(L.lib, "cublasDestroy_v2"));
    L.setStream = reinterpret_cast<SetStreamFn>(dlsym(L.lib, "cublasSetStream_v2"));
    L.gemmEx = reinterpret_cast<GemmExFn>(dlsym(L.lib, "cublasGemmEx"));
    if (!L.create || !L.destroy || !L.setStream || !L.gemmEx) {
      L.error = "libcublas lacks cublasCreate_v2, cublasDestroy_v2, cublasSetStream_v2 or cublasGemmEx";
    }
  });
  return L;
}

}  // namespace

std::string blas_unavailable_reason() { return library().error; }

Blas::Blas(cudaStream_t s) : s_(s) {
  const Library& L = library();
  if (!L.error.empty()) throw EngineError("E_CUDA", L.error);
  Handle h = nullptr;
  Status st = L.create(&h);
  if (st != 0) throw EngineError("E_CUDA", "cublasCreate failed with status " + std::to_string(st));
  // Bound once and for good: every GEMM of this handle then goes to one stream, so its workspace is
  // only ever used in that stream's order.
  st = L.setStream(h, s);
  if (st != 0) {
    L.destroy(h);
    throw EngineError("E_CUDA", "cublasSetStream failed with status " + std::to_string(st));
  }
  h_ = h;
}

Blas::~Blas() {
  if (h_) library().destroy(static_cast<Handle>(h_));
}

void gemm(const Blas& blas, Trans ta, Trans tb, int M, int N, int K, float alpha, const void* A, int lda,
          const void* B, int ldb, cudaDataType abType, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  const Library& L = library();
  Handle h = static_cast<Handle>(blas.h_);
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const Status st = L.gemmEx(h, tb == Trans::T ? kOpT : kOpN, ta == Trans::T ? kOpT : kOpN, N, M, K, &alpha, B, abType,
                             ldb, A, abType, lda, &beta, C, CUDA_R_32F, ldc, kCompute32F, kGemmDefault);
  if (st != 0) {
    throw EngineError("E_CUDA", "cublasGemmEx failed with status " + std::to_string(st) + " (M=" + std::to_string(M) +
                                    " N=" + std::to_string(N) + " K=" + std::to_string(K) + ")");
  }
}

}  // namespace claas::cuda
