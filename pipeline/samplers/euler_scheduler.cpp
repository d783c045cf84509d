// The Euler schedule, mirroring diffusers 0.42.1 `EulerDiscreteScheduler.__init__` and `set_timesteps`
// number type by number type, with the building blocks of schedule_math.h (which says where torch's CPU
// kernels round differently from a correctly rounded float operation). schedule.h's make_schedule gives the
// same values for every EulerDiscreteScheduler config this reader accepts (tests/sampler_schedule_test.cpp).
#include "pipeline/samplers/euler_scheduler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "pipeline/io/config_reader.h"
#include "pipeline/samplers/schedule_math.h"

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

}  // namespace

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
  return training_alphas_cumprod(config.num_train_timesteps, config.beta_start, config.beta_end,
                                 config.beta_schedule, config.rescale_betas_zero_snr, /*pin_last=*/true);
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
  const std::vector<double> t = euler_spaced_timesteps(config.timestep_spacing, config.num_train_timesteps,
                                                       num_steps, config.steps_offset);
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
