// JobPlan: prompt-major items, the seed rule (base + i, or the prompt's own seed + k, both mod 2^64), and
// the unique texts for the encode phase.
#include "jobs/job_plan.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include "jobs/job_spec.h"

namespace sdxlb {
namespace {

std::shared_ptr<const PromptList> list_of(std::initializer_list<std::string> texts) {
  auto l = std::make_shared<PromptList>();
  for (const auto& t : texts) EXPECT_TRUE(l->add(t).is_ok());
  return l;
}

TEST(JobPlan, ItemsArePromptMajor) {
  auto plan = JobPlan::build(list_of({"a", "b", "c"}), "", 4, 100);
  ASSERT_TRUE(plan.is_ok()) << plan.status().message();
  EXPECT_EQ(plan->num_prompts(), 3u);
  EXPECT_EQ(plan->num_items(), 12u);
  for (uint64_t i = 0; i < plan->num_items(); ++i) {
    const PlanItem it = plan->item(i);
    EXPECT_EQ(it.index, i);
    EXPECT_EQ(it.prompt, i / 4);
    EXPECT_EQ(it.image, i % 4);
    EXPECT_EQ(it.seed, 100 + i);
  }
  EXPECT_EQ(plan->prompt_text(plan->item(7).prompt), "b");
}

TEST(JobPlan, OwnSeedGivesSeedPlusImage) {
  auto l = std::make_shared<PromptList>();
  ASSERT_TRUE(l->add("base-seeded").is_ok());
  ASSERT_TRUE(l->add("own", std::nullopt, 5000).is_ok());
  ASSERT_TRUE(l->add("own-at-max", std::nullopt, UINT64_MAX).is_ok());
  ASSERT_TRUE(l->add("base-seeded again").is_ok());
  auto plan = JobPlan::build(l, "", 3, 10);
  ASSERT_TRUE(plan.is_ok());
  const uint64_t expected[] = {10, 11, 12, 5000, 5001, 5002, UINT64_MAX, 0, 1, 19, 20, 21};
  for (uint64_t i = 0; i < 12; ++i) EXPECT_EQ(plan->seed(i), expected[i]) << "item " << i;
}

TEST(JobPlan, BaseSeedWrapsAround) {
  auto plan = JobPlan::build(list_of({"a", "b"}), "", 2, UINT64_MAX - 1);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->seed(0), UINT64_MAX - 1);
  EXPECT_EQ(plan->seed(1), UINT64_MAX);
  EXPECT_EQ(plan->seed(2), 0u);
  EXPECT_EQ(plan->seed(3), 1u);
}

TEST(JobPlan, UniqueTextsDeduplicatePositivesAndNegatives) {
  auto l = std::make_shared<PromptList>();
  ASSERT_TRUE(l->add("a fox").is_ok());                              // negative: job default "blurry"
  ASSERT_TRUE(l->add("a bird", std::string_view("a fox")).is_ok());  // negative equals another positive
  ASSERT_TRUE(l->add("a fox", std::string_view("")).is_ok());        // explicitly no negative
  ASSERT_TRUE(l->add("blurry", std::string_view("blurry")).is_ok());
  auto plan = JobPlan::build(l, "blurry", 1, 0);
  ASSERT_TRUE(plan.is_ok());
  const UniqueTexts& t = plan->texts();
  ASSERT_EQ(t.size(), 3u);  // "a fox", "blurry", "a bird"
  EXPECT_EQ(t.text(t.positive_id(0)), "a fox");
  EXPECT_EQ(t.text(t.negative_id(0)), "blurry");
  EXPECT_EQ(t.positive_id(2), t.positive_id(0));
  EXPECT_EQ(t.negative_id(1), t.positive_id(0));
  EXPECT_EQ(t.negative_id(2), UniqueTexts::kNone);
  EXPECT_EQ(t.positive_id(3), t.negative_id(0));
  EXPECT_EQ(t.negative_id(3), t.negative_id(0));
  EXPECT_EQ(plan->negative_text(0), "blurry");
  EXPECT_EQ(plan->negative_text(2), "");
  EXPECT_FALSE(plan->every_negative_empty());
}

// every_negative_empty: true only when no prompt of the job has a negative text, its own or the job's.
TEST(JobPlan, EveryNegativeEmptyIsAFactOfTheWholeJob) {
  auto none = JobPlan::build(list_of({"a", "b"}), "", 1, 0);
  ASSERT_TRUE(none.is_ok());
  EXPECT_TRUE(none->every_negative_empty());
  auto job_default = JobPlan::build(list_of({"a", "b"}), "blurry", 1, 0);
  ASSERT_TRUE(job_default.is_ok());
  EXPECT_FALSE(job_default->every_negative_empty());
  auto l = std::make_shared<PromptList>();
  ASSERT_TRUE(l->add("a").is_ok());
  ASSERT_TRUE(l->add("b", std::string_view("")).is_ok());
  ASSERT_TRUE(l->add("c", std::string_view("dark")).is_ok());  // one prompt's own negative is enough
  auto one = JobPlan::build(l, "", 1, 0);
  ASSERT_TRUE(one.is_ok());
  EXPECT_FALSE(one->every_negative_empty());
  auto l2 = std::make_shared<PromptList>();
  ASSERT_TRUE(l2->add("a", std::string_view("")).is_ok());  // explicitly none, over a job default
  auto own_empty = JobPlan::build(l2, "blurry", 1, 0);
  ASSERT_TRUE(own_empty.is_ok());
  EXPECT_TRUE(own_empty->every_negative_empty());
}

TEST(JobPlan, EmptyDefaultNegativeMeansNone) {
  auto plan = JobPlan::build(list_of({"a", "b"}), "", 1, 0);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->texts().size(), 2u);
  EXPECT_EQ(plan->texts().negative_id(0), UniqueTexts::kNone);
  EXPECT_EQ(plan->texts().negative_id(1), UniqueTexts::kNone);
}

TEST(JobPlan, ManyDistinctTextsSurviveTableGrowth) {
  auto l = std::make_shared<PromptList>();
  for (int i = 0; i < 100000; ++i) ASSERT_TRUE(l->add("prompt " + std::to_string(i % 50000)).is_ok());
  auto plan = JobPlan::build(l, "neg", 1, 0);
  ASSERT_TRUE(plan.is_ok());
  const UniqueTexts& t = plan->texts();
  EXPECT_EQ(t.size(), 50001u);
  for (int i = 0; i < 100000; i += 997) {
    EXPECT_EQ(t.text(t.positive_id(i)), "prompt " + std::to_string(i % 50000));
    EXPECT_EQ(t.positive_id(i), t.positive_id((i + 50000) % 100000));
    EXPECT_EQ(t.text(t.negative_id(i)), "neg");
  }
}

TEST(JobPlan, PlanOutlivesSpecAndCopies) {
  StatusOr<JobPlan> plan = Status(StatusCode::kInternal, "unset");
  {
    JobLoadOptions o;
    o.check_paths = false;
    auto spec = JobSpec::parse(
        "model: m\noutput: o\nnegative_prompt: a long default negative prompt that is not small\n"
        "images_per_prompt: 2\nseed: 7\nprompts:\n  - x\n  - {prompt: y, seed: 3}\n",
        "job.yaml", "/tmp", o);
    ASSERT_TRUE(spec.is_ok()) << spec.status().message();
    plan = JobPlan::build(*spec);
  }
  ASSERT_TRUE(plan.is_ok());
  JobPlan copy = *plan;
  plan = Status(StatusCode::kInternal, "gone");
  EXPECT_EQ(copy.num_items(), 4u);
  EXPECT_EQ(copy.seed(1), 8u);
  EXPECT_EQ(copy.seed(2), 3u);
  EXPECT_EQ(copy.seed(3), 4u);
  EXPECT_EQ(copy.texts().text(copy.texts().negative_id(0)),
            "a long default negative prompt that is not small");
}

TEST(JobPlan, RejectsEmptyPrompts) {
  auto plan = JobPlan::build(std::make_shared<PromptList>(), "", 1, 0);
  ASSERT_FALSE(plan.is_ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
}

TEST(JobPlan, TwoMillionPromptsPlanQuickly) {
  auto l = std::make_shared<PromptList>();
  l->reserve(2000000, 2000000 * 24);
  for (int i = 0; i < 2000000; ++i) ASSERT_TRUE(l->add("a photo of thing " + std::to_string(i)).is_ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto plan = JobPlan::build(l, "blurry", 4, 0);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->num_items(), 8000000u);
  EXPECT_EQ(plan->texts().size(), 2000001u);
  EXPECT_EQ(plan->item(7999999).prompt, 1999999u);
  EXPECT_LT(s, 10.0);
  std::printf("planned 2M prompts (8M items) in %.3f s\n", s);
}

}  // namespace
}  // namespace sdxlb
