// NoiseLevel: diffusers' _sigma_to_alpha_sigma_t and the log-SNR λ of one σ, in float32 as diffusers computes
// them on 0-dim float32 tensors (DPMSolverMultistepScheduler, UniPCMultistepScheduler). Torch-free.
#pragma once

#include <cmath>

namespace sdxlb {

struct NoiseLevel {
  float alpha;   ///< 1 / sqrt(σ² + 1)
  float sigma;   ///< σ · alpha
  float lambda;  ///< log(alpha) − log(sigma); +inf at σ = 0
};

inline NoiseLevel noise_level(float s) {
  const float alpha = 1.0f / std::sqrt(s * s + 1.0f);
  const float sigma = s * alpha;
  return {alpha, sigma, std::log(alpha) - std::log(sigma)};
}

}  // namespace sdxlb
