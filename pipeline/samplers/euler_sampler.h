// EulerSampler: diffusers' EulerDiscreteScheduler (s_churn = 0, the deterministic Euler method) as a Sampler.
//
// Its schedule is EulerSchedule's; its step is diffusers' op for op in float32 (the sample upcast, the result
// cast back to the latent dtype), for epsilon and v_prediction models.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "pipeline/samplers/euler_scheduler.h"
#include "pipeline/samplers/sampler.h"

namespace sdxlb {

class EulerSampler final : public Sampler {
 public:
  /// The sampler for `steps` steps. Errors: those of EulerSchedule::create (kInvalidArgument for a step count
  /// outside 1..num_train_timesteps).
  static StatusOr<std::unique_ptr<EulerSampler>> create(const EulerSchedulerConfig& config, int64_t steps);

  const char* name() const override { return "euler"; }
  std::string step_signature() const override;
  /// x / sqrt(σ² + 1), as a product with the float32 reciprocal.
  at::Tensor model_input(const at::Tensor& x, const at::Tensor& row) const override;
  void step(const SamplerTensors& t, const at::Tensor& model_output, const at::Tensor& row) const override;

  const EulerSchedule& schedule() const { return schedule_; }

 private:
  EulerSampler(EulerSchedule schedule);
  EulerSchedule schedule_;
};

}  // namespace sdxlb
