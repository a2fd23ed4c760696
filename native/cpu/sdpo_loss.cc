// Per-position SDPO loss and its gradient with respect to the student log-probabilities.
// Divergences are computed in double over the K (+1) categories; the gradient is first taken with
// respect to log Q_c and then carried through the tail / renormalization map back to s.
#include "cpu/sdpo_loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace claas::cpu {

static constexpr double kTailFloor = 1e-12;

static inline double logaddexp(double a, double b) {
  const double m = std::max(a, b);
  if (m == -INFINITY) return -INFINITY;
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

SdpoRowValues sdpo_loss_row(float* ds_V, const float* s_V, int V, int32_t y, const SdpoTeacherRow& teacher,
                            float oldLogp, float baseLogp, const SdpoLossOptions& opt, double coef) {
  std::memset(ds_V, 0, sizeof(float) * V);
  SdpoRowValues out{0.0, 1.0, 0.0, false};
  const double sy = s_V[y];

  if (!std::isnan(oldLogp)) {
    const double ratio = std::exp(std::clamp(sy - static_cast<double>(oldLogp), -20.0, 20.0));
    out.clipped = ratio > opt.isClip;
    out.w = std::min(ratio, static_cast<double>(opt.isClip));
  }

  if (opt.sampledToken) {
    const double adv = sy - teacher.tokenLogp;  // detached factor
    out.D = adv * sy;
    ds_V[y] += static_cast<float>(coef * out.w * adv);
  } else {
    const int K = teacher.K;
    const int C = opt.tail ? K + 1 : K;
    thread_local std::vector<double> logP, logQ, g;
    logP.assign(C, 0.0);
    logQ.assign(C, 0.0);
    g.assign(C, 0.0);
    for (int k = 0; k < K; ++k) {
      logP[k] = teacher.logp_K[k];
      logQ[k] = s_V[teacher.idx_K[k]];
    }
    bool qTailClamped = false;
    double qTail = 0.0;
    if (opt.tail) {
      // The student's tail is summed outside the top-K (not 1 - sum) to avoid cancellation.
      thread_local std::vector<uint8_t> inK;
      inK.assign(V, 0);
      for (int k = 0; k < K; ++k) inK[teacher.idx_K[k]] = 1;
      for (int v = 0; v < V; ++v) {
        if (!inK[v]) qTail += std::exp(static_cast<double>(s_V[v]));
      }
      qTailClamped = qTail < kTailFloor;
      if (qTailClamped) qTail = kTailFloor;
      logQ[K] = std::log(qTail);
      logP[K] = std::max(static_cast<double>(teacher.tailLogp), std::log(kTailFloor));
    } else {
      double lseP = -INFINITY, lseQ = -INFINITY;
      for (int k = 0; k < K; ++k) {
        lseP = logaddexp(lseP, logP[k]);
        lseQ = logaddexp(lseQ, logQ[k]);
      }
      for (int k = 0; k < K; ++k) {
        logP[k] -= lseP;
        logQ[k] -= lseQ;
      }
    }

    const double a = opt.alpha;
    double D = 0.0;
    for (int c = 0; c < C; ++c) {
      const double P = std::exp(logP[c]), Q = std::exp(logQ[c]);
      if (a == 0.0) {
        D += P * (logP[c] - logQ[c]);
        g[c] = -P;
      } else if (a == 1.0) {
        D += Q * (logQ[c] - logP[c]);
        g[c] = Q * (logQ[c] - logP[c] + 1.0);
      } else {
        const double logM = logaddexp(std::log(a) + logP[c], std::log1p(-a) + logQ[c]);
        D += a * P * (logP[c] - logM) + (1.0 - a) * Q * (logQ[c] - logM);
        g[c] = (1.0 - a) * Q * (logQ[c] - logM);
      }
    }
    out.D = D;

    const double scale = coef * out.w;
    if (opt.tail) {
      const double gTail = qTailClamped ? 0.0 : g[K];
      for (int k = 0; k < K; ++k) {
        const double qk = std::exp(logQ[k]);
        ds_V[teacher.idx_K[k]] += static_cast<float>(scale * (g[k] - gTail * qk / qTail));
      }
    } else {
      double gSum = 0.0;
      for (int k = 0; k < K; ++k) gSum += g[k];
      for (int k = 0; k < K; ++k) {
        ds_V[teacher.idx_K[k]] += static_cast<float>(scale * (g[k] - std::exp(logQ[k]) * gSum));
      }
    }
  }

  const double rRaw = sy - static_cast<double>(baseLogp);
  const double r = std::clamp(rRaw, -20.0, 20.0);
  out.k3 = std::exp(r) - 1.0 - r;
  if (opt.beta != 0.0f && rRaw >= -20.0 && rRaw <= 20.0) {
    ds_V[y] += static_cast<float>(coef * opt.beta * (std::exp(r) - 1.0));
  }
  return out;
}

}  // namespace claas::cpu
