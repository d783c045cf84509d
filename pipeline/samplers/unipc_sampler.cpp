#include "pipeline/samplers/unipc_sampler.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "pipeline/samplers/noise_level.h"

namespace sdxlb {
namespace {

enum Column : int64_t {
  kAlpha = 1,  // α of this step's σ (convert_model_output)
  kSigmaT,     // σ·α
  // UniC, the corrector (all 0 on the first step, where kKeep is 1)
  kKeep,   // 1 on the first step: the sample is used as it is
  kCLast,  // σ_t / σ_s0 (times the last sample)
  kCM1,    // α_t · hφ1 (times the previous x0)
  kCB,     // α_t · B(h)
  kCRho0,  // ρ_c[0] (order 2)
  kCRk,    // r_k of the corrector's D1 (1 when unused)
  kCRho1,  // ρ_c[-1] (times x0 − x0_prev)
  // UniP, the predictor
  kPX,    // σ_t / σ_s0
  kPM0,   // α_t · hφ1
  kPB,    // α_t · B(h)
  kPRho,  // ρ_p (0.5 at order 2, 0 at order 1)
  kPRk,   // r_k of the predictor's D1 (1 when unused)
  kWidth
};

// What multistep_uni_{p,c}_bh_update derive from the step: σ_t/σ_s0, α_t·hφ1, α_t·B(h), and for order 2 r_k
// and the b vector, all in float32 as on diffusers' 0-dim tensors (bh2: B(h) = expm1(−h)).
struct UniTerms {
  float ratio = 0, m0 = 0, b_h = 0, rk = 1, b1 = 0, b2 = 0;
};
UniTerms uni_terms(float sigma_t, float sigma_s0, float sigma_s1, int order) {
  const auto t = noise_level(sigma_t), s0 = noise_level(sigma_s0);
  const float h = t.lambda - s0.lambda;
  const float hh = -h;
  const float h_phi_1 = std::expm1(hh);
  const float b_h = std::expm1(hh);
  UniTerms u;
  u.ratio = t.sigma / s0.sigma;
  u.m0 = t.alpha * h_phi_1;
  u.b_h = t.alpha * b_h;
  if (order == 2) {
    const auto s1 = noise_level(sigma_s1);
    u.rk = (s1.lambda - s0.lambda) / h;
    float h_phi_k = h_phi_1 / hh - 1.0f;
    u.b1 = h_phi_k * 1.0f / b_h;
    h_phi_k = h_phi_k / hh - 1.0f / 2.0f;
    u.b2 = h_phi_k * 2.0f / b_h;
  }
  return u;
}

}  // namespace

UniPcSampler::UniPcSampler(const SchedulerConfig& config, const Schedule& schedule)
    : Sampler(schedule.timesteps, schedule.init_noise_sigma, kWidth), prediction_(config.prediction_type) {
  const int64_t n = num_steps();
  const auto sig = [&](int64_t i) { return schedule.sigmas[static_cast<size_t>(i)]; };
  // diffusers' this_order of each step: warm-up (one more each step up to solver_order 2) and, with
  // lower_order_final, never more than the steps left.
  const int64_t solver_order = config.solver_order;  // 1 or 2 (check_sampler)
  const auto order_of = [&](int64_t i) -> int {
    int64_t o = config.lower_order_final ? std::min<int64_t>(solver_order, n - i) : solver_order;
    return static_cast<int>(std::min<int64_t>(o, std::min<int64_t>(i, solver_order) + 1));
  };
  for (int64_t i = 0; i < n; ++i) {
    const auto s = noise_level(sig(i));
    coefficient(i, kAlpha) = s.alpha;
    coefficient(i, kSigmaT) = s.sigma;
    coefficient(i, kCRk) = 1.0f;
    coefficient(i, kPRk) = 1.0f;
    if (i == 0) {
      coefficient(i, kKeep) = 1.0f;
    } else {
      // UniC for the sample this step starts from, with the previous step's order.
      const int order = order_of(i - 1);
      const UniTerms c = uni_terms(sig(i), sig(i - 1), order == 2 ? sig(i - 2) : 0.0f, order);
      coefficient(i, kCLast) = c.ratio;
      coefficient(i, kCM1) = c.m0;
      coefficient(i, kCB) = c.b_h;
      if (order == 1) {
        coefficient(i, kCRho1) = 0.5f;
      } else {
        // rhos_c = solve([[1, 1], [r_k, 1]], [b1, b2]).
        const double rk = c.rk, b1 = c.b1, b2 = c.b2;
        const double rho0 = (b1 - b2) / (1.0 - rk);
        coefficient(i, kCRho0) = static_cast<float>(rho0);
        coefficient(i, kCRho1) = static_cast<float>(b1 - rho0);
        coefficient(i, kCRk) = c.rk;
      }
    }
    // UniP to the next sample.
    const int order = order_of(i);
    const UniTerms p = uni_terms(sig(i + 1), sig(i), order == 2 ? sig(i - 1) : 0.0f, order);
    coefficient(i, kPX) = p.ratio;
    coefficient(i, kPM0) = p.m0;
    coefficient(i, kPB) = p.b_h;
    if (order == 2) {
      coefficient(i, kPRho) = 0.5f;
      coefficient(i, kPRk) = p.rk;
    }
  }
}

StatusOr<std::unique_ptr<Sampler>> UniPcSampler::create(const SchedulerConfig& config,
                                                        const Schedule& schedule) {
  if (schedule.sigmas.size() != schedule.timesteps.size() + 1)
    return invalid_argument("unipc: the schedule needs one sigma more than timesteps");
  return std::unique_ptr<Sampler>(new UniPcSampler(config, schedule));
}

std::string UniPcSampler::step_signature() const {
  return std::string("unipc/") + to_string(prediction_);
}

at::Tensor UniPcSampler::model_input(const at::Tensor& x, const at::Tensor&) const {
  return x;
}

void UniPcSampler::step(const SamplerTensors& t, const at::Tensor& model_output,
                        const at::Tensor& row) const {
  const auto c = [&](int64_t j) { return row.select(0, j); };
  const at::Tensor& last = t.history[0];
  const at::Tensor& m1 = t.history[1];
  const at::Tensor& m2 = t.history[2];
  // convert_model_output (predict_x0), from the sample before correction, as diffusers does.
  const at::Tensor x0 = prediction_ == PredictionType::kEpsilon
                            ? (t.x - c(kSigmaT) * model_output) / c(kAlpha)
                            : c(kAlpha) * t.x - c(kSigmaT) * model_output;
  // UniC: x_c = σ_t/σ_s0·last − α_t·hφ1·m1 − α_t·B(h)·(ρ0·(m2 − m1)/r_k + ρ1·(x0 − m1)).
  const at::Tensor corr_res = c(kCRho0) * ((m2 - m1) / c(kCRk));
  const at::Tensor corrected = c(kCLast) * last - c(kCM1) * m1 - c(kCB) * (corr_res + c(kCRho1) * (x0 - m1));
  const at::Tensor x = c(kKeep) * t.x + corrected;
  // UniP: x_next = σ_t/σ_s0·x − α_t·hφ1·x0 − α_t·B(h)·ρ_p·(m1 − x0)/r_k.
  const at::Tensor pred_res = c(kPRho) * ((m1 - x0) / c(kPRk));
  const at::Tensor next = c(kPX) * x - c(kPM0) * x0 - c(kPB) * pred_res;
  m2.copy_(m1);
  m1.copy_(x0);
  last.copy_(x);
  t.x.copy_(next);
}

}  // namespace sdxlb
