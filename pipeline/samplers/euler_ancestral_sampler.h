// EulerAncestralSampler ("euler_a"): diffusers' EulerAncestralDiscreteScheduler as a Sampler.
//
// Each step goes down to σ_down with an Euler step and adds fresh noise of σ_up (σ_down² + σ_up² = σ_next²),
// drawn per image from its own generator in the model's dtype, as diffusers' randn_tensor does.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "pipeline/samplers/sampler.h"
#include "pipeline/samplers/schedule.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

class EulerAncestralSampler final : public Sampler {
 public:
  /// From EulerAncestralDiscreteScheduler's schedule (timesteps, num_steps + 1 sigmas).
  static StatusOr<std::unique_ptr<Sampler>> create(const SchedulerConfig& config, const Schedule& schedule);

  const char* name() const override { return "euler_a"; }
  std::string step_signature() const override;
  bool draws_noise() const override { return true; }
  /// x / sqrt(σ² + 1), a division as in diffusers.
  at::Tensor model_input(const at::Tensor& x, const at::Tensor& row) const override;
  void step(const SamplerTensors& t, const at::Tensor& model_output, const at::Tensor& row) const override;

 private:
  EulerAncestralSampler(const Schedule& schedule, PredictionType prediction);
  PredictionType prediction_;
};

}  // namespace sdxlb
