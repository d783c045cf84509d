#include "jobs/job_plan.h"

#include <functional>
#include <utility>

#include "jobs/job_spec.h"

namespace sdxlb {
namespace {

// Interns texts into ids with an open-addressing table (8 bytes a slot: a 32-bit hash tag and the id). A
// node-based map would cost ~50 bytes a text, too much at 10 million prompts; the tag skips the string
// compare on almost every probe that is not a match (prompts often share long prefixes). Views point into
// storage the caller keeps alive.
class TextInterner {
 public:
  TextInterner(std::vector<std::string_view>* texts, size_t expected) : texts_(texts) {
    size_t cap = 16;
    while (cap * 7 < (expected + 1) * 10) cap *= 2;
    slots_.assign(cap, kEmpty);
  }

  // Returns the id of s, adding it if new; UINT32_MAX when the id space is exhausted.
  uint32_t intern(std::string_view s) {
    if ((texts_->size() + 1) * 10 > slots_.size() * 7) grow();
    const size_t h = hash(s);
    const uint64_t tag = static_cast<uint64_t>(h >> 32) << 32;
    const size_t mask = slots_.size() - 1;
    for (size_t pos = h & mask;; pos = (pos + 1) & mask) {
      const uint64_t slot = slots_[pos];
      if (slot == kEmpty) {
        if (texts_->size() >= UINT32_MAX - 1) return UINT32_MAX;
        const auto id = static_cast<uint32_t>(texts_->size());
        slots_[pos] = tag | id;
        texts_->push_back(s);
        return id;
      }
      if ((slot & kTagMask) == tag) {
        const auto id = static_cast<uint32_t>(slot);
        if ((*texts_)[id] == s) return id;
      }
    }
  }

 private:
  static constexpr uint64_t kEmpty = UINT64_MAX;  // id UINT32_MAX is never handed out
  static constexpr uint64_t kTagMask = ~uint64_t{0xffffffff};
  static size_t hash(std::string_view s) { return std::hash<std::string_view>{}(s); }

  void grow() {
    std::vector<uint64_t> old;
    old.swap(slots_);
    slots_.assign(old.size() * 2, kEmpty);
    const size_t mask = slots_.size() - 1;
    for (uint64_t slot : old) {
      if (slot == kEmpty) continue;
      size_t pos = hash((*texts_)[static_cast<uint32_t>(slot)]) & mask;
      while (slots_[pos] != kEmpty) pos = (pos + 1) & mask;
      slots_[pos] = slot;
    }
  }

  std::vector<std::string_view>* texts_;
  std::vector<uint64_t> slots_;
};

}  // namespace

StatusOr<JobPlan> JobPlan::build(const JobSpec& spec) {
  if (spec.images_per_prompt < 1 || spec.images_per_prompt > UINT32_MAX) {
    return invalid_argument("images_per_prompt " + std::to_string(spec.images_per_prompt) +
                            " is out of range; use an integer from 1 to 1000000");
  }
  return build(spec.prompts, spec.negative_prompt, static_cast<uint32_t>(spec.images_per_prompt), spec.seed);
}

StatusOr<JobPlan> JobPlan::build(std::shared_ptr<const PromptList> prompts, std::string default_negative,
                                 uint32_t images_per_prompt, uint64_t base_seed) {
  if (!prompts || prompts->empty()) {
    return invalid_argument("the job has no prompts; set prompts or prompts_file in the job file");
  }
  if (images_per_prompt < 1) return invalid_argument("images_per_prompt must be at least 1");
  const uint64_t n = prompts->size();
  if (n > (uint64_t{1} << 62) / images_per_prompt) {
    return invalid_argument("prompts x images_per_prompt exceeds 2^62 items; split the job");
  }
  JobPlan plan;
  plan.prompts_ = prompts;
  plan.num_prompts_ = n;
  plan.images_per_prompt_ = images_per_prompt;
  plan.base_seed_ = base_seed;

  UniqueTexts& t = plan.texts_;
  t.prompts_ = prompts;
  t.default_negative_ = std::make_shared<const std::string>(std::move(default_negative));
  t.positive_.resize(n);
  t.negative_.resize(n);
  const std::string_view fallback = *t.default_negative_;
  t.texts_.reserve(static_cast<size_t>(n) + 1);
  TextInterner interner(&t.texts_, static_cast<size_t>(n));
  const Status too_many =
      invalid_argument("the job has more than 2^32-2 distinct prompt texts; split the job");
  for (size_t p = 0; p < n; ++p) {
    const uint32_t pos = interner.intern(prompts->prompt(p));
    if (pos == UniqueTexts::kNone) return too_many;
    t.positive_[p] = pos;
    const std::string_view neg = prompts->negative_or(p, fallback);
    if (neg.empty()) {
      t.negative_[p] = UniqueTexts::kNone;
    } else {
      plan.every_negative_empty_ = false;
      const uint32_t id = interner.intern(neg);
      if (id == UniqueTexts::kNone) return too_many;
      t.negative_[p] = id;
    }
  }
  t.texts_.shrink_to_fit();
  return plan;
}

}  // namespace sdxlb
