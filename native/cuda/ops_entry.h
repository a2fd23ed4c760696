// The table of op-level test entry points: each op's CPU reference and CUDA implementation, both
// taking and returning named host arrays (see op_io.h).
#pragma once
#include <vector>

#include "cuda/op_io.h"

namespace claas::cuda {

using OpFn = OpTensors (*)(const OpTensors&);

struct OpEntry {
  const char* name;
  OpFn cpu;
  OpFn cuda;
};

const std::vector<OpEntry>& op_entries();

}  // namespace claas::cuda
