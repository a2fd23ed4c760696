// Token sampling: temperature, top-k and top-p (nucleus) over a logits row; ties go to the lower id.
#include "cpu/sample.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace claas::cpu {

SampledToken sample(const float* logits_V, int V, const SamplingParams& p, std::mt19937_64& rng) {
  SampledToken out;
  float mx = logits_V[0];
  for (int v = 1; v < V; ++v) mx = std::max(mx, logits_V[v]);
  double sum = 0.0;
  for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits_V[v] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));

  const int n0 = p.vocabLimit > 0 && p.vocabLimit < V ? p.vocabLimit : V;  // candidates: ids [0, n0)
  const auto better = [logits_V](int32_t a, int32_t b) { return logits_V[a] > logits_V[b] || (logits_V[a] == logits_V[b] && a < b); };
  if (p.temperature <= 0.0f) {
    int32_t best = 0;
    for (int32_t v = 1; v < n0; ++v) {
      if (better(v, best)) best = v;
    }
    out.id = best;
  } else {
    // Candidates in descending order: all of them, or the top-k.
    std::vector<int32_t> cand(n0);
    std::iota(cand.begin(), cand.end(), 0);
    int n = n0;
    if (p.topK > 0 && p.topK < n0) {
      std::nth_element(cand.begin(), cand.begin() + p.topK, cand.end(), better);
      n = p.topK;
    }
    std::sort(cand.begin(), cand.begin() + n, better);
    std::vector<double> w(n);
    double total = 0.0;
    const double top = logits_V[cand[0]];
    for (int i = 0; i < n; ++i) {
      w[i] = std::exp((logits_V[cand[i]] - top) / p.temperature);
      total += w[i];
    }
    if (p.topP < 1.0f) {  // the smallest prefix holding at least topP of the mass
      double acc = 0.0;
      int keep = n;
      for (int i = 0; i < n; ++i) {
        acc += w[i];
        if (acc >= p.topP * total) {
          keep = i + 1;
          break;
        }
      }
      n = keep;
      total = acc;
    }
    double r = std::uniform_real_distribution<double>(0.0, total)(rng);
    out.id = cand[n - 1];
    for (int i = 0; i < n; ++i) {
      r -= w[i];
      if (r < 0.0) {
        out.id = cand[i];
        break;
      }
    }
  }
  out.logprob = logits_V[out.id] - lse;

  if (p.topLogprobs > 0) {
    const int k = std::min(p.topLogprobs, n0);
    std::vector<int32_t> ids(n0);
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), better);
    for (int i = 0; i < k; ++i) {
      out.topIds.push_back(ids[i]);
      out.topLogprobs.push_back(logits_V[ids[i]] - lse);
    }
  }
  return out;
}

}  // namespace claas::cpu
