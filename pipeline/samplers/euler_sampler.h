// EulerSampler: diffusers' EulerDiscreteScheduler (s_churn = 0, the deterministic Euler method) as a Sampler.
//
// Its schedule is make_schedule's for the class; its step is diffusers' op for op in float32 (the sample
// upcast, the result cast back to the latent dtype), for epsilon and v_prediction models.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "pipeline/samplers/sampler.h"
#include "pipeline/samplers/schedule.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

class EulerSampler final : public Sampler {
 public:
  /// From EulerDiscreteScheduler's config and schedule (num_steps + 1 sigmas).
  static StatusOr<std::unique_ptr<Sampler>> create(const SchedulerConfig& config, const Schedule& schedule);

  const char* name() const override { return "euler"; }
  std::string step_signature() const override;
  /// x / sqrt(σ² + 1), as a product with the float32 reciprocal.
  at::Tensor model_input(const at::Tensor& x, const at::Tensor& row) const override;
  void step(const SamplerTensors& t, const at::Tensor& model_output, const at::Tensor& row) const override;

  /// The schedule's num_steps + 1 sigmas.
  const std::vector<float>& sigmas() const { return sigmas_; }

 private:
  EulerSampler(const Schedule& schedule, PredictionType prediction);
  std::vector<float> sigmas_;
  PredictionType prediction_;
};

}  // namespace sdxlb
