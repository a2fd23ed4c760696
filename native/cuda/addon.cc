// N-API surface of the CUDA backend (claas_cuda.node): the device probe, the op-level entry points
// for parity tests (cudaOps / cpuOps), and loadModel, whose NativeModel runs on the device. The
// static CUDA runtime lets this load on machines without a driver; calls then fail with E_NO_DEVICE.
#include <napi.h>

#include <deque>

#include "addon/napi_support.h"
#include "cuda/blas.h"
#include "cuda/model_entry.h"
#include "cuda/ops_entry.h"
#include "cuda/runtime.h"
#include "engine/errors.h"

namespace claas::cuda {
namespace {

using napi::make_error;

// {available, reason, device}: reason says why the backend cannot run here (empty when it can).
Napi::Value DeviceStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string reason = device_unavailable_reason();
  if (reason.empty()) reason = blas_unavailable_reason();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", reason.empty());
  o.Set("reason", reason);
  o.Set("device", reason.empty() ? device_description() : std::string());
  return o;
}

struct BoundOp {
  const OpEntry* entry;
  bool device;
};

Napi::Value RunOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto* bound = static_cast<const BoundOp*>(info.Data());
  const OpEntry* entry = bound->entry;
  const bool device = bound->device;
  try {
    if (!info[0].IsObject()) throw EngineError("E_INPUT", std::string(entry->name) + " expects an object of arrays");
    if (device) {
      const std::string reason = device_unavailable_reason();
      if (!reason.empty()) throw EngineError("E_NO_DEVICE", reason);
    }
    const OpTensors in = read_tensors(info[0].As<Napi::Object>());
    return write_tensors(env, device ? entry->cuda(in) : entry->cpu(in));
  } catch (const EngineError& e) {
    throw make_error(env, e.code, e.what());
  }
}

Napi::Object op_table(Napi::Env env, bool device) {
  // Lives as long as the process: the functions hold pointers into it.
  static std::deque<BoundOp> bound;
  Napi::Object o = Napi::Object::New(env);
  for (const OpEntry& e : op_entries()) {
    bound.push_back(BoundOp{&e, device});
    o.Set(e.name, Napi::Function::New(env, RunOp, e.name, &bound.back()));
  }
  return o;
}

}  // namespace
}  // namespace claas::cuda

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceStatus", Napi::Function::New(env, claas::cuda::DeviceStatus));
  exports.Set("cudaOps", claas::cuda::op_table(env, true));
  exports.Set("cpuOps", claas::cuda::op_table(env, false));
  claas::cuda::register_model(env, exports);
  return exports;
}

NODE_API_MODULE(claas_cuda, Init)
