// The Euler class through SchedulerConfig / make_schedule / EulerSampler against diffusers'
// EulerDiscreteScheduler (fixtures from tests/oracle/ref_scheduler.py), plus the error paths.
#include "pipeline/samplers/scheduler_config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "pipeline/io/model_folder.h"
#include "pipeline/samplers/euler_sampler.h"
#include "pipeline/samplers/make_sampler.h"
#include "pipeline/samplers/schedule.h"
#include "test_files.h"

namespace sdxlb {
namespace {

using nlohmann::json;
using testing::fixtures_dir;

constexpr double kTol = 1e-6;

// Tolerances derived from float32 arithmetic, so that they hold whichever x86-64 CPU (and so whichever of
// torch's vector kernels) computed the reference, and still fail on a wrong beta schedule or a missing
// zero-SNR rescale (errors of 1e-2 and more). u is float32's unit roundoff.
constexpr double kU = 0x1p-24;

// A first-order bound on the relative error of the zero-SNR alphas_cumprod at training step t, for any
// float32 evaluation of diffusers' formula (ours or torch's, whatever their accumulation order):
//  - the cumulative products of t + 1 factors, each of which went through 1 - (1 - x) once more: 2 (t + 1) u;
//  - the shift sqrt(ac_t) - sqrt(ac_T) cancels: its relative error is u times k_t = s_t / (s_t - s_T), and
//    squaring doubles it, so 4 k_t u with a rounding to spare.
// `base` is the training alphas_cumprod without the rescale (same betas), from the same fixture.
double zero_snr_bound(const std::vector<double>& base, size_t t) {
  const size_t last = base.size() - 1;
  if (t >= last) return 2 * kU;  // set to 2^-24 exactly
  const double s_t = std::sqrt(base[t]), s_last = std::sqrt(base[last]);
  const double k = s_t / (s_t - s_last);
  return (2.0 * static_cast<double>(t + 1) + 4.0 * k + 8.0) * kU;
}

// The bound for a sigma of the zero-SNR schedule at (fractional) timestep `t`: sigma = sqrt((1 - ac) / ac),
// so its relative error is that of ac divided by 2 (1 - ac), plus the roundings of the formula and of the
// interpolation (8 u). Never below kTol, the tolerance of every other schedule.
double zero_snr_sigma_bound(const std::vector<double>& base, double t, double sigma) {
  const double ac = 1.0 / (1.0 + sigma * sigma);
  const auto lo = static_cast<size_t>(std::max(0.0, std::floor(t)));
  const auto hi = std::min(base.size() - 1, static_cast<size_t>(std::max(0.0, std::ceil(t))));
  const double ac_bound = std::max(zero_snr_bound(base, lo), zero_snr_bound(base, hi));
  return std::max(kTol, ac_bound / (2.0 * std::max(1e-30, 1.0 - ac)) + 8.0 * kU);
}

std::string sched_dir() {
  return fixtures_dir() + "/scheduler";
}

json load_json(const std::string& path) {
  auto j = read_json_file(path);
  EXPECT_TRUE(j.is_ok()) << j.status().to_string();
  return j.is_ok() ? *j : json();
}

json sdxl_config() {
  return json::parse(R"({"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
    "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false})");
}

/// max |a - b| / max |b| over the tensor (0 when both are all zero).
double max_rel_error(const at::Tensor& a, const at::Tensor& b) {
  const auto a64 = a.to(at::kDouble);
  const auto b64 = b.to(at::kDouble);
  const double diff = (a64 - b64).abs().max().item<double>();
  const double scale = b64.abs().max().item<double>();
  return scale > 0 ? diff / scale : diff;
}

TEST(EulerConfig, ReadsTheFixtureConfigFile) {
  const std::string path = fixtures_dir() + "/models/tiny-a/scheduler/scheduler_config.json";
  auto c = SchedulerConfig::from_json(load_json(path), path);
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->scheduler_class, SchedulerClass::kEulerDiscrete);
  EXPECT_EQ(c->sampler(), SamplerName::kEuler);
  EXPECT_EQ(c->num_train_timesteps, 1000);
  EXPECT_DOUBLE_EQ(c->beta_start, 0.00085);
  EXPECT_DOUBLE_EQ(c->beta_end, 0.012);
  EXPECT_EQ(c->beta_schedule, BetaSchedule::kScaledLinear);
  EXPECT_EQ(c->prediction_type, PredictionType::kEpsilon);
  EXPECT_EQ(c->timestep_spacing, TimestepSpacing::kLeading);
  EXPECT_EQ(c->timestep_type, TimestepType::kDiscrete);
  EXPECT_EQ(c->steps_offset, 1);
  EXPECT_EQ(c->final_sigmas_type, FinalSigmas::kZero);
  EXPECT_FALSE(c->rescale_betas_zero_snr);
}

TEST(EulerConfig, EmptyObjectGivesDiffusersDefaults) {
  auto c = SchedulerConfig::from_json(json{{"_class_name", "EulerDiscreteScheduler"}}, "x.json");
  ASSERT_TRUE(c.is_ok()) << c.status().to_string();
  EXPECT_EQ(c->beta_schedule, BetaSchedule::kLinear);
  EXPECT_EQ(c->timestep_spacing, TimestepSpacing::kLinspace);
  EXPECT_EQ(c->steps_offset, 0);
  EXPECT_DOUBLE_EQ(c->beta_start, 0.0001);
  EXPECT_DOUBLE_EQ(c->beta_end, 0.02);
}

TEST(EulerScheduleTest, MatchesDiffusersForEveryCase) {
  const json cases = load_json(sched_dir() + "/cases.json");
  const auto base_ac = load_json(sched_dir() + "/alphas_cumprod.json")
                           .at("base")
                           .at("alphas_cumprod")
                           .get<std::vector<double>>();
  ASSERT_GE(cases.size(), 30u);
  double max_t = 0, max_sigma = 0, max_init = 0;
  for (const auto& tc : cases) {
    const std::string name = tc.at("name");
    SCOPED_TRACE(name);
    auto config = SchedulerConfig::from_json(tc.at("config"), name);
    ASSERT_TRUE(config.is_ok()) << config.status().to_string();
    auto s = make_schedule(*config, tc.at("steps").get<int64_t>());
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    const auto ts = tc.at("timesteps").get<std::vector<double>>();
    const auto sigmas = tc.at("sigmas").get<std::vector<double>>();
    ASSERT_EQ(s->timesteps.size(), ts.size());
    ASSERT_EQ(s->sigmas.size(), sigmas.size());
    ASSERT_EQ(s->num_steps() + 1, static_cast<int64_t>(sigmas.size()));
    for (size_t i = 0; i < ts.size(); ++i) {
      const double e = std::abs(s->timesteps[i] - ts[i]);
      max_t = std::max(max_t, e);
      EXPECT_LE(e, kTol) << "timestep " << i << ": " << s->timesteps[i] << " vs " << ts[i];
    }
    const bool zero_snr = tc.at("config").value("rescale_betas_zero_snr", false);
    for (size_t i = 0; i < sigmas.size(); ++i) {
      const double ref = sigmas[i];
      const double e = ref == 0 ? std::abs(s->sigmas[i]) : std::abs(s->sigmas[i] - ref) / std::abs(ref);
      max_sigma = std::max(max_sigma, e);
      const double tol =
          zero_snr && i < ts.size() && ref != 0 ? zero_snr_sigma_bound(base_ac, ts[i], ref) : kTol;
      EXPECT_LE(e, tol) << "sigma " << i << ": " << s->sigmas[i] << " vs " << ref;
    }
    const double init_ref = tc.at("init_noise_sigma");
    const double e_init = std::abs(s->init_noise_sigma - init_ref) / init_ref;
    max_init = std::max(max_init, e_init);
    EXPECT_LE(e_init, kTol) << s->init_noise_sigma << " vs " << init_ref;
  }
  std::printf("[ max errors ] %zu cases: timesteps abs %.3g, sigmas rel %.3g, init_noise_sigma rel %.3g\n",
              cases.size(), max_t, max_sigma, max_init);
}

TEST(EulerScheduleTest, TrailingOvershootAndClampedLeadingMirrorDiffusers) {
  auto c = SchedulerConfig::from_json(sdxl_config(), "sdxl");
  ASSERT_TRUE(c.is_ok());
  c->timestep_spacing = TimestepSpacing::kTrailing;
  auto s = make_schedule(*c, 61);
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->num_steps(), 62);  // numpy's arange overshoot, as in diffusers
  EXPECT_EQ(s->timesteps.back(), -1.0f);
}

TEST(EulerScheduleTest, TrainingAlphasCumprodMatch) {
  const json tables = load_json(sched_dir() + "/alphas_cumprod.json");
  const auto base_ac = tables.at("base").at("alphas_cumprod").get<std::vector<double>>();
  for (const auto& [name, table] : tables.items()) {
    SCOPED_TRACE(name);
    auto c = SchedulerConfig::from_json(table.at("config"), name);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    const auto ref = table.at("alphas_cumprod").get<std::vector<double>>();
    auto schedule = make_schedule(*c, 1);
    ASSERT_TRUE(schedule.is_ok()) << schedule.status().to_string();
    const auto& got = schedule->alphas_cumprod;
    ASSERT_EQ(got.size(), ref.size());
    const bool zero_snr = table.at("config").value("rescale_betas_zero_snr", false);
    double worst = 0, worst_of_bound = 0;
    size_t exact = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double e = std::abs(got[i] - ref[i]) / ref[i];
      const double bound = zero_snr ? zero_snr_bound(base_ac, i) : kTol;
      worst = std::max(worst, e);
      worst_of_bound = std::max(worst_of_bound, e / bound);
      exact += static_cast<double>(got[i]) == ref[i];
      EXPECT_LE(e, bound) << "alphas_cumprod[" << i << "]: " << got[i] << " vs " << ref[i];
    }
    std::printf("[ max errors ] alphas_cumprod %s: rel %.3g (%.2f of its bound), %zu of %zu bit-identical\n",
                name.c_str(), worst, worst_of_bound, exact, ref.size());
    if (name == "base") {
      EXPECT_EQ(exact, ref.size());  // no sqrt involved: must be exact
    }
  }
}

// The Euler sampler of a scheduler_config.json object (what the pipeline makes for an Euler folder).
StatusOr<std::unique_ptr<Sampler>> euler_sampler(const json& config, int64_t steps) {
  SDXLB_ASSIGN_OR_RETURN(auto c, SchedulerConfig::from_json(config, "scheduler_config.json"));
  if (c.sampler() != SamplerName::kEuler) return invalid_argument("not an Euler config");
  return make_sampler(c, steps);
}

// Row k of a sampler's coefficient table, as the denoise loop hands it to the step (here on the CPU).
at::Tensor coefficient_row(const Sampler& sampler, int64_t k) {
  const int64_t w = sampler.coefficient_width();
  return at::from_blob(const_cast<float*>(sampler.coefficients().data()) + k * w, {w},
                       at::TensorOptions().dtype(at::kFloat))
      .clone();
}

// One step of the sampler on a copy of `x` (the step works in place).
at::Tensor sampler_step(const Sampler& sampler, const at::Tensor& x, const at::Tensor& model_output,
                        int64_t k) {
  SamplerTensors t;
  t.x = x.clone();
  sampler.step(t, model_output, coefficient_row(sampler, k));
  return t.x;
}

TEST(EulerSampler, MatchesDiffusersSteps) {
  const json runs = load_json(sched_dir() + "/steps.json");
  ASSERT_EQ(runs.size(), 3u);
  for (const auto& run : runs) {
    const std::string name = run.at("name");
    SCOPED_TRACE(name);
    const bool fp16 = run.at("dtype") == "float16";
    // fp32 must match to 1e-6; fp16 results are rounded to half, so allow one half ulp relative to the max.
    const double tol = fp16 ? 1e-3 : kTol;
    auto c = SchedulerConfig::from_json(run.at("config"), name);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    auto sampler = euler_sampler(run.at("config"), run.at("steps").get<int64_t>());
    ASSERT_TRUE(sampler.is_ok()) << sampler.status().to_string();
    auto schedule = make_schedule(*c, run.at("steps").get<int64_t>());
    ASSERT_TRUE(schedule.is_ok()) << schedule.status().to_string();
    const Schedule& s = *schedule;
    // The sampler's schedule is make_schedule's, value for value.
    ASSERT_EQ((*sampler)->timesteps(), s.timesteps);
    ASSERT_EQ(static_cast<const EulerSampler&>(**sampler).sigmas(), s.sigmas);
    const auto ref_sigmas = run.at("sigmas").get<std::vector<double>>();
    for (size_t i = 0; i < ref_sigmas.size(); ++i)
      EXPECT_NEAR(s.sigmas[i], ref_sigmas[i], 1e-6 * ref_sigmas[i]);
    auto w = WeightSet::open_file(sched_dir() + "/steps_" + name + ".safetensors");
    ASSERT_TRUE(w.is_ok()) << w.status().to_string();
    auto get = [&](const std::string& key) {
      auto t = w->get(key);
      EXPECT_TRUE(t.is_ok()) << t.status().to_string();
      return t.is_ok() ? *t : at::Tensor();
    };
    double worst_scale = 0, worst_step = 0, worst_chain = 0;
    at::Tensor chained = get("sample_0");
    for (int64_t k = 0; k < s.num_steps(); ++k) {
      const at::Tensor sample = get("sample_" + std::to_string(k));
      const at::Tensor eps = get("model_output_" + std::to_string(k));
      const at::Tensor scaled = (*sampler)->model_input(sample, coefficient_row(**sampler, k));
      EXPECT_EQ(scaled.scalar_type(), sample.scalar_type());
      worst_scale = std::max(worst_scale, max_rel_error(scaled, get("scaled_" + std::to_string(k))));
      const at::Tensor ref_prev = get("prev_" + std::to_string(k));
      const at::Tensor prev = sampler_step(**sampler, sample, eps, k);
      EXPECT_EQ(prev.scalar_type(), ref_prev.scalar_type());
      worst_step = std::max(worst_step, max_rel_error(prev, ref_prev));
      chained = sampler_step(**sampler, chained, eps, k);
      worst_chain = std::max(worst_chain, max_rel_error(chained, ref_prev));
    }
    std::printf("[ max errors ] step %s (%lld steps): scale_model_input %.3g, step %.3g, chained %.3g\n",
                name.c_str(), static_cast<long long>(s.num_steps()), worst_scale, worst_step, worst_chain);
    EXPECT_LE(worst_scale, tol);
    EXPECT_LE(worst_step, tol);
    EXPECT_LE(worst_chain, tol);
  }
}

TEST(EulerSampler, EpsilonStepIsXPlusEpsTimesDt) {
  auto c = SchedulerConfig::from_json(sdxl_config(), "sdxl");
  ASSERT_TRUE(c.is_ok());
  auto sampler = euler_sampler(sdxl_config(), 4);
  ASSERT_TRUE(sampler.is_ok()) << sampler.status().to_string();
  const at::Tensor x = at::linspace(-3, 3, 24, at::kFloat).reshape({2, 3, 4});
  const at::Tensor eps = at::cos(x);
  auto schedule = make_schedule(*c, 4);
  ASSERT_TRUE(schedule.is_ok());
  const Schedule& s = *schedule;
  for (int64_t k = 0; k < s.num_steps(); ++k) {
    const auto i = static_cast<size_t>(k);
    const double dt = static_cast<double>(s.sigmas[i + 1]) - s.sigmas[i];
    EXPECT_LE(max_rel_error(sampler_step(**sampler, x, eps, k), x + eps * dt), 1e-6) << k;
  }
}

// --- error paths -------------------------------------------------------------------------------------------

void expect_error(const json& j, StatusCode code, const std::string& key) {
  auto c = SchedulerConfig::from_json(j, "/m/scheduler/scheduler_config.json");
  ASSERT_FALSE(c.is_ok()) << "accepted: " << j.dump();
  EXPECT_EQ(c.status().code(), code) << c.status().to_string();
  EXPECT_NE(c.status().message().find("/m/scheduler/scheduler_config.json"), std::string::npos)
      << c.status().to_string();
  EXPECT_NE(c.status().message().find("\"" + key + "\""), std::string::npos) << c.status().to_string();
}

json with(const std::string& key, const json& value) {
  json j = sdxl_config();
  j[key] = value;
  return j;
}

TEST(EulerSchedulerErrors, UnknownValuesNameFileAndKey) {
  expect_error(with("timestep_spacing", "sometimes"), StatusCode::kInvalidArgument, "timestep_spacing");
  expect_error(with("prediction_type", "noise"), StatusCode::kInvalidArgument, "prediction_type");
  expect_error(with("final_sigmas_type", "one"), StatusCode::kInvalidArgument, "final_sigmas_type");
  expect_error(with("timestep_type", "analog"), StatusCode::kInvalidArgument, "timestep_type");
  expect_error(with("beta_end", 1.5), StatusCode::kInvalidArgument, "beta_end");
  expect_error(with("num_train_timesteps", 0), StatusCode::kInvalidArgument, "num_train_timesteps");
}

TEST(EulerSchedulerErrors, UnsupportedOptionsAreUnimplemented) {
  // (squaredcos_cap_v2 betas and Karras/exponential/beta sigmas are implemented: sampler_schedule_test.)
  expect_error(with("beta_schedule", "cubic"), StatusCode::kUnimplemented, "beta_schedule");
  expect_error(with("interpolation_type", "log_linear"), StatusCode::kUnimplemented, "interpolation_type");
  expect_error(with("prediction_type", "sample"), StatusCode::kUnimplemented, "prediction_type");
  expect_error(with("trained_betas", json::array({0.1, 0.2})), StatusCode::kUnimplemented, "trained_betas");
}

TEST(EulerSchedulerErrors, WrongJsonTypes) {
  expect_error(with("steps_offset", "1"), StatusCode::kDataLoss, "steps_offset");
  expect_error(with("timestep_spacing", 3), StatusCode::kDataLoss, "timestep_spacing");
  expect_error(with("use_karras_sigmas", "no"), StatusCode::kDataLoss, "use_karras_sigmas");
  expect_error(with("beta_start", json::array({1})), StatusCode::kDataLoss, "beta_start");
  auto c = SchedulerConfig::from_json(json::array({1, 2}), "cfg.json");
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(c.status().message().find("cfg.json"), std::string::npos);
}

TEST(EulerSchedulerErrors, BadStepCounts) {
  auto c = SchedulerConfig::from_json(sdxl_config(), "sdxl");
  ASSERT_TRUE(c.is_ok());
  for (int64_t steps : {int64_t{0}, int64_t{-3}, int64_t{1001}}) {
    auto s = make_schedule(*c, steps);
    ASSERT_FALSE(s.is_ok()) << steps;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(std::to_string(steps)), std::string::npos) << s.status().to_string();
  }
  EXPECT_TRUE(make_schedule(*c, 1000).is_ok());
}

TEST(EulerSamplerErrors, ShapeMismatchThrowsForTheLoopToReport) {
  // The step runs inside the denoise loop, where LibTorch errors are caught and reported with the phase.
  auto c = SchedulerConfig::from_json(sdxl_config(), "sdxl");
  ASSERT_TRUE(c.is_ok());
  auto sampler = euler_sampler(sdxl_config(), 4);
  ASSERT_TRUE(sampler.is_ok());
  const at::Tensor x = at::zeros({1, 4, 2, 2});
  EXPECT_THROW(sampler_step(**sampler, x, at::zeros({1, 3, 2, 2}), 0), c10::Error);
  EXPECT_FALSE(euler_sampler(sdxl_config(), 0).is_ok());
  EXPECT_FALSE(euler_sampler(sdxl_config(), 1001).is_ok());
}

}  // namespace
}  // namespace sdxlb
