#include "pipeline/samplers/ddim_sampler.h"

#include <cmath>

#include <ATen/ATen.h>

namespace sdxlb {
namespace {

enum Column : int64_t {
  kSqrtAlpha = 1,  // sqrt(ᾱ_t)
  kSqrtBeta,       // sqrt(1 − ᾱ_t)
  kSqrtAlphaPrev,  // sqrt(ᾱ_prev)
  kDirection,      // sqrt(1 − ᾱ_prev − σ_t²) with σ_t = eta · ... = 0
  kWidth
};

}  // namespace

DdimSampler::DdimSampler(const SchedulerConfig& config, const Schedule& schedule)
    : Sampler(schedule.timesteps, schedule.init_noise_sigma, kWidth),
      prediction_(config.prediction_type),
      clip_(config.clip_sample),
      clip_range_(config.clip_sample_range) {
  const int64_t n = num_steps();
  const int64_t stride = config.num_train_timesteps / n;
  for (int64_t i = 0; i < n; ++i) {
    const auto t = static_cast<int64_t>(schedule.timesteps[static_cast<size_t>(i)]);
    const int64_t prev_t = t - stride;
    const float a = schedule.alphas_cumprod[static_cast<size_t>(t)];
    const float a_prev =
        prev_t >= 0 ? schedule.alphas_cumprod[static_cast<size_t>(prev_t)] : schedule.final_alpha_cumprod;
    coefficient(i, kSqrtAlpha) = std::sqrt(a);
    coefficient(i, kSqrtBeta) = std::sqrt(1.0f - a);
    coefficient(i, kSqrtAlphaPrev) = std::sqrt(a_prev);
    coefficient(i, kDirection) = std::sqrt(1.0f - a_prev - 0.0f);
  }
}

StatusOr<std::unique_ptr<Sampler>> DdimSampler::create(const SchedulerConfig& config,
                                                       const Schedule& schedule) {
  for (float t : schedule.timesteps) {
    if (!(t >= 0.0f) || t >= static_cast<float>(schedule.alphas_cumprod.size()))
      return invalid_argument("ddim: timestep " + std::to_string(t) + " is outside the training table of " +
                              std::to_string(schedule.alphas_cumprod.size()) + " steps");
  }
  return std::unique_ptr<Sampler>(new DdimSampler(config, schedule));
}

std::string DdimSampler::step_signature() const {
  std::string s = std::string("ddim/") + to_string(prediction_);
  if (clip_) s += "/clip=" + std::to_string(clip_range_);
  return s;
}

at::Tensor DdimSampler::model_input(const at::Tensor& x, const at::Tensor&) const {
  return x;
}

void DdimSampler::step(const SamplerTensors& t, const at::Tensor& model_output, const at::Tensor& row) const {
  const at::Tensor sqrt_a = row.select(0, kSqrtAlpha), sqrt_b = row.select(0, kSqrtBeta);
  at::Tensor x0, eps;
  if (prediction_ == PredictionType::kEpsilon) {
    x0 = (t.x - sqrt_b * model_output) / sqrt_a;
    eps = model_output;
  } else {
    x0 = sqrt_a * t.x - sqrt_b * model_output;
    eps = sqrt_a * model_output + sqrt_b * t.x;
  }
  if (clip_) x0 = x0.clamp(-clip_range_, clip_range_);
  t.x.copy_(row.select(0, kSqrtAlphaPrev) * x0 + row.select(0, kDirection) * eps);
}

}  // namespace sdxlb
