// The SDPO update step, written out flat: every phase is timed and reported.
#include "engine/sdpo_step.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "cpu/ops.h"

namespace claas {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Teacher targets for the response positions of one sample.
struct TeacherTargets {
  int K = 0;
  std::vector<int32_t> idx_TK;
  std::vector<float> logp_TK, tailLogp_T, tokenLogp_T;
};

// Log-probabilities of the rows that score the response: row t scores response[t].
void response_logprobs(const Model& model, const LoraView& view, const std::vector<int32_t>& prompt,
                       const std::vector<int32_t>& response, Activations& acts, bool keep,
                       std::vector<float>& logp_TV) {
  std::vector<int32_t> ids(prompt);
  ids.insert(ids.end(), response.begin(), response.end());
  forward(model, view, ids.data(), static_cast<int>(ids.size()), acts, keep);
  const int T = static_cast<int>(response.size()), V = model.cfg.vocab;
  logp_TV.resize(static_cast<size_t>(T) * V);
  lm_head(model, logp_TV.data(), acts.xf.data(), static_cast<int>(prompt.size()) - 1, T);
  cpu::log_softmax(logp_TV.data(), nullptr, logp_TV.data(), T, V);
}

TeacherTargets teacher_targets(const Model& model, const LoraView& view, const SdpoSample& s, int K) {
  Activations acts;
  std::vector<float> logp;
  response_logprobs(model, view, s.teacherPrompt, s.response, acts, false, logp);
  const int T = static_cast<int>(s.response.size()), V = model.cfg.vocab;
  TeacherTargets tt;
  tt.K = K;
  tt.idx_TK.resize(static_cast<size_t>(T) * K);
  tt.logp_TK.resize(static_cast<size_t>(T) * K);
  tt.tailLogp_T.resize(T);
  tt.tokenLogp_T.resize(T);
  cpu::topk(tt.idx_TK.data(), tt.logp_TK.data(), logp.data(), T, V, K);
  std::vector<uint8_t> inK(V);
  for (int t = 0; t < T; ++t) {
    const float* row = logp.data() + static_cast<size_t>(t) * V;
    std::fill(inK.begin(), inK.end(), 0);
    for (int k = 0; k < K; ++k) inK[tt.idx_TK[static_cast<size_t>(t) * K + k]] = 1;
    double tail = 0.0;
    for (int v = 0; v < V; ++v) {
      if (!inK[v]) tail += std::exp(static_cast<double>(row[v]));
    }
    tt.tailLogp_T[t] = tail > 0.0 ? static_cast<float>(std::log(tail)) : -INFINITY;
    tt.tokenLogp_T[t] = row[s.response[t]];
  }
  return tt;
}

// Targets supplied with the sample; the tail is what the top-K leaves of the teacher's mass.
TeacherTargets supplied_targets(const SdpoSample& s) {
  const int T = static_cast<int>(s.response.size()), K = s.teacherK;
  TeacherTargets tt;
  tt.K = K;
  tt.idx_TK = s.teacherTopIds;
  tt.logp_TK = s.teacherTopLogprobs;
  tt.tokenLogp_T = s.teacherTokenLogprobs;
  tt.tailLogp_T.resize(T);
  for (int t = 0; t < T; ++t) {
    double inK = 0.0;
    for (int k = 0; k < K; ++k) inK += std::exp(static_cast<double>(tt.logp_TK[static_cast<size_t>(t) * K + k]));
    const double tail = 1.0 - inK;
    tt.tailLogp_T[t] = tail > 1e-12 ? static_cast<float>(std::log(tail)) : -INFINITY;
  }
  return tt;
}

std::vector<float> base_token_logprobs(const Model& model, const SdpoSample& s) {
  Activations acts;
  std::vector<float> logp;
  response_logprobs(model, LoraView{}, s.prompt, s.response, acts, false, logp);
  const int T = static_cast<int>(s.response.size()), V = model.cfg.vocab;
  std::vector<float> out(T);
  for (int t = 0; t < T; ++t) out[t] = logp[static_cast<size_t>(t) * V + s.response[t]];
  return out;
}

}  // namespace

SdpoStepResult sdpo_step(const Model& model, Adapter& adapter, const std::vector<SdpoSample>& batch,
                         const SdpoStepOptions& opt) {
  SdpoStepResult res;
  const int B = static_cast<int>(batch.size()), V = model.cfg.vocab, H = model.cfg.hidden;
  const LoraLayout& L = adapter.layout;

  // Teacher: the adapter truly off (base), the EMA copy, or the adapter as it is before this step.
  auto t0 = Clock::now();
  // Targets are computed before any update, so "current" can read the live parameters.
  LoraView teacherView;
  if (opt.teacher == TeacherMode::Current) teacherView = LoraView{&L, adapter.params.data()};
  if (opt.teacher == TeacherMode::Ema) teacherView = LoraView{&L, adapter.ema.data()};
  std::vector<TeacherTargets> targets;
  for (const auto& s : batch) {
    targets.push_back(s.teacherK > 0 ? supplied_targets(s) : teacher_targets(model, teacherView, s, opt.topK));
  }
  res.teacherMs = ms_since(t0);

  t0 = Clock::now();
  std::vector<std::vector<float>> baseLogp;
  for (const auto& s : batch) baseLogp.push_back(base_token_logprobs(model, s));
  res.baseMs = ms_since(t0);

  std::vector<float> firstGrads;
  for (int step = 0; step < opt.steps; ++step) {
    std::fill(adapter.grads.begin(), adapter.grads.end(), 0.0f);
    const LoraView student{&L, adapter.params.data()};
    double loss = 0, distill = 0, kl = 0, wSum = 0, tsKl = 0;
    int64_t tokens = 0, clipped = 0;
    for (int b = 0; b < B; ++b) {
      const SdpoSample& s = batch[b];
      const int T = static_cast<int>(s.response.size());
      const int P = static_cast<int>(s.prompt.size());
      auto tf = Clock::now();
      Activations acts;
      std::vector<float> logp;
      response_logprobs(model, student, s.prompt, s.response, acts, true, logp);
      res.studentForwardMs += ms_since(tf);

      auto tb = Clock::now();
      std::vector<float> ds(static_cast<size_t>(T) * V);
      const double coef = 1.0 / (static_cast<double>(T) * B);
      double sD = 0, sWD = 0, sK = 0;
      for (int t = 0; t < T; ++t) {
        const TeacherTargets& tt = targets[b];
        const cpu::SdpoTeacherRow row{tt.idx_TK.data() + static_cast<size_t>(t) * tt.K,
                                      tt.logp_TK.data() + static_cast<size_t>(t) * tt.K, tt.tailLogp_T[t],
                                      tt.tokenLogp_T[t], tt.K};
        const float old = s.oldLogprobs.empty() ? NAN : s.oldLogprobs[t];
        const cpu::SdpoRowValues r = cpu::sdpo_loss_row(ds.data() + static_cast<size_t>(t) * V,
                                                        logp.data() + static_cast<size_t>(t) * V, V, s.response[t],
                                                        row, old, baseLogp[b][t], opt.loss, coef);
        sD += r.D;
        sWD += r.w * r.D;
        sK += r.k3;
        wSum += r.w;
        clipped += r.clipped ? 1 : 0;
      }
      tokens += T;
      distill += sWD / T;
      kl += sK / T;
      tsKl += sD / T;
      loss += sWD / T + opt.loss.beta * sK / T;

      // d/dlogits, then into the final hidden states of the scoring rows, then through the model.
      cpu::log_softmax_backward(ds.data(), ds.data(), logp.data(), T, V);
      std::vector<float> dxf(static_cast<size_t>(acts.T) * H, 0.0f);
      cpu::linear_backward_input(dxf.data() + static_cast<size_t>(P - 1) * H, ds.data(), model.lmHead, T, H, V,
                                 false);
      backward(model, student, adapter.grads.data(), acts, dxf.data());
      res.backwardMs += ms_since(tb);
    }
    loss /= B;
    res.stepLosses.push_back(loss);

    auto to = Clock::now();
    double sq = 0.0;
    for (float g : adapter.grads) sq += static_cast<double>(g) * g;
    const double gradNorm = std::sqrt(sq);
    if (step == 0) {
      res.loss = loss;
      res.distillLoss = distill / B;
      res.klToBase = kl / B;
      res.teacherStudentKl = tsKl / B;
      res.meanIsWeight = wSum / static_cast<double>(tokens);
      res.clipFraction = static_cast<double>(clipped) / static_cast<double>(tokens);
      res.gradNorm = gradNorm;
      res.tokens = tokens;
      if (opt.steps > 1) firstGrads = adapter.grads;
    }
    // torch.nn.utils.clip_grad_norm_ semantics.
    const double clipCoef = opt.maxGradNorm / (gradNorm + 1e-6);
    std::vector<float> g = adapter.grads;
    if (clipCoef < 1.0) {
      for (float& x : g) x = static_cast<float>(x * clipCoef);
    }
    adapter.step += 1;
    cpu::adamw(adapter.params.data(), adapter.m.data(), adapter.v.data(), g.data(), L.total, opt.learningRate,
               opt.beta1, opt.beta2, opt.eps, opt.weightDecay, adapter.step);
    for (size_t i = 0; i < L.total; ++i) {
      adapter.ema[i] = (1.0f - opt.emaRate) * adapter.ema[i] + opt.emaRate * adapter.params[i];
    }
    res.optimizerMs += ms_since(to);
  }
  if (opt.steps > 1) adapter.grads = std::move(firstGrads);
  return res;
}

}  // namespace claas
