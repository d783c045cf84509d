// UniPcSampler ("unipc"): diffusers' UniPCMultistepScheduler with solver_type "bh2", predict_x0, solver_order
// 2 (or a folder's 1) and no disabled corrector steps, as a Sampler.
//
// Every step but the first corrects the sample with UniC (from the sample before the previous predictor
// step, the last two data predictions and the new one), then predicts the next sample with UniP. Orders
// follow diffusers' warm-up and lower_order_final; unused terms have zero coefficients (and unit divisors),
// so the same tensor operations run every step. History: the sample before the last predictor step and the
// last two data predictions (float32).
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "pipeline/samplers/sampler.h"
#include "pipeline/samplers/schedule.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

class UniPcSampler final : public Sampler {
 public:
  /// From UniPCMultistepScheduler's config and schedule (num_steps + 1 sigmas).
  static StatusOr<std::unique_ptr<Sampler>> create(const SchedulerConfig& config, const Schedule& schedule);

  const char* name() const override { return "unipc"; }
  std::string step_signature() const override;
  int history_buffers() const override { return 3; }  // last sample, x0 of the last two steps
  at::Tensor model_input(const at::Tensor& x, const at::Tensor& row) const override;
  void step(const SamplerTensors& t, const at::Tensor& model_output, const at::Tensor& row) const override;

 private:
  UniPcSampler(const SchedulerConfig& config, const Schedule& schedule);
  PredictionType prediction_;
};

}  // namespace sdxlb
