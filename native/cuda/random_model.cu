// Random-initialized model weights generated on the device (for bench/: a Qwen3-8B-shaped model
// without a download or a 16 GB file): matrices ~ N(0, std^2) from a counter-based hash, norms = 1.
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/device_model.h"

namespace claas::cuda {

namespace {

__device__ inline uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

__global__ void normal_kernel(bf16* out, size_t n, uint64_t seed, float std) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float u1 = (mix(seed ^ (2 * i)) + 1.0f) * 2.3283064e-10f;  // (0, 1]
    const float u2 = mix(seed ^ (2 * i + 1)) * 2.3283064e-10f;
    out[i] = __float2bfloat16_rn(std * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
  }
}

__global__ void fill_kernel(float* out, size_t n, float value) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = value;
  }
}

}  // namespace

std::unique_ptr<DeviceModel> random_model(const ModelConfig& cfg, uint64_t seed, float std, Lane& lane) {
  auto dm = std::make_unique<DeviceModel>();
  dm->cfg = cfg;
  const cudaStream_t s = lane.stream.get();
  uint64_t stream = seed * 0x9e3779b97f4a7c15ull;
  const auto normal = [&](DeviceBuffer<bf16>& d, size_t n) {
    d.resize(n);
    normal_kernel<<<blocks_for(n, 256), 256, 0, s>>>(d.get(), n, stream += 0x632be59bd9b4e019ull, std);
    CLAAS_LAUNCHED();
  };
  const auto ones = [&](DeviceBuffer<float>& d, size_t n) {
    d.resize(n);
    fill_kernel<<<blocks_for(n, 256), 256, 0, s>>>(d.get(), n, 1.0f);
    CLAAS_LAUNCHED();
  };
  const size_t VH = static_cast<size_t>(cfg.vocab) * cfg.hidden;
  normal(dm->embed, VH);
  if (cfg.tieEmbeddings) {
    dm->lmHead = dm->embed.get();
  } else {
    normal(dm->lmHeadOwned, VH);
    dm->lmHead = dm->lmHeadOwned.get();
  }
  ones(dm->finalNorm, cfg.hidden);
  dm->layers.resize(cfg.layers);
  for (DeviceLayer& d : dm->layers) {
    for (int m = 0; m < kModuleCount; ++m) normal(d.W[m], static_cast<size_t>(cfg.moduleIn(m)) * cfg.moduleOut(m));
    ones(d.inNorm, cfg.hidden);
    ones(d.postNorm, cfg.hidden);
    ones(d.qNorm, cfg.headDim);
    ones(d.kNorm, cfg.headDim);
  }
  lane.stream.sync();
  return dm;
}

}  // namespace claas::cuda
