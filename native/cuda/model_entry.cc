// N-API classes of the CUDA engine: NativeModel, NativeAdapter and NativeSequence with the CPU
// addon's methods and argument checks (native/addon/addon.cc), backed by native/cuda/device_model.
// Heavy calls run on worker threads and resolve promises; errors carry the engine's code. Each
// object reports the device memory it keeps alive to V8 and lets go of it on dispose().
#include "cuda/model_entry.h"

#include <functional>
#include <mutex>
#include <memory>
#include <string>

#include "addon/napi_support.h"
#include "cuda/device_model.h"
#include "engine/errors.h"

namespace claas::cuda {
namespace {

using namespace napi;

// A loaded device model and its two lanes (device_model.h): decode runs in `interactive`, every
// other call (forward, tokenLogprobs, sdpoStep, adapter upload, download and clone) in `background`.
// The engine (src/engine/engine.ts) sends a decode while a step runs, from the libuv pool, so the
// two lanes' calls really run on two threads at once; a lane's lock keeps its own calls one at a
// time whatever the caller does. The engine never lets a call read an adapter that a step is
// writing, a step writes only its own adapter (disjoint device memory from every other adapter),
// and only decode touches KV caches; the weights are read-only. The interactive stream has the
// higher priority, so decode kernels get SMs ahead of the step's as they free up.
// Not verified without a GPU (this was written on a machine with none; the test in
// test/cuda-parity.test.ts checks it where a device is present): that the two streams' kernels do
// overlap on the device and decode calls finish while a step runs; that the per-stream cuBLAS handles
// give bit-identical GEMMs whether or not the other lane is busy (cuBLAS documents this for one
// handle per stream); that the priorities help decode latency; and how much the implicit device-wide
// synchronization of cudaFree (a step frees per-sample buffers, a decode frees a KV cache as it
// grows) holds one lane back while the other has work queued.
struct Loaded {
  std::unique_ptr<DeviceModel> dm;
  std::unique_ptr<Lane> interactive, background;
};

// Runs fn as its lane's only call. A failed call's queued kernels are waited for before the lane is
// let go, so none of them still writes memory (an adapter) that the other lane may read next.
template <typename Fn>
auto in_lane(Lane& lane, Fn&& fn) -> decltype(fn()) {
  std::lock_guard<std::mutex> g(lane.lock);
  try {
    return fn();
  } catch (...) {
    (void)cudaStreamSynchronize(lane.stream.get());
    throw;
  }
}

// What one JavaScript object has reported to V8 as external memory (the device memory it keeps
// alive), so that V8 weighs it when scheduling collections. Touched on the main thread only. Once
// closed (dispose or finalization) it reports nothing more, so every byte added is taken back once.
struct Reported {
  int64_t bytes = 0;
  bool closed = false;
  void set(Napi::Env env, size_t now) {
    if (closed) return;
    const int64_t delta = static_cast<int64_t>(now) - bytes;
    if (delta != 0) Napi::MemoryManagement::AdjustExternalMemory(env, delta);
    bytes = static_cast<int64_t>(now);
  }
  void close(Napi::Env env) {
    set(env, 0);
    closed = true;
  }
};

[[noreturn]] void disposed(const char* what) { fail("E_DISPOSED", std::string("the ") + what + " was disposed"); }

class AdapterWrap : public Napi::ObjectWrap<AdapterWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Register(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeCudaAdapter",
                                   {InstanceMethod("layout", &AdapterWrap::Layout),
                                    InstanceMethod("state", &AdapterWrap::State),
                                    InstanceMethod("clone", &AdapterWrap::Clone),
                                    InstanceMethod("dispose", &AdapterWrap::Dispose),
                                    InstanceAccessor("bytes", &AdapterWrap::Bytes, nullptr)});
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
  }
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<DeviceAdapter> a, std::shared_ptr<Loaded> model) {
    Napi::Object o = ctor.New({});
    AdapterWrap* w = Unwrap(o);
    w->reported.set(env, adapter_bytes(*a));
    w->adapter = std::move(a);
    w->model = std::move(model);
    return o;
  }
  explicit AdapterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AdapterWrap>(info) {}
  void Finalize(Napi::Env env) override { reported.close(env); }
  // Null once disposed (a call already running holds its own reference).
  std::shared_ptr<DeviceAdapter> adapter;
  std::shared_ptr<Loaded> model;

 private:
  Reported reported;

  void live() const {
    if (!adapter) disposed("adapter");
  }
  Napi::Value Layout(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      const LoraLayout& L = adapter->layout;
      const ModelConfig& c = model->dm->cfg;
      Napi::Array entries = Napi::Array::New(env);
      uint32_t n = 0;
      for (int l = 0; l < L.layers; ++l) {
        for (int m = 0; m < kModuleCount; ++m) {
          if (!L.target[m]) continue;
          const size_t i = static_cast<size_t>(l) * kModuleCount + m;
          Napi::Object e = Napi::Object::New(env);
          e.Set("layer", l);
          e.Set("module", m);
          e.Set("aOffset", static_cast<double>(L.offA[i]));
          e.Set("bOffset", static_cast<double>(L.offB[i]));
          e.Set("inFeatures", c.moduleIn(m));
          e.Set("outFeatures", c.moduleOut(m));
          entries.Set(n++, e);
        }
      }
      Napi::Object out = Napi::Object::New(env);
      out.Set("rank", L.rank);
      out.Set("alpha", L.alpha);
      out.Set("total", static_cast<double>(L.total));
      out.Set("entries", entries);
      return out;
    });
  }
  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      Lane& lane = *model->background;
      const Adapter h = in_lane(lane, [&] { return download_adapter(lane, *adapter); });
      Napi::Object o = Napi::Object::New(env);
      o.Set("params", to_js(env, h.params));
      o.Set("ema", to_js(env, h.ema));
      o.Set("m", to_js(env, h.m));
      o.Set("v", to_js(env, h.v));
      o.Set("grads", to_js(env, h.grads));
      o.Set("step", static_cast<double>(h.step));
      return o;
    });
  }
  Napi::Value Clone(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      Lane& lane = *model->background;
      auto copy = in_lane(lane, [&] { return upload_adapter(lane, download_adapter(lane, *adapter)); });
      return Wrap(env, std::move(copy), model);
    });
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(reported.bytes));
  }
  // Drops this object's references: the device memory is freed now, or when the last call using
  // it ends. The model reference goes too, so a disposed model's weights are not kept by it.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    reported.close(info.Env());
    adapter.reset();
    model.reset();
    return info.Env().Undefined();
  }
};
Napi::FunctionReference AdapterWrap::ctor;

class SequenceWrap : public Napi::ObjectWrap<SequenceWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Register(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeCudaSequence",
                                   {InstanceAccessor("length", &SequenceWrap::Length, nullptr),
                                    InstanceAccessor("bytes", &SequenceWrap::Bytes, nullptr),
                                    InstanceMethod("dispose", &SequenceWrap::Dispose)});
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
  }
  explicit SequenceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SequenceWrap>(info) {}
  void Finalize(Napi::Env env) override { reported->close(env); }
  // Null once disposed (a decode already running holds its own reference).
  std::shared_ptr<DeviceSequence> seq;
  std::shared_ptr<Loaded> model;
  // Shared with the completion of each decode, which reports the KV cache's growth.
  std::shared_ptr<Reported> reported = std::make_shared<Reported>();

 private:
  Napi::Value Length(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), seq ? seq->length : 0); }
  // As of the last decode that completed (read here, the cache could be growing on a worker).
  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(reported->bytes));
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    reported->close(info.Env());
    seq.reset();
    model.reset();
    return info.Env().Undefined();
  }
};
Napi::FunctionReference SequenceWrap::ctor;

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Register(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeCudaModel",
                                   {InstanceMethod("createAdapter", &ModelWrap::CreateAdapter),
                                    InstanceMethod("forward", &ModelWrap::Forward),
                                    InstanceMethod("tokenLogprobs", &ModelWrap::TokenLogprobs),
                                    InstanceMethod("sdpoStep", &ModelWrap::SdpoStep),
                                    InstanceMethod("createSequence", &ModelWrap::CreateSequence),
                                    InstanceMethod("decode", &ModelWrap::Decode),
                                    InstanceMethod("dispose", &ModelWrap::Dispose),
                                    // Decode has a lane of its own (Loaded), so the engine may send it during a step.
                                    InstanceValue("concurrentLanes", Napi::Boolean::New(env, true), napi_enumerable)});
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
  }
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<Loaded> loaded) {
    Napi::Object o = ctor.New({});
    ModelWrap* w = Unwrap(o);
    w->reported.set(env, weight_bytes(*loaded->dm));
    w->model = std::move(loaded);
    return o;
  }
  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}
  void Finalize(Napi::Env env) override { reported.close(env); }

 private:
  // Null once disposed; adapters, sequences and running calls keep their own references.
  std::shared_ptr<Loaded> model;
  Reported reported;

  void live() const {
    if (!model) disposed("model");
  }

  // null / undefined: the base model.
  std::shared_ptr<DeviceAdapter> adapter_arg(const Napi::Value& v) {
    if (v.IsNull() || v.IsUndefined()) return nullptr;
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(AdapterWrap::ctor.Value())) {
      fail("E_INPUT", "adapter must be a NativeAdapter of the CUDA backend or null");
    }
    AdapterWrap* w = AdapterWrap::Unwrap(v.As<Napi::Object>());
    if (!w->adapter) disposed("adapter");
    if (w->model != model) fail("E_INPUT", "adapter belongs to another model");
    return w->adapter;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    reported.close(info.Env());
    model.reset();
    return info.Env().Undefined();
  }

  Napi::Value CreateAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      if (!info[0].IsObject()) fail("E_INPUT", "createAdapter expects an options object");
      Napi::Object o = info[0].As<Napi::Object>();
      const int rank = get_int(o, "rank");
      const double alpha = get_num(o, "alpha");
      if (rank <= 0) fail("E_INPUT", "LoRA rank must be positive");
      Napi::Value tv = o.Get("targets");
      if (!tv.IsArray() || tv.As<Napi::Array>().Length() != kModuleCount) fail("E_INPUT", "targets must be 7 booleans");
      bool target[kModuleCount];
      for (uint32_t m = 0; m < kModuleCount; ++m) target[m] = tv.As<Napi::Array>().Get(m).ToBoolean().Value();
      const ModelConfig& cfg = model->dm->cfg;
      Adapter a;
      a.layout = make_lora_layout(cfg, rank, static_cast<float>(alpha), target);
      const size_t n = a.layout.total;
      if (o.Has("params") && !o.Get("params").IsUndefined()) {
        a.params = get_floats(o.Get("params"), n, "params");
      } else {
        init_lora(a, cfg, static_cast<uint64_t>(get_num(o, "seed")));  // the CPU engine's init, same seed, same A
      }
      const auto optional = [&](const char* key, std::vector<float> fallback) {
        return o.Has(key) && !o.Get(key).IsUndefined() ? get_floats(o.Get(key), n, key) : fallback;
      };
      a.ema = optional("ema", a.params);
      a.m = optional("m", std::vector<float>(n, 0.0f));
      a.v = optional("v", std::vector<float>(n, 0.0f));
      a.grads.assign(n, 0.0f);
      a.step = o.Has("step") && !o.Get("step").IsUndefined() ? static_cast<int64_t>(get_num(o, "step")) : 0;
      Lane& lane = *model->background;
      return AdapterWrap::Wrap(env, in_lane(lane, [&] { return upload_adapter(lane, a); }), model);
    });
  }

  static DeviceLoraView view_of(const std::shared_ptr<DeviceAdapter>& a, bool useEma) {
    if (!a) return DeviceLoraView{};
    return DeviceLoraView{&a->layout, useEma ? a->ema.get() : a->params.get()};
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      auto ids = std::make_shared<std::vector<int32_t>>(get_ids(info[0], model->dm->cfg.vocab, "ids"));
      if (ids->empty()) fail("E_INPUT", "ids must not be empty");
      auto adapter = adapter_arg(info[1]);
      const bool useEma = info[2].ToBoolean().Value();
      auto out = std::make_shared<std::vector<float>>();
      auto m = model;
      return run_async(
          env,
          [m, ids, adapter, useEma, out]() {
            Lane& lane = *m->background;
            in_lane(lane, [&] { *out = forward_logits(*m->dm, lane, view_of(adapter, useEma), *ids); });
          },
          [out](Napi::Env e) -> Napi::Value { return to_js(e, *out); });
    });
  }

  Napi::Value TokenLogprobs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      auto ids = std::make_shared<std::vector<int32_t>>(get_ids(info[0], model->dm->cfg.vocab, "ids"));
      auto adapter = adapter_arg(info[1]);
      const int start = info[2].ToNumber().Int32Value();
      if (start < 1 || start >= static_cast<int>(ids->size())) fail("E_INPUT", "start must be in [1, ids.length)");
      auto out = std::make_shared<std::vector<float>>();
      auto m = model;
      return run_async(
          env,
          [m, ids, adapter, start, out]() {
            Lane& lane = *m->background;
            in_lane(lane, [&] { *out = token_logprobs(*m->dm, lane, view_of(adapter, false), *ids, start); });
          },
          [out](Napi::Env e) -> Napi::Value { return to_js(e, *out); });
    });
  }

  Napi::Value CreateSequence(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      if (!info[0].IsNumber()) fail("E_INPUT", "createSequence expects a numeric seed");
      auto seq = std::make_shared<DeviceSequence>();
      seq->rng.seed(static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()));
      Napi::Object o = SequenceWrap::ctor.New({});
      SequenceWrap* w = SequenceWrap::Unwrap(o);
      w->seq = seq;
      w->model = model;
      return o;
    });
  }

  // decode([{seq, adapter, ids, temperature, topP, topK, topLogprobs, vocabLimit?}]): each entry
  // with its own adapter (null: the base model), all in one pass.
  Napi::Value Decode(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      if (!info[0].IsArray()) fail("E_INPUT", "decode expects an array of entries");
      Napi::Array arr = info[0].As<Napi::Array>();
      auto entries = std::make_shared<std::vector<DeviceDecodeEntry>>();
      // The closure holds every sequence and adapter of the call, so a dispose meanwhile frees
      // their memory only once the call ends.
      auto seqs = std::make_shared<std::vector<std::shared_ptr<DeviceSequence>>>();
      auto adapters = std::make_shared<std::vector<std::shared_ptr<DeviceAdapter>>>();
      std::vector<std::shared_ptr<Reported>> reported;
      const int V = model->dm->cfg.vocab;
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        if (!arr.Get(i).IsObject()) fail("E_INPUT", "decode entries must be objects");
        Napi::Object e = arr.Get(i).As<Napi::Object>();
        Napi::Value sv = e.Get("seq");
        if (!sv.IsObject() || !sv.As<Napi::Object>().InstanceOf(SequenceWrap::ctor.Value())) fail("E_INPUT", "entry.seq must be a NativeSequence of the CUDA backend");
        SequenceWrap* sw = SequenceWrap::Unwrap(sv.As<Napi::Object>());
        if (!sw->seq) disposed("sequence");
        if (sw->model != model) fail("E_INPUT", "sequence belongs to another model");
        for (const auto& k : *seqs) {
          if (k == sw->seq) fail("E_INPUT", "a sequence appears twice in one decode call");
        }
        auto adapter = adapter_arg(e.Get("adapter"));
        DeviceDecodeEntry d;
        d.seq = sw->seq.get();
        d.lora = view_of(adapter, false);
        d.ids = get_ids(e.Get("ids"), V, "ids");
        if (d.ids.empty()) fail("E_INPUT", "entry.ids is empty");
        d.sampling.temperature = static_cast<float>(get_num(e, "temperature"));
        d.sampling.topP = static_cast<float>(get_num(e, "topP"));
        d.sampling.topK = get_int(e, "topK");
        d.sampling.topLogprobs = get_int(e, "topLogprobs");
        if (e.Has("vocabLimit")) d.sampling.vocabLimit = get_int(e, "vocabLimit");
        seqs->push_back(sw->seq);
        if (adapter) adapters->push_back(std::move(adapter));
        reported.push_back(sw->reported);
        entries->push_back(std::move(d));
      }
      auto bytes = std::make_shared<std::vector<size_t>>();
      auto m = model;
      return run_async(
          env,
          [m, entries, seqs, adapters, bytes]() {
            Lane& lane = *m->interactive;
            in_lane(lane, [&] {
              decode_step(*m->dm, lane, *entries);
              for (const auto& q : *seqs) bytes->push_back(sequence_bytes(*q));
            });
          },
          [entries, bytes, reported = std::move(reported)](Napi::Env e) -> Napi::Value {
            // The KV caches' growth, measured in the lane; a sequence disposed meanwhile reports nothing.
            for (size_t i = 0; i < reported.size(); ++i) reported[i]->set(e, (*bytes)[i]);
            Napi::Array out = Napi::Array::New(e, entries->size());
            for (uint32_t i = 0; i < entries->size(); ++i) {
              const cpu::SampledToken& t = (*entries)[i].out;
              Napi::Object o = Napi::Object::New(e);
              o.Set("id", t.id);
              o.Set("logprob", t.logprob);
              Napi::Int32Array ids = Napi::Int32Array::New(e, t.topIds.size());
              std::copy(t.topIds.begin(), t.topIds.end(), ids.Data());
              o.Set("topIds", ids);
              o.Set("topLogprobs", to_js(e, t.topLogprobs));
              out.Set(i, o);
            }
            return out;
          });
    });
  }

  Napi::Value SdpoStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      live();
      auto adapter = adapter_arg(info[0]);
      if (!adapter) fail("E_INPUT", "sdpoStep needs an adapter");
      if (!info[1].IsArray()) fail("E_INPUT", "samples must be an array");
      Napi::Array arr = info[1].As<Napi::Array>();
      if (arr.Length() == 0) fail("E_INPUT", "the batch is empty");
      const int V = model->dm->cfg.vocab;
      auto batch = std::make_shared<std::vector<SdpoSample>>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Object so = arr.Get(i).As<Napi::Object>();
        SdpoSample s;
        s.prompt = get_ids(so.Get("prompt"), V, "prompt");
        s.teacherPrompt = get_ids(so.Get("teacherPrompt"), V, "teacherPrompt");
        s.response = get_ids(so.Get("response"), V, "response");
        if (s.prompt.empty() || s.teacherPrompt.empty()) fail("E_INPUT", "sample " + std::to_string(i) + " has an empty prompt");
        if (s.response.empty()) fail("E_INPUT", "sample " + std::to_string(i) + " has an empty response");
        Napi::Value ol = so.Get("oldLogprobs");
        if (!ol.IsUndefined() && !ol.IsNull()) s.oldLogprobs = get_floats(ol, s.response.size(), "oldLogprobs");
        Napi::Value tk = so.Get("teacherK");
        if (!tk.IsUndefined() && !tk.IsNull()) {
          s.teacherK = tk.As<Napi::Number>().Int32Value();
          if (s.teacherK < 1 || s.teacherK > V) fail("E_INPUT", "teacherK must be in [1, vocab]");
          const size_t TK = s.response.size() * static_cast<size_t>(s.teacherK);
          s.teacherTopIds = get_ids(so.Get("teacherTopIds"), V, "teacherTopIds");
          if (s.teacherTopIds.size() != TK) fail("E_SHAPE", "teacherTopIds must have response length * teacherK entries");
          s.teacherTopLogprobs = get_floats(so.Get("teacherTopLogprobs"), TK, "teacherTopLogprobs");
          s.teacherTokenLogprobs = get_floats(so.Get("teacherTokenLogprobs"), s.response.size(), "teacherTokenLogprobs");
        }
        batch->push_back(std::move(s));
      }
      Napi::Object o = info[2].As<Napi::Object>();
      SdpoStepOptions opt;
      opt.loss.alpha = static_cast<float>(get_num(o, "alpha"));
      opt.loss.tail = get_bool(o, "tail");
      opt.loss.sampledToken = get_bool(o, "sampledToken");
      opt.loss.isClip = static_cast<float>(get_num(o, "isClip"));
      opt.loss.beta = static_cast<float>(get_num(o, "beta"));
      opt.topK = get_int(o, "topK");
      if (opt.topK < 1 || opt.topK > V) fail("E_INPUT", "topK must be in [1, vocab]");
      opt.teacher = static_cast<TeacherMode>(get_int(o, "teacher"));
      opt.learningRate = static_cast<float>(get_num(o, "learningRate"));
      opt.maxGradNorm = static_cast<float>(get_num(o, "maxGradNorm"));
      opt.weightDecay = static_cast<float>(get_num(o, "weightDecay"));
      opt.beta1 = static_cast<float>(get_num(o, "adamBeta1"));
      opt.beta2 = static_cast<float>(get_num(o, "adamBeta2"));
      opt.eps = static_cast<float>(get_num(o, "adamEps"));
      opt.emaRate = static_cast<float>(get_num(o, "emaRate"));
      opt.steps = get_int(o, "steps");
      auto result = std::make_shared<SdpoStepResult>();
      auto m = model;
      return run_async(
          env,
          [m, adapter, batch, opt, result]() {
            Lane& lane = *m->background;
            in_lane(lane, [&] { *result = sdpo_step(*m->dm, lane, *adapter, *batch, opt); });
          },
          [result](Napi::Env e) -> Napi::Value {
            const SdpoStepResult& r = *result;
            Napi::Object out = Napi::Object::New(e);
            out.Set("loss", r.loss);
            out.Set("distillLoss", r.distillLoss);
            out.Set("klToBase", r.klToBase);
            out.Set("meanIsWeight", r.meanIsWeight);
            out.Set("clipFraction", r.clipFraction);
            out.Set("gradNorm", r.gradNorm);
            out.Set("teacherStudentKl", r.teacherStudentKl);
            out.Set("tokens", static_cast<double>(r.tokens));
            Napi::Array losses = Napi::Array::New(e, r.stepLosses.size());
            for (uint32_t i = 0; i < r.stepLosses.size(); ++i) losses.Set(i, r.stepLosses[i]);
            out.Set("stepLosses", losses);
            Napi::Object t = Napi::Object::New(e);
            t.Set("teacherMs", r.teacherMs);
            t.Set("baseMs", r.baseMs);
            t.Set("studentForwardMs", r.studentForwardMs);
            t.Set("backwardMs", r.backwardMs);
            t.Set("optimizerMs", r.optimizerMs);
            out.Set("timings", t);
            return out;
          });
    });
  }
};
Napi::FunctionReference ModelWrap::ctor;

// The model configuration of a loadModel spec (as the CPU addon reads it).
ModelConfig parse_config(const Napi::Object& spec) {
  if (!spec.Get("config").IsObject()) fail("E_INPUT", "the spec needs a config object");
  Napi::Object c = spec.Get("config").As<Napi::Object>();
  ModelConfig cfg;
  cfg.vocab = get_int(c, "vocab");
  cfg.hidden = get_int(c, "hidden");
  cfg.layers = get_int(c, "layers");
  cfg.heads = get_int(c, "heads");
  cfg.kvHeads = get_int(c, "kvHeads");
  cfg.headDim = get_int(c, "headDim");
  cfg.intermediate = get_int(c, "intermediate");
  cfg.ropeTheta = get_num(c, "ropeTheta");
  cfg.rmsEps = static_cast<float>(get_num(c, "rmsEps"));
  cfg.tieEmbeddings = get_bool(c, "tieEmbeddings");
  cfg.qkNorm = get_bool(c, "qkNorm");
  Napi::Value bias = c.Get("bias");
  if (!bias.IsArray() || bias.As<Napi::Array>().Length() != 4) fail("E_INPUT", "config.bias must be 4 booleans");
  for (uint32_t i = 0; i < 4; ++i) cfg.bias[i] = bias.As<Napi::Array>().Get(i).ToBoolean().Value();
  if (cfg.vocab <= 0 || cfg.hidden <= 0 || cfg.layers <= 0 || cfg.heads <= 0 || cfg.kvHeads <= 0 ||
      cfg.headDim <= 0 || cfg.intermediate <= 0 || cfg.heads % cfg.kvHeads != 0 || cfg.headDim % 2 != 0) {
    fail("E_CONFIG", "invalid model dimensions");
  }
  if (cfg.headDim > 256) fail("E_CONFIG", "the CUDA backend supports head dimensions up to 256");
  return cfg;
}

// checkpoint (recompute layer activations in the backward) and logitRows (LM-head chunk rows).
void parse_device_options(const Napi::Object& spec, bool& checkpoint, int& logitRows) {
  checkpoint = spec.Has("checkpoint") && spec.Get("checkpoint").ToBoolean().Value();
  logitRows = spec.Has("logitRows") && spec.Get("logitRows").IsNumber() ? get_int(spec, "logitRows") : 64;
  if (logitRows < 1) fail("E_INPUT", "logitRows must be positive");
}

const char* const kRoles[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

// loadModel({config, tensors, checkpoint?, logitRows?}): the CPU addon's spec (fp32 / fp16 / bf16
// safetensors); matrices are uploaded as bf16 slice by slice, norms and biases as fp32.
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string reason = device_unavailable_reason();
    if (!reason.empty()) fail("E_NO_DEVICE", reason);
    if (!info[0].IsObject()) fail("E_INPUT", "loadModel expects a spec object");
    Napi::Object spec = info[0].As<Napi::Object>();
    auto host = std::make_shared<Model>();
    host->cfg = parse_config(spec);
    ModelConfig& cfg = host->cfg;
    bool checkpoint;
    int logitRows;
    parse_device_options(spec, checkpoint, logitRows);
    host->layers.resize(cfg.layers);

    struct Pending {
      const float** slot;
      TensorSource src;
    };
    auto pending = std::make_shared<std::vector<Pending>>();
    Napi::Array tensors = spec.Get("tensors").As<Napi::Array>();
    const uint64_t H = cfg.hidden, D = cfg.headDim;
    for (uint32_t i = 0; i < tensors.Length(); ++i) {
      Napi::Object t = tensors.Get(i).As<Napi::Object>();
      const std::string role = t.Get("role").As<Napi::String>().Utf8Value();
      const int layer = get_int(t, "layer");
      if (layer < -1 || layer >= cfg.layers) fail("E_INPUT", "tensor layer out of range for " + role);
      Pending p;
      uint64_t expected = 0;
      p.src.file = t.Get("file").As<Napi::String>().Utf8Value();
      p.src.offset = static_cast<uint64_t>(get_num(t, "offset"));
      p.src.count = static_cast<uint64_t>(get_num(t, "count"));
      p.src.dtype = static_cast<DType>(get_int(t, "dtype"));
      LayerWeights* lw = layer >= 0 ? &host->layers[layer] : nullptr;
      const auto need_layer = [&]() {
        if (!lw) fail("E_INPUT", role + " needs a layer index");
      };
      if (role == "embed") {
        p.slot = &host->embed, expected = static_cast<uint64_t>(cfg.vocab) * H;
      } else if (role == "final_norm") {
        p.slot = &host->finalNorm, expected = H;
      } else if (role == "lm_head") {
        p.slot = &host->lmHead, expected = static_cast<uint64_t>(cfg.vocab) * H;
      } else if (role == "in_norm") {
        need_layer(), p.slot = &lw->inNorm, expected = H;
      } else if (role == "post_norm") {
        need_layer(), p.slot = &lw->postNorm, expected = H;
      } else if (role == "q_norm") {
        need_layer(), p.slot = &lw->qNorm, expected = D;
      } else if (role == "k_norm") {
        need_layer(), p.slot = &lw->kNorm, expected = D;
      } else {
        bool found = false;
        for (int m = 0; m < kModuleCount && !found; ++m) {
          const std::string name = kRoles[m];
          if (role == name) {
            need_layer(), p.slot = &lw->W[m];
            expected = static_cast<uint64_t>(cfg.moduleIn(m)) * cfg.moduleOut(m);
            found = true;
          } else if (m <= kO && role == name.substr(0, 1) + "_bias") {
            need_layer(), p.slot = &lw->b[m], expected = cfg.moduleOut(m);
            found = true;
          }
        }
        if (!found) fail("E_INPUT", "unknown tensor role " + role);
      }
      if (p.src.count != expected) {
        fail("E_SHAPE", role + " has " + std::to_string(p.src.count) + " elements, expected " + std::to_string(expected));
      }
      pending->push_back(std::move(p));
    }
    auto loaded = std::make_shared<Loaded>();
    return run_async(
        env,
        [host, pending, loaded, checkpoint, logitRows]() {
          const ModelConfig& c = host->cfg;
          auto dm = std::make_unique<DeviceModel>();
          dm->cfg = c;
          dm->layers.resize(c.layers);
          auto interactive = std::make_unique<Lane>(true), background = std::make_unique<Lane>(false);
          // The large matrices go straight from the mapped file to bf16 on the device; the small
          // fp32 tensors (norms, biases) are read as the CPU engine reads them.
          const auto matrix = [&](const float** slot) -> DeviceBuffer<bf16>* {
            if (slot == &host->embed) return &dm->embed;
            if (slot == &host->lmHead) return &dm->lmHeadOwned;
            for (int l = 0; l < c.layers; ++l) {
              for (int m = 0; m < kModuleCount; ++m) {
                if (slot == &host->layers[l].W[m]) return &dm->layers[l].W[m];
              }
            }
            return nullptr;
          };
          std::vector<std::unique_ptr<MappedFile>> files;
          const auto file = [&](const std::string& path) -> const MappedFile& {
            for (const auto& f : files) {
              if (f->path() == path) return *f;
            }
            files.push_back(std::make_unique<MappedFile>(path));
            return *files.back();
          };
          for (auto& p : *pending) {
            DeviceBuffer<bf16>* dst = matrix(p.slot);
            if (!dst) {
              *p.slot = host->store.load(p.src);
              continue;
            }
            const MappedFile& f = file(p.src.file);
            const uint64_t bytes = p.src.count * (p.src.dtype == DType::F32 ? 4 : 2);
            if (p.src.offset > f.size() || bytes > f.size() - p.src.offset) {
              fail("E_WEIGHTS", "tensor data lies outside " + p.src.file + " (file truncated?)");
            }
            upload_bf16(*background, *dst, f.data() + p.src.offset, p.src.dtype, p.src.count);
          }
          if (dm->lmHeadOwned.size()) {
            dm->lmHead = dm->lmHeadOwned.get();
          } else if (c.tieEmbeddings) {
            dm->lmHead = dm->embed.get();
          }
          if (!dm->embed.size() || !host->finalNorm || !dm->lmHead) fail("E_WEIGHTS", "missing embedding, final norm or LM head");
          for (int l = 0; l < c.layers; ++l) {
            const LayerWeights& w = host->layers[l];
            bool ok = w.inNorm && w.postNorm && (!c.qkNorm || (w.qNorm && w.kNorm));
            for (int m = 0; m < kModuleCount; ++m) ok = ok && dm->layers[l].W[m].size() > 0;
            for (int b = 0; b < 4; ++b) ok = ok && (!c.bias[b] || w.b[b]);
            if (!ok) fail("E_WEIGHTS", "missing weights in layer " + std::to_string(l));
          }
          upload_vectors(*dm, *background, *host);
          dm->checkpoint = checkpoint;
          dm->logitRows = logitRows;
          loaded->dm = std::move(dm);
          loaded->interactive = std::move(interactive);
          loaded->background = std::move(background);
        },
        [loaded](Napi::Env e) -> Napi::Value { return ModelWrap::Wrap(e, loaded); });
  });
}

// loadRandomModel({config, seed, std, checkpoint?, logitRows?}) -> Promise<NativeModel>: weights
// made on the device (bench/), matrices ~ N(0, std^2), norms 1.
Napi::Value LoadRandomModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string reason = device_unavailable_reason();
    if (!reason.empty()) fail("E_NO_DEVICE", reason);
    if (!info[0].IsObject()) fail("E_INPUT", "loadRandomModel expects a spec object");
    Napi::Object spec = info[0].As<Napi::Object>();
    ModelConfig cfg = parse_config(spec);
    for (bool b : cfg.bias) {
      if (b) fail("E_CONFIG", "random models have no biases");
    }
    const uint64_t seed = static_cast<uint64_t>(get_num(spec, "seed"));
    const float std = static_cast<float>(get_num(spec, "std"));
    bool checkpoint;
    int logitRows;
    parse_device_options(spec, checkpoint, logitRows);
    auto loaded = std::make_shared<Loaded>();
    return run_async(
        env,
        [loaded, cfg, seed, std, checkpoint, logitRows]() {
          auto background = std::make_unique<Lane>(false);
          loaded->dm = random_model(cfg, seed, std, *background);
          loaded->dm->checkpoint = checkpoint;
          loaded->dm->logitRows = logitRows;
          loaded->interactive = std::make_unique<Lane>(true);
          loaded->background = std::move(background);
        },
        [loaded](Napi::Env e) -> Napi::Value { return ModelWrap::Wrap(e, loaded); });
  });
}

// deviceMemory() -> {inUseBytes, peakBytes}: the engine's own device buffers; resetPeak() restarts the peak.
Napi::Value DeviceMemory(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("inUseBytes", static_cast<double>(device_bytes_in_use()));
  o.Set("peakBytes", static_cast<double>(device_bytes_peak()));
  return o;
}

Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  reset_device_bytes_peak();
  return info.Env().Undefined();
}

// externalMemory() -> bytes: V8's count of the external memory addons have reported (what dispose
// and finalization must take back); process.memoryUsage() does not show it.
Napi::Value ExternalMemory(const Napi::CallbackInfo& info) {
  const int64_t total = Napi::MemoryManagement::AdjustExternalMemory(info.Env(), 0);
  return Napi::Number::New(info.Env(), static_cast<double>(total));
}

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) {
  AdapterWrap::Register(env);
  SequenceWrap::Register(env);
  ModelWrap::Register(env);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("loadRandomModel", Napi::Function::New(env, LoadRandomModel));
  exports.Set("deviceMemory", Napi::Function::New(env, DeviceMemory));
  exports.Set("resetPeak", Napi::Function::New(env, ResetPeak));
  exports.Set("externalMemory", Napi::Function::New(env, ExternalMemory));
}

}  // namespace claas::cuda
