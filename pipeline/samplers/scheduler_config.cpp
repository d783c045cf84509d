// SchedulerConfig: per class, the __init__ keys of diffusers 0.42.1 with their defaults (one table), a
// reader that checks every key the class has, and the from_config merge.
//
// What from_config carries (ConfigMixin.extract_init_dict): the new class's __init__ keys that the config
// holds, minus those listed in "_use_default_values" (the keys the folder's class filled with its own
// defaults because the file lacked them). `pipe.scheduler.config` also holds the file's keys that the
// folder's class does not have (registered as "hidden" keys), so they are carried too. Values are as the
// folder's class registered them: DPMSolverMultistep and UniPC rewrite some solver_type/algorithm_type
// values in their __init__ (register_to_config), and so do we.
#include "pipeline/samplers/scheduler_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "pipeline/io/config_reader.h"

namespace sdxlb {
namespace {

using nlohmann::json;

constexpr double kInf = std::numeric_limits<double>::infinity();

struct ClassRow {
  SchedulerClass cls;
  const char* name;
};
constexpr ClassRow kClasses[] = {
    {SchedulerClass::kEulerDiscrete, "EulerDiscreteScheduler"},
    {SchedulerClass::kEulerAncestralDiscrete, "EulerAncestralDiscreteScheduler"},
    {SchedulerClass::kDpmSolverMultistep, "DPMSolverMultistepScheduler"},
    {SchedulerClass::kDdim, "DDIMScheduler"},
    {SchedulerClass::kUniPCMultistep, "UniPCMultistepScheduler"},
};

// Every __init__ key of each class with its default (inspect.signature of diffusers 0.42.1).
const json& class_defaults(SchedulerClass c) {
  static const json common = {
      {"num_train_timesteps", 1000},    {"beta_start", 0.0001},     {"beta_end", 0.02},
      {"beta_schedule", "linear"},      {"trained_betas", nullptr}, {"prediction_type", "epsilon"},
      {"timestep_spacing", "linspace"}, {"steps_offset", 0},        {"rescale_betas_zero_snr", false}};
  static const json sigmas = {{"use_karras_sigmas", false},
                              {"use_exponential_sigmas", false},
                              {"use_beta_sigmas", false},
                              {"final_sigmas_type", "zero"}};
  static const json multistep = {
      {"solver_order", 2},       {"thresholding", false},         {"dynamic_thresholding_ratio", 0.995},
      {"sample_max_value", 1.0}, {"lower_order_final", true},     {"use_flow_sigmas", false},
      {"flow_shift", 1.0},       {"use_dynamic_shifting", false}, {"time_shift_type", "exponential"}};
  auto merged = [](std::initializer_list<const json*> parts, const json& own) {
    json out = json::object();
    for (const json* p : parts) out.update(*p);
    out.update(own);
    return out;
  };
  static const json euler = merged({&common, &sigmas}, {{"interpolation_type", "linear"},
                                                        {"sigma_min", nullptr},
                                                        {"sigma_max", nullptr},
                                                        {"timestep_type", "discrete"}});
  static const json euler_a = common;
  static const json dpm = merged({&common, &sigmas, &multistep}, {{"algorithm_type", "dpmsolver++"},
                                                                  {"solver_type", "midpoint"},
                                                                  {"euler_at_final", false},
                                                                  {"use_lu_lambdas", false},
                                                                  {"lambda_min_clipped", "-Infinity"},
                                                                  {"variance_type", nullptr}});
  static const json ddim = merged({&common}, {{"clip_sample", true},
                                              {"set_alpha_to_one", true},
                                              {"thresholding", false},
                                              {"dynamic_thresholding_ratio", 0.995},
                                              {"clip_sample_range", 1.0},
                                              {"sample_max_value", 1.0},
                                              {"timestep_spacing", "leading"}});
  static const json unipc = merged({&common, &sigmas, &multistep}, {{"predict_x0", true},
                                                                    {"solver_type", "bh2"},
                                                                    {"disable_corrector", json::array()},
                                                                    {"solver_p", nullptr},
                                                                    {"sigma_min", nullptr},
                                                                    {"sigma_max", nullptr},
                                                                    {"shift_terminal", nullptr}});
  switch (c) {
    case SchedulerClass::kEulerDiscrete:
      return euler;
    case SchedulerClass::kEulerAncestralDiscrete:
      return euler_a;
    case SchedulerClass::kDpmSolverMultistep:
      return dpm;
    case SchedulerClass::kDdim:
      return ddim;
    case SchedulerClass::kUniPCMultistep:
      return unipc;
  }
  return euler;
}

bool has_key(SchedulerClass c, const std::string& key) {
  return class_defaults(c).contains(key);
}

std::optional<SchedulerClass> class_from_name(const std::string& name) {
  for (const auto& row : kClasses)
    if (name == row.name) return row.cls;
  return std::nullopt;
}

std::string show(const json& v) {
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// "EulerDiscreteScheduler (euler), ..., DPMSolverMultistepScheduler (dpmpp_2m, dpmpp_2m_sde), ...".
std::string supported_classes() {
  std::string out;
  for (const auto& row : kClasses) {
    std::string ours;
    for (const auto& s : sampler_table())
      if (scheduler_class_of(s.name) == row.cls) ours += (ours.empty() ? "" : ", ") + std::string(s.id);
    out += (out.empty() ? "" : ", ") + std::string(row.name) + " (" + ours + ")";
  }
  return out;
}

/// One accepted spelling of an enum key. `implemented` false: diffusers knows it, this port does not.
template <typename E>
struct Choice {
  const char* name;
  E value;
  bool implemented;
};

/// Reads one class's keys from `eff` (its defaults overlaid with the file's keys), keeping the first error.
class ClassReader {
 public:
  ClassReader(SchedulerClass cls, const json& eff, const std::string& source)
      : cls_(cls), eff_(eff), r_(eff, source), source_(source) {}

  const char* class_name() const { return to_string(cls_); }
  bool ok() const { return st_.is_ok() && r_.status().is_ok(); }
  Status status() const { return !r_.status().is_ok() ? r_.status() : st_; }
  ConfigReader& reader() { return r_; }
  const json& value(const std::string& key) const { return eff_.at(key); }

  void fail(StatusCode code, const std::string& key, const std::string& what) {
    if (st_.is_ok()) st_ = Status(code, source_ + ": key \"" + key + "\" " + what);
  }

  /// The string key `key` as one of `choices`. Unknown values are `unknown_code`; values diffusers knows that
  /// we do not implement are kUnimplemented.
  template <typename E, size_t N>
  E choice(const std::string& key, const Choice<E> (&choices)[N], E fallback,
           StatusCode unknown_code = StatusCode::kInvalidArgument) {
    const std::string text = r_.get<std::string>(key, "");
    if (!ok()) return fallback;
    std::string supported;
    for (const auto& c : choices)
      if (c.implemented) supported += (supported.empty() ? "\"" : ", \"") + std::string(c.name) + "\"";
    for (const auto& c : choices) {
      if (text != c.name) continue;
      if (!c.implemented)
        fail(StatusCode::kUnimplemented, key,
             "is \"" + text + "\", which diffusers' " + class_name() +
                 " has but this port does not implement (supported: " + supported +
                 "); use a model whose scheduler_config.json has a supported value");
      return c.value;
    }
    fail(unknown_code, key,
         "is \"" + text + "\", which diffusers' " + class_name() + " does not know; use one of " + supported);
    return fallback;
  }

  /// A key whose only implemented value is `expected` (e.g. thresholding false, trained_betas null).
  void require(const std::string& key, const json& expected, const std::string& what) {
    const json& v = eff_.at(key);
    if (v == expected) return;
    if (expected.is_boolean() && !v.is_boolean()) {
      r_.fail(key, "has the wrong type (" + std::string(v.type_name()) + ")");
      return;
    }
    fail(StatusCode::kUnimplemented, key,
         "is " + show(v) + ", but " + what + " is not implemented in this port (only " + show(expected) +
             "); use a model whose scheduler_config.json has " + show(expected));
  }

  /// A float key; also accepts the strings "-Infinity", "Infinity" and "NaN" that Python's json writes.
  double number(const std::string& key, double fallback) {
    const json& v = eff_.at(key);
    if (v.is_string()) {
      const std::string s = v.get<std::string>();
      if (s == "-Infinity") return -kInf;
      if (s == "Infinity") return kInf;
      if (s == "NaN") return std::nan("");
    }
    return r_.get<double>(key, fallback);
  }

  std::optional<double> optional_positive(const std::string& key) {
    if (eff_.at(key).is_null()) return std::nullopt;
    const double v = number(key, 0.0);
    if (ok() && !(v > 0.0 && std::isfinite(v))) {
      fail(StatusCode::kInvalidArgument, key,
           "is " + show(eff_.at(key)) + "; it must be a number > 0 or null");
      return std::nullopt;
    }
    return v;
  }

 private:
  SchedulerClass cls_;
  const json& eff_;
  ConfigReader r_;
  std::string source_;
  Status st_;
};

const Choice<BetaSchedule> kBetaSchedules[] = {{"linear", BetaSchedule::kLinear, true},
                                               {"scaled_linear", BetaSchedule::kScaledLinear, true},
                                               {"squaredcos_cap_v2", BetaSchedule::kSquaredCosCapV2, true}};
const Choice<TimestepSpacing> kSpacings[] = {{"linspace", TimestepSpacing::kLinspace, true},
                                             {"leading", TimestepSpacing::kLeading, true},
                                             {"trailing", TimestepSpacing::kTrailing, true}};
const Choice<FinalSigmas> kFinalSigmas[] = {{"zero", FinalSigmas::kZero, true},
                                            {"sigma_min", FinalSigmas::kSigmaMin, true}};
const Choice<TimestepType> kTimestepTypes[] = {{"discrete", TimestepType::kDiscrete, true},
                                               {"continuous", TimestepType::kContinuous, true}};
const Choice<int> kInterpolation[] = {{"linear", 0, true}, {"log_linear", 1, false}};

// prediction_type: what each class's step knows. EulerAncestral raises for "sample" in its step; Euler also
// takes "original_sample"; the multistep classes "flow_prediction" (with flow sigmas only).
PredictionType read_prediction(ClassReader& r, SchedulerClass c) {
  static const Choice<PredictionType> euler[] = {{"epsilon", PredictionType::kEpsilon, true},
                                                 {"v_prediction", PredictionType::kVPrediction, true},
                                                 {"sample", PredictionType::kEpsilon, false},
                                                 {"original_sample", PredictionType::kEpsilon, false}};
  static const Choice<PredictionType> euler_a[] = {{"epsilon", PredictionType::kEpsilon, true},
                                                   {"v_prediction", PredictionType::kVPrediction, true},
                                                   {"sample", PredictionType::kEpsilon, false}};
  static const Choice<PredictionType> multistep[] = {{"epsilon", PredictionType::kEpsilon, true},
                                                     {"v_prediction", PredictionType::kVPrediction, true},
                                                     {"sample", PredictionType::kEpsilon, false},
                                                     {"flow_prediction", PredictionType::kEpsilon, false}};
  static const Choice<PredictionType> ddim[] = {{"epsilon", PredictionType::kEpsilon, true},
                                                {"v_prediction", PredictionType::kVPrediction, true},
                                                {"sample", PredictionType::kEpsilon, false}};
  const PredictionType d = PredictionType::kEpsilon;
  switch (c) {
    case SchedulerClass::kEulerDiscrete:
      return r.choice("prediction_type", euler, d);
    case SchedulerClass::kEulerAncestralDiscrete:
      return r.choice("prediction_type", euler_a, d);
    case SchedulerClass::kDdim:
      return r.choice("prediction_type", ddim, d);
    default:
      return r.choice("prediction_type", multistep, d);
  }
}

// use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas: at most one (diffusers' ValueError).
SigmaSchedule read_sigma_schedule(ClassReader& r) {
  const bool karras = r.reader().get<bool>("use_karras_sigmas", false);
  const bool exponential = r.reader().get<bool>("use_exponential_sigmas", false);
  const bool beta = r.reader().get<bool>("use_beta_sigmas", false);
  if (int(karras) + int(exponential) + int(beta) > 1)
    r.fail(StatusCode::kInvalidArgument, karras ? "use_karras_sigmas" : "use_exponential_sigmas",
           "is true together with another of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas; "
           "diffusers allows only one");
  return karras        ? SigmaSchedule::kKarras
         : exponential ? SigmaSchedule::kExponential
         : beta        ? SigmaSchedule::kBeta
                       : SigmaSchedule::kDefault;
}

// DPMSolverMultistep's solver orders this port implements (diffusers: 1, 2, 3).
bool dpm_order_supported(int64_t order) {
  return order == 1 || order == 2;
}
// UniPCMultistep's (diffusers: any order >= 1).
bool unipc_order_supported(int64_t order) {
  return order >= 1 && order <= 3;
}

// The config of class `cls` from `keys` (the file's public keys, already filtered or not: keys the class
// lacks are ignored). On success `file_keys` is `keys` with the class's own rewrites applied.
StatusOr<SchedulerConfig> read_class(SchedulerClass cls, const json& keys, const std::string& source) {
  json eff = class_defaults(cls);
  for (auto it = keys.begin(); it != keys.end(); ++it)
    if (eff.contains(it.key()) && !it.value().is_null()) eff[it.key()] = it.value();

  SchedulerConfig c;
  c.scheduler_class = cls;
  c.source = source;
  c.file_keys = keys;
  ClassReader r(cls, eff, source);
  ConfigReader& cr = r.reader();

  c.num_train_timesteps = cr.get<int64_t>("num_train_timesteps", c.num_train_timesteps);
  c.beta_start = r.number("beta_start", c.beta_start);
  c.beta_end = r.number("beta_end", c.beta_end);
  c.steps_offset = cr.get<int64_t>("steps_offset", c.steps_offset);
  c.rescale_betas_zero_snr = cr.get<bool>("rescale_betas_zero_snr", false);
  // Any beta schedule but these is "not implemented" (diffusers' own error for an unknown one).
  c.beta_schedule = r.choice("beta_schedule", kBetaSchedules, c.beta_schedule, StatusCode::kUnimplemented);
  c.prediction_type = read_prediction(r, cls);
  c.timestep_spacing = r.choice("timestep_spacing", kSpacings, c.timestep_spacing);
  if (r.ok() && !eff.at("trained_betas").is_null())
    r.fail(StatusCode::kUnimplemented, "trained_betas",
           "is set, but explicit betas are not implemented; use a scheduler_config.json with "
           "beta_start/beta_end/beta_schedule");

  const bool has_sigmas = has_key(cls, "use_karras_sigmas");
  if (has_sigmas) {
    c.sigma_schedule = read_sigma_schedule(r);
    c.final_sigmas_type = r.choice("final_sigmas_type", kFinalSigmas, c.final_sigmas_type);
  }
  if (has_key(cls, "sigma_min")) {
    c.sigma_min = r.optional_positive("sigma_min");
    c.sigma_max = r.optional_positive("sigma_max");
  } else if (cls == SchedulerClass::kDpmSolverMultistep) {
    // Not DPMSolverMultistep __init__ keys, but its sigma conversions read them with
    // hasattr(self.config, ...), and a file's extra keys are in the config (e.g. UniPC's, carried over).
    for (const char* key : {"sigma_min", "sigma_max"})
      if (keys.contains(key) && !keys[key].is_null()) eff[key] = keys[key];
    if (eff.contains("sigma_min")) c.sigma_min = r.optional_positive("sigma_min");
    if (eff.contains("sigma_max")) c.sigma_max = r.optional_positive("sigma_max");
  }
  if (has_key(cls, "thresholding"))
    r.require("thresholding", false, "dynamic thresholding (thresholding true)");
  if (has_key(cls, "use_flow_sigmas")) r.require("use_flow_sigmas", false, "flow-matching sigmas");

  switch (cls) {
    case SchedulerClass::kEulerDiscrete: {
      c.timestep_type = r.choice("timestep_type", kTimestepTypes, c.timestep_type);
      r.choice("interpolation_type", kInterpolation, 0);
      break;
    }
    case SchedulerClass::kEulerAncestralDiscrete:
      break;
    case SchedulerClass::kDpmSolverMultistep: {
      // __init__ rewrites these values in the config (register_to_config): "deis" is dpmsolver++, and
      // UniPC's or DEIS's solver types are midpoint.
      json& fk = c.file_keys;
      if (eff.at("algorithm_type") == "deis") eff["algorithm_type"] = fk["algorithm_type"] = "dpmsolver++";
      const json st = eff.at("solver_type");
      if (st == "logrho" || st == "bh1" || st == "bh2") eff["solver_type"] = fk["solver_type"] = "midpoint";
      static const Choice<DpmAlgorithm> algorithms[] = {
          {"dpmsolver++", DpmAlgorithm::kDpmSolverPlusPlus, true},
          {"sde-dpmsolver++", DpmAlgorithm::kSdeDpmSolverPlusPlus, true},
          {"dpmsolver", DpmAlgorithm::kDpmSolverPlusPlus, false},
          {"sde-dpmsolver", DpmAlgorithm::kDpmSolverPlusPlus, false}};
      static const Choice<DpmSolverType> solvers[] = {{"midpoint", DpmSolverType::kMidpoint, true},
                                                      {"heun", DpmSolverType::kHeun, true}};
      c.algorithm_type = r.choice("algorithm_type", algorithms, c.algorithm_type);
      c.solver_type = r.choice("solver_type", solvers, c.solver_type);
      c.solver_order = cr.get<int64_t>("solver_order", c.solver_order);
      if (r.ok() && !dpm_order_supported(c.solver_order))
        r.fail(c.solver_order >= 1 && c.solver_order <= 3 ? StatusCode::kUnimplemented
                                                          : StatusCode::kInvalidArgument,
               "solver_order",
               "is " + std::to_string(c.solver_order) +
                   "; this port implements DPMSolverMultistep with "
                   "solver_order 1 or 2 (dpmpp_2m is 2); use a model whose scheduler_config.json has one of "
                   "them, "
                   "or name the sampler in the job's scheduler: key (scheduler: dpmpp_2m sets 2)");
      c.lower_order_final = cr.get<bool>("lower_order_final", c.lower_order_final);
      c.euler_at_final = cr.get<bool>("euler_at_final", c.euler_at_final);
      r.require("use_lu_lambdas", false, "Lu's lambda schedule (use_lu_lambdas true)");
      r.require("variance_type", nullptr, "a learned variance (variance_type)");
      c.lambda_min_clipped = r.number("lambda_min_clipped", c.lambda_min_clipped);
      if (r.ok() && std::isnan(c.lambda_min_clipped))
        r.fail(StatusCode::kInvalidArgument, "lambda_min_clipped", "is NaN; use a number or -Infinity");
      cr.get<bool>("use_dynamic_shifting",
                   false);  // inert: diffusers uses it only with a `mu` and flow sigmas
      break;
    }
    case SchedulerClass::kDdim: {
      c.clip_sample = cr.get<bool>("clip_sample", c.clip_sample);
      c.set_alpha_to_one = cr.get<bool>("set_alpha_to_one", c.set_alpha_to_one);
      c.clip_sample_range = r.number("clip_sample_range", c.clip_sample_range);
      if (r.ok() && !(c.clip_sample_range > 0 && std::isfinite(c.clip_sample_range)))
        r.fail(
            StatusCode::kInvalidArgument, "clip_sample_range",
            "is " + show(eff.at("clip_sample_range")) + "; it must be a number > 0 (diffusers' default 1.0)");
      break;
    }
    case SchedulerClass::kUniPCMultistep: {
      const json st = eff.at("solver_type");
      if (st == "midpoint" || st == "heun" || st == "logrho")
        eff["solver_type"] = c.file_keys["solver_type"] = "bh2";
      static const Choice<int> solvers[] = {{"bh2", 2, true}, {"bh1", 1, false}};
      r.choice("solver_type", solvers, 2);
      c.solver_order = cr.get<int64_t>("solver_order", c.solver_order);
      if (r.ok() && !unipc_order_supported(c.solver_order))
        r.fail(c.solver_order >= 1 ? StatusCode::kUnimplemented : StatusCode::kInvalidArgument,
               "solver_order",
               "is " + std::to_string(c.solver_order) +
                   "; this port implements UniPCMultistep with solver_order 1, 2 or 3; use a model whose "
                   "scheduler_config.json has one of them");
      c.lower_order_final = cr.get<bool>("lower_order_final", c.lower_order_final);
      r.require("predict_x0", true, "UniPC's noise-prediction form (predict_x0 false)");
      r.require("disable_corrector", json::array(), "disabling UniPC's corrector at some steps");
      r.require("solver_p", nullptr, "a separate predictor scheduler (solver_p)");
      r.require("shift_terminal", nullptr, "shift_terminal (flow sigmas only)");
      if (r.ok() && cr.get<bool>("use_dynamic_shifting", false))
        r.fail(StatusCode::kUnimplemented, "use_dynamic_shifting",
               "is true, but dynamic shifting needs a `mu` that an SDXL pipeline does not pass (diffusers "
               "refuses it too); set it to false");
      break;
    }
  }
  SDXLB_RETURN_IF_ERROR(r.status());

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

// The file's public keys, less those listed in "_use_default_values" (see the file comment).
json public_keys(const json& file) {
  json out = json::object();
  std::vector<std::string> defaulted;
  if (file.contains("_use_default_values") && file["_use_default_values"].is_array())
    for (const auto& k : file["_use_default_values"])
      if (k.is_string()) defaulted.push_back(k.get<std::string>());
  for (auto it = file.begin(); it != file.end(); ++it) {
    if (it.key().empty() || it.key()[0] == '_') continue;
    if (std::find(defaulted.begin(), defaulted.end(), it.key()) != defaulted.end()) continue;
    out[it.key()] = it.value();
  }
  return out;
}

// The number as effective_json writes it.
json number_json(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v < 0 ? "-Infinity" : "Infinity";
  return v;
}

// 1-based "line:column" of byte `pos` in `text`.
std::string line_col(const std::string& text, size_t pos) {
  pos = std::min(pos, text.size());
  size_t line = 1, col = 1;
  for (size_t i = 0; i < pos; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

}  // namespace

const char* to_string(SchedulerClass value) {
  for (const auto& row : kClasses)
    if (row.cls == value) return row.name;
  return "?";
}

const char* to_string(BetaSchedule value) {
  switch (value) {
    case BetaSchedule::kLinear:
      return "linear";
    case BetaSchedule::kScaledLinear:
      return "scaled_linear";
    case BetaSchedule::kSquaredCosCapV2:
      return "squaredcos_cap_v2";
  }
  return "?";
}

const char* to_string(PredictionType value) {
  return value == PredictionType::kEpsilon ? "epsilon" : "v_prediction";
}

const char* to_string(TimestepType value) {
  return value == TimestepType::kDiscrete ? "discrete" : "continuous";
}

const char* to_string(DpmAlgorithm value) {
  return value == DpmAlgorithm::kDpmSolverPlusPlus ? "dpmsolver++" : "sde-dpmsolver++";
}

const char* to_string(DpmSolverType value) {
  return value == DpmSolverType::kMidpoint ? "midpoint" : "heun";
}

SchedulerClass scheduler_class_of(SamplerName name) {
  switch (name) {
    case SamplerName::kEuler:
      return SchedulerClass::kEulerDiscrete;
    case SamplerName::kEulerAncestral:
      return SchedulerClass::kEulerAncestralDiscrete;
    case SamplerName::kDpmpp2m:
    case SamplerName::kDpmpp2mSde:
      return SchedulerClass::kDpmSolverMultistep;
    case SamplerName::kDdim:
      return SchedulerClass::kDdim;
    case SamplerName::kUniPC:
      return SchedulerClass::kUniPCMultistep;
  }
  return SchedulerClass::kEulerDiscrete;
}

StatusOr<SchedulerConfig> SchedulerConfig::from_json(const json& json_in, const std::string& source) {
  if (!json_in.is_object())
    return data_loss(source + ": expected a JSON object (a diffusers scheduler_config.json), found " +
                     std::string(json_in.type_name()));
  if (!json_in.contains("_class_name") || !json_in["_class_name"].is_string())
    return data_loss(source +
                     ": no \"_class_name\" string; a diffusers scheduler_config.json names its class "
                     "there (e.g. \"EulerDiscreteScheduler\")");
  const std::string name = json_in["_class_name"].get<std::string>();
  const auto cls = class_from_name(name);
  if (!cls)
    return unimplemented(
        source + ": \"_class_name\" is \"" + name +
        "\", a scheduler this port does not implement; it implements " + supported_classes() +
        ". Name one of those samplers in the job file (e.g. scheduler: euler): as diffusers' "
        "from_config does, it takes this file's training settings over");
  return read_class(*cls, public_keys(json_in), source);
}

StatusOr<SchedulerConfig> SchedulerConfig::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::ifstream probe(path);
    return probe.good() ? io_error("cannot read " + path) : not_found(path + " does not exist");
  }
  // A scheduler config is about 1 KB; do not read a hostile multi-gigabyte file.
  constexpr std::streamsize kMaxBytes = 1 << 20;
  std::string text(static_cast<size_t>(kMaxBytes) + 1, '\0');
  in.read(text.data(), kMaxBytes + 1);
  if (in.bad()) return io_error("error while reading " + path);
  text.resize(static_cast<size_t>(in.gcount()));
  if (static_cast<std::streamsize>(text.size()) > kMaxBytes)
    return data_loss(path + ": larger than 1 MiB; this is not a scheduler_config.json, restore the file");
  SDXLB_ASSIGN_OR_RETURN(auto j, parse_config_json(text, path));
  return from_json(j, path);
}

StatusOr<SchedulerConfig> SchedulerConfig::with_choice(const SamplerChoice& choice) const {
  const SamplerName target = choice.name ? *choice.name : sampler();
  const SamplerInfo& info = sampler_info(target);
  for (SamplerOption o : choice.options_set()) {
    if (sampler_accepts(target, o)) continue;
    const std::string what = choice.name ? std::string(info.id)
                                         : std::string(info.id) + " (the model's " +
                                               to_string(scheduler_class) + " in " + source + ")";
    return invalid_argument("the job's scheduler option " + std::string(to_string(o)) + ": " + what +
                            " does not accept it (diffusers' " + info.diffusers_class +
                            " has no such option); it accepts: " + option_list(accepted_options(target)) +
                            ". Remove the option, or name a sampler that has it (scheduler: {name: ..., " +
                            to_string(o) + ": ...})");
  }
  json keys = file_keys;
  // The settings that make the class the named sampler.
  if (choice.name) {
    switch (*choice.name) {
      case SamplerName::kDpmpp2m:
        keys["algorithm_type"] = "dpmsolver++";
        keys["solver_order"] = 2;
        break;
      case SamplerName::kDpmpp2mSde:
        keys["algorithm_type"] = "sde-dpmsolver++";
        keys["solver_order"] = 2;
        break;
      case SamplerName::kUniPC:
        keys["solver_type"] = "bh2";
        break;
      default:
        break;
    }
  }
  if (choice.sigmas) {
    keys["use_karras_sigmas"] = *choice.sigmas == SigmaSchedule::kKarras;
    keys["use_exponential_sigmas"] = *choice.sigmas == SigmaSchedule::kExponential;
    keys["use_beta_sigmas"] = *choice.sigmas == SigmaSchedule::kBeta;
  }
  if (choice.timestep_spacing) keys["timestep_spacing"] = to_string(*choice.timestep_spacing);
  if (choice.final_sigmas_type) keys["final_sigmas_type"] = to_string(*choice.final_sigmas_type);
  if (choice.lower_order_final) keys["lower_order_final"] = *choice.lower_order_final;
  if (choice.euler_at_final) keys["euler_at_final"] = *choice.euler_at_final;
  auto merged = read_class(scheduler_class_of(target), keys, source);
  if (!merged.is_ok()) {
    const Status& st = merged.status();
    return Status(st.code(), st.message() + " (read as " + info.diffusers_class +
                                 " for the job's scheduler: " + to_job_yaml(choice) + ")");
  }
  return merged;
}

SamplerName SchedulerConfig::sampler() const {
  switch (scheduler_class) {
    case SchedulerClass::kEulerDiscrete:
      return SamplerName::kEuler;
    case SchedulerClass::kEulerAncestralDiscrete:
      return SamplerName::kEulerAncestral;
    case SchedulerClass::kDpmSolverMultistep:
      return algorithm_type == DpmAlgorithm::kSdeDpmSolverPlusPlus ? SamplerName::kDpmpp2mSde
                                                                   : SamplerName::kDpmpp2m;
    case SchedulerClass::kDdim:
      return SamplerName::kDdim;
    case SchedulerClass::kUniPCMultistep:
      return SamplerName::kUniPC;
  }
  return SamplerName::kEuler;
}

json SchedulerConfig::effective_json() const {
  const SchedulerClass cls = scheduler_class;
  json out = class_defaults(cls);
  // Keys we keep no field for (inert ones such as dynamic_thresholding_ratio) come from the file.
  for (auto it = file_keys.begin(); it != file_keys.end(); ++it)
    if (out.contains(it.key()) && !it.value().is_null()) out[it.key()] = it.value();
  auto set = [&](const char* key, const json& v) {
    if (out.contains(key)) out[key] = v;
  };
  set("num_train_timesteps", num_train_timesteps);
  set("beta_start", number_json(beta_start));
  set("beta_end", number_json(beta_end));
  set("beta_schedule", to_string(beta_schedule));
  set("trained_betas", nullptr);
  set("prediction_type", to_string(prediction_type));
  set("timestep_spacing", to_string(timestep_spacing));
  set("steps_offset", steps_offset);
  set("rescale_betas_zero_snr", rescale_betas_zero_snr);
  set("use_karras_sigmas", sigma_schedule == SigmaSchedule::kKarras);
  set("use_exponential_sigmas", sigma_schedule == SigmaSchedule::kExponential);
  set("use_beta_sigmas", sigma_schedule == SigmaSchedule::kBeta);
  set("sigma_min", sigma_min ? number_json(*sigma_min) : json(nullptr));
  set("sigma_max", sigma_max ? number_json(*sigma_max) : json(nullptr));
  set("final_sigmas_type", to_string(final_sigmas_type));
  set("timestep_type", to_string(timestep_type));
  set("interpolation_type", "linear");
  set("thresholding", false);
  set("use_flow_sigmas", false);
  set("solver_order", solver_order);
  set("lower_order_final", lower_order_final);
  if (cls == SchedulerClass::kDpmSolverMultistep) {
    // Extra keys that change DPM's Karras/exponential/beta range (see read_class), when set.
    if (sigma_min) out["sigma_min"] = number_json(*sigma_min);
    if (sigma_max) out["sigma_max"] = number_json(*sigma_max);
    set("algorithm_type", to_string(algorithm_type));
    set("solver_type", to_string(solver_type));
    set("euler_at_final", euler_at_final);
    set("use_lu_lambdas", false);
    set("lambda_min_clipped", number_json(lambda_min_clipped));
    set("variance_type", nullptr);
  }
  if (cls == SchedulerClass::kUniPCMultistep) {
    set("solver_type", "bh2");
    set("predict_x0", true);
    set("disable_corrector", json::array());
    set("use_dynamic_shifting", false);
  }
  set("clip_sample", clip_sample);
  set("set_alpha_to_one", set_alpha_to_one);
  set("clip_sample_range", number_json(clip_sample_range));
  out["_class_name"] = to_string(cls);
  out["_sampler"] = to_string(sampler());
  return out;
}

StatusOr<SchedulerConfig> resolve_scheduler(const json& folder_json, const std::string& source,
                                            const SamplerChoice& choice) {
  if (choice.name && folder_json.is_object()) {
    const json& cn = folder_json.contains("_class_name") ? folder_json["_class_name"] : json();
    if (!cn.is_string() || !class_from_name(cn.get<std::string>())) {
      // A class we do not implement: its file's keys go to the named sampler as from_config takes them.
      SchedulerConfig folder;
      folder.source = source;
      folder.file_keys = public_keys(folder_json);
      return folder.with_choice(choice);
    }
  }
  SDXLB_ASSIGN_OR_RETURN(auto folder, SchedulerConfig::from_json(folder_json, source));
  if (choice.empty()) return folder;
  return folder.with_choice(choice);
}

StatusOr<json> parse_config_json(const std::string& text, const std::string& source) {
  // Python's json writes float('-inf') as the bare token -Infinity (diffusers' DPMSolverMultistep default
  // lambda_min_clipped). Turn the three non-standard tokens into strings, outside strings only, and refuse
  // nesting deeper than any scheduler config (a recursive parser must not meet 100000 brackets).
  constexpr int kMaxDepth = 64;
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  int depth = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxDepth)
        return data_loss(source + ":" + line_col(text, i) + ": JSON nested more than " +
                         std::to_string(kMaxDepth) +
                         " levels deep; this is not a scheduler config, restore the file");
    } else if (ch == ']' || ch == '}') {
      --depth;
    } else {
      bool replaced = false;
      for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
        const std::string t(token);
        if (text.compare(i, t.size(), t) == 0) {
          out += "\"" + t + "\"";
          i += t.size() - 1;
          replaced = true;
          break;
        }
      }
      if (replaced) continue;
    }
    out += ch;
  }
  try {
    return json::parse(out);
  } catch (const json::parse_error& e) {
    // Positions in `out` differ from `text` only by the quotes added around the tokens above.
    return data_loss(source + ":" + line_col(out, e.byte == 0 ? 0 : e.byte - 1) + ": invalid JSON (" +
                     e.what() + ")");
  } catch (const json::exception& e) {  // out_of_range 406: a number past double's range (1e400)
    return data_loss(source + ": invalid JSON (" + e.what() + ")");
  }
}

}  // namespace sdxlb
