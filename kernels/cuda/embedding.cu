// Token embedding lookup from the bf16 table into fp32 rows.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {
__global__ void embedding_kernel(float* out, const bf16* table, const int32_t* ids, int H) {
  const size_t row = static_cast<size_t>(ids[blockIdx.x]) * H;
  float* o = out + static_cast<size_t>(blockIdx.x) * H;
  for (int h = threadIdx.x; h < H; h += blockDim.x) o[h] = __bfloat162float(table[row + h]);
}
}  // namespace

void embedding(cudaStream_t s, float* out_TH, const bf16* table_VH, const int32_t* ids_T, int T, int H) {
  if (T == 0) return;
  embedding_kernel<<<T, 256, 0, s>>>(out_TH, table_VH, ids_T, H);
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
