// Row-wise log-softmax over the vocabulary, its backward, and the gather of one entry per row.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {
constexpr int kThreads = 512;

__global__ void log_softmax_kernel(float* out, float* lse, const float* logits, int V) {
  const float* x = logits + static_cast<size_t>(blockIdx.x) * V;
  float* y = out + static_cast<size_t>(blockIdx.x) * V;
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, x[v]);
  mx = block_max(mx);
  float sum = 0.0f;
  for (int v = threadIdx.x; v < V; v += blockDim.x) sum += expf(x[v] - mx);
  const float l = mx + logf(block_sum(sum));
  for (int v = threadIdx.x; v < V; v += blockDim.x) y[v] = x[v] - l;
  if (lse && threadIdx.x == 0) lse[blockIdx.x] = l;
}

__global__ void log_softmax_backward_kernel(float* dl, const float* ds, const float* lp, int V) {
  const size_t off = static_cast<size_t>(blockIdx.x) * V;
  float sum = 0.0f;
  for (int v = threadIdx.x; v < V; v += blockDim.x) sum += ds[off + v];
  sum = block_sum(sum);
  for (int v = threadIdx.x; v < V; v += blockDim.x) dl[off + v] = ds[off + v] - expf(lp[off + v]) * sum;
}

__global__ void gather_kernel(float* out, const float* x, const int32_t* ids, int R, int V) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < R) out[r] = x[static_cast<size_t>(r) * V + ids[r]];
}
}  // namespace

void log_softmax(cudaStream_t s, float* out_RV, float* lse_R, const float* logits_RV, int R, int V) {
  if (R == 0) return;
  log_softmax_kernel<<<R, kThreads, 0, s>>>(out_RV, lse_R, logits_RV, V);
  CLAAS_LAUNCHED();
}

void log_softmax_backward(cudaStream_t s, float* dlogits_RV, const float* ds_RV, const float* logp_RV, int R, int V) {
  if (R == 0) return;
  log_softmax_backward_kernel<<<R, kThreads, 0, s>>>(dlogits_RV, ds_RV, logp_RV, V);
  CLAAS_LAUNCHED();
}

void gather_rows(cudaStream_t s, float* out_R, const float* x_RV, const int32_t* ids_R, int R, int V) {
  if (R == 0) return;
  gather_kernel<<<(R + 127) / 128, 128, 0, s>>>(out_R, x_RV, ids_R, R, V);
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
