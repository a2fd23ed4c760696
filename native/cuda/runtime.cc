// Device probe and error reporting for the CUDA backend.
#include "cuda/runtime.h"

#include <atomic>

namespace claas::cuda {

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  throw EngineError("E_CUDA", std::string(what) + " failed: " + cudaGetErrorName(err) + " (" +
                                  cudaGetErrorString(err) + ")");
}

std::string device_unavailable_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later probes start clean
    return std::string("no CUDA device: ") + cudaGetErrorString(err);
  }
  if (count == 0) return "no CUDA device: the driver reports none";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "no CUDA device: cannot query device 0";
  if (prop.major < 8) {
    return "CUDA device " + std::string(prop.name) + " is sm_" + std::to_string(prop.major * 10 + prop.minor) +
           "; the backend is built for sm_80 and sm_90";
  }
  return "";
}

std::string device_description() {
  cudaDeviceProp prop{};
  CLAAS_CUDA(cudaGetDeviceProperties(&prop, 0));
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major * 10 + prop.minor) + ", " +
         std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
}

namespace {
std::atomic<size_t> inUse{0}, peak{0};
}  // namespace

size_t device_bytes_in_use() { return inUse.load(); }
size_t device_bytes_peak() { return peak.load(); }
void reset_device_bytes_peak() { peak.store(inUse.load()); }
void note_device_bytes(size_t bytes, bool allocated) {
  if (!allocated) {
    inUse -= bytes;
    return;
  }
  const size_t now = inUse += bytes;
  size_t p = peak.load();
  while (now > p && !peak.compare_exchange_weak(p, now)) {
  }
}

Stream::Stream() : Stream(false) {}
Stream::Stream(bool urgent) {
  if (!urgent) {
    CLAAS_CUDA(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
    return;
  }
  int least = 0, greatest = 0;
  CLAAS_CUDA(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  CLAAS_CUDA(cudaStreamCreateWithPriority(&s_, cudaStreamNonBlocking, greatest));
}
Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);
}
void Stream::sync() const { CLAAS_CUDA(cudaStreamSynchronize(s_)); }

}  // namespace claas::cuda
