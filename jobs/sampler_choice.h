// SamplerChoice: what a job's `scheduler:` key asks for, and the vocabulary of samplers and their options.
//
// A job names one of our six samplers (each is one of diffusers' scheduler classes with the settings that
// make it that sampler) and may override a few of the scheduler's options key by key. Every field left
// unset means "as the model folder's scheduler_config.json has it" (see
// pipeline/samplers/scheduler_config.h for how the two are merged, the way diffusers'
// `XScheduler.from_config(pipe.scheduler.config, **options)` does).
//
// Torch-free and YAML-free: job_spec.cpp reads the job file's key into a SamplerChoice, the pipeline merges
// it with the folder's config. All functions are pure; the tables are immutable.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sdxlb {

/// Our samplers. Each is one diffusers scheduler class with fixed settings (sampler_info()).
enum class SamplerName { kEuler, kEulerAncestral, kDpmpp2m, kDpmpp2mSde, kDdim, kUniPC };

/// How the inference sigmas are spaced: as the training table gives them at the spaced timesteps
/// (kDefault), or diffusers' use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas.
enum class SigmaSchedule { kDefault, kKarras, kExponential, kBeta };

/// How inference timesteps are picked from the training range ("timestep_spacing").
enum class TimestepSpacing { kLinspace, kLeading, kTrailing };

/// The sigma after the last step ("final_sigmas_type"): 0, or the smallest training sigma.
enum class FinalSigmas { kZero, kSigmaMin };

/// The options a job may set besides the sampler's name (the keys of the `scheduler:` map).
enum class SamplerOption { kSigmas, kTimestepSpacing, kFinalSigmasType, kLowerOrderFinal, kEulerAtFinal };

/// What the job asks for. Every field unset: the model folder's scheduler as it is.
struct SamplerChoice {
  std::optional<SamplerName> name;
  std::optional<SigmaSchedule> sigmas;
  std::optional<TimestepSpacing> timestep_spacing;
  std::optional<FinalSigmas> final_sigmas_type;
  std::optional<bool> lower_order_final;
  std::optional<bool> euler_at_final;

  /// No field set.
  bool empty() const;
  /// Whether `option` is set.
  bool has(SamplerOption option) const;
  /// The options that are set, in SamplerOption order.
  std::vector<SamplerOption> options_set() const;
  bool operator==(const SamplerChoice& other) const;
  bool operator!=(const SamplerChoice& other) const { return !(*this == other); }
};

/// One row of the sampler table.
struct SamplerInfo {
  SamplerName name;
  const char* id;               ///< our name, as the job file spells it: "dpmpp_2m"
  const char* diffusers_class;  ///< "DPMSolverMultistepScheduler"
  const char* settings;         ///< the class settings that make it this sampler, "" when none
  const char* a1111;            ///< the AUTOMATIC1111 web UI's name: "DPM++ 2M"
  const char* comfyui;          ///< ComfyUI's sampler_name: "dpmpp_2m"
};

/// Every sampler, in SamplerName order.
const std::vector<SamplerInfo>& sampler_table();
/// The row of `name`.
const SamplerInfo& sampler_info(SamplerName name);
/// Our name -> sampler (exact spelling, e.g. "euler_a"); nullopt when unknown.
std::optional<SamplerName> sampler_from_id(std::string_view id);

/// Whether diffusers 0.42.1's class for `name` has the option (e.g. EulerAncestralDiscreteScheduler has no
/// use_karras_sigmas, so kEulerAncestral does not accept kSigmas).
bool sampler_accepts(SamplerName name, SamplerOption option);
/// The options `name` accepts, in SamplerOption order.
std::vector<SamplerOption> accepted_options(SamplerName name);
/// "timestep_spacing" or "sigmas, timestep_spacing, final_sigmas_type" (job-file keys, ", "-joined); "none"
/// when empty.
std::string option_list(const std::vector<SamplerOption>& options);

/// Our id ("dpmpp_2m").
const char* to_string(SamplerName value);
/// The job file's value ("karras"; "default" for kDefault).
const char* to_string(SigmaSchedule value);
/// diffusers' spelling ("trailing").
const char* to_string(TimestepSpacing value);
/// diffusers' spelling ("sigma_min").
const char* to_string(FinalSigmas value);
/// The job file's key ("final_sigmas_type").
const char* to_string(SamplerOption value);

/// Job-file value -> enum (exact spelling); nullopt when unknown.
std::optional<SigmaSchedule> sigma_schedule_from_string(std::string_view text);
std::optional<TimestepSpacing> timestep_spacing_from_string(std::string_view text);
std::optional<FinalSigmas> final_sigmas_from_string(std::string_view text);

/// What another tool calls a sampler, as our choice: A1111's "DPM++ 2M Karras" is {dpmpp_2m, karras},
/// ComfyUI's "euler_ancestral" is {euler_a}. Case-insensitive. nullopt when the text is none of them. Job
/// files do not accept these names (one spelling per concept); the job parser uses this for its hint.
std::optional<SamplerChoice> sampler_from_other_tool(std::string_view text);

/// How to write `choice` in a job file: "dpmpp_2m" or "{name: dpmpp_2m, sigmas: karras}".
std::string to_job_yaml(const SamplerChoice& choice);

/// A short label for logs and per-item metadata: "dpmpp_2m", "dpmpp_2m sigmas=karras", "model" (nothing
/// set: the model folder's scheduler), "model sigmas=karras".
std::string sampler_choice_label(const SamplerChoice& choice);

/// The supported names with the other tools' names, on one line for messages:
/// "euler (A1111 "Euler", ComfyUI euler), euler_a (A1111 "Euler a", ComfyUI euler_ancestral), ...".
std::string supported_samplers_text();

}  // namespace sdxlb
