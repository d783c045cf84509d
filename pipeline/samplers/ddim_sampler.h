// DdimSampler ("ddim"): diffusers' DDIMScheduler with eta = 0 (what StableDiffusionXLPipeline passes by
// default), as a Sampler: x_prev = sqrt(ᾱ_prev)·x0 + sqrt(1 − ᾱ_prev)·ε, in the latent dtype as diffusers
// computes it, with x0 clipped to ±clip_sample_range when the config says clip_sample.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "pipeline/samplers/sampler.h"
#include "pipeline/samplers/schedule.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

class DdimSampler final : public Sampler {
 public:
  /// From DDIMScheduler's config and schedule (integer timesteps, the training alphas_cumprod and
  /// final_alpha_cumprod). Errors: kInvalidArgument for a timestep outside the training table.
  static StatusOr<std::unique_ptr<Sampler>> create(const SchedulerConfig& config, const Schedule& schedule);

  const char* name() const override { return "ddim"; }
  std::string step_signature() const override;
  at::Tensor model_input(const at::Tensor& x, const at::Tensor& row) const override;
  void step(const SamplerTensors& t, const at::Tensor& model_output, const at::Tensor& row) const override;

 private:
  DdimSampler(const SchedulerConfig& config, const Schedule& schedule);
  PredictionType prediction_;
  bool clip_ = false;
  double clip_range_ = 1.0;
};

}  // namespace sdxlb
