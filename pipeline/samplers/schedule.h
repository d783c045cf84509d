// Schedule: the arrays a diffusers scheduler's set_timesteps(num_inference_steps) gives, for the five
// classes of scheduler_config.h, computed without LibTorch.
//
// Each class's set_timesteps is followed with numpy's and torch's number types (float64 arithmetic,
// round-half-to-even, int64 casts, float32 storage; see schedule_math.h). The spacings differ between
// classes ("leading" is arange(n) × (N // n) for Euler and DDIM but arange(n + 1) × (N // (n + 1)) without
// its 0 for DPM and UniPC), and so do Karras/exponential/beta sigmas (Euler takes their range from the
// sigmas at the spaced timesteps, DPM from the training table; DPM and UniPC round the timesteps, or cast
// them to int64). Where numpy's vectorised log/exp/pow differ from the C library in the last bit, the
// results differ by at most a float32 ulp, and an integer timestep by 1 where its value lies that close to
// a rounding boundary.
//
// Pure function; a Schedule is a plain value.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

struct Schedule {
  /// float32 values of scheduler.timesteps (int64 for DPM, UniPC and DDIM: whole numbers). One per step.
  std::vector<float> timesteps;
  /// scheduler.sigmas as diffusers holds them (float32): num_steps() + 1 entries for Euler, EulerAncestral,
  /// DPM and UniPC, decreasing, the last one 0 or the smallest sigma (final_sigmas_type); empty for DDIM.
  std::vector<float> sigmas;
  /// The training table's alphas_cumprod (num_train_timesteps values, float32 as torch holds it).
  std::vector<float> alphas_cumprod;
  /// The initial latents are standard-normal noise times this: Euler and EulerAncestral σ_max, or
  /// sqrt(σ_max² + 1) with "leading" spacing; 1 for DPM, UniPC and DDIM.
  float init_noise_sigma = 1.0f;
  /// DDIM's alphas_cumprod before the first training step: 1 with set_alpha_to_one, else
  /// alphas_cumprod[0]. 1 for the other classes (unused there).
  float final_alpha_cumprod = 1.0f;

  /// Number of denoising steps = timesteps.size(). Normally the count asked for, but like diffusers,
  /// "trailing" spacing yields one more for some counts (e.g. 61 of 1000, whose last timestep is then -1),
  /// because numpy's arange overshoots; Karras, exponential and beta sigmas never do.
  int64_t num_steps() const { return static_cast<int64_t>(timesteps.size()); }
};

/// What `config`'s class gives for set_timesteps(num_inference_steps).
/// Errors: kInvalidArgument when num_inference_steps < 1 or > num_train_timesteps, or when DPM's
/// lambda_min_clipped leaves no timestep.
StatusOr<Schedule> make_schedule(const SchedulerConfig& config, int64_t num_inference_steps);

/// diffusers' _sigma_to_t: the fractional training timestep whose sigma is `sigma`, interpolating log σ
/// between neighbours of `log_sigmas` (the float32 logs of training_sigmas(), in training order), clamped
/// to [0, N - 1]. Exposed for tests and for samplers that need σ → t.
double sigma_to_timestep(double sigma, const std::vector<float>& log_sigmas);

/// The float32 logs of the training sigmas, as numpy's np.log(float32 array) gives them (correctly rounded
/// here; numpy's vectorised log may differ in the last bit).
std::vector<float> log_training_sigmas(const std::vector<float>& training_sigmas);

}  // namespace sdxlb
