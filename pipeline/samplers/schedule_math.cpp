// The number-type-exact building blocks (schedule_math.h). Moved unchanged from euler_scheduler.cpp, where
// they were measured bit for bit against diffusers; betas_for_alpha_bar is new.
#include "pipeline/samplers/schedule_math.h"

#include <algorithm>
#include <cmath>

namespace sdxlb {
namespace {

/// torch.cumprod on CPU: float32 in and out, accumulated in double.
std::vector<float> cumprod_f32(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  double acc = 1.0;
  for (size_t i = 0; i < x.size(); ++i) {
    acc *= static_cast<double>(x[i]);
    out[i] = static_cast<float>(acc);
  }
  return out;
}

std::vector<float> one_minus(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = 1.0f - x[i];
  return out;
}

/// diffusers' rescale_zero_terminal_snr(betas), float32 throughout.
std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas) {
  std::vector<float> s = cumprod_f32(one_minus(betas));
  for (auto& v : s) v = std::sqrt(v);
  const float s0 = s.front();
  const float s_last = s.back();
  const float scale = s0 / (s0 - s_last);
  for (auto& v : s) {
    v -= s_last;
    v *= scale;
    v = v * v;  // alphas_bar
  }
  std::vector<float> alphas(s.size());
  alphas[0] = s[0];
  for (size_t i = 1; i < s.size(); ++i) alphas[i] = s[i] / s[i - 1];
  return one_minus(alphas);
}

/// diffusers' betas_for_alpha_bar(n) with the "cosine" transform and max_beta 0.999: Python float64 math
/// (the C library's cos, as Python's math.cos), then torch.tensor(betas, dtype=float32).
std::vector<float> betas_for_alpha_bar(int64_t n) {
  const double pi = 3.141592653589793;  // math.pi
  auto alpha_bar = [&](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * pi / 2);
    return c * c;  // ** 2: Python's pow(x, 2.0) is the correctly rounded square
  };
  std::vector<float> betas(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / static_cast<double>(n);
    const double t2 = static_cast<double>(i + 1) / static_cast<double>(n);
    betas[static_cast<size_t>(i)] = static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return betas;
}

}  // namespace

std::vector<float> torch_linspace_f32(double start_d, double end_d, int64_t n) {
  const auto start = static_cast<float>(start_d);
  const auto end = static_cast<float>(end_d);
  if (n == 1) return {start};
  const float step = (end - start) / static_cast<float>(n - 1);
  const int64_t halfway = n / 2;
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    out[static_cast<size_t>(i)] = i < halfway ? std::fma(step, static_cast<float>(i), start)
                                              : std::fma(-step, static_cast<float>(n - i - 1), end);
  }
  return out;
}

std::vector<float> training_alphas_cumprod(int64_t num_train_timesteps, double beta_start, double beta_end,
                                           BetaSchedule schedule, bool rescale_betas_zero_snr,
                                           bool pin_last) {
  std::vector<float> betas;
  switch (schedule) {
    case BetaSchedule::kLinear:
      betas = torch_linspace_f32(beta_start, beta_end, num_train_timesteps);
      break;
    case BetaSchedule::kScaledLinear:
      // linspace(beta_start ** 0.5, beta_end ** 0.5) ** 2; Python's ** 0.5 is a correctly rounded sqrt here.
      betas = torch_linspace_f32(std::sqrt(beta_start), std::sqrt(beta_end), num_train_timesteps);
      for (auto& b : betas) b = b * b;
      break;
    case BetaSchedule::kSquaredCosCapV2:
      betas = betas_for_alpha_bar(num_train_timesteps);
      break;
  }
  if (rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  std::vector<float> alphas_cumprod = cumprod_f32(one_minus(betas));
  // Close to 0 without being 0, so that the first sigma is finite (diffusers' choice: fp16's smallest
  // subnormal). DDIMScheduler does not do this: its last alphas_cumprod stays 0.
  if (rescale_betas_zero_snr && pin_last) alphas_cumprod.back() = std::ldexp(1.0f, -24);
  return alphas_cumprod;
}

std::vector<float> training_sigmas(const std::vector<float>& alphas_cumprod) {
  std::vector<float> out(alphas_cumprod.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = std::sqrt((1.0f - alphas_cumprod[i]) / alphas_cumprod[i]);
  return out;
}

double numpy_interp_on_grid(double x, const std::vector<double>& fp) {
  const auto last = static_cast<double>(fp.size() - 1);
  if (x < 0.0) return fp.front();
  if (x >= last) return fp.back();
  const double j = std::floor(x);
  const auto k = static_cast<size_t>(j);
  if (x == j) return fp[k];
  const double slope = (fp[k + 1] - fp[k]) / 1.0;  // (dy[j+1] - dy[j]) / (dx[j+1] - dx[j])
  return slope * (x - j) + fp[k];
}

std::vector<double> euler_spaced_timesteps(TimestepSpacing spacing, int64_t num_train_timesteps,
                                           int64_t steps, int64_t steps_offset) {
  const int64_t n_train = num_train_timesteps;
  std::vector<double> t;
  switch (spacing) {
    case TimestepSpacing::kLinspace: {
      // np.linspace(0, N - 1, steps): arange(steps) * ((N - 1) / (steps - 1)), last = N - 1; reversed.
      // A single step is [0]: numpy multiplies arange(1) by the span instead of dividing by 0.
      const double stop = static_cast<double>(n_train - 1);
      const double step = steps > 1 ? stop / static_cast<double>(steps - 1) : 0.0;
      for (int64_t i = 0; i < steps; ++i) t.push_back(static_cast<double>(i) * step);
      if (steps > 1) t.back() = stop;
      std::reverse(t.begin(), t.end());
      break;
    }
    case TimestepSpacing::kLeading: {
      // (arange(steps) * (N // steps)).round()[::-1] + steps_offset (the offset is added in float32, exact).
      const int64_t ratio = n_train / steps;
      for (int64_t i = steps - 1; i >= 0; --i) t.push_back(static_cast<double>(i * ratio + steps_offset));
      break;
    }
    case TimestepSpacing::kTrailing: {
      // np.arange(N, 0, -N / steps).round() - 1. numpy's arange takes its length from ceil(-N / -ratio)
      // and its values from start + i * ((start + step) - start), so reproduce both.
      const double start = static_cast<double>(n_train);
      const double step = -(start / static_cast<double>(steps));
      const auto length = static_cast<int64_t>(std::ceil((0.0 - start) / step));
      const double delta = (start + step) - start;
      for (int64_t i = 0; i < length; ++i) {
        const double v = i == 0 ? start : (i == 1 ? start + step : start + static_cast<double>(i) * delta);
        t.push_back(std::nearbyint(v) - 1.0);  // numpy rounds half to even, as nearbyint does by default
      }
      break;
    }
  }
  return t;
}

}  // namespace sdxlb
