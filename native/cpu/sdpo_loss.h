// The per-position SDPO objective (sdpo.md): divergence D_t on the teacher's top-K (tail bucket or
// renormalized) or the sampled-token form, importance weight w_t and the k3 KL-to-base term.
#pragma once
#include <cstdint>

namespace claas::cpu {

struct SdpoLossOptions {
  float alpha = 0.5f;      // 0 forward KL, 1 reverse KL, in between generalized JSD
  bool tail = true;        // extra category for the mass outside the top-K, else renormalize
  bool sampledToken = false;
  float isClip = 2.0f;
  float beta = 0.0f;       // weight of the KL-to-base term
};

// What the teacher provides for one response position.
struct SdpoTeacherRow {
  const int32_t* idx_K;    // teacher top-K token ids
  const float* logp_K;     // teacher log-probabilities of those ids
  float tailLogp;          // log of the teacher's mass outside the top-K
  float tokenLogp;         // teacher log-probability of the sampled token (sampled-token mode)
  int K;
};

struct SdpoRowValues {
  double D;      // divergence at this position
  double w;      // importance weight (detached)
  double k3;     // KL-to-base estimate
  bool clipped;  // the importance ratio exceeded isClip
};

// s_V: student log-probabilities of the row; y: sampled token; oldLogp NaN when unknown.
// Writes coef * d(w*D + beta*k3)/ds into ds_V (every entry, zeros where no gradient).
SdpoRowValues sdpo_loss_row(float* ds_V, const float* s_V, int V, int32_t y, const SdpoTeacherRow& teacher,
                            float oldLogp, float baseLogp, const SdpoLossOptions& opt, double coef);

}  // namespace claas::cpu
