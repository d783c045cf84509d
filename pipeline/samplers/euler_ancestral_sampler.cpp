#include "pipeline/samplers/euler_ancestral_sampler.h"

#include <cmath>

#include <ATen/ATen.h>

namespace sdxlb {
namespace {

enum Column : int64_t {
  kInputDivisor = 1,  // sqrt(σ² + 1)
  kSigma,             // σ
  kDt,                // σ_down − σ
  kSigmaUp,           // σ_up
  kVSkip,             // σ² + 1           (v_prediction: x0 = v·kVOut + x / kVSkip)
  kVOut,              // −σ / sqrt(σ² + 1)
  kWidth
};

}  // namespace

EulerAncestralSampler::EulerAncestralSampler(const Schedule& schedule, PredictionType prediction)
    : Sampler(schedule.timesteps, schedule.init_noise_sigma, kWidth), prediction_(prediction) {
  for (int64_t i = 0; i < num_steps(); ++i) {
    // diffusers computes these on 0-dim float32 tensors; the same float32 operations here.
    const float from = schedule.sigmas[static_cast<size_t>(i)];
    const float to = schedule.sigmas[static_cast<size_t>(i) + 1];
    const float up = std::sqrt(to * to * (from * from - to * to) / (from * from));
    const float down = std::sqrt(to * to - up * up);
    const float denom = from * from + 1.0f;
    coefficient(i, kInputDivisor) = std::sqrt(denom);
    coefficient(i, kSigma) = from;
    coefficient(i, kDt) = down - from;
    coefficient(i, kSigmaUp) = up;
    coefficient(i, kVSkip) = denom;
    coefficient(i, kVOut) = -from / std::sqrt(denom);
  }
}

StatusOr<std::unique_ptr<Sampler>> EulerAncestralSampler::create(const SchedulerConfig& config,
                                                                 const Schedule& schedule) {
  if (schedule.sigmas.size() != schedule.timesteps.size() + 1)
    return invalid_argument("euler_a: the schedule needs one sigma more than timesteps");
  return std::unique_ptr<Sampler>(new EulerAncestralSampler(schedule, config.prediction_type));
}

std::string EulerAncestralSampler::step_signature() const {
  return std::string("euler_a/") + to_string(prediction_);
}

at::Tensor EulerAncestralSampler::model_input(const at::Tensor& x, const at::Tensor& row) const {
  return x / row.select(0, kInputDivisor);
}

void EulerAncestralSampler::step(const SamplerTensors& t, const at::Tensor& model_output,
                                 const at::Tensor& row) const {
  const at::Tensor sigma = row.select(0, kSigma);
  const at::Tensor sample = t.x.to(at::kFloat);
  const at::Tensor pred_original = prediction_ == PredictionType::kEpsilon
                                       ? sample - sigma * model_output
                                       : model_output * row.select(0, kVOut) + sample / row.select(0, kVSkip);
  const at::Tensor derivative = (sample - pred_original) / sigma;
  const at::Tensor prev = sample + derivative * row.select(0, kDt);
  t.x.copy_(prev + t.noise * row.select(0, kSigmaUp));
}

}  // namespace sdxlb
