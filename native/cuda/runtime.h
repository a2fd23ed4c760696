// Device runtime for the CUDA backend: error checks, device probe, owned device buffers and the
// streams ops run on.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <vector>

#include "engine/errors.h"

namespace claas::cuda {

// Throws EngineError("E_CUDA") naming the failed call.
void check(cudaError_t err, const char* what);
#define CLAAS_CUDA(call) ::claas::cuda::check((call), #call)

// Empty when a device is usable, else why not (no driver, no device, ...).
std::string device_unavailable_reason();
// "NVIDIA H200 (sm_90, 139 GiB)" for device 0.
std::string device_description();

// Bytes held by DeviceBuffers now, and the most held at once since the last reset (for bench/).
size_t device_bytes_in_use();
size_t device_bytes_peak();
void reset_device_bytes_peak();
void note_device_bytes(size_t bytes, bool allocated);

// An owned device allocation of n elements of T.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_), cap_(o.cap_) { o.p_ = nullptr, o.n_ = o.cap_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = o.p_, n_ = o.n_, cap_ = o.cap_;
      o.p_ = nullptr, o.n_ = o.cap_ = 0;
    }
    return *this;
  }
  // Reallocates only when growing; contents are not kept.
  void resize(size_t n) {
    if (n <= cap_) {
      n_ = n;
      return;
    }
    release();
    if (n > 0) {
      CLAAS_CUDA(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
      note_device_bytes(n * sizeof(T), true);
    }
    n_ = cap_ = n;
  }
  void zero(cudaStream_t s) {
    if (n_) CLAAS_CUDA(cudaMemsetAsync(p_, 0, n_ * sizeof(T), s));
  }
  void upload(const T* host, size_t n, cudaStream_t s) {
    resize(n);
    if (n) CLAAS_CUDA(cudaMemcpyAsync(p_, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
  }
  std::vector<T> download(cudaStream_t s) const {
    std::vector<T> out(n_);
    if (n_) CLAAS_CUDA(cudaMemcpyAsync(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost, s));
    CLAAS_CUDA(cudaStreamSynchronize(s));
    return out;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  void release() {
    if (p_) {
      cudaFree(p_);
      note_device_bytes(cap_ * sizeof(T), false);
    }
    p_ = nullptr;
    n_ = cap_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

// A non-blocking stream owned for the lifetime of a model lane (or of one op call).
class Stream {
 public:
  Stream();
  // urgent: the device's highest stream priority, so that when SMs free up, this stream's waiting
  // blocks are placed before those of normal streams (decoding next to a training step).
  explicit Stream(bool urgent);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const;

 private:
  cudaStream_t s_ = nullptr;
};

}  // namespace claas::cuda
