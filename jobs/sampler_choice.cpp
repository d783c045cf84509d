// The sampler vocabulary: one table of samplers, one table of which options each accepts (checked against
// the __init__ signatures of diffusers 0.42.1's scheduler classes), and the spellings of every value.
#include "jobs/sampler_choice.h"

#include <algorithm>
#include <cctype>

namespace sdxlb {
namespace {

// Which options each class has in diffusers 0.42.1 (its __init__ keyword arguments):
//   sigmas             use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas: Euler, DPM, UniPC
//   timestep_spacing   all five classes
//   final_sigmas_type  Euler, DPM, UniPC (not EulerAncestral, not DDIM)
//   lower_order_final  DPM, UniPC (the multistep methods)
//   euler_at_final     DPM only
bool accepts(SamplerName name, SamplerOption option) {
  const bool multistep = name == SamplerName::kDpmpp2m || name == SamplerName::kDpmpp2mSde;
  const bool sigma_options = multistep || name == SamplerName::kEuler || name == SamplerName::kUniPC;
  switch (option) {
    case SamplerOption::kTimestepSpacing:
      return true;
    case SamplerOption::kSigmas:
    case SamplerOption::kFinalSigmasType:
      return sigma_options;
    case SamplerOption::kLowerOrderFinal:
      return multistep || name == SamplerName::kUniPC;
    case SamplerOption::kEulerAtFinal:
      return multistep;
  }
  return false;
}

constexpr SamplerOption kAllOptions[] = {SamplerOption::kSigmas, SamplerOption::kTimestepSpacing,
                                         SamplerOption::kFinalSigmasType, SamplerOption::kLowerOrderFinal,
                                         SamplerOption::kEulerAtFinal};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

bool SamplerChoice::empty() const {
  return !name && options_set().empty();
}

bool SamplerChoice::has(SamplerOption option) const {
  switch (option) {
    case SamplerOption::kSigmas:
      return sigmas.has_value();
    case SamplerOption::kTimestepSpacing:
      return timestep_spacing.has_value();
    case SamplerOption::kFinalSigmasType:
      return final_sigmas_type.has_value();
    case SamplerOption::kLowerOrderFinal:
      return lower_order_final.has_value();
    case SamplerOption::kEulerAtFinal:
      return euler_at_final.has_value();
  }
  return false;
}

std::vector<SamplerOption> SamplerChoice::options_set() const {
  std::vector<SamplerOption> out;
  for (SamplerOption o : kAllOptions)
    if (has(o)) out.push_back(o);
  return out;
}

bool SamplerChoice::operator==(const SamplerChoice& other) const {
  return name == other.name && sigmas == other.sigmas && timestep_spacing == other.timestep_spacing &&
         final_sigmas_type == other.final_sigmas_type && lower_order_final == other.lower_order_final &&
         euler_at_final == other.euler_at_final;
}

const std::vector<SamplerInfo>& sampler_table() {
  // Our samplers and what the other tools call them. The settings column is what makes the class this sampler
  // (scheduler_config.cpp applies exactly these when a job names the sampler).
  static const std::vector<SamplerInfo> table = {
      {SamplerName::kEuler, "euler", "EulerDiscreteScheduler", "", "Euler", "euler"},
      {SamplerName::kEulerAncestral, "euler_a", "EulerAncestralDiscreteScheduler", "", "Euler a",
       "euler_ancestral"},
      {SamplerName::kDpmpp2m, "dpmpp_2m", "DPMSolverMultistepScheduler",
       "algorithm_type: dpmsolver++, solver_order: 2", "DPM++ 2M", "dpmpp_2m"},
      {SamplerName::kDpmpp2mSde, "dpmpp_2m_sde", "DPMSolverMultistepScheduler",
       "algorithm_type: sde-dpmsolver++, solver_order: 2", "DPM++ 2M SDE", "dpmpp_2m_sde"},
      {SamplerName::kDdim, "ddim", "DDIMScheduler", "", "DDIM", "ddim"},
      {SamplerName::kUniPC, "unipc", "UniPCMultistepScheduler", "solver_type: bh2", "UniPC", "uni_pc"},
  };
  return table;
}

const SamplerInfo& sampler_info(SamplerName name) {
  return sampler_table().at(static_cast<size_t>(name));
}

std::optional<SamplerName> sampler_from_id(std::string_view id) {
  for (const auto& s : sampler_table())
    if (id == s.id) return s.name;
  return std::nullopt;
}

bool sampler_accepts(SamplerName name, SamplerOption option) {
  return accepts(name, option);
}

std::vector<SamplerOption> accepted_options(SamplerName name) {
  std::vector<SamplerOption> out;
  for (SamplerOption o : kAllOptions)
    if (accepts(name, o)) out.push_back(o);
  return out;
}

std::string option_list(const std::vector<SamplerOption>& options) {
  std::string out;
  for (SamplerOption o : options) out += (out.empty() ? "" : ", ") + std::string(to_string(o));
  return out.empty() ? "none" : out;
}

const char* to_string(SamplerName value) {
  return sampler_info(value).id;
}

const char* to_string(SigmaSchedule value) {
  switch (value) {
    case SigmaSchedule::kDefault:
      return "default";
    case SigmaSchedule::kKarras:
      return "karras";
    case SigmaSchedule::kExponential:
      return "exponential";
    case SigmaSchedule::kBeta:
      return "beta";
  }
  return "?";
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

const char* to_string(FinalSigmas value) {
  return value == FinalSigmas::kZero ? "zero" : "sigma_min";
}

const char* to_string(SamplerOption value) {
  switch (value) {
    case SamplerOption::kSigmas:
      return "sigmas";
    case SamplerOption::kTimestepSpacing:
      return "timestep_spacing";
    case SamplerOption::kFinalSigmasType:
      return "final_sigmas_type";
    case SamplerOption::kLowerOrderFinal:
      return "lower_order_final";
    case SamplerOption::kEulerAtFinal:
      return "euler_at_final";
  }
  return "?";
}

std::optional<SigmaSchedule> sigma_schedule_from_string(std::string_view text) {
  for (SigmaSchedule v :
       {SigmaSchedule::kDefault, SigmaSchedule::kKarras, SigmaSchedule::kExponential, SigmaSchedule::kBeta})
    if (text == to_string(v)) return v;
  return std::nullopt;
}

std::optional<TimestepSpacing> timestep_spacing_from_string(std::string_view text) {
  for (TimestepSpacing v :
       {TimestepSpacing::kLinspace, TimestepSpacing::kLeading, TimestepSpacing::kTrailing})
    if (text == to_string(v)) return v;
  return std::nullopt;
}

std::optional<FinalSigmas> final_sigmas_from_string(std::string_view text) {
  for (FinalSigmas v : {FinalSigmas::kZero, FinalSigmas::kSigmaMin})
    if (text == to_string(v)) return v;
  return std::nullopt;
}

std::optional<SamplerChoice> sampler_from_other_tool(std::string_view text) {
  std::string t = lower(text);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  SamplerChoice choice;
  // A1111 before 1.6 folded the sigma schedule into the name ("DPM++ 2M Karras"); ComfyUI names it apart.
  for (const auto& [suffix, schedule] :
       {std::pair<const char*, SigmaSchedule>{" karras", SigmaSchedule::kKarras},
        std::pair<const char*, SigmaSchedule>{" exponential", SigmaSchedule::kExponential}}) {
    const std::string s(suffix);
    if (t.size() > s.size() && t.compare(t.size() - s.size(), s.size(), s) == 0) {
      t.resize(t.size() - s.size());
      choice.sigmas = schedule;
    }
  }
  for (const auto& info : sampler_table()) {
    if (t == lower(info.a1111) || t == info.comfyui || t == info.id) {
      choice.name = info.name;
      return choice;
    }
  }
  if (t == "uni_pc_bh2" || t == "unipc bh2") {  // ComfyUI's explicit variant; ours is bh2
    choice.name = SamplerName::kUniPC;
    return choice;
  }
  return std::nullopt;
}

std::string to_job_yaml(const SamplerChoice& choice) {
  if (choice.name && choice.options_set().empty()) return to_string(*choice.name);
  std::string out;
  auto add = [&](const std::string& key, const std::string& value) {
    out += (out.empty() ? "{" : ", ") + key + ": " + value;
  };
  if (choice.name) add("name", to_string(*choice.name));
  if (choice.sigmas) add("sigmas", to_string(*choice.sigmas));
  if (choice.timestep_spacing) add("timestep_spacing", to_string(*choice.timestep_spacing));
  if (choice.final_sigmas_type) add("final_sigmas_type", to_string(*choice.final_sigmas_type));
  if (choice.lower_order_final) add("lower_order_final", *choice.lower_order_final ? "true" : "false");
  if (choice.euler_at_final) add("euler_at_final", *choice.euler_at_final ? "true" : "false");
  return out.empty() ? "{}" : out + "}";
}

std::string sampler_choice_label(const SamplerChoice& c) {
  std::string out = c.name ? to_string(*c.name) : "model";
  if (c.sigmas) out += std::string(" sigmas=") + to_string(*c.sigmas);
  if (c.timestep_spacing) out += std::string(" timestep_spacing=") + to_string(*c.timestep_spacing);
  if (c.final_sigmas_type) out += std::string(" final_sigmas_type=") + to_string(*c.final_sigmas_type);
  if (c.lower_order_final)
    out += std::string(" lower_order_final=") + (*c.lower_order_final ? "true" : "false");
  if (c.euler_at_final) out += std::string(" euler_at_final=") + (*c.euler_at_final ? "true" : "false");
  return out;
}

std::string supported_samplers_text() {
  std::string out;
  for (const auto& s : sampler_table()) {
    out += std::string(out.empty() ? "" : ", ") + s.id + " (A1111 \"" + s.a1111 + "\", ComfyUI " + s.comfyui +
           ")";
  }
  return out;
}

}  // namespace sdxlb
