// Engine errors carry a stable code that the addon turns into a typed JavaScript error.
#pragma once
#include <stdexcept>
#include <string>

namespace claas {

struct EngineError : std::runtime_error {
  std::string code;  // e.g. "E_WEIGHTS", "E_SHAPE", "E_INPUT"
  EngineError(std::string c, const std::string& message) : std::runtime_error(message), code(std::move(c)) {}
};

}  // namespace claas
