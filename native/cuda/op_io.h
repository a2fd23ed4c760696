// Named tensors passed to and from the op-level test entry points (cudaOps / cpuOps): every
// Float32Array, Int32Array and number of a JavaScript object, and the arrays an op returns.
#pragma once
#include <napi.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace claas::cuda {

struct OpTensors {
  std::map<std::string, std::vector<float>> f;
  std::map<std::string, std::vector<int32_t>> i;
  std::map<std::string, std::vector<double>> d;
  std::map<std::string, double> num;

  // Throw EngineError("E_INPUT") naming what is missing or has the wrong length.
  const std::vector<float>& floats(const std::string& name, size_t expected) const;
  const std::vector<int32_t>& ints(const std::string& name, size_t expected) const;
  double number(const std::string& name) const;
  int integer(const std::string& name) const { return static_cast<int>(number(name)); }
  bool has(const std::string& name) const { return f.count(name) || i.count(name) || num.count(name); }
};

OpTensors read_tensors(const Napi::Object& o);
Napi::Object write_tensors(Napi::Env env, const OpTensors& t);

}  // namespace claas::cuda
