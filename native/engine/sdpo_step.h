// One SDPO update of an adapter over a batch of samples (sdpo.md): teacher targets, base log-probs,
// student forward + loss + backward, global-norm clip, AdamW, EMA.
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/sdpo_loss.h"
#include "engine/model.h"

namespace claas {

enum class TeacherMode : int { Base = 0, Current = 1, Ema = 2 };

struct SdpoSample {
  std::vector<int32_t> prompt;         // student prompt x
  std::vector<int32_t> teacherPrompt;  // teacher prompt x~ (hindsight context)
  std::vector<int32_t> response;       // sampled response y (with its end-of-turn token)
  std::vector<float> oldLogprobs;      // sampling-time log-probs of y; empty when unknown
  // Teacher targets scored elsewhere (the remote teacher): per response position the top-K ids and
  // log-probs (T*K, best first) and the log-prob of the sampled token. Empty: the engine scores x~.
  int teacherK = 0;
  std::vector<int32_t> teacherTopIds;
  std::vector<float> teacherTopLogprobs, teacherTokenLogprobs;
};

struct SdpoStepOptions {
  cpu::SdpoLossOptions loss;
  int topK = 100;
  TeacherMode teacher = TeacherMode::Current;
  float learningRate = 1e-5f;
  float maxGradNorm = 1.0f;
  float weightDecay = 0.01f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float emaRate = 0.05f;
  int steps = 1;
};

struct SdpoStepResult {
  // From the first optimizer step (before any update of this call).
  double loss = 0, distillLoss = 0, klToBase = 0, meanIsWeight = 0, clipFraction = 0, gradNorm = 0,
         teacherStudentKl = 0;
  std::vector<double> stepLosses;  // the batch loss seen by each optimizer step
  int64_t tokens = 0;
  double teacherMs = 0, baseMs = 0, studentForwardMs = 0, backwardMs = 0, optimizerMs = 0;
};

// Updates adapter in place. On return adapter.grads holds the first step's raw (unclipped) gradient.
SdpoStepResult sdpo_step(const Model& model, Adapter& adapter, const std::vector<SdpoSample>& batch,
                         const SdpoStepOptions& opt);

}  // namespace claas
