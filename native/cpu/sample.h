// Sampling one token from a row of logits: greedy, or temperature with top-k / top-p, plus the
// log-probabilities the API reports (from the model's own distribution, before temperature).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace claas::cpu {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float topP = 1.0f;
  int topK = 0;              // 0 = no limit
  int topLogprobs = 0;       // how many alternatives to report
  int vocabLimit = 0;        // only ids below this are sampled or reported (0 = all); models pad their vocab
};

struct SampledToken {
  int32_t id = 0;
  float logprob = 0.0f;                 // log p(id) under the untempered distribution
  std::vector<int32_t> topIds;          // the topLogprobs most likely ids, descending
  std::vector<float> topLogprobs;
};

SampledToken sample(const float* logits_V, int V, const SamplingParams& p, std::mt19937_64& rng);

}  // namespace claas::cpu
