// loadModel for the CUDA addon: the same NativeModel interface as the CPU addon (src/engine/native.ts),
// with weights, adapters and KV caches on the device.
#pragma once
#include <napi.h>

namespace claas::cuda {

void register_model(Napi::Env env, Napi::Object exports);

}  // namespace claas::cuda
