// The `cpuOps` export: the CPU reference ops as synchronous functions on typed arrays (cpu_ops.cc).
#pragma once
#include <napi.h>

namespace claas {

Napi::Object CpuOps(Napi::Env env);

}  // namespace claas
