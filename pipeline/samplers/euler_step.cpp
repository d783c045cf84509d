#include "pipeline/samplers/euler_step.h"

#include <cmath>
#include <string>

#include <ATen/ATen.h>

namespace sdxlb {
namespace {

/// A 0-dim float32 CPU tensor: what indexing diffusers' `scheduler.sigmas` gives.
at::Tensor cpu_scalar(double v) {
  return at::scalar_tensor(v, at::TensorOptions().dtype(at::kFloat));
}

Status check_sigma(const char* name, double v, bool must_be_positive) {
  if (std::isfinite(v) && (must_be_positive ? v > 0.0 : v >= 0.0)) return Status::ok();
  return invalid_argument(std::string("Euler step: ") + name + " is " + std::to_string(v) +
                          "; it must be finite and " + (must_be_positive ? "> 0" : ">= 0") +
                          " (take it from EulerSchedule::sigmas())");
}

}  // namespace

StatusOr<at::Tensor> euler_scale_model_input(const at::Tensor& x, double sigma) {
  SDXLB_RETURN_IF_ERROR(check_sigma("sigma", sigma, false));
  try {
    const at::Tensor s = cpu_scalar(sigma);
    return x / (s.pow(2) + 1).pow(0.5);
  } catch (const c10::Error& e) {
    return invalid_argument("Euler scale_model_input on a " + std::string(x.toString()) +
                            " tensor failed: " + e.what_without_backtrace());
  }
}

StatusOr<at::Tensor> euler_step(const at::Tensor& x, const at::Tensor& model_output, double sigma,
                                double sigma_next, PredictionType prediction_type) {
  SDXLB_RETURN_IF_ERROR(check_sigma("sigma", sigma, true));
  SDXLB_RETURN_IF_ERROR(check_sigma("sigma_next", sigma_next, false));
  try {
    const at::Tensor sample = x.to(at::kFloat);
    // With s_churn = 0 diffusers' sigma_hat = sigma * (0 + 1) is sigma itself.
    const at::Tensor s = cpu_scalar(sigma);
    at::Tensor pred_original;
    if (prediction_type == PredictionType::kEpsilon) {
      pred_original = sample - s * model_output;
    } else {
      pred_original = model_output * (-s / (s.pow(2) + 1).pow(0.5)) + sample / (s.pow(2) + 1);
    }
    const at::Tensor derivative = (sample - pred_original) / s;
    const at::Tensor dt = cpu_scalar(sigma_next) - s;
    return (sample + derivative * dt).to(model_output.scalar_type());
  } catch (const c10::Error& e) {
    return invalid_argument("Euler step (" + std::string(to_string(prediction_type)) + ") on sample " +
                            x.toString() + " and model output " + model_output.toString() +
                            " failed: " + e.what_without_backtrace());
  }
}

StatusOr<at::Tensor> euler_step(const at::Tensor& x, const at::Tensor& model_output,
                                const EulerSchedule& schedule, int64_t i) {
  if (i < 0 || i >= schedule.num_steps())
    return invalid_argument("Euler step: step index " + std::to_string(i) + " is outside the schedule's " +
                            std::to_string(schedule.num_steps()) + " steps");
  return euler_step(x, model_output, schedule.sigma(i), schedule.sigma_next(i), schedule.prediction_type());
}

}  // namespace sdxlb
