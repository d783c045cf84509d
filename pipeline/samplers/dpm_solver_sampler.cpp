#include "pipeline/samplers/dpm_solver_sampler.h"

#include <cmath>

#include <ATen/ATen.h>

#include "pipeline/samplers/noise_level.h"

namespace sdxlb {
namespace {

enum Column : int64_t {
  kAlpha = 1,  // α_s = 1 / sqrt(σ_s² + 1) of this step's σ   (x0 = (x − σ_s·α_s·eps) / α_s)
  kSigmaT,     // σ_s·α_s
  kSample,     // coefficient of the float32 sample
  kD0,         // coefficient of x0
  kD1,         // coefficient of D1 (0 on first-order steps)
  kInvR0,      // 1 / r0 (0 on the first step, where there is no previous x0)
  kNoise,      // coefficient of the noise (SDE)
  kWidth
};

}  // namespace

DpmSolverSampler::DpmSolverSampler(const SchedulerConfig& config, const Schedule& schedule, bool sde)
    : Sampler(schedule.timesteps, schedule.init_noise_sigma, kWidth),
      prediction_(config.prediction_type),
      sde_(sde) {
  const int64_t n = num_steps();
  const auto& sig = schedule.sigmas;
  for (int64_t i = 0; i < n; ++i) {
    const auto s0 = noise_level(sig[static_cast<size_t>(i)]);
    const auto t = noise_level(sig[static_cast<size_t>(i) + 1]);
    coefficient(i, kAlpha) = s0.alpha;
    coefficient(i, kSigmaT) = s0.sigma;
    // diffusers' step(): which order this step runs.
    const bool lower_order_final =
        i == n - 1 && (config.euler_at_final || (config.lower_order_final && n < 15) ||
                       config.final_sigmas_type == FinalSigmas::kZero);
    const bool first_order = config.solver_order == 1 || i == 0 || lower_order_final;
    const bool heun = config.solver_type == DpmSolverType::kHeun;
    const float h = t.lambda - s0.lambda;
    float d1 = 0.0f, noise = 0.0f;
    if (!sde) {
      const float em = t.alpha * (std::exp(-h) - 1.0f);
      coefficient(i, kSample) = t.sigma / s0.sigma;
      coefficient(i, kD0) = -em;
      // midpoint: x − em·D0 − 0.5·em·D1; heun: x − em·D0 + α_t·((e^−h − 1)/h + 1)·D1
      d1 = heun ? t.alpha * ((std::exp(-h) - 1.0f) / h + 1.0f) : -(0.5f * em);
    } else {
      const float e2 = t.alpha * (1.0f - std::exp(-2.0f * h));
      coefficient(i, kSample) = t.sigma / s0.sigma * std::exp(-h);
      coefficient(i, kD0) = e2;
      d1 = heun ? t.alpha * ((1.0f - std::exp(-2.0f * h)) / (-2.0f * h) + 1.0f) : 0.5f * e2;
      noise = t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h));
    }
    coefficient(i, kNoise) = noise;
    if (!first_order) {
      const auto s1 = noise_level(sig[static_cast<size_t>(i) - 1]);
      const float r0 = (s0.lambda - s1.lambda) / h;
      coefficient(i, kD1) = d1;
      coefficient(i, kInvR0) = 1.0f / r0;
    }
  }
}

StatusOr<std::unique_ptr<Sampler>> DpmSolverSampler::create(const SchedulerConfig& config,
                                                            const Schedule& schedule, bool sde) {
  if (schedule.sigmas.size() != schedule.timesteps.size() + 1)
    return invalid_argument("dpmpp_2m: the schedule needs one sigma more than timesteps");
  return std::unique_ptr<Sampler>(new DpmSolverSampler(config, schedule, sde));
}

std::string DpmSolverSampler::step_signature() const {
  return std::string(name()) + "/" + to_string(prediction_);  // order and solver type are coefficients only
}

at::Tensor DpmSolverSampler::model_input(const at::Tensor& x, const at::Tensor&) const {
  return x;
}

void DpmSolverSampler::step(const SamplerTensors& t, const at::Tensor& model_output,
                            const at::Tensor& row) const {
  const at::Tensor alpha = row.select(0, kAlpha), sigma = row.select(0, kSigmaT);
  // convert_model_output: the data prediction, from the sample as it is (the latent dtype).
  const at::Tensor x0 = prediction_ == PredictionType::kEpsilon ? (t.x - sigma * model_output) / alpha
                                                                : alpha * t.x - sigma * model_output;
  const at::Tensor& previous = t.history[0];
  const at::Tensor d1 = row.select(0, kInvR0) * (x0 - previous);
  const at::Tensor sample = t.x.to(at::kFloat);
  at::Tensor prev = row.select(0, kSample) * sample + row.select(0, kD0) * x0 + row.select(0, kD1) * d1;
  if (sde_) prev = prev + row.select(0, kNoise) * t.noise;
  previous.copy_(x0);
  t.x.copy_(prev);
}

}  // namespace sdxlb
