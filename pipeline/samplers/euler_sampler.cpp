#include "pipeline/samplers/euler_sampler.h"

#include <cmath>

#include <ATen/ATen.h>

namespace sdxlb {
namespace {

// The coefficient table's columns (0 is the timestep).
enum Column : int64_t {
  kInputScale = 1,  // 1 / sqrt(σ² + 1)
  kSigma,           // σ
  kDt,              // σ_next − σ
  kVSkip,           // σ² + 1           (v_prediction: x0 = v·kVOut + x / kVSkip)
  kVOut,            // −σ / sqrt(σ² + 1)
  kWidth
};

}  // namespace

EulerSampler::EulerSampler(const Schedule& schedule, PredictionType prediction)
    : Sampler(schedule.timesteps, schedule.init_noise_sigma, kWidth),
      sigmas_(schedule.sigmas),
      prediction_(prediction) {
  for (int64_t i = 0; i < num_steps(); ++i) {
    const float sigma = sigmas_[static_cast<size_t>(i)];
    const float denom = sigma * sigma + 1.0f;
    coefficient(i, kInputScale) = 1.0f / std::sqrt(denom);
    coefficient(i, kSigma) = sigma;
    coefficient(i, kDt) = sigmas_[static_cast<size_t>(i) + 1] - sigma;
    coefficient(i, kVSkip) = denom;
    coefficient(i, kVOut) = -sigma / std::sqrt(denom);
  }
}

StatusOr<std::unique_ptr<Sampler>> EulerSampler::create(const SchedulerConfig& config,
                                                        const Schedule& schedule) {
  if (schedule.sigmas.size() != schedule.timesteps.size() + 1)
    return invalid_argument("euler: the schedule needs one sigma more than timesteps");
  return std::unique_ptr<Sampler>(new EulerSampler(schedule, config.prediction_type));
}

std::string EulerSampler::step_signature() const {
  return std::string("euler/") + to_string(prediction_);
}

at::Tensor EulerSampler::model_input(const at::Tensor& x, const at::Tensor& row) const {
  return x * row.select(0, kInputScale);
}

void EulerSampler::step(const SamplerTensors& t, const at::Tensor& model_output,
                        const at::Tensor& row) const {
  const at::Tensor sigma = row.select(0, kSigma);
  const at::Tensor sample = t.x.to(at::kFloat);
  // With s_churn = 0 diffusers' sigma_hat is sigma itself.
  const at::Tensor pred_original = prediction_ == PredictionType::kEpsilon
                                       ? sample - sigma * model_output
                                       : model_output * row.select(0, kVOut) + sample / row.select(0, kVSkip);
  const at::Tensor derivative = (sample - pred_original) / sigma;
  t.x.copy_(sample + derivative * row.select(0, kDt));
}

}  // namespace sdxlb
