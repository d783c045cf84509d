// JobPlan: the items of a job (prompts x images_per_prompt, prompt-major) with their seeds, and the unique
// prompt texts that the encode phase embeds.
//
// Items are computed on the fly from their index: nothing is stored per item, so 10 million prompts with
// several images each cost only the per-prompt text ids (8 bytes a prompt) and the unique texts.
//
// Item i belongs to prompt i / images_per_prompt and is image k = i % images_per_prompt of it. Its seed is
// base_seed + i (mod 2^64), unless the prompt has a seed s of its own: then s + k (mod 2^64). The seed
// depends only on the job and i, never on the cluster's shape.
//
// Thread-safety: immutable after build(); all const methods may run concurrently. The plan shares the
// job's prompt list (shared_ptr), so it stays valid after the JobSpec is gone.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "jobs/prompt_source.h"

namespace sdxlb {

struct JobSpec;

/// One image to render.
struct PlanItem {
  uint64_t index = 0;   ///< item index in the job, 0 .. num_items-1
  uint64_t prompt = 0;  ///< prompt index
  uint32_t image = 0;   ///< image k of this prompt, 0 .. images_per_prompt-1
  uint64_t seed = 0;    ///< seed of its initial latent noise
};

/// The deduplicated texts of a job (positives and non-empty negatives) and, per prompt, which text is its
/// positive and which its negative.
class UniqueTexts {
 public:
  /// The negative id of a prompt whose effective negative is "": no negative text to encode (the pipeline
  /// uses zero embeddings where force_zeros_for_empty_prompt holds).
  static constexpr uint32_t kNone = UINT32_MAX;

  /// Number of distinct texts.
  size_t size() const { return texts_.size(); }
  /// Text `id` (id < size()); valid as long as this object (or a copy) lives.
  std::string_view text(uint32_t id) const { return texts_[id]; }
  /// Id of prompt p's positive text.
  uint32_t positive_id(uint64_t p) const { return positive_[p]; }
  /// Id of prompt p's effective negative text, or kNone when it is "".
  uint32_t negative_id(uint64_t p) const { return negative_[p]; }

 private:
  friend class JobPlan;
  std::shared_ptr<const PromptList> prompts_;  // keeps the views into its text alive
  std::shared_ptr<const std::string> default_negative_;
  std::vector<std::string_view> texts_;
  std::vector<uint32_t> positive_, negative_;
};

/// The items of a job and its unique texts.
class JobPlan {
 public:
  /// Plans a validated job. Fails (kInvalidArgument) when the job has no prompts, when the item count
  /// would pass 2^62, or when there are 2^32-1 or more distinct texts.
  static StatusOr<JobPlan> build(const JobSpec& spec);
  /// Plans from parts (what build(spec) uses): prompts, the job's negative_prompt for prompts without one,
  /// images per prompt (>= 1) and the base seed.
  static StatusOr<JobPlan> build(std::shared_ptr<const PromptList> prompts, std::string default_negative,
                                 uint32_t images_per_prompt, uint64_t base_seed);

  uint64_t num_prompts() const { return num_prompts_; }
  uint32_t images_per_prompt() const { return images_per_prompt_; }
  uint64_t num_items() const { return num_prompts_ * images_per_prompt_; }
  uint64_t base_seed() const { return base_seed_; }

  /// Item i (i < num_items()).
  PlanItem item(uint64_t i) const {
    PlanItem it;
    it.index = i;
    it.prompt = i / images_per_prompt_;
    it.image = static_cast<uint32_t>(i % images_per_prompt_);
    auto own = prompts_->seed(static_cast<size_t>(it.prompt));
    it.seed = own ? *own + it.image : base_seed_ + i;  // unsigned arithmetic wraps mod 2^64
    return it;
  }
  /// Seed of item i (i < num_items()).
  uint64_t seed(uint64_t i) const { return item(i).seed; }

  /// The job's prompts.
  const PromptList& prompts() const { return *prompts_; }
  /// Prompt p's positive text.
  std::string_view prompt_text(uint64_t p) const { return prompts_->prompt(static_cast<size_t>(p)); }
  /// Prompt p's effective negative text (its own, else the job's negative_prompt).
  std::string_view negative_text(uint64_t p) const {
    return prompts_->negative_or(static_cast<size_t>(p), *texts_.default_negative_);
  }
  /// Distinct texts for the encode phase.
  const UniqueTexts& texts() const { return texts_; }
  /// Whether every prompt's effective negative is "" (no negative text in the whole job): with
  /// force_zeros_for_empty_prompt every negative conditioning is then zeros, a fact of the job that the
  /// render phase uses for all of its batches alike (RenderSettings::zero_negatives).
  bool every_negative_empty() const { return every_negative_empty_; }

 private:
  bool every_negative_empty_ = true;
  std::shared_ptr<const PromptList> prompts_;
  uint64_t num_prompts_ = 0;
  uint32_t images_per_prompt_ = 1;
  uint64_t base_seed_ = 0;
  UniqueTexts texts_;
};

}  // namespace sdxlb
