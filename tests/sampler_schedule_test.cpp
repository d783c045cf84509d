// SchedulerConfig, resolve_scheduler and make_schedule against diffusers 0.42.1 (fixtures from
// tests/oracle/ref_sampler_schedule.py): every class's set_timesteps over a grid of configs, the
// from_config merges of a folder's file with a sampler choice, and every error path.
//
// Tolerances are bounds in units of float32 roundoff u = 2^-24 (and float64's U = 2^-53) derived from what
// can differ between our arithmetic and diffusers' on any x86-64 CPU, never tuned to pass:
//  - a training sigma: torch's float32 sqrt is faithfully rounded (1 ulp, relative 2u) where ours is
//    correctly rounded; alphas_cumprod itself is bit-identical except under the zero-SNR rescale (its own
//    bound, from tests/euler_sampler_test.cpp);
//  - Karras/exponential sigmas inherit 2u from the table sigmas that bound them, plus numpy's vectorised
//    pow/exp (a few float64 ulps); beta sigmas 6u (sigma_min + ppf · (sigma_max - sigma_min)) plus Boost's
//    quantile against scipy's newer Boost (a few hundred U at most); storing as float32 adds one ulp (2u);
//  - a timestep from _sigma_to_t: numpy's float32 log is accurate to 4 ulps (its own accuracy tests,
//    umath-validation-set-log.csv), ours to 0.5; with the sigma's error e_s this moves
//    t = low + (L - log σ) / (L - H) by at most (e_L + e_s) / |L - H| (derivative of w in L, H and log σ);
//    a float timestep adds its float32 rounding, an integer one may differ by 1 only where diffusers' own
//    unrounded value lies within that bound of the rounding boundary.
#include "pipeline/samplers/schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "pipeline/samplers/schedule_math.h"
#include "pipeline/samplers/scheduler_config.h"
#include "test_files.h"

namespace sdxlb {
namespace {

using nlohmann::json;
using testing::fixtures_dir;

constexpr double kU = 0x1p-24;    // float32 unit roundoff
constexpr double kU64 = 0x1p-53;  // float64 unit roundoff
constexpr double kNumpyLogF32Ulps = 4.0;

json load(const std::string& name) {
  const std::string path = fixtures_dir() + "/sampler_schedule/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = parse_config_json(ss.str(), path);
  EXPECT_TRUE(j.is_ok()) << j.status().to_string();
  return j.is_ok() ? *j : json();
}

/// One float32 ulp at |x| (the spacing above it).
double ulp32(double x) {
  const float f = std::max(static_cast<float>(std::abs(x)), std::numeric_limits<float>::min());
  return static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity()) - f);
}

// The zero-SNR bounds of tests/euler_sampler_test.cpp: the relative error of the rescaled alphas_cumprod
// at step t for any float32 evaluation of diffusers' formula, `base` being the table without the rescale.
double zero_snr_bound(const std::vector<double>& base, size_t t) {
  const size_t last = base.size() - 1;
  if (t >= last) return 2 * kU;
  const double s_t = std::sqrt(base[t]), s_last = std::sqrt(base[last]);
  const double k = s_t / (s_t - s_last);
  return (2.0 * static_cast<double>(t + 1) + 4.0 * k + 8.0) * kU;
}

double zero_snr_sigma_bound(const std::vector<double>& base, double t, double sigma) {
  const double ac = 1.0 / (1.0 + sigma * sigma);
  const auto lo = static_cast<size_t>(std::max(0.0, std::floor(t)));
  const auto hi = std::min(base.size() - 1, static_cast<size_t>(std::max(0.0, std::ceil(t))));
  const double ac_bound = std::max(zero_snr_bound(base, lo), zero_snr_bound(base, hi));
  return ac_bound / (2.0 * std::max(1e-30, 1.0 - ac)) + 8.0 * kU;
}

/// The relative error a sigma of `schedule` may carry before it is stored as float32 (file comment).
double sigma_input_error(SigmaSchedule schedule) {
  switch (schedule) {
    case SigmaSchedule::kDefault:
      return 2 * kU;
    case SigmaSchedule::kKarras:
    case SigmaSchedule::kExponential:
      return 2 * kU + 64 * kU64;
    case SigmaSchedule::kBeta:
      return 6 * kU + 256 * kU64;
  }
  return 0;
}

/// The bound on |t_ours - t_diffusers| of a _sigma_to_t value near `t` (before any rounding or cast).
/// `zero_snr_base` (nullptr: none): the training table before the zero-SNR rescale, whose rescaled values
/// differ from diffusers' by up to zero_snr_bound, so that the log-sigmas interpolated between differ too:
/// d log σ = d(ac) / (2 ac (1 - ac)) for σ² = (1 - ac) / ac (the difference that made this bound fail on an
/// AMD EPYC, where torch's rescale rounds differently from an Intel CPU's).
double sigma_to_t_bound(double t, const std::vector<float>& log_sigmas, double sigma_error,
                        const std::vector<double>* zero_snr_base = nullptr) {
  const auto n = static_cast<int64_t>(log_sigmas.size());
  const int64_t low = std::clamp<int64_t>(static_cast<int64_t>(std::floor(t)), 0, n - 2);
  double span = HUGE_VAL, mag = 0, table = 0;
  for (int64_t i = std::max<int64_t>(0, low - 1); i <= std::min<int64_t>(n - 2, low + 1); ++i) {
    const double a = log_sigmas[static_cast<size_t>(i)], b = log_sigmas[static_cast<size_t>(i + 1)];
    span = std::min(span, std::abs(a - b));
    mag = std::max({mag, std::abs(a), std::abs(b)});
    if (zero_snr_base != nullptr)
      for (const int64_t j : {i, i + 1}) {
        const double ac =
            1.0 / (1.0 + std::exp(2.0 * static_cast<double>(log_sigmas[static_cast<size_t>(j)])));
        table = std::max(table, zero_snr_bound(*zero_snr_base, static_cast<size_t>(j)) /
                                    (2.0 * std::max(1e-30, 1.0 - ac)));
      }
  }
  // numpy's float32 log, the table sigma's own 1 ulp, and both interpolated entries' table difference.
  const double e_log = (kNumpyLogF32Ulps + 0.5) * ulp32(mag) + 2 * kU + 2 * table;
  return (e_log + sigma_error) / span + kU;
}

struct Worst {
  double sigma = 0, timestep = 0, ac = 0;
  int boundary_flips = 0;
};

/// Checks `got` against a fixture schedule; `tables` holds the training tables by key.
void check_schedule(const json& ref, const SchedulerConfig& cfg, const Schedule& got, const json& tables,
                    Worst* worst) {
  const auto ref_t = ref.at("timesteps").get<std::vector<double>>();
  const auto ref_s = ref.at("sigmas").get<std::vector<double>>();
  const auto ref_ac = tables.at(ref.at("table").get<std::string>()).get<std::vector<double>>();
  ASSERT_EQ(got.timesteps.size(), ref_t.size());
  ASSERT_EQ(got.sigmas.size(), ref_s.size());
  ASSERT_EQ(got.alphas_cumprod.size(), ref_ac.size());
  const bool ddim = cfg.scheduler_class == SchedulerClass::kDdim;
  if (!ddim) {
    ASSERT_EQ(got.num_steps() + 1, static_cast<int64_t>(ref_s.size()));
  }

  // The training table: bit-identical, except under the zero-SNR rescale.
  std::vector<double> base;  // the table without the rescale, for its bound
  if (cfg.rescale_betas_zero_snr)
    for (float v : training_alphas_cumprod(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end,
                                           cfg.beta_schedule, false, false))
      base.push_back(v);
  for (size_t i = 0; i < ref_ac.size(); ++i) {
    const double e = ref_ac[i] == 0 ? std::abs(got.alphas_cumprod[i])
                                    : std::abs(got.alphas_cumprod[i] - ref_ac[i]) / ref_ac[i];
    worst->ac = std::max(worst->ac, e);
    const double bound = cfg.rescale_betas_zero_snr && ref_ac[i] != 0 ? zero_snr_bound(base, i) : 0.0;
    ASSERT_LE(e, bound) << "alphas_cumprod[" << i << "]: " << got.alphas_cumprod[i] << " vs " << ref_ac[i];
  }

  const double e_s = sigma_input_error(cfg.sigma_schedule);
  const std::vector<float> log_sigmas = log_training_sigmas(training_sigmas(got.alphas_cumprod));
  const bool converted = cfg.sigma_schedule != SigmaSchedule::kDefault;
  const std::vector<double>* zero_snr = cfg.rescale_betas_zero_snr ? &base : nullptr;
  const bool integer = cfg.scheduler_class != SchedulerClass::kEulerDiscrete &&
                       cfg.scheduler_class != SchedulerClass::kEulerAncestralDiscrete;
  const bool continuous = cfg.scheduler_class == SchedulerClass::kEulerDiscrete &&
                          cfg.timestep_type == TimestepType::kContinuous &&
                          cfg.prediction_type == PredictionType::kVPrediction;
  for (size_t i = 0; i < ref_t.size(); ++i) {
    const double ours = got.timesteps[i];
    const double e = std::abs(ours - ref_t[i]);
    worst->timestep = std::max(worst->timestep, e);
    if (continuous) {
      // 0.25 · log(σ) in float32: σ's error, both logs' roundings (torch's faithful, ours correct), the
      // product.
      const double log_s = std::log(static_cast<double>(got.sigmas[i]));
      EXPECT_LE(e, 0.25 * (e_s + 2 * kU + 2 * ulp32(log_s)) + ulp32(ref_t[i])) << "timestep " << i;
    } else if (!converted) {
      EXPECT_EQ(ours, ref_t[i]) << "timestep " << i;
    } else if (!integer) {
      EXPECT_LE(e, sigma_to_t_bound(ref_t[i], log_sigmas, e_s, zero_snr) + ulp32(ref_t[i]))
          << "timestep " << i << ": " << ours << " vs " << ref_t[i];
    } else if (e != 0) {
      // An integer timestep may differ by 1 only at a rounding boundary of diffusers' own unrounded value.
      const double raw = ref.at("raw_timesteps").at(i).get<double>();
      const double boundary = ref.at("rounded").get<bool>() ? std::floor(raw) + 0.5 : std::round(raw);
      EXPECT_EQ(e, 1.0) << "timestep " << i;
      EXPECT_LE(std::abs(raw - boundary), sigma_to_t_bound(raw, log_sigmas, e_s, zero_snr))
          << "timestep " << i << ": " << ours << " vs " << ref_t[i] << " (raw " << raw << ")";
      ++worst->boundary_flips;
    }
  }
  for (size_t i = 0; i < ref_s.size(); ++i) {
    const double r = ref_s[i];
    const double e = r == 0 ? std::abs(got.sigmas[i]) : std::abs(got.sigmas[i] - r) / std::abs(r);
    worst->sigma = std::max(worst->sigma, e);
    double bound = e_s + 2 * kU;
    if (cfg.rescale_betas_zero_snr && !converted && i < ref_t.size() && r != 0)
      bound = std::max(bound, zero_snr_sigma_bound(base, ref_t[i], r));
    EXPECT_LE(e, bound) << "sigma " << i << ": " << got.sigmas[i] << " vs " << r;
  }
  const double init = ref.at("init_noise_sigma");
  // σ_max's bound, and for "leading" a float32 sqrt(σ² + 1) that torch rounds faithfully (2u more).
  EXPECT_LE(std::abs(got.init_noise_sigma - init) / init, e_s + 4 * kU + 64 * kU64)
      << got.init_noise_sigma << " vs " << init;
  if (ddim) {
    const double fac = ref.at("final_alpha_cumprod");
    const double bound = cfg.rescale_betas_zero_snr && fac != 1.0 ? zero_snr_bound(base, 0) : 0.0;
    EXPECT_LE(std::abs(got.final_alpha_cumprod - fac) / fac, bound);
  }
}

void print_worst(const char* what, size_t n, const Worst& w) {
  std::printf(
      "[ max errors ] %zu %s: timesteps abs %.3g, sigmas rel %.3g (%.2f u), alphas_cumprod rel %.3g, "
      "integer timesteps at a rounding boundary %d\n",
      n, what, w.timestep, w.sigma, w.sigma / kU, w.ac, w.boundary_flips);
}

TEST(SamplerSchedule, MatchesDiffusersForEveryCase) {
  const json cases = load("cases.json");
  const json tables = load("tables.json");
  ASSERT_GE(cases.size(), 600u);
  Worst worst;
  for (const auto& tc : cases) {
    const std::string name = tc.at("name");
    SCOPED_TRACE(name);
    auto cfg = SchedulerConfig::from_json(tc.at("config"), name);
    ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
    auto s = make_schedule(*cfg, tc.at("steps").get<int64_t>());
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    check_schedule(tc.at("schedule"), *cfg, *s, tables, &worst);
  }
  print_worst("cases", cases.size(), worst);
}

SamplerChoice choice_from_json(const json& j) {
  SamplerChoice c;
  if (j.contains("name")) c.name = sampler_from_id(j.at("name").get<std::string>());
  if (j.contains("sigmas")) c.sigmas = sigma_schedule_from_string(j.at("sigmas").get<std::string>());
  if (j.contains("timestep_spacing"))
    c.timestep_spacing = timestep_spacing_from_string(j.at("timestep_spacing").get<std::string>());
  if (j.contains("final_sigmas_type"))
    c.final_sigmas_type = final_sigmas_from_string(j.at("final_sigmas_type").get<std::string>());
  if (j.contains("lower_order_final")) c.lower_order_final = j.at("lower_order_final").get<bool>();
  if (j.contains("euler_at_final")) c.euler_at_final = j.at("euler_at_final").get<bool>();
  return c;
}

bool same_value(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
  return a == b;
}

TEST(SchedulerMerge, MatchesDiffusersFromConfig) {
  const json merges = load("merges.json");
  const json tables = load("tables.json");
  ASSERT_GE(merges.size(), 100u);
  Worst worst;
  for (const auto& m : merges) {
    const std::string name = m.at("name");
    SCOPED_TRACE(name);
    const SamplerChoice choice = choice_from_json(m.at("choice"));
    auto cfg = resolve_scheduler(m.at("file"), name, choice);
    ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
    const json ours = cfg->effective_json();
    const json& expected = m.at("expected");
    for (auto it = expected.begin(); it != expected.end(); ++it) {
      ASSERT_TRUE(ours.contains(it.key())) << it.key();
      EXPECT_TRUE(same_value(ours.at(it.key()), it.value()))
          << it.key() << ": ours " << ours.at(it.key()) << ", diffusers " << it.value();
    }
    for (auto it = ours.begin(); it != ours.end(); ++it)
      EXPECT_TRUE(expected.contains(it.key()) || it.key() == "_sampler") << "extra key " << it.key();
    if (choice.name) {
      EXPECT_EQ(cfg->sampler(), *choice.name);
    }
    auto s = make_schedule(*cfg, m.at("steps").get<int64_t>());
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    check_schedule(m.at("schedule"), *cfg, *s, tables, &worst);
  }
  print_worst("merges", merges.size(), worst);
}

// --- the config
// ----------------------------------------------------------------------------------------------

json sdxl_file() {
  return json::parse(R"({"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
    "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false})");
}

json file_of(const char* cls, const json& extra = json::object()) {
  json j = sdxl_file();
  j["_class_name"] = cls;
  j.update(extra);
  return j;
}

const char* kSource = "/m/scheduler/scheduler_config.json";

TEST(SchedulerConfig, EachClassHasItsOwnDefaults) {
  auto ddim = SchedulerConfig::from_json(json{{"_class_name", "DDIMScheduler"}}, "x");
  ASSERT_TRUE(ddim.is_ok()) << ddim.status().to_string();
  EXPECT_EQ(ddim->timestep_spacing, TimestepSpacing::kLeading);
  EXPECT_TRUE(ddim->clip_sample);
  EXPECT_TRUE(ddim->set_alpha_to_one);
  auto dpm = SchedulerConfig::from_json(json{{"_class_name", "DPMSolverMultistepScheduler"}}, "x");
  ASSERT_TRUE(dpm.is_ok()) << dpm.status().to_string();
  EXPECT_EQ(dpm->timestep_spacing, TimestepSpacing::kLinspace);
  EXPECT_EQ(dpm->solver_order, 2);
  EXPECT_EQ(dpm->algorithm_type, DpmAlgorithm::kDpmSolverPlusPlus);
  EXPECT_TRUE(dpm->lower_order_final);
  EXPECT_TRUE(std::isinf(dpm->lambda_min_clipped) && dpm->lambda_min_clipped < 0);
  EXPECT_EQ(dpm->sampler(), SamplerName::kDpmpp2m);
  EXPECT_EQ(dpm->effective_json().at("lambda_min_clipped"), "-Infinity");
  auto euler = SchedulerConfig::from_json(sdxl_file(), kSource);
  ASSERT_TRUE(euler.is_ok()) << euler.status().to_string();
  EXPECT_EQ(euler->sampler(), SamplerName::kEuler);
  EXPECT_EQ(euler->timestep_spacing, TimestepSpacing::kLeading);
  EXPECT_EQ(euler->steps_offset, 1);
  // The SDXL base file's keys the Euler class ignores are kept for another class.
  EXPECT_EQ(euler->file_keys.at("set_alpha_to_one"), false);
  const json eff = euler->effective_json();
  EXPECT_EQ(eff.at("_class_name"), "EulerDiscreteScheduler");
  EXPECT_EQ(eff.at("_sampler"), "euler");
  EXPECT_FALSE(eff.contains("set_alpha_to_one"));  // not an EulerDiscreteScheduler key
}

TEST(SchedulerConfig, WithChoiceCarriesTheFilesKeysAsFromConfigDoes) {
  auto euler = SchedulerConfig::from_json(sdxl_file(), kSource);
  ASSERT_TRUE(euler.is_ok());
  SamplerChoice c;
  c.name = SamplerName::kDdim;
  auto ddim = euler->with_choice(c);
  ASSERT_TRUE(ddim.is_ok()) << ddim.status().to_string();
  EXPECT_EQ(ddim->scheduler_class, SchedulerClass::kDdim);
  EXPECT_FALSE(ddim->set_alpha_to_one);  // SDXL base's hidden key
  EXPECT_FALSE(ddim->clip_sample);
  EXPECT_EQ(ddim->timestep_spacing, TimestepSpacing::kLeading);
  c.name = SamplerName::kDpmpp2mSde;
  c.sigmas = SigmaSchedule::kKarras;
  c.timestep_spacing = TimestepSpacing::kTrailing;
  auto sde = euler->with_choice(c);
  ASSERT_TRUE(sde.is_ok()) << sde.status().to_string();
  EXPECT_EQ(sde->sampler(), SamplerName::kDpmpp2mSde);
  EXPECT_EQ(sde->sigma_schedule, SigmaSchedule::kKarras);
  EXPECT_EQ(sde->timestep_spacing, TimestepSpacing::kTrailing);
  EXPECT_EQ(sde->steps_offset, 1);
  EXPECT_DOUBLE_EQ(sde->beta_end, 0.012);
  // Without a name the class stays and only the options change.
  SamplerChoice only;
  only.final_sigmas_type = FinalSigmas::kSigmaMin;
  auto same = euler->with_choice(only);
  ASSERT_TRUE(same.is_ok());
  EXPECT_EQ(same->scheduler_class, SchedulerClass::kEulerDiscrete);
  EXPECT_EQ(same->final_sigmas_type, FinalSigmas::kSigmaMin);
  // An empty choice changes nothing.
  auto none = resolve_scheduler(sdxl_file(), kSource, SamplerChoice{});
  ASSERT_TRUE(none.is_ok());
  EXPECT_EQ(none->effective_json(), euler->effective_json());
}

// --- error paths -------------------------------------------------------------------------------------------

void expect_error(const json& j, StatusCode code, const std::string& part) {
  auto c = SchedulerConfig::from_json(j, kSource);
  ASSERT_FALSE(c.is_ok()) << "accepted: " << j.dump();
  EXPECT_EQ(c.status().code(), code) << c.status().to_string();
  EXPECT_NE(c.status().message().find(kSource), std::string::npos) << c.status().to_string();
  EXPECT_NE(c.status().message().find(part), std::string::npos)
      << "missing [" << part << "] in " << c.status().to_string();
}

TEST(SchedulerConfigErrors, UnknownClassListsTheSupportedOnesWithOurNames) {
  for (const char* cls :
       {"LMSDiscreteScheduler", "PNDMScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler"}) {
    expect_error(file_of(cls), StatusCode::kUnimplemented, std::string("\"") + cls + "\"");
    expect_error(file_of(cls), StatusCode::kUnimplemented,
                 "DPMSolverMultistepScheduler (dpmpp_2m, dpmpp_2m_sde)");
    expect_error(file_of(cls), StatusCode::kUnimplemented, "UniPCMultistepScheduler (unipc)");
  }
  // With a sampler named in the job, the folder's keys are carried over instead.
  SamplerChoice c;
  c.name = SamplerName::kEuler;
  auto euler = resolve_scheduler(file_of("PNDMScheduler"), kSource, c);
  ASSERT_TRUE(euler.is_ok()) << euler.status().to_string();
  EXPECT_EQ(euler->steps_offset, 1);
  EXPECT_EQ(euler->beta_schedule, BetaSchedule::kScaledLinear);
  auto none = resolve_scheduler(file_of("PNDMScheduler"), kSource, SamplerChoice{});
  EXPECT_EQ(none.status().code(), StatusCode::kUnimplemented);
}

TEST(SchedulerConfigErrors, NotAnObjectOrNoClassName) {
  expect_error(json::array({1}), StatusCode::kDataLoss, "expected a JSON object");
  json j = sdxl_file();
  j.erase("_class_name");
  expect_error(j, StatusCode::kDataLoss, "_class_name");
  j["_class_name"] = 3;
  expect_error(j, StatusCode::kDataLoss, "_class_name");
}

TEST(SchedulerConfigErrors, ValuesThisPortDoesNotImplementAreUnimplemented) {
  const char* dpm = "DPMSolverMultistepScheduler";
  const char* unipc = "UniPCMultistepScheduler";
  const char* ddim = "DDIMScheduler";
  const char* euler = "EulerDiscreteScheduler";
  const std::vector<std::tuple<const char*, const char*, json>> cases = {
      {euler, "beta_schedule", "cubic"},
      {euler, "interpolation_type", "log_linear"},
      {euler, "prediction_type", "sample"},
      {euler, "prediction_type", "original_sample"},
      {euler, "trained_betas", json::array({0.1, 0.2})},
      {"EulerAncestralDiscreteScheduler", "prediction_type", "sample"},
      {dpm, "algorithm_type", "dpmsolver"},
      {dpm, "algorithm_type", "sde-dpmsolver"},
      {dpm, "solver_order", 3},
      {dpm, "thresholding", true},
      {dpm, "use_lu_lambdas", true},
      {dpm, "use_flow_sigmas", true},
      {dpm, "variance_type", "learned_range"},
      {dpm, "prediction_type", "flow_prediction"},
      {ddim, "thresholding", true},
      {ddim, "prediction_type", "sample"},
      {unipc, "solver_type", "bh1"},
      {unipc, "predict_x0", false},
      {unipc, "disable_corrector", json::array({0})},
      {unipc, "use_flow_sigmas", true},
      {unipc, "shift_terminal", 0.5},
      {unipc, "use_dynamic_shifting", true},
      {unipc, "solver_order", 4},
  };
  for (const auto& [cls, key, value] : cases) {
    SCOPED_TRACE(std::string(cls) + " " + key + " " + value.dump());
    expect_error(file_of(cls, {{key, value}}), StatusCode::kUnimplemented, std::string("\"") + key + "\"");
  }
}

TEST(SchedulerConfigErrors, ValuesDiffusersRefusesAreInvalid) {
  const std::vector<std::tuple<const char*, json>> cases = {
      {"timestep_spacing", "sometimes"},
      {"prediction_type", "noise"},
      {"final_sigmas_type", "one"},
      {"timestep_type", "analog"},
      {"beta_end", 1.5},
      {"num_train_timesteps", 0},
      {"steps_offset", -1},
      {"sigma_min", -1.0},
  };
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(std::string(key) + " " + value.dump());
    expect_error(file_of("EulerDiscreteScheduler", {{key, value}}), StatusCode::kInvalidArgument,
                 std::string("\"") + key + "\"");
  }
  expect_error(
      file_of("DPMSolverMultistepScheduler", {{"use_karras_sigmas", true}, {"use_beta_sigmas", true}}),
      StatusCode::kInvalidArgument, "allows only one");
  expect_error(file_of("DPMSolverMultistepScheduler", {{"solver_type", "bogus"}}),
               StatusCode::kInvalidArgument, "\"solver_type\"");
  expect_error(file_of("DPMSolverMultistepScheduler", {{"solver_order", 0}}), StatusCode::kInvalidArgument,
               "\"solver_order\"");
  expect_error(file_of("DDIMScheduler", {{"clip_sample_range", 0}}), StatusCode::kInvalidArgument,
               "\"clip_sample_range\"");
}

TEST(SchedulerConfigErrors, WrongJsonTypesAreDataLoss) {
  expect_error(file_of("EulerDiscreteScheduler", {{"steps_offset", "1"}}), StatusCode::kDataLoss,
               "steps_offset");
  expect_error(file_of("DDIMScheduler", {{"clip_sample", "no"}}), StatusCode::kDataLoss, "clip_sample");
  expect_error(file_of("UniPCMultistepScheduler", {{"lower_order_final", 1}}), StatusCode::kDataLoss,
               "lower_order_final");
  expect_error(file_of("DPMSolverMultistepScheduler", {{"thresholding", "false"}}), StatusCode::kDataLoss,
               "thresholding");
}

TEST(SchedulerConfigErrors, DiffusersRewritesSomeSolverValues) {
  auto dpm = SchedulerConfig::from_json(
      file_of("DPMSolverMultistepScheduler", {{"solver_type", "bh2"}, {"algorithm_type", "deis"}}), kSource);
  ASSERT_TRUE(dpm.is_ok()) << dpm.status().to_string();
  EXPECT_EQ(dpm->solver_type, DpmSolverType::kMidpoint);
  EXPECT_EQ(dpm->algorithm_type, DpmAlgorithm::kDpmSolverPlusPlus);
  EXPECT_EQ(dpm->file_keys.at("solver_type"), "midpoint");
  auto unipc =
      SchedulerConfig::from_json(file_of("UniPCMultistepScheduler", {{"solver_type", "midpoint"}}), kSource);
  ASSERT_TRUE(unipc.is_ok()) << unipc.status().to_string();
  EXPECT_EQ(unipc->effective_json().at("solver_type"), "bh2");
}

TEST(SchedulerConfigErrors, OptionsTheSamplerDoesNotAccept) {
  auto euler_a = SchedulerConfig::from_json(file_of("EulerAncestralDiscreteScheduler"), kSource);
  ASSERT_TRUE(euler_a.is_ok());
  SamplerChoice c;
  c.sigmas = SigmaSchedule::kKarras;
  auto r = euler_a->with_choice(c);  // no name: checked against the folder's class
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("euler_a (the model's EulerAncestralDiscreteScheduler in " +
                                      std::string(kSource)),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("it accepts: timestep_spacing"), std::string::npos)
      << r.status().message();
  auto euler = SchedulerConfig::from_json(sdxl_file(), kSource);
  ASSERT_TRUE(euler.is_ok());
  for (auto [name, option] : {std::pair{SamplerName::kDdim, SamplerOption::kFinalSigmasType},
                              std::pair{SamplerName::kEuler, SamplerOption::kLowerOrderFinal},
                              std::pair{SamplerName::kUniPC, SamplerOption::kEulerAtFinal},
                              std::pair{SamplerName::kEulerAncestral, SamplerOption::kSigmas}}) {
    SamplerChoice d;
    d.name = name;
    if (option == SamplerOption::kFinalSigmasType) d.final_sigmas_type = FinalSigmas::kZero;
    if (option == SamplerOption::kLowerOrderFinal) d.lower_order_final = false;
    if (option == SamplerOption::kEulerAtFinal) d.euler_at_final = true;
    if (option == SamplerOption::kSigmas) d.sigmas = SigmaSchedule::kDefault;
    auto e = euler->with_choice(d);
    ASSERT_FALSE(e.is_ok()) << to_job_yaml(d);
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(e.status().message().find(std::string("scheduler option ") + to_string(option)),
              std::string::npos)
        << e.status().message();
    EXPECT_NE(e.status().message().find(option_list(accepted_options(name))), std::string::npos)
        << e.status().message();
  }
}

TEST(SchedulerConfigErrors, ACarriedValueTheNewClassCannotTakeNamesTheJobsChoice) {
  auto euler =
      SchedulerConfig::from_json(file_of("EulerDiscreteScheduler", {{"clip_sample", "no"}}), kSource);
  ASSERT_TRUE(euler.is_ok());  // Euler ignores clip_sample
  SamplerChoice c;
  c.name = SamplerName::kDdim;
  auto ddim = euler->with_choice(c);
  ASSERT_FALSE(ddim.is_ok());
  EXPECT_EQ(ddim.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(ddim.status().message().find("clip_sample"), std::string::npos);
  EXPECT_NE(ddim.status().message().find("read as DDIMScheduler for the job's scheduler: ddim"),
            std::string::npos)
      << ddim.status().message();
  // The folder's solver_order 3 goes to unipc as it is, but dpmpp_2m sets 2.
  auto order3 =
      SchedulerConfig::from_json(file_of("UniPCMultistepScheduler", {{"solver_order", 3}}), kSource);
  ASSERT_TRUE(order3.is_ok());
  c.name = SamplerName::kDpmpp2m;
  auto dpm = order3->with_choice(c);
  ASSERT_TRUE(dpm.is_ok()) << dpm.status().to_string();
  EXPECT_EQ(dpm->solver_order, 2);
}

TEST(ScheduleErrors, BadStepCounts) {
  for (const char* cls : {"EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler"}) {
    auto c = SchedulerConfig::from_json(file_of(cls), kSource);
    ASSERT_TRUE(c.is_ok());
    for (int64_t steps : {int64_t{0}, int64_t{-3}, int64_t{1001}}) {
      auto s = make_schedule(*c, steps);
      ASSERT_FALSE(s.is_ok()) << steps;
      EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(s.status().message().find(std::to_string(steps)), std::string::npos)
          << s.status().to_string();
      EXPECT_NE(s.status().message().find(cls), std::string::npos) << s.status().to_string();
    }
    EXPECT_TRUE(make_schedule(*c, 1000).is_ok());
  }
}

TEST(ConfigJson, PythonsNonFiniteTokensBecomeStrings) {
  auto j =
      parse_config_json(R"({"a": -Infinity, "b": [Infinity, NaN], "c": "-Infinity NaN", "d": 1})", "f.json");
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ(j->at("a"), "-Infinity");
  EXPECT_EQ(j->at("b"), json::array({"Infinity", "NaN"}));
  EXPECT_EQ(j->at("c"), "-Infinity NaN");
  EXPECT_EQ(j->at("d"), 1);
  auto bad = parse_config_json("{\n  \"a\": 1,\n  \"b\": }", "f.json");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("f.json:3:"), std::string::npos) << bad.status().message();
  auto deep = parse_config_json(std::string(100000, '[') + std::string(100000, ']'), "deep.json");
  EXPECT_EQ(deep.status().code(), StatusCode::kDataLoss);
}

TEST(ConfigJson, LoadFileReadsADpmFileAsDiffusersSavesIt) {
  testing::ScratchDir dir;
  const std::string path = dir.file("scheduler_config.json");
  testing::write_bytes(path,
                       R"({"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
    "algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": true})");
  auto c = SchedulerConfig::load_file(path);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->sampler(), SamplerName::kDpmpp2mSde);
  EXPECT_EQ(c->sigma_schedule, SigmaSchedule::kKarras);
  EXPECT_EQ(SchedulerConfig::load_file(dir.file("none.json")).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace sdxlb
