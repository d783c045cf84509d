// EulerSchedulerConfig and EulerSchedule: diffusers' EulerDiscreteScheduler (0.42.1) as SDXL uses it.
//
// The config comes from `scheduler/scheduler_config.json`. An EulerSchedule is the list of timesteps and
// sigmas for one step count, computed without LibTorch but with diffusers' own number types: the training
// table (betas, alphas_cumprod, sigmas) is float32 as torch holds it, and the inference timesteps and sigmas
// follow diffusers' numpy code (float64 arithmetic, stored as float32). The results match diffusers'
// tensors to float32 rounding (see euler_scheduler.cpp for the two places where torch's CPU kernels round
// differently from a correctly rounded float operation).
//
// The step on tensors is EulerSampler's (pipeline/samplers/euler_sampler.h; it needs LibTorch). Both types
// here are immutable values after creation and safe to share between threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "jobs/sampler_choice.h"                 // TimestepSpacing, FinalSigmas
#include "pipeline/samplers/scheduler_config.h"  // BetaSchedule, PredictionType, TimestepType

namespace sdxlb {

/// The keys of scheduler_config.json that the Euler scheduler uses. Defaults are diffusers' constructor
/// defaults, used when a key is absent or null.
struct EulerSchedulerConfig {
  std::string class_name;  ///< "_class_name" as written (may name another scheduler; the caller decides)
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::kLinear;
  PredictionType prediction_type = PredictionType::kEpsilon;
  TimestepSpacing timestep_spacing = TimestepSpacing::kLinspace;
  TimestepType timestep_type = TimestepType::kDiscrete;
  int64_t steps_offset =
      0;  ///< added to "leading" timesteps; ignored by the other spacings (as in diffusers)
  FinalSigmas final_sigmas_type = FinalSigmas::kZero;
  bool rescale_betas_zero_snr = false;

  /// Parses a scheduler_config.json object; `source` (the file path) prefixes every message.
  /// Errors: kDataLoss for a key of the wrong JSON type or a non-object; kInvalidArgument for a value that
  /// diffusers does not know or that is out of range (e.g. timestep_spacing "foo", beta_end 2); and
  /// kUnimplemented, naming the key, for options this port does not have (any beta_schedule but "linear"
  /// and "scaled_linear", use_karras_sigmas true, interpolation_type "log_linear", trained_betas, ...).
  static StatusOr<EulerSchedulerConfig> from_json(const nlohmann::json& json, const std::string& source);
};

/// The training table's alphas_cumprod (num_train_timesteps values), float32 as diffusers holds it
/// (with rescale_betas_zero_snr, the last one is 2^-24 as in diffusers).
std::vector<float> train_alphas_cumprod(const EulerSchedulerConfig& config);

/// The schedule for one inference run: what diffusers' set_timesteps(num_steps) gives.
class EulerSchedule {
 public:
  /// Computes the schedule. Errors: kInvalidArgument when num_steps < 1 or num_steps > num_train_timesteps.
  static StatusOr<EulerSchedule> create(const EulerSchedulerConfig& config, int64_t num_steps);

  /// Number of denoising steps = timesteps().size(). This is normally the num_steps asked for, but, like
  /// diffusers, "trailing" spacing yields one more for some counts (e.g. 61 of 1000; its last timestep is
  /// then -1), because numpy's arange overshoots.
  int64_t num_steps() const { return static_cast<int64_t>(timesteps_.size()); }
  /// The timestep given to the UNet at each step (float32 values as diffusers' `scheduler.timesteps`).
  const std::vector<float>& timesteps() const { return timesteps_; }
  /// num_steps() + 1 sigmas, decreasing; the last is 0 (or the smallest training sigma with
  /// final_sigmas_type "sigma_min").
  const std::vector<float>& sigmas() const { return sigmas_; }
  /// Initial latent = standard normal noise × this: sqrt(σ_max² + 1) for "leading", σ_max otherwise.
  float init_noise_sigma() const { return init_noise_sigma_; }
  PredictionType prediction_type() const { return prediction_type_; }

  /// σ of step i (0 <= i < num_steps(); out of range throws std::out_of_range).
  float sigma(int64_t i) const { return sigmas_.at(static_cast<size_t>(i)); }
  /// σ after step i.
  float sigma_next(int64_t i) const { return sigmas_.at(static_cast<size_t>(i) + 1); }
  /// Factor applied to the latents before the UNet at step i: 1 / sqrt(σ_i² + 1).
  double input_scale(int64_t i) const;
  /// The Euler step's dt at step i, σ_{i+1} − σ_i computed in float32 as diffusers does. For epsilon
  /// prediction the step is x + eps · dt.
  float step_coefficient(int64_t i) const;

 private:
  std::vector<float> timesteps_;
  std::vector<float> sigmas_;
  float init_noise_sigma_ = 1.0f;
  PredictionType prediction_type_ = PredictionType::kEpsilon;
};

}  // namespace sdxlb
