// N-API surface of the engine: decodes arguments, runs heavy work on worker threads (promises), and
// turns engine errors into JavaScript errors with a `code`. Policy and validation live in TypeScript;
// this layer checks only what would otherwise crash the process.
#include <napi.h>
#include <cblas.h>

#include <malloc.h>

#include <functional>
#include <memory>
#include <string>

#include "addon/cpu_ops.h"
#include "addon/napi_support.h"
#include "cpu/ops.h"
#include "engine/errors.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/sdpo_step.h"

extern "C" void openblas_set_num_threads(int);

namespace claas {
namespace {

using namespace napi;

void set_threads(int threads) { openblas_set_num_threads(threads); }

// ---------------------------------------------------------------------------------------------
class AdapterWrap : public Napi::ObjectWrap<AdapterWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Register(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeAdapter",
                                   {InstanceMethod("layout", &AdapterWrap::Layout),
                                    InstanceMethod("state", &AdapterWrap::State),
                                    InstanceMethod("clone", &AdapterWrap::Clone),
                                    InstanceMethod("dispose", &AdapterWrap::Dispose),
                                    InstanceAccessor("bytes", &AdapterWrap::Bytes, nullptr)});
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
  }
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<Adapter> a, std::shared_ptr<Model> model) {
    Napi::Object o = ctor.New({});
    AdapterWrap* w = Unwrap(o);
    w->adapter = std::move(a);
    w->model = std::move(model);
    w->reported.set(env, static_cast<int64_t>(bytes_of(*w->adapter)));
    return o;
  }
  explicit AdapterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AdapterWrap>(info) {}
  void Finalize(Napi::Env env) override { reported.set(env, 0); }

  static size_t bytes_of(const Adapter& a) {
    return (a.params.size() + a.grads.size() + a.m.size() + a.v.size() + a.ema.size()) * sizeof(float);
  }
  // The adapter, or E_DISPOSED once dispose() has dropped it.
  const std::shared_ptr<Adapter>& live() const {
    if (!adapter) fail("E_DISPOSED", "the adapter was disposed");
    return adapter;
  }

  std::shared_ptr<Adapter> adapter;
  std::shared_ptr<Model> model;
  ReportedBytes reported;

 private:
  // Drops this wrapper's reference: a call already running holds its own until it ends.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    adapter.reset();
    reported.set(info.Env(), 0);
    return info.Env().Undefined();
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(reported.get())); }
  Napi::Value Layout(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value { return LayoutOf(env, *live()); });
  }
  Napi::Value LayoutOf(Napi::Env env, const Adapter& a) {
    const LoraLayout& L = a.layout;
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
        e.Set("inFeatures", model->cfg.moduleIn(m));
        e.Set("outFeatures", model->cfg.moduleOut(m));
        entries.Set(n++, e);
      }
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("rank", L.rank);
    out.Set("alpha", L.alpha);
    out.Set("total", static_cast<double>(L.total));
    out.Set("entries", entries);
    return out;
  }
  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      const Adapter& a = *live();
      Napi::Object o = Napi::Object::New(env);
      o.Set("params", to_js(env, a.params));
      o.Set("ema", to_js(env, a.ema));
      o.Set("m", to_js(env, a.m));
      o.Set("v", to_js(env, a.v));
      o.Set("grads", to_js(env, a.grads));
      o.Set("step", static_cast<double>(a.step));
      return o;
    });
  }
  Napi::Value Clone(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value { return Wrap(info.Env(), std::make_shared<Adapter>(*live()), model); });
  }
};
Napi::FunctionReference AdapterWrap::ctor;

// ---------------------------------------------------------------------------------------------
class SequenceWrap : public Napi::ObjectWrap<SequenceWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Register(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeSequence",
                                   {InstanceAccessor("length", &SequenceWrap::Length, nullptr),
                                    InstanceAccessor("bytes", &SequenceWrap::Bytes, nullptr),
                                    InstanceMethod("dispose", &SequenceWrap::Dispose)});
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
  }
  explicit SequenceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SequenceWrap>(info) {}
  void Finalize(Napi::Env env) override { reported.set(env, 0); }
  std::shared_ptr<Sequence> seq;
  std::shared_ptr<Model> model;
  // The KV cache's bytes as last reported (updated after each decode, on the main thread).
  ReportedBytes reported;

 private:
  Napi::Value Length(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), seq ? seq->cache.length : 0); }
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(reported.get())); }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    seq.reset();
    reported.set(info.Env(), 0);
    return info.Env().Undefined();
  }
};
Napi::FunctionReference SequenceWrap::ctor;

// ---------------------------------------------------------------------------------------------
class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::FunctionReference ctor;
  static void Register(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NativeModel",
                                   {InstanceMethod("createAdapter", &ModelWrap::CreateAdapter),
                                    InstanceMethod("forward", &ModelWrap::Forward),
                                    InstanceMethod("tokenLogprobs", &ModelWrap::TokenLogprobs),
                                    InstanceMethod("sdpoStep", &ModelWrap::SdpoStep),
                                    InstanceMethod("createSequence", &ModelWrap::CreateSequence),
                                    InstanceMethod("decode", &ModelWrap::Decode),
                                    InstanceMethod("dispose", &ModelWrap::Dispose)});
    ctor = Napi::Persistent(f);
    ctor.SuppressDestruct();
  }
  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}
  void Finalize(Napi::Env env) override { reported.set(env, 0); }
  std::shared_ptr<Model> model;
  ReportedBytes reported;

 private:
  // The model, or E_DISPOSED once dispose() has dropped it.
  const std::shared_ptr<Model>& live() const {
    if (!model) fail("E_DISPOSED", "the model was disposed");
    return model;
  }
  // Drops this wrapper's reference to the weights: adapters, sequences and calls still running
  // hold their own until they go.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model.reset();
    reported.set(info.Env(), 0);
    return info.Env().Undefined();
  }
  std::shared_ptr<Adapter> adapter_arg(const Napi::Value& v) {
    if (v.IsNull() || v.IsUndefined()) return nullptr;
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(AdapterWrap::ctor.Value())) {
      fail("E_INPUT", "adapter must be a NativeAdapter or null");
    }
    AdapterWrap* w = AdapterWrap::Unwrap(v.As<Napi::Object>());
    if (w->model != live()) fail("E_INPUT", "adapter belongs to another model");
    return w->live();
  }

  // createAdapter({rank, alpha, targets: boolean[7], seed} | {..., params, ema?, m?, v?, step?})
  Napi::Value CreateAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      if (!info[0].IsObject()) fail("E_INPUT", "createAdapter expects an options object");
      Napi::Object o = info[0].As<Napi::Object>();
      const int rank = get_int(o, "rank");
      const double alpha = get_num(o, "alpha");
      if (rank <= 0) fail("E_INPUT", "LoRA rank must be positive");
      Napi::Value tv = o.Get("targets");
      if (!tv.IsArray() || tv.As<Napi::Array>().Length() != kModuleCount) fail("E_INPUT", "targets must be 7 booleans");
      bool target[kModuleCount];
      for (uint32_t m = 0; m < kModuleCount; ++m) target[m] = tv.As<Napi::Array>().Get(m).ToBoolean().Value();
      auto a = std::make_shared<Adapter>();
      a->layout = make_lora_layout(live()->cfg, rank, static_cast<float>(alpha), target);
      const size_t n = a->layout.total;
      if (o.Has("params") && !o.Get("params").IsUndefined()) {
        a->params = get_floats(o.Get("params"), n, "params");
      } else {
        init_lora(*a, live()->cfg, static_cast<uint64_t>(get_num(o, "seed")));
      }
      const auto optional = [&](const char* key, std::vector<float> fallback) {
        return o.Has(key) && !o.Get(key).IsUndefined() ? get_floats(o.Get(key), n, key) : fallback;
      };
      a->ema = optional("ema", a->params);
      a->m = optional("m", std::vector<float>(n, 0.0f));
      a->v = optional("v", std::vector<float>(n, 0.0f));
      a->grads.assign(n, 0.0f);
      a->step = o.Has("step") && !o.Get("step").IsUndefined() ? static_cast<int64_t>(get_num(o, "step")) : 0;
      return AdapterWrap::Wrap(env, a, live());
    });
  }

  // forward(ids, adapter|null, useEma) -> Promise<Float32Array [T * V]>
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      auto ids = std::make_shared<std::vector<int32_t>>(get_ids(info[0], live()->cfg.vocab, "ids"));
      if (ids->empty()) fail("E_INPUT", "ids must not be empty");
      auto adapter = adapter_arg(info[1]);
      const bool useEma = info[2].ToBoolean().Value();
      auto out = std::make_shared<std::vector<float>>();
      auto m = live();
      return run_async(
          env,
          [m, ids, adapter, useEma, out]() {
            set_threads(m->threads);
            LoraView view;
            if (adapter) view = LoraView{&adapter->layout, useEma ? adapter->ema.data() : adapter->params.data()};
            Activations acts;
            const int T = static_cast<int>(ids->size());
            forward(*m, view, ids->data(), T, acts, false);
            out->resize(static_cast<size_t>(T) * m->cfg.vocab);
            lm_head(*m, out->data(), acts.xf.data(), 0, T);
          },
          [out](Napi::Env e) -> Napi::Value { return to_js(e, *out); });
    });
  }

  // tokenLogprobs(ids, adapter|null, start) -> Promise<Float32Array>: log p(ids[t] | ids[<t]) for t >= start.
  Napi::Value TokenLogprobs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      auto ids = std::make_shared<std::vector<int32_t>>(get_ids(info[0], live()->cfg.vocab, "ids"));
      auto adapter = adapter_arg(info[1]);
      const int start = info[2].ToNumber().Int32Value();
      const int T = static_cast<int>(ids->size());
      if (start < 1 || start >= T) fail("E_INPUT", "start must be in [1, ids.length)");
      auto out = std::make_shared<std::vector<float>>();
      auto m = live();
      return run_async(
          env,
          [m, ids, adapter, start, T, out]() {
            set_threads(m->threads);
            LoraView view;
            if (adapter) view = LoraView{&adapter->layout, adapter->params.data()};
            Activations acts;
            forward(*m, view, ids->data(), T, acts, false);
            const int R = T - start, V = m->cfg.vocab;
            std::vector<float> logp(static_cast<size_t>(R) * V);
            lm_head(*m, logp.data(), acts.xf.data(), start - 1, R);
            cpu::log_softmax(logp.data(), nullptr, logp.data(), R, V);
            out->resize(R);
            for (int r = 0; r < R; ++r) (*out)[r] = logp[static_cast<size_t>(r) * V + (*ids)[start + r]];
          },
          [out](Napi::Env e) -> Napi::Value { return to_js(e, *out); });
    });
  }

  // createSequence(seed) -> NativeSequence: an empty KV cache and its sampling RNG.
  Napi::Value CreateSequence(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      if (!info[0].IsNumber()) fail("E_INPUT", "createSequence expects a numeric seed");
      auto seq = std::make_shared<Sequence>();
      seq->rng.seed(static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()));
      Napi::Object o = SequenceWrap::ctor.New({});
      SequenceWrap* w = SequenceWrap::Unwrap(o);
      w->seq = seq;
      w->model = live();
      return o;
    });
  }

  // decode([{seq, adapter|null, ids: Int32Array, temperature, topP, topK, topLogprobs}])
  //   -> Promise<[{id, logprob, topIds: Int32Array, topLogprobs: Float32Array}]>
  Napi::Value Decode(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      if (!info[0].IsArray()) fail("E_INPUT", "decode expects an array of entries");
      Napi::Array arr = info[0].As<Napi::Array>();
      auto entries = std::make_shared<std::vector<DecodeEntry>>();
      // What the call keeps alive until it ends, whatever is disposed meanwhile.
      auto seqs = std::make_shared<std::vector<std::shared_ptr<Sequence>>>();
      auto adapters = std::make_shared<std::vector<std::shared_ptr<Adapter>>>();
      std::vector<SequenceWrap*> wraps;
      std::vector<Napi::ObjectReference> held;
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Object e = arr.Get(i).As<Napi::Object>();
        Napi::Value sv = e.Get("seq");
        if (!sv.IsObject() || !sv.As<Napi::Object>().InstanceOf(SequenceWrap::ctor.Value())) fail("E_INPUT", "entry.seq must be a NativeSequence");
        SequenceWrap* sw = SequenceWrap::Unwrap(sv.As<Napi::Object>());
        if (sw->model != live()) fail("E_INPUT", "sequence belongs to another model");
        if (!sw->seq) fail("E_DISPOSED", "the sequence was disposed");
        for (const auto& k : *seqs) {
          if (k == sw->seq) fail("E_INPUT", "a sequence appears twice in one decode call");
        }
        DecodeEntry d;
        d.seq = sw->seq.get();
        auto adapter = adapter_arg(e.Get("adapter"));
        if (adapter) d.lora = LoraView{&adapter->layout, adapter->params.data()};
        d.ids = get_ids(e.Get("ids"), live()->cfg.vocab, "ids");
        if (d.ids.empty()) fail("E_INPUT", "entry.ids is empty");
        d.sampling.temperature = static_cast<float>(get_num(e, "temperature"));
        d.sampling.topP = static_cast<float>(get_num(e, "topP"));
        d.sampling.topK = get_int(e, "topK");
        d.sampling.topLogprobs = get_int(e, "topLogprobs");
        if (e.Has("vocabLimit")) d.sampling.vocabLimit = get_int(e, "vocabLimit");
        seqs->push_back(sw->seq);
        adapters->push_back(std::move(adapter));
        entries->push_back(std::move(d));
        wraps.push_back(sw);
        held.push_back(Napi::Persistent(sv.As<Napi::Object>()));
      }
      auto m = live();
      // The wrappers stay referenced until the call ends, so their cache sizes can be reported then.
      auto refs = std::make_shared<std::vector<Napi::ObjectReference>>(std::move(held));
      return run_async(
          env,
          [m, entries, seqs, adapters]() {
            set_threads(m->threads);
            decode_step(*m, *entries);
          },
          [entries, seqs, refs, wraps](Napi::Env e) -> Napi::Value {
            for (size_t i = 0; i < wraps.size(); ++i) {
              if (wraps[i]->seq == (*seqs)[i]) wraps[i]->reported.set(e, static_cast<int64_t>((*seqs)[i]->cache.bytes()));
            }
            refs->clear();
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

  // sdpoStep(adapter, samples, options) -> Promise<metrics>
  Napi::Value SdpoStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&]() -> Napi::Value {
      auto adapter = adapter_arg(info[0]);
      if (!adapter) fail("E_INPUT", "sdpoStep needs an adapter");
      if (!info[1].IsArray()) fail("E_INPUT", "samples must be an array");
      Napi::Array arr = info[1].As<Napi::Array>();
      if (arr.Length() == 0) fail("E_INPUT", "the batch is empty");
      const int V = live()->cfg.vocab;
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
      auto m = live();
      return run_async(
          env, [m, adapter, batch, opt, result]() {
            set_threads(m->threads);
            *result = sdpo_step(*m, *adapter, *batch, opt);
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

// loadModel({config, threads, tensors: [{role, layer, file, offset, count, dtype}]}) -> Promise<NativeModel>
const char* const kRoles[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail("E_INPUT", "loadModel expects a spec object");
    Napi::Object spec = info[0].As<Napi::Object>();
    auto model = std::make_shared<Model>();
    Napi::Object c = spec.Get("config").As<Napi::Object>();
    ModelConfig& cfg = model->cfg;
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
    Napi::Array bias = c.Get("bias").As<Napi::Array>();
    for (uint32_t i = 0; i < 4; ++i) cfg.bias[i] = bias.Get(i).ToBoolean().Value();
    if (cfg.vocab <= 0 || cfg.hidden <= 0 || cfg.layers <= 0 || cfg.heads <= 0 || cfg.kvHeads <= 0 ||
        cfg.headDim <= 0 || cfg.intermediate <= 0 || cfg.heads % cfg.kvHeads != 0 || cfg.headDim % 2 != 0) {
      fail("E_CONFIG", "invalid model dimensions");
    }
    model->threads = std::max(1, get_int(spec, "threads"));
    model->layers.resize(cfg.layers);

    struct Pending {
      const float** slot;
      TensorSource src;
      uint64_t expected;
      std::string what;
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
      p.src.file = t.Get("file").As<Napi::String>().Utf8Value();
      p.src.offset = static_cast<uint64_t>(get_num(t, "offset"));
      p.src.count = static_cast<uint64_t>(get_num(t, "count"));
      p.src.dtype = static_cast<DType>(get_int(t, "dtype"));
      p.what = role + (layer >= 0 ? " of layer " + std::to_string(layer) : "");
      LayerWeights* lw = layer >= 0 ? &model->layers[layer] : nullptr;
      const auto need_layer = [&]() {
        if (!lw) fail("E_INPUT", role + " needs a layer index");
      };
      if (role == "embed") {
        p.slot = &model->embed, p.expected = static_cast<uint64_t>(cfg.vocab) * H;
      } else if (role == "final_norm") {
        p.slot = &model->finalNorm, p.expected = H;
      } else if (role == "lm_head") {
        p.slot = &model->lmHead, p.expected = static_cast<uint64_t>(cfg.vocab) * H;
      } else if (role == "in_norm") {
        need_layer(), p.slot = &lw->inNorm, p.expected = H;
      } else if (role == "post_norm") {
        need_layer(), p.slot = &lw->postNorm, p.expected = H;
      } else if (role == "q_norm") {
        need_layer(), p.slot = &lw->qNorm, p.expected = D;
      } else if (role == "k_norm") {
        need_layer(), p.slot = &lw->kNorm, p.expected = D;
      } else {
        bool found = false;
        for (int m = 0; m < kModuleCount && !found; ++m) {
          const std::string name = kRoles[m];
          const std::string bname = name.substr(0, 1) + "_bias";
          if (role == name) {
            need_layer(), p.slot = &lw->W[m];
            p.expected = static_cast<uint64_t>(cfg.moduleIn(m)) * cfg.moduleOut(m);
            found = true;
          } else if (m <= kO && role == bname) {
            need_layer(), p.slot = &lw->b[m], p.expected = cfg.moduleOut(m);
            found = true;
          }
        }
        if (!found) fail("E_INPUT", "unknown tensor role " + role);
      }
      if (p.src.count != p.expected) {
        fail("E_SHAPE", p.what + " has " + std::to_string(p.src.count) + " elements, expected " +
                            std::to_string(p.expected));
      }
      pending->push_back(std::move(p));
    }
    return run_async(
        env,
        [model, pending]() {
          for (auto& p : *pending) *p.slot = model->store.load(p.src);
          const ModelConfig& c = model->cfg;
          if (c.tieEmbeddings && !model->lmHead) model->lmHead = model->embed;
          if (!model->embed || !model->finalNorm || !model->lmHead) fail("E_WEIGHTS", "missing embedding, final norm or LM head");
          for (int l = 0; l < c.layers; ++l) {
            const LayerWeights& w = model->layers[l];
            bool ok = w.inNorm && w.postNorm && (!c.qkNorm || (w.qNorm && w.kNorm));
            for (int m = 0; m < kModuleCount; ++m) ok = ok && w.W[m];
            for (int b = 0; b < 4; ++b) ok = ok && (!c.bias[b] || w.b[b]);
            if (!ok) fail("E_WEIGHTS", "missing weights in layer " + std::to_string(l));
          }
        },
        [model](Napi::Env e) -> Napi::Value {
          Napi::Object o = ModelWrap::ctor.New({});
          ModelWrap* w = ModelWrap::Unwrap(o);
          w->model = model;
          w->reported.set(e, static_cast<int64_t>(model->store.bytes()));
          return o;
        });
  });
}

}  // namespace
}  // namespace claas

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Activations are large, short-lived vectors. By default glibc serves them with mmap and returns
  // them with munmap, so every forward pays page faults again; keep them in the heap instead.
  mallopt(M_MMAP_THRESHOLD, 512 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
  claas::AdapterWrap::Register(env);
  claas::SequenceWrap::Register(env);
  claas::ModelWrap::Register(env);
  exports.Set("loadModel", Napi::Function::New(env, claas::LoadModel));
  exports.Set("cpuOps", claas::CpuOps(env));
  return exports;
}

NODE_API_MODULE(claas, Init)
