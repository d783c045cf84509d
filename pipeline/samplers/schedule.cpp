// make_schedule: each class's set_timesteps of diffusers 0.42.1, number type by number type.
//
// numpy pieces reproduced here: linspace (arange(num) * step + start, the last entry = stop), arange with a
// float step (length ceil((stop - start) / step), entries start + i * ((start + step) - start)), round
// (half to even: nearbyint), astype(int64) and torch's .to(int64) (truncation toward zero).
#include "pipeline/samplers/schedule.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <string>

#include <boost/math/distributions/beta.hpp>

#include "pipeline/samplers/schedule_math.h"

namespace sdxlb {
namespace {

/// numpy.linspace(start, stop, num) in float64 (numpy 2.x's algorithm).
std::vector<double> numpy_linspace(double start, double stop, int64_t num) {
  std::vector<double> y(static_cast<size_t>(std::max<int64_t>(num, 0)));
  const int64_t div = num - 1;
  const double delta = stop - start;
  if (div > 0) {
    const double step = delta / static_cast<double>(div);
    for (int64_t i = 0; i < num; ++i) {
      const auto fi = static_cast<double>(i);
      y[static_cast<size_t>(i)] = step == 0 ? fi / static_cast<double>(div) * delta : fi * step;
    }
  } else {
    for (int64_t i = 0; i < num; ++i) y[static_cast<size_t>(i)] = static_cast<double>(i) * delta;
  }
  for (auto& v : y) v += start;
  if (num > 1) y.back() = stop;
  return y;
}

/// numpy.arange(start, stop, step) in float64.
std::vector<double> numpy_arange(double start, double stop, double step) {
  const double len = std::ceil((stop - start) / step);
  const auto length = len > 0 ? static_cast<int64_t>(len) : 0;
  const double delta = (start + step) - start;
  std::vector<double> out(static_cast<size_t>(length));
  for (int64_t i = 0; i < length; ++i)
    out[static_cast<size_t>(i)] =
        i == 0 ? start : (i == 1 ? start + step : start + static_cast<double>(i) * delta);
  return out;
}

/// scipy.stats.beta.ppf(q, a, b): Boost.Math's quantile with scipy's policy (no promotion to long double,
/// 400 root iterations), and scipy's own answers at q = 0 and 1.
double beta_ppf(double q, double a, double b) {
  using namespace boost::math::policies;
  using ScipyPolicy = policy<promote_float<false>, promote_double<false>, max_root_iterations<400>>;
  if (!(q > 0)) return 0.0;
  if (!(q < 1)) return 1.0;
  try {
    return boost::math::quantile(boost::math::beta_distribution<double, ScipyPolicy>(a, b), q);
  } catch (const std::exception&) {  // not for a = b = 0.6 and 0 < q < 1; no exception leaves this file
    return std::nan("");
  }
}

/// _convert_to_karras / _convert_to_exponential / _convert_to_beta: `n` sigmas from sigma_max down to
/// sigma_min, float64.
std::vector<double> converted_sigmas(SigmaSchedule schedule, double sigma_min, double sigma_max, int64_t n) {
  std::vector<double> out;
  switch (schedule) {
    case SigmaSchedule::kDefault:
      break;
    case SigmaSchedule::kKarras: {
      const double rho = 7.0;
      const double min_inv_rho = std::pow(sigma_min, 1 / rho);
      const double max_inv_rho = std::pow(sigma_max, 1 / rho);
      for (const double r : numpy_linspace(0, 1, n))
        out.push_back(std::pow(max_inv_rho + r * (min_inv_rho - max_inv_rho), rho));
      break;
    }
    case SigmaSchedule::kExponential:
      for (const double v : numpy_linspace(std::log(sigma_max), std::log(sigma_min), n))
        out.push_back(std::exp(v));
      break;
    case SigmaSchedule::kBeta:
      for (const double r : numpy_linspace(0, 1, n)) {
        const double ppf = beta_ppf(1 - r, 0.6, 0.6);
        out.push_back(sigma_min + (ppf * (sigma_max - sigma_min)));
      }
      break;
  }
  return out;
}

std::vector<double> to_double(const std::vector<float>& x) {
  return std::vector<double>(x.begin(), x.end());
}

float max_of(const std::vector<float>& x) {
  return *std::max_element(x.begin(), x.end());
}

// EulerDiscreteScheduler.set_timesteps (EulerAncestral's is the same with none of the sigma options).
void euler_schedule(const SchedulerConfig& c, int64_t n, Schedule* s) {
  const std::vector<float> table = training_sigmas(s->alphas_cumprod);
  const std::vector<double> table_d = to_double(table);
  std::vector<double> sigmas;
  for (const double v :
       euler_spaced_timesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset)) {
    const auto t32 = static_cast<float>(v);
    s->timesteps.push_back(t32);
    sigmas.push_back(numpy_interp_on_grid(t32, table_d));
  }
  if (c.sigma_schedule != SigmaSchedule::kDefault) {
    // The range is that of the sigmas at the spaced timesteps, unless the config sets it.
    const double sigma_min = c.sigma_min.value_or(sigmas.back());
    const double sigma_max = c.sigma_max.value_or(sigmas.front());
    sigmas = converted_sigmas(c.sigma_schedule, sigma_min, sigma_max, n);
    const std::vector<float> log_sigmas = log_training_sigmas(table);
    s->timesteps.clear();
    for (const double sigma : sigmas)
      s->timesteps.push_back(static_cast<float>(sigma_to_timestep(sigma, log_sigmas)));
  }
  for (const double v : sigmas) s->sigmas.push_back(static_cast<float>(v));
  s->sigmas.push_back(c.final_sigmas_type == FinalSigmas::kZero ? 0.0f : table.front());
  if (c.timestep_type == TimestepType::kContinuous && c.prediction_type == PredictionType::kVPrediction) {
    // EDM-style conditioning: the UNet gets 0.25 * log(sigma), computed in float32.
    for (size_t i = 0; i < s->timesteps.size(); ++i) s->timesteps[i] = 0.25f * std::log(s->sigmas[i]);
  }
  const float max_sigma = max_of(s->sigmas);
  s->init_noise_sigma =
      c.timestep_spacing == TimestepSpacing::kLeading ? std::sqrt(max_sigma * max_sigma + 1.0f) : max_sigma;
}

// DPMSolverMultistep's last_timestep: N less the training steps whose log-SNR lambda_t (torch float32:
// log(sqrt(ac)) - log(sqrt(1 - ac))) lies below lambda_min_clipped (torch.searchsorted on the flipped,
// increasing lambdas).
int64_t dpm_last_timestep(const SchedulerConfig& c, const std::vector<float>& ac) {
  const int64_t n = static_cast<int64_t>(ac.size());
  if (!(c.lambda_min_clipped > -std::numeric_limits<double>::infinity())) return n;
  std::vector<double> flipped(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) {
    const float lambda = std::log(std::sqrt(ac[i])) - std::log(std::sqrt(1.0f - ac[i]));
    flipped[ac.size() - 1 - i] = lambda;
  }
  const auto clipped =
      std::lower_bound(flipped.begin(), flipped.end(), c.lambda_min_clipped) - flipped.begin();
  return n - static_cast<int64_t>(clipped);
}

// DPMSolverMultistepScheduler.set_timesteps and UniPCMultistepScheduler.set_timesteps.
void multistep_schedule(const SchedulerConfig& c, int64_t n, Schedule* s) {
  const bool dpm = c.scheduler_class == SchedulerClass::kDpmSolverMultistep;
  const int64_t N = c.num_train_timesteps;
  const std::vector<float> table = training_sigmas(s->alphas_cumprod);
  const int64_t last = dpm ? dpm_last_timestep(c, s->alphas_cumprod) : N;
  std::vector<int64_t> t;
  switch (c.timestep_spacing) {
    case TimestepSpacing::kLinspace: {
      // np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
      const std::vector<double> lin = numpy_linspace(0, static_cast<double>(last - 1), n + 1);
      for (int64_t i = n; i >= 1; --i)
        t.push_back(static_cast<int64_t>(std::nearbyint(lin[static_cast<size_t>(i)])));
      break;
    }
    case TimestepSpacing::kLeading: {
      // (arange(n + 1) * (last // (n + 1))).round()[::-1][:-1] + steps_offset
      const int64_t ratio = last / (n + 1);
      for (int64_t i = n; i >= 1; --i) t.push_back(i * ratio + c.steps_offset);
      break;
    }
    case TimestepSpacing::kTrailing: {
      // np.arange(last, 0, -N / n).round() - 1
      for (const double v :
           numpy_arange(static_cast<double>(last), 0, -(static_cast<double>(N) / static_cast<double>(n))))
        t.push_back(static_cast<int64_t>(std::nearbyint(v)) - 1);
      break;
    }
  }
  std::vector<double> sigmas;
  double sigma_last = c.final_sigmas_type == FinalSigmas::kZero ? 0.0 : table.front();
  if (c.sigma_schedule == SigmaSchedule::kDefault) {
    const std::vector<double> table_d = to_double(table);
    for (const int64_t ti : t) sigmas.push_back(numpy_interp_on_grid(static_cast<double>(ti), table_d));
  } else {
    // The range is the training table's unless the config sets it (DPM reads sigma_min/sigma_max from its
    // config too when a file carries them, though they are not its __init__ keys).
    const double sigma_min = c.sigma_min.value_or(table.front());
    const double sigma_max = c.sigma_max.value_or(table.back());
    sigmas = converted_sigmas(c.sigma_schedule, sigma_min, sigma_max, n);
    const std::vector<float> log_sigmas = log_training_sigmas(table);
    // Karras timesteps are rounded (DPM: not for squaredcos_cap_v2); the others are cast to int64 as they
    // are, which truncates.
    const bool round = c.sigma_schedule == SigmaSchedule::kKarras &&
                       !(dpm && c.beta_schedule == BetaSchedule::kSquaredCosCapV2);
    t.clear();
    for (const double sigma : sigmas) {
      const double ts = sigma_to_timestep(sigma, log_sigmas);
      const double v = round ? std::nearbyint(ts) : ts;  // torch's int64 cast truncates toward zero
      t.push_back(std::isfinite(v) ? static_cast<int64_t>(v) : 0);
    }
    // UniPC's sigma_min final sigma is the last converted sigma, DPM's the training table's smallest.
    if (!dpm && c.final_sigmas_type == FinalSigmas::kSigmaMin) sigma_last = sigmas.back();
  }
  for (const int64_t ti : t) s->timesteps.push_back(static_cast<float>(ti));
  for (const double v : sigmas) s->sigmas.push_back(static_cast<float>(v));
  s->sigmas.push_back(static_cast<float>(sigma_last));
}

// DDIMScheduler.set_timesteps.
void ddim_schedule(const SchedulerConfig& c, int64_t n, Schedule* s) {
  const int64_t N = c.num_train_timesteps;
  switch (c.timestep_spacing) {
    case TimestepSpacing::kLinspace: {
      // np.linspace(0, N - 1, n).round()[::-1]
      const std::vector<double> lin = numpy_linspace(0, static_cast<double>(N - 1), n);
      for (int64_t i = n - 1; i >= 0; --i)
        s->timesteps.push_back(
            static_cast<float>(static_cast<int64_t>(std::nearbyint(lin[static_cast<size_t>(i)]))));
      break;
    }
    case TimestepSpacing::kLeading: {
      // (arange(n) * (N // n)).round()[::-1] + steps_offset
      const int64_t ratio = N / n;
      for (int64_t i = n - 1; i >= 0; --i)
        s->timesteps.push_back(static_cast<float>(i * ratio + c.steps_offset));
      break;
    }
    case TimestepSpacing::kTrailing: {
      // np.round(np.arange(N, 0, -N / n)) - 1
      for (const double v :
           numpy_arange(static_cast<double>(N), 0, -(static_cast<double>(N) / static_cast<double>(n))))
        s->timesteps.push_back(static_cast<float>(static_cast<int64_t>(std::nearbyint(v)) - 1));
      break;
    }
  }
  s->final_alpha_cumprod = c.set_alpha_to_one ? 1.0f : s->alphas_cumprod.front();
}

}  // namespace

double sigma_to_timestep(double sigma, const std::vector<float>& log_sigmas) {
  const auto n = static_cast<int64_t>(log_sigmas.size());
  if (n < 2) return 0.0;
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // np.cumsum(dists >= 0).argmax(): the last index whose log sigma is <= log_sigma (0 when none).
  int64_t low = 0;
  for (int64_t i = 0; i < n; ++i)
    if (log_sigma - static_cast<double>(log_sigmas[static_cast<size_t>(i)]) >= 0) low = i;
  low = std::min(low, n - 2);
  const int64_t high = low + 1;
  const float lo = log_sigmas[static_cast<size_t>(low)];
  const float hi = log_sigmas[static_cast<size_t>(high)];
  const float span = lo - hi;  // float32 - float32 in numpy: a float32 result
  double w = (static_cast<double>(lo) - log_sigma) / static_cast<double>(span);
  if (w < 0) {
    w = 0;
  } else if (w > 1) {
    w = 1;
  }
  return (1 - w) * static_cast<double>(low) + w * static_cast<double>(high);
}

std::vector<float> log_training_sigmas(const std::vector<float>& training_sigmas) {
  std::vector<float> out(training_sigmas.size());
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<float>(std::log(static_cast<double>(training_sigmas[i])));
  return out;
}

StatusOr<Schedule> make_schedule(const SchedulerConfig& config, int64_t num_inference_steps) {
  const int64_t n = num_inference_steps;
  if (n < 1 || n > config.num_train_timesteps)
    return invalid_argument(std::string(to_string(config.scheduler_class)) + ": " + std::to_string(n) +
                            " inference steps asked for; use between 1 and num_train_timesteps (" +
                            std::to_string(config.num_train_timesteps) + ")");
  Schedule s;
  s.alphas_cumprod = training_alphas_cumprod(config.num_train_timesteps, config.beta_start, config.beta_end,
                                             config.beta_schedule, config.rescale_betas_zero_snr,
                                             /*pin_last=*/config.scheduler_class != SchedulerClass::kDdim);
  switch (config.scheduler_class) {
    case SchedulerClass::kEulerDiscrete:
    case SchedulerClass::kEulerAncestralDiscrete:
      euler_schedule(config, n, &s);
      break;
    case SchedulerClass::kDpmSolverMultistep:
    case SchedulerClass::kUniPCMultistep:
      multistep_schedule(config, n, &s);
      break;
    case SchedulerClass::kDdim:
      ddim_schedule(config, n, &s);
      break;
  }
  if (s.timesteps.empty())  // DPM: every training step's log-SNR lies below lambda_min_clipped
    return invalid_argument(
        config.source + ": key \"lambda_min_clipped\" is " + std::to_string(config.lambda_min_clipped) +
        ", below which lies every training timestep, so no step is left; use -Infinity (the "
        "default) or a lower value");
  return s;
}

}  // namespace sdxlb
