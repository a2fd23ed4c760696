// The decoder on the device: bf16 frozen weights, fp32 activations and adapter, and the same
// forward / backward / SDPO step / decode as the CPU engine (native/engine), op for op.
// Logits only ever exist for a chunk of rows at a time (the LM head, log-softmax, top-K and SDPO
// loss run chunk by chunk), so no [T, V] fp32 matrix is stored.
#pragma once
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "cpu/sample.h"
#include "cuda/blas.h"
#include "cuda/ops.h"
#include "cuda/runtime.h"
#include "engine/model.h"
#include "engine/sdpo_step.h"

namespace claas::cuda {

struct DeviceLayer {
  DeviceBuffer<bf16> W[kModuleCount];
  DeviceBuffer<float> inNorm, postNorm, qNorm, kNorm, b[4];
};

// The frozen model: written while loading, read-only afterwards, so both lanes read it at once.
struct DeviceModel {
  ModelConfig cfg;
  DeviceBuffer<bf16> embed, lmHeadOwned;
  const bf16* lmHead = nullptr;  // lmHeadOwned, or embed when tied
  DeviceBuffer<float> finalNorm;
  std::vector<DeviceLayer> layers;
  bool checkpoint = false;  // keep only layer inputs for the backward and recompute the rest
  int logitRows = 64;       // rows of logits materialized at once
};

// Device buffers reused across the calls of one lane (activations, gradients, logit chunks, RoPE
// tables, bf16 staging), grown on demand.
struct Workspace;

// One lane of calls. The engine decodes in one lane and trains, scores and moves adapters in the
// other, at the same time, so everything a call changes besides the memory it names (an adapter, a
// KV cache) is the lane's own: its stream, its cuBLAS handle (with that handle's workspace) and its
// buffers. The lanes share only the weights. A lane runs one call at a time: the caller holds lock
// for the call's length. Every call returns with its lane's stream idle (its results downloaded or
// the stream synchronized), so what one lane wrote is complete before the other lane's next call
// reads it, with no events between the streams.
struct Lane {
  explicit Lane(bool urgent) : stream(urgent) {}
  std::mutex lock;
  Stream stream;
  Blas blas{stream.get()};
  std::shared_ptr<Workspace> work;  // last member: freed before the handle and the stream
};

// Uploads count elements of a weight file's data (fp32, fp16 or bf16) as bf16, converting on the
// host a slice at a time, so no full fp32 copy of a large matrix is ever made.
void upload_bf16(Lane& lane, DeviceBuffer<bf16>& dst, const uint8_t* data, DType dtype, size_t count);
// Uploads the small fp32 tensors of a host model (norm weights, biases) into dm.
void upload_vectors(DeviceModel& dm, Lane& lane, const Model& host);

// Random weights made on the device (bench/): matrices ~ N(0, std^2) in bf16, norm weights 1, no biases.
std::unique_ptr<DeviceModel> random_model(const ModelConfig& cfg, uint64_t seed, float std, Lane& lane);

// An adapter whose parameters, gradients, AdamW moments and EMA copy live on the device.
struct DeviceAdapter {
  LoraLayout layout;
  DeviceBuffer<float> params, grads, m, v, ema;
  int64_t step = 0;
};

std::shared_ptr<DeviceAdapter> upload_adapter(Lane& lane, const Adapter& host);
// Host copy (params, grads, m, v, ema, step) of a device adapter.
Adapter download_adapter(Lane& lane, const DeviceAdapter& a);

// Which LoRA weights a pass uses; params null for the base model.
struct DeviceLoraView {
  const LoraLayout* layout = nullptr;
  const float* params = nullptr;
};

// Logits [T, V] of every position (copied to the host: the API returns them).
std::vector<float> forward_logits(const DeviceModel& dm, Lane& lane, const DeviceLoraView& lora,
                                  const std::vector<int32_t>& ids);
// log p(ids[t] | ids[<t]) for t >= start.
std::vector<float> token_logprobs(const DeviceModel& dm, Lane& lane, const DeviceLoraView& lora,
                                  const std::vector<int32_t>& ids, int start);

SdpoStepResult sdpo_step(const DeviceModel& dm, Lane& lane, DeviceAdapter& adapter, const std::vector<SdpoSample>& batch,
                         const SdpoStepOptions& opt);

struct DeviceSequence {
  int length = 0, capacity = 0;
  std::vector<DeviceBuffer<float>> k, v;  // per layer [capacity, NKV * D], RoPE applied to k
  std::mt19937_64 rng;
};

// Device bytes of the frozen weights, of an adapter (weights, gradients, moments, EMA), and of a
// sequence's KV cache: what the JavaScript objects report to V8 as external memory.
size_t weight_bytes(const DeviceModel& dm);
size_t adapter_bytes(const DeviceAdapter& a);
size_t sequence_bytes(const DeviceSequence& seq);

struct DeviceDecodeEntry {
  DeviceSequence* seq;
  DeviceLoraView lora;  // this row's adapter; empty for the base model
  std::vector<int32_t> ids;
  cpu::SamplingParams sampling;
  cpu::SampledToken out;
};

// Appends each entry's ids to its sequence in one pass and samples its next token. Entries may use
// different adapters (or none): rows are grouped by adapter so each adapter's LoRA branch runs once.
void decode_step(const DeviceModel& dm, Lane& lane, std::vector<DeviceDecodeEntry>& entries);

}  // namespace claas::cuda
