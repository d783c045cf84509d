// SchedulerConfig: a model folder's scheduler_config.json as one of the five diffusers 0.42.1 scheduler
// classes we implement, and its merge with a job's SamplerChoice.
//
// from_json reads `_class_name` and every key of that class, with that class's own defaults (they differ:
// DDIMScheduler defaults to "leading" spacing, clip_sample and set_alpha_to_one true; the others to
// "linspace"). A value this port does not implement is an error naming the file, the key, the value and
// what is supported; never a silent fallback. with_choice then does what diffusers'
// `XScheduler.from_config(pipe.scheduler.config, **options)` does: the folder file's keys that the new
// class has are carried over (training betas, prediction type, spacing, and also keys the folder's class
// ignores, such as SDXL base's `set_alpha_to_one: false`, which DDIM picks up), the new class's defaults
// fill the rest, and the job's options override key by key.
//
// Torch-free. A SchedulerConfig is an immutable value once made; safe to share between threads.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "jobs/sampler_choice.h"

namespace sdxlb {

/// The diffusers scheduler classes we implement.
enum class SchedulerClass {
  kEulerDiscrete,
  kEulerAncestralDiscrete,
  kDpmSolverMultistep,
  kDdim,
  kUniPCMultistep
};
/// How betas are spaced over the training timesteps ("beta_schedule").
enum class BetaSchedule { kLinear, kScaledLinear, kSquaredCosCapV2 };
/// What the model predicts ("prediction_type").
enum class PredictionType { kEpsilon, kVPrediction };
/// What the UNet is given as timestep ("timestep_type", EulerDiscrete only): the discrete timestep, or
/// 0.25·log(σ) (only used by diffusers together with v_prediction).
enum class TimestepType { kDiscrete, kContinuous };
/// DPMSolverMultistep's "algorithm_type" (the two we implement).
enum class DpmAlgorithm { kDpmSolverPlusPlus, kSdeDpmSolverPlusPlus };
/// DPMSolverMultistep's "solver_type": the second-order update's form.
enum class DpmSolverType { kMidpoint, kHeun };

/// diffusers' spelling of each value (e.g. "DPMSolverMultistepScheduler", "v_prediction").
const char* to_string(SchedulerClass value);
const char* to_string(BetaSchedule value);
const char* to_string(PredictionType value);
const char* to_string(TimestepType value);
const char* to_string(DpmAlgorithm value);
const char* to_string(DpmSolverType value);
/// The class a sampler is made of.
SchedulerClass scheduler_class_of(SamplerName name);

/// One scheduler's effective settings. Fields a class does not have keep the defaults shown and are unused.
struct SchedulerConfig {
  SchedulerClass scheduler_class = SchedulerClass::kEulerDiscrete;
  std::string source;  ///< the file it came from, for messages

  // --- the training table (every class)
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::kLinear;
  bool rescale_betas_zero_snr = false;
  PredictionType prediction_type = PredictionType::kEpsilon;

  // --- inference timesteps (every class)
  TimestepSpacing timestep_spacing = TimestepSpacing::kLinspace;  ///< DDIM's default is kLeading
  int64_t steps_offset =
      0;  ///< added to "leading" timesteps; ignored by the other spacings (as in diffusers)

  // --- inference sigmas (EulerDiscrete, DPMSolverMultistep, UniPCMultistep)
  SigmaSchedule sigma_schedule = SigmaSchedule::kDefault;  ///< use_karras/exponential/beta_sigmas
  /// Bounds of those schedules (unset: the table's). EulerDiscrete and UniPC keys; DPMSolverMultistep reads
  /// them too when the file has them (diffusers looks them up with hasattr(self.config, ...)).
  std::optional<double> sigma_min;
  std::optional<double> sigma_max;
  FinalSigmas final_sigmas_type = FinalSigmas::kZero;
  TimestepType timestep_type = TimestepType::kDiscrete;  ///< EulerDiscrete

  // --- multistep methods (DPMSolverMultistep, UniPCMultistep)
  int64_t solver_order = 2;
  bool lower_order_final = true;
  DpmAlgorithm algorithm_type = DpmAlgorithm::kDpmSolverPlusPlus;  ///< DPM
  DpmSolverType solver_type = DpmSolverType::kMidpoint;            ///< DPM (UniPC's is always bh2)
  bool euler_at_final = false;                                     ///< DPM
  double lambda_min_clipped =
      -std::numeric_limits<double>::infinity();  ///< DPM: timesteps whose log-SNR is below this are skipped

  // --- DDIM
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;

  /// The file's public keys (not starting with "_") as the folder's class registered them: what diffusers'
  /// from_config carries to another class. Keys the file lists in "_use_default_values" are left out, as
  /// from_config leaves them out.
  nlohmann::json file_keys = nlohmann::json::object();

  /// Reads a scheduler_config.json object; `source` (the file path) starts every message.
  /// Errors: kDataLoss for a non-object, a missing `_class_name` or a key of the wrong JSON type;
  /// kUnimplemented for a class we do not implement (listing the ones we do) and for a value diffusers knows
  /// but this port does not (beta_schedule "cubic", use_lu_lambdas true, solver_type "bh1", thresholding
  /// true, trained_betas, ...); kInvalidArgument for a value diffusers refuses too or that is out of range
  /// (timestep_spacing "sometimes", two of use_karras/exponential/beta_sigmas, beta_end 2).
  static StatusOr<SchedulerConfig> from_json(const nlohmann::json& json, const std::string& source);
  /// Reads and parses the file (Python's json writes -Infinity for DPM's lambda_min_clipped: accepted),
  /// then from_json. Errors: kNotFound, kIoError, kDataLoss (bad JSON, with line and column), and
  /// from_json's.
  static StatusOr<SchedulerConfig> load_file(const std::string& path);

  /// The config with the job's choice applied (see the file comment). With no name, the class stays and
  /// only the options change. Errors: kInvalidArgument when the resulting sampler does not accept one of
  /// the options (listing those it accepts); the errors of from_json for a carried value the new class
  /// cannot take (e.g. the folder's solver_order 3 into dpmpp_2m is overridden, but into unipc it is kept).
  StatusOr<SchedulerConfig> with_choice(const SamplerChoice& choice) const;

  /// Which of our samplers this is (DPMSolverMultistep: dpmpp_2m or dpmpp_2m_sde by algorithm_type).
  SamplerName sampler() const;

  /// The whole effective config as diffusers' `scheduler.config` would hold it, for metadata and identity:
  /// "_class_name", "_sampler" (our name) and every __init__ key of the class with its value, keys sorted.
  /// Non-finite numbers are written as the strings "-Infinity", "Infinity" (JSON has no such numbers).
  nlohmann::json effective_json() const;
};

/// The scheduler a job renders with: the folder's scheduler_config.json merged with the job's choice. When
/// the choice names a sampler, the folder's class need not be one we implement (PNDMScheduler,
/// LMSDiscreteScheduler, ...): its keys are carried over as from_config carries them. Errors: those of
/// from_json (for the folder's own class only when the choice names no sampler) and of with_choice.
StatusOr<SchedulerConfig> resolve_scheduler(const nlohmann::json& folder_json, const std::string& source,
                                            const SamplerChoice& choice);

/// Parses JSON text as Python's json module writes it: the bare tokens -Infinity, Infinity and NaN (which
/// strict JSON and nlohmann refuse) become the strings "-Infinity", "Infinity" and "NaN", which the
/// scheduler's float keys accept. Errors: kDataLoss naming `source`, the line and the column.
StatusOr<nlohmann::json> parse_config_json(const std::string& text, const std::string& source);

}  // namespace sdxlb
