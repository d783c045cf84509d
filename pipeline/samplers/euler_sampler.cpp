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

EulerSampler::EulerSampler(EulerSchedule schedule)
    : Sampler(schedule.timesteps(), schedule.init_noise_sigma(), kWidth), schedule_(std::move(schedule)) {
  for (int64_t i = 0; i < schedule_.num_steps(); ++i) {
    const float sigma = schedule_.sigma(i);
    const float denom = sigma * sigma + 1.0f;
    coefficient(i, kInputScale) = 1.0f / std::sqrt(denom);
    coefficient(i, kSigma) = sigma;
    coefficient(i, kDt) = schedule_.sigma_next(i) - sigma;
    coefficient(i, kVSkip) = denom;
    coefficient(i, kVOut) = -sigma / std::sqrt(denom);
  }
}

StatusOr<std::unique_ptr<EulerSampler>> EulerSampler::create(const EulerSchedulerConfig& config,
                                                             int64_t steps) {
  SDXLB_ASSIGN_OR_RETURN(auto schedule, EulerSchedule::create(config, steps));
  return std::unique_ptr<EulerSampler>(new EulerSampler(std::move(schedule)));
}

std::string EulerSampler::step_signature() const {
  return std::string("euler/") + to_string(schedule_.prediction_type());
}

at::Tensor EulerSampler::model_input(const at::Tensor& x, const at::Tensor& row) const {
  return x * row.select(0, kInputScale);
}

void EulerSampler::step(const SamplerTensors& t, const at::Tensor& model_output,
                        const at::Tensor& row) const {
  const at::Tensor sigma = row.select(0, kSigma);
  const at::Tensor sample = t.x.to(at::kFloat);
  // With s_churn = 0 diffusers' sigma_hat is sigma itself.
  const at::Tensor pred_original = schedule_.prediction_type() == PredictionType::kEpsilon
                                       ? sample - sigma * model_output
                                       : model_output * row.select(0, kVOut) + sample / row.select(0, kVSkip);
  const at::Tensor derivative = (sample - pred_original) / sigma;
  t.x.copy_(sample + derivative * row.select(0, kDt));
}

}  // namespace sdxlb
