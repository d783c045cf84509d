// DpmSolverSampler ("dpmpp_2m", "dpmpp_2m_sde"): diffusers' DPMSolverMultistepScheduler with algorithm_type
// "dpmsolver++" or "sde-dpmsolver++" as a Sampler: solver_order 2 (what the names mean; a folder's own config
// may say 1), solver_type "midpoint" or "heun".
//
// The model output is converted to a data prediction x0 (from the sample in the latent dtype, as diffusers
// does); the update then combines the float32 sample, x0 and D1 = (x0 − x0_prev) / r0 with coefficients from
// the log-SNR steps. The first step (and the last, per lower_order_final / euler_at_final /
// final_sigmas_type) is first order: its D1 coefficient is zero. The SDE variant adds noise drawn in float32
// per step and image.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "pipeline/samplers/sampler.h"
#include "pipeline/samplers/schedule.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

class DpmSolverSampler final : public Sampler {
 public:
  /// From DPMSolverMultistepScheduler's config and schedule. `sde` selects sde-dpmsolver++.
  static StatusOr<std::unique_ptr<Sampler>> create(const SchedulerConfig& config, const Schedule& schedule,
                                                   bool sde);

  const char* name() const override { return sde_ ? "dpmpp_2m_sde" : "dpmpp_2m"; }
  std::string step_signature() const override;
  int history_buffers() const override { return 1; }  // the previous step's x0
  bool draws_noise() const override { return sde_; }
  at::ScalarType noise_dtype(at::ScalarType) const override { return at::kFloat; }
  /// The sample itself (diffusers' scale_model_input is the identity here).
  at::Tensor model_input(const at::Tensor& x, const at::Tensor& row) const override;
  void step(const SamplerTensors& t, const at::Tensor& model_output, const at::Tensor& row) const override;

 private:
  DpmSolverSampler(const SchedulerConfig& config, const Schedule& schedule, bool sde);
  PredictionType prediction_;
  bool sde_;
};

}  // namespace sdxlb
