// The Euler scheduler's tensor operations: scaling the UNet input and the deterministic step (s_churn = 0).
//
// Both mirror diffusers' EulerDiscreteScheduler op for op, including its number types: σ values enter as
// 0-dim float32 CPU tensors (diffusers keeps `scheduler.sigmas` on the CPU), so type promotion, the
// kernels chosen and the rounding are the same as in diffusers on any device and dtype, and nothing waits
// on the GPU (a CPU scalar is passed to the kernel by value). Stateless; safe to call from any thread.
#pragma once

#include <ATen/core/Tensor.h>

#include "common/status.h"
#include "pipeline/samplers/euler_scheduler.h"

namespace sdxlb {

/// diffusers' scale_model_input: `x / sqrt(sigma² + 1)` with the divisor computed in float32. The result
/// has x's dtype and device. Errors: kInvalidArgument for a negative or non-finite sigma.
StatusOr<at::Tensor> euler_scale_model_input(const at::Tensor& x, double sigma);

/// One deterministic Euler step from `sigma` to `sigma_next` (pass float32 values from EulerSchedule).
/// Like diffusers, `x` is upcast to float32 and the result is cast to model_output's dtype.
///  - epsilon: x0 = x − σ·eps; then x + ((x − x0) / σ)·(σ_next − σ), which is x + eps·(σ_next − σ) up to
///    rounding.
///  - v_prediction: x0 = v·(−σ / sqrt(σ² + 1)) + x / (σ² + 1); then the same update.
/// Errors: kInvalidArgument for sigma <= 0, a non-finite sigma, or tensors whose shapes do not broadcast
/// (LibTorch's message included).
StatusOr<at::Tensor> euler_step(const at::Tensor& x, const at::Tensor& model_output, double sigma,
                                double sigma_next, PredictionType prediction_type);

/// Step i of `schedule`: euler_step with its sigma(i), sigma_next(i) and prediction type.
StatusOr<at::Tensor> euler_step(const at::Tensor& x, const at::Tensor& model_output,
                                const EulerSchedule& schedule, int64_t i);

}  // namespace sdxlb
