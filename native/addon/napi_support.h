// What both addons (the CPU engine's claas.node and the CUDA engine's claas_cuda.node) need at the
// N-API boundary: engine errors as JavaScript errors with a `code`, promises for work run off the
// event loop, and argument readers that refuse what would otherwise crash the process.
#pragma once
#include <napi.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "engine/errors.h"

namespace claas::napi {

inline Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

[[noreturn]] inline void fail(const std::string& code, const std::string& message) { throw EngineError(code, message); }

// Runs `work` off the event loop; resolves with `done(env)` or rejects with the engine error.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        done_(std::move(done)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const EngineError& e) {
      code_ = e.code;
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "E_MEMORY";
      SetError("out of memory");
    } catch (const std::exception& e) {
      code_ = "E_INTERNAL";
      SetError(e.what());
    }
  }
  void OnOK() override {
    try {
      deferred_.Resolve(done_(Env()));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(make_error(Env(), code_, e.Message()).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  std::string code_ = "E_INTERNAL";
};

inline Napi::Value run_async(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done) {
  auto* w = new PromiseWorker(env, std::move(work), std::move(done));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// Converts EngineError thrown by synchronous code into a JS exception with a code.
template <typename F>
Napi::Value guarded(Napi::Env env, F&& f) {
  try {
    return f();
  } catch (const EngineError& e) {
    throw make_error(env, e.code, e.what());
  }
}

inline int get_int(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail("E_INPUT", std::string("expected a number for '") + key + "'");
  return v.As<Napi::Number>().Int32Value();
}
inline double get_num(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail("E_INPUT", std::string("expected a number for '") + key + "'");
  return v.As<Napi::Number>().DoubleValue();
}
inline bool get_bool(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) fail("E_INPUT", std::string("expected a boolean for '") + key + "'");
  return v.As<Napi::Boolean>().Value();
}

inline std::vector<int32_t> get_ids(const Napi::Value& v, int vocab, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    fail("E_INPUT", std::string(what) + " must be an Int32Array");
  }
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  std::vector<int32_t> ids(a.Data(), a.Data() + a.ElementLength());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) fail("E_INPUT", std::string(what) + " has token id " + std::to_string(id) + " outside the vocabulary");
  }
  return ids;
}

// SIZE_MAX as `expected` accepts any length.
inline std::vector<float> get_floats(const Napi::Value& v, size_t expected, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    fail("E_INPUT", std::string(what) + " must be a Float32Array");
  }
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (expected != SIZE_MAX && a.ElementLength() != expected) {
    fail("E_SHAPE", std::string(what) + " has " + std::to_string(a.ElementLength()) + " values, expected " +
                        std::to_string(expected));
  }
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

// Native bytes an object keeps alive, reported to V8 (napi_adjust_external_memory) so that garbage
// collection weighs them: a small wrapper holding a large adapter or KV cache is not a small object.
class ReportedBytes {
 public:
  void set(Napi::Env env, int64_t bytes) {
    if (bytes != bytes_) Napi::MemoryManagement::AdjustExternalMemory(env, bytes - bytes_);
    bytes_ = bytes;
  }
  int64_t get() const { return bytes_; }

 private:
  int64_t bytes_ = 0;
};

inline Napi::Float32Array to_js(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  std::copy(v.begin(), v.end(), a.Data());
  return a;
}

}  // namespace claas::napi
