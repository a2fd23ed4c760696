// Conversion of op arguments and results between JavaScript objects and named host arrays.
#include "cuda/op_io.h"

#include "engine/errors.h"

namespace claas::cuda {

namespace {
template <typename T>
const T& find(const std::map<std::string, T>& m, const std::string& name, const char* kind) {
  auto it = m.find(name);
  if (it == m.end()) throw EngineError("E_INPUT", "op argument '" + name + "' must be " + kind);
  return it->second;
}
template <typename V>
void check_length(const V& v, const std::string& name, size_t expected) {
  if (v.size() != expected) {
    throw EngineError("E_SHAPE", "op argument '" + name + "' has " + std::to_string(v.size()) + " values, expected " +
                                     std::to_string(expected));
  }
}
}  // namespace

const std::vector<float>& OpTensors::floats(const std::string& name, size_t expected) const {
  const auto& v = find(f, name, "a Float32Array");
  check_length(v, name, expected);
  return v;
}

const std::vector<int32_t>& OpTensors::ints(const std::string& name, size_t expected) const {
  const auto& v = find(i, name, "an Int32Array");
  check_length(v, name, expected);
  return v;
}

double OpTensors::number(const std::string& name) const { return find(num, name, "a number"); }

OpTensors read_tensors(const Napi::Object& o) {
  OpTensors t;
  const Napi::Array keys = o.GetPropertyNames();
  for (uint32_t k = 0; k < keys.Length(); ++k) {
    const std::string name = keys.Get(k).As<Napi::String>().Utf8Value();
    const Napi::Value v = o.Get(name);
    if (v.IsNumber()) {
      t.num[name] = v.As<Napi::Number>().DoubleValue();
    } else if (v.IsBoolean()) {
      t.num[name] = v.As<Napi::Boolean>().Value() ? 1.0 : 0.0;
    } else if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
      const Napi::Float32Array a = v.As<Napi::Float32Array>();
      t.f[name].assign(a.Data(), a.Data() + a.ElementLength());
    } else if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
      const Napi::Int32Array a = v.As<Napi::Int32Array>();
      t.i[name].assign(a.Data(), a.Data() + a.ElementLength());
    } else {
      throw EngineError("E_INPUT", "op argument '" + name + "' must be a number, boolean, Float32Array or Int32Array");
    }
  }
  return t;
}

Napi::Object write_tensors(Napi::Env env, const OpTensors& t) {
  Napi::Object o = Napi::Object::New(env);
  for (const auto& [name, v] : t.f) {
    Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
    std::copy(v.begin(), v.end(), a.Data());
    o.Set(name, a);
  }
  for (const auto& [name, v] : t.i) {
    Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
    std::copy(v.begin(), v.end(), a.Data());
    o.Set(name, a);
  }
  for (const auto& [name, v] : t.d) {
    Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
    std::copy(v.begin(), v.end(), a.Data());
    o.Set(name, a);
  }
  for (const auto& [name, v] : t.num) o.Set(name, v);
  return o;
}

}  // namespace claas::cuda
