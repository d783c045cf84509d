// The building blocks of diffusers' schedules with diffusers' own number types, shared by schedule.cpp and
// euler_scheduler.cpp.
//
// Where diffusers computes in torch float32 these compute in float, and where it uses numpy float64 they
// use double, so that almost every value is bit-identical. The exceptions, measured against diffusers on an
// AVX-512 machine, stay within 1 float32 ulp:
//  - torch's CPU sqrt (MKL VML) is faithfully but not correctly rounded; we use the correctly rounded
//    std::sqrt. This touches the sigma table, init_noise_sigma and the rescale_betas_zero_snr path.
//  - torch's CPU linspace is `start + step * i` (and `end - step * (n - 1 - i)` past the middle), which the
//    compiler contracts into a fused multiply-add in torch's AVX2/AVX-512 kernels, the ones any recent x86
//    CPU runs. torch_linspace_f32 uses std::fma to get the same bits.
// The cumulative product is accumulated in double and stored as float, as torch's CPU cumprod does.
//
// Pure functions, torch-free.
#pragma once

#include <cstdint>
#include <vector>

#include "jobs/sampler_choice.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

/// torch.linspace(start, end, n, dtype=float32) on the CPU, bit for bit (see the file comment).
std::vector<float> torch_linspace_f32(double start, double end, int64_t n);

/// The training alphas_cumprod of a scheduler's __init__, float32 as torch holds it: betas by `schedule`
/// (squaredcos_cap_v2 through diffusers' betas_for_alpha_bar in float64), rescaled to zero terminal SNR
/// when asked, then cumprod(1 - betas). With `rescale_betas_zero_snr` and `pin_last` (every class we
/// implement but DDIM) the last value is 2^-24, so that the first sigma is finite.
std::vector<float> training_alphas_cumprod(int64_t num_train_timesteps, double beta_start, double beta_end,
                                           BetaSchedule schedule, bool rescale_betas_zero_snr, bool pin_last);

/// The training sigmas ((1 - ac) / ac) ** 0.5, float32 as torch computes them (correctly rounded sqrt).
std::vector<float> training_sigmas(const std::vector<float>& alphas_cumprod);

/// np.interp(x, arange(len(fp)), fp) in float64, with numpy's clamping at both ends.
double numpy_interp_on_grid(double x, const std::vector<double>& fp);

/// EulerDiscrete's and EulerAncestralDiscrete's set_timesteps spacing: the timesteps in float64, before
/// diffusers casts them to float32 ("trailing" may give one more than `steps`: numpy's arange overshoots).
std::vector<double> euler_spaced_timesteps(TimestepSpacing spacing, int64_t num_train_timesteps,
                                           int64_t steps, int64_t steps_offset);

}  // namespace sdxlb
