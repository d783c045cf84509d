// The Euler schedule, mirroring diffusers 0.42.1 `EulerDiscreteScheduler.__init__` and `set_timesteps`
// number type by number type.
//
// Where diffusers computes in torch float32 we compute in float, and where it uses numpy float64 we use
// double, so that almost every value is bit-identical. The exceptions, measured against diffusers on an
// AVX-512 machine, stay within 1 float32 ulp:
//  - torch's CPU sqrt (MKL VML) is faithfully but not correctly rounded; we use the correctly rounded
//    std::sqrt. This touches the sigma table, init_noise_sigma and the rescale_betas_zero_snr path.
//  - torch's CPU linspace is `start + step * i` (and `end - step * (n - 1 - i)` past the middle), which the
//    compiler contracts into a fused multiply-add in torch's AVX2/AVX-512 kernels, the ones any recent x86
//    CPU runs. We use std::fma to get the same bits.
// The cumulative product is accumulated in double and stored as float, as torch's CPU cumprod does.
#include "pipeline/samplers/euler_scheduler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "pipeline/io/config_reader.h"

namespace sdxlb {
namespace {

/// One accepted spelling of an enum key. `implemented` false: diffusers knows it, this port does not.
template <typename E>
struct Choice {
  const char* name;
  E value;
  bool implemented;
};

std::string quoted_list(const char* const* names, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += (i ? ", \"" : "\"") + std::string(names[i]) + "\"";
  return out;
}

/// Reads the string key `key` into `*out` (kept as is when absent or null). Wrong JSON types are recorded
/// in `reader`; unimplemented values are returned as kUnimplemented, unknown ones with `unknown_code`.
template <typename E, size_t N>
Status parse_choice(ConfigReader& reader, const std::string& key, const Choice<E> (&choices)[N], E* out,
                    StatusCode unknown_code = StatusCode::kInvalidArgument) {
  if (!reader.has(key)) return Status::ok();
  const auto text = reader.get<std::string>(key, "");
  if (!reader.status().is_ok()) return Status::ok();  // wrong type: reported once by the caller
  const char* supported[N];
  size_t n_supported = 0;
  for (const auto& c : choices)
    if (c.implemented) supported[n_supported++] = c.name;
  for (const auto& c : choices) {
    if (text != c.name) continue;
    if (!c.implemented)
      return unimplemented(reader.source() + ": key \"" + key + "\" is \"" + text +
                           "\", which this Euler scheduler does not implement (supported: " +
                           quoted_list(supported, n_supported) +
                           "); use a model whose scheduler_config.json uses a supported value");
    *out = c.value;
    return Status::ok();
  }
  return Status(unknown_code, reader.source() + ": key \"" + key + "\" is \"" + text +
                                  "\", which this Euler scheduler does not know; use one of " +
                                  quoted_list(supported, n_supported));
}

/// A boolean option that must be false here (diffusers' sigma reshaping options).
Status require_false(ConfigReader& reader, const std::string& key, const std::string& what) {
  if (!reader.get<bool>(key, false)) return Status::ok();
  return unimplemented(reader.source() + ": key \"" + key + "\" is true, but " + what +
                       " are not implemented; set it to false (the schedule then differs from the model's)");
}

/// torch.linspace(start, end, n, dtype=float32) on CPU, bit for bit (see the file comment).
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

/// np.interp(x, arange(len(fp)), fp) in float64, with numpy's clamping at both ends.
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

/// Timesteps as float64 before diffusers casts them to float32, per spacing.
std::vector<double> spaced_timesteps(const EulerSchedulerConfig& c, int64_t steps) {
  const int64_t n_train = c.num_train_timesteps;
  std::vector<double> t;
  switch (c.timestep_spacing) {
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
      for (int64_t i = steps - 1; i >= 0; --i) t.push_back(static_cast<double>(i * ratio + c.steps_offset));
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

}  // namespace

const char* to_string(PredictionType value) {
  return value == PredictionType::kEpsilon ? "epsilon" : "v_prediction";
}

const char* to_string(TimestepSpacing value) {
  switch (value) {
    case TimestepSpacing::kLinspace:
      return "linspace";
    case TimestepSpacing::kLeading:
      return "leading";
    case TimestepSpacing::kTrailing:
      return "trailing";
  }
  return "?";
}

StatusOr<EulerSchedulerConfig> EulerSchedulerConfig::from_json(const nlohmann::json& json,
                                                               const std::string& source) {
  if (!json.is_object())
    return data_loss(source + ": expected a JSON object (a diffusers scheduler_config.json), found " +
                     std::string(json.type_name()));
  static const Choice<BetaSchedule> kBetaSchedules[] = {{"linear", BetaSchedule::kLinear, true},
                                                        {"scaled_linear", BetaSchedule::kScaledLinear, true},
                                                        {"squaredcos_cap_v2", BetaSchedule::kLinear, false}};
  static const Choice<PredictionType> kPredictionTypes[] = {
      {"epsilon", PredictionType::kEpsilon, true},
      {"v_prediction", PredictionType::kVPrediction, true},
      {"sample", PredictionType::kEpsilon, false},
      {"original_sample", PredictionType::kEpsilon, false}};
  static const Choice<TimestepSpacing> kSpacings[] = {{"linspace", TimestepSpacing::kLinspace, true},
                                                      {"leading", TimestepSpacing::kLeading, true},
                                                      {"trailing", TimestepSpacing::kTrailing, true}};
  static const Choice<TimestepType> kTimestepTypes[] = {{"discrete", TimestepType::kDiscrete, true},
                                                        {"continuous", TimestepType::kContinuous, true}};
  static const Choice<FinalSigmas> kFinalSigmas[] = {{"zero", FinalSigmas::kZero, true},
                                                     {"sigma_min", FinalSigmas::kSigmaMin, true}};
  static const Choice<int> kInterpolation[] = {{"linear", 0, true}, {"log_linear", 1, false}};

  ConfigReader r(json, source);
  EulerSchedulerConfig c;
  c.class_name = r.get<std::string>("_class_name", "");
  c.num_train_timesteps = r.get<int64_t>("num_train_timesteps", c.num_train_timesteps);
  c.beta_start = r.get<double>("beta_start", c.beta_start);
  c.beta_end = r.get<double>("beta_end", c.beta_end);
  c.steps_offset = r.get<int64_t>("steps_offset", c.steps_offset);
  c.rescale_betas_zero_snr = r.get<bool>("rescale_betas_zero_snr", false);
  int interpolation = 0;
  const Status choices[] = {
      // Any beta schedule but these two is "not implemented" (diffusers' own error for an unknown one).
      parse_choice(r, "beta_schedule", kBetaSchedules, &c.beta_schedule, StatusCode::kUnimplemented),
      parse_choice(r, "prediction_type", kPredictionTypes, &c.prediction_type),
      parse_choice(r, "timestep_spacing", kSpacings, &c.timestep_spacing),
      parse_choice(r, "timestep_type", kTimestepTypes, &c.timestep_type),
      parse_choice(r, "final_sigmas_type", kFinalSigmas, &c.final_sigmas_type),
      parse_choice(r, "interpolation_type", kInterpolation, &interpolation),
      require_false(r, "use_karras_sigmas", "Karras sigmas"),
      require_false(r, "use_exponential_sigmas", "exponential sigmas"),
      require_false(r, "use_beta_sigmas", "beta sigmas"),
  };
  SDXLB_RETURN_IF_ERROR(r.status());
  for (const auto& st : choices) SDXLB_RETURN_IF_ERROR(st);
  if (r.has("trained_betas"))
    return unimplemented(source +
                         ": key \"trained_betas\" is set, but explicit betas are not implemented; "
                         "use a scheduler_config.json with beta_start/beta_end/beta_schedule");

  auto bad = [&](const std::string& key, const std::string& what) {
    return invalid_argument(source + ": key \"" + key + "\" " + what);
  };
  if (c.num_train_timesteps < 1 || c.num_train_timesteps > (int64_t{1} << 24))
    return bad("num_train_timesteps", "is " + std::to_string(c.num_train_timesteps) +
                                          "; it must be between 1 and 16777216 (SDXL uses 1000)");
  for (const auto& [key, v] : {std::pair<const char*, double>{"beta_start", c.beta_start},
                               std::pair<const char*, double>{"beta_end", c.beta_end}}) {
    if (!(v >= 0.0 && v < 1.0))
      return bad(key, "is " + std::to_string(v) + "; betas must lie in [0, 1) (SDXL: 0.00085 to 0.012)");
  }
  if (c.steps_offset < 0 || c.steps_offset > c.num_train_timesteps)
    return bad("steps_offset", "is " + std::to_string(c.steps_offset) + "; it must lie in [0, " +
                                   std::to_string(c.num_train_timesteps) + "] (SDXL uses 1)");
  return c;
}

std::vector<float> train_alphas_cumprod(const EulerSchedulerConfig& config) {
  std::vector<float> betas;
  if (config.beta_schedule == BetaSchedule::kLinear) {
    betas = torch_linspace_f32(config.beta_start, config.beta_end, config.num_train_timesteps);
  } else {
    // linspace(beta_start ** 0.5, beta_end ** 0.5) ** 2; Python's ** 0.5 is a correctly rounded sqrt here.
    betas = torch_linspace_f32(std::sqrt(config.beta_start), std::sqrt(config.beta_end),
                               config.num_train_timesteps);
    for (auto& b : betas) b = b * b;
  }
  if (config.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  std::vector<float> alphas_cumprod = cumprod_f32(one_minus(betas));
  // Close to 0 without being 0, so that the first sigma is finite (diffusers' choice: fp16's smallest
  // subnormal).
  if (config.rescale_betas_zero_snr) alphas_cumprod.back() = std::ldexp(1.0f, -24);
  return alphas_cumprod;
}

StatusOr<EulerSchedule> EulerSchedule::create(const EulerSchedulerConfig& config, int64_t num_steps) {
  if (num_steps < 1 || num_steps > config.num_train_timesteps)
    return invalid_argument("Euler scheduler: " + std::to_string(num_steps) +
                            " inference steps asked for; use between 1 and num_train_timesteps (" +
                            std::to_string(config.num_train_timesteps) + ")");
  // Training sigmas, float32 as torch computes ((1 - ac) / ac) ** 0.5; numpy then interpolates in float64.
  const std::vector<float> ac = train_alphas_cumprod(config);
  std::vector<double> train_sigmas(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) train_sigmas[i] = std::sqrt((1.0f - ac[i]) / ac[i]);

  EulerSchedule s;
  s.prediction_type_ = config.prediction_type;
  const std::vector<double> t = spaced_timesteps(config, num_steps);
  for (const double v : t) {
    const auto t32 = static_cast<float>(v);
    s.timesteps_.push_back(t32);
    s.sigmas_.push_back(static_cast<float>(numpy_interp_on_grid(t32, train_sigmas)));
  }
  s.sigmas_.push_back(
      config.final_sigmas_type == FinalSigmas::kZero ? 0.0f : static_cast<float>(train_sigmas.front()));
  if (config.timestep_type == TimestepType::kContinuous &&
      config.prediction_type == PredictionType::kVPrediction) {
    // EDM-style conditioning: the UNet gets 0.25 * log(sigma), computed in float32.
    for (size_t i = 0; i < s.timesteps_.size(); ++i) s.timesteps_[i] = 0.25f * std::log(s.sigmas_[i]);
  }
  const float max_sigma = *std::max_element(s.sigmas_.begin(), s.sigmas_.end());
  s.init_noise_sigma_ = config.timestep_spacing == TimestepSpacing::kLeading
                            ? std::sqrt(max_sigma * max_sigma + 1.0f)
                            : max_sigma;
  return s;
}

double EulerSchedule::input_scale(int64_t i) const {
  const float s = sigma(i);
  return 1.0 / static_cast<double>(std::sqrt(s * s + 1.0f));
}

float EulerSchedule::step_coefficient(int64_t i) const {
  return sigma_next(i) - sigma(i);
}

}  // namespace sdxlb
