#include "pipeline/memory_plan.h"

#include <gtest/gtest.h>

namespace sdxlb {
namespace {

TEST(MemoryPlan, EstimateMatchesTheMeasurements) {
  // bench/results/2026-11-25-h100-speed.json: 7.40 / 14.52 / 24.03 GiB (full), 5.54 / 7.42 (tiny).
  EXPECT_NEAR(estimate_peak_gib(1, 1024, 1024, "full"), 7.40, 0.3);
  EXPECT_NEAR(estimate_peak_gib(4, 1024, 1024, "full"), 14.52, 0.3);
  EXPECT_NEAR(estimate_peak_gib(8, 1024, 1024, "full"), 24.03, 0.3);
  EXPECT_NEAR(estimate_peak_gib(1, 1024, 1024, "tiny"), 5.54, 0.3);
  EXPECT_NEAR(estimate_peak_gib(4, 1024, 1024, "tiny"), 7.42, 0.3);
  EXPECT_LT(estimate_peak_gib(4, 1024, 1024, "sliced"), estimate_peak_gib(4, 1024, 1024, "full"));
  EXPECT_LT(estimate_peak_gib(4, 512, 512, "full"), estimate_peak_gib(4, 1024, 1024, "full"));
}

TEST(MemoryPlan, LargeGpuGetsTheLargestBatchWithFullDecode) {
  auto p = choose_memory_plan({80, 1, std::nullopt}, MemoryRequest{});
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->decode, "full");
  EXPECT_EQ(p->batch_size, 8);
  EXPECT_EQ(p->placement, "resident");
}

TEST(MemoryPlan, CapsActLikeSmallerGpus) {
  // 24 GiB -> 21.6 usable: batch 7 full (21.5); 12 -> 10.8: batch 2 full (9.7); 8 -> 7.2: tiled batch 2
  // (6.6).
  auto p24 = choose_memory_plan({80, 1, 24.0}, MemoryRequest{});
  auto p12 = choose_memory_plan({80, 1, 12.0}, MemoryRequest{});
  auto p8 = choose_memory_plan({80, 1, 8.0}, MemoryRequest{});
  ASSERT_TRUE(p24.is_ok() && p12.is_ok() && p8.is_ok());
  EXPECT_EQ(p24->decode, "full");
  EXPECT_EQ(p24->batch_size, 7);
  EXPECT_EQ(p12->batch_size, 2);
  EXPECT_EQ(p8->decode, "tiled");
  EXPECT_EQ(p8->batch_size, 2);
  EXPECT_GE(p24->batch_size, p12->batch_size);
  // 4 GiB does not hold the resident weights: a clear error with the numbers and the fixes.
  auto p4 = choose_memory_plan({80, 1, 4.0}, MemoryRequest{});
  ASSERT_FALSE(p4.is_ok());
  EXPECT_EQ(p4.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(p4.status().message().find("max_gpu_gib"), std::string::npos);
}

TEST(MemoryPlan, TwoRanksShareOneGpu) {
  // A 40 GiB card: alone, batch 8 (24.0 of 36); shared by two ranks, 18 GiB each: batch 5 (16.8).
  auto one = choose_memory_plan({40, 1, std::nullopt}, MemoryRequest{});
  auto two = choose_memory_plan({40, 2, std::nullopt}, MemoryRequest{});
  ASSERT_TRUE(one.is_ok() && two.is_ok());
  EXPECT_NEAR(two->budget_gib, one->budget_gib / 2, 1e-9);
  EXPECT_LE(two->estimate_gib, two->budget_gib);
  EXPECT_EQ(one->batch_size, 8);
  EXPECT_EQ(two->batch_size, 5);
}

TEST(MemoryPlan, JobOverridesWin) {
  MemoryRequest r;
  r.batch_size = 3;
  r.decode = "tiled";
  auto p = choose_memory_plan({80, 1, std::nullopt}, r);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->batch_size, 3);
  EXPECT_EQ(p->decode, "tiled");
  MemoryRequest tiny;
  tiny.tiny_decoder = true;
  auto t = choose_memory_plan({16, 1, std::nullopt}, tiny);
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t->decode, "tiny");
  EXPECT_EQ(t->batch_size, 8);  // 4.91 + 0.63 * 8 = 9.9 GiB fits 14.4
}

TEST(MemoryPlan, UnimplementedPlacementsAreRefused) {
  MemoryRequest r;
  r.placement = "streamed";
  auto p = choose_memory_plan({80, 1, std::nullopt}, r);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(p.status().message().find("memory.placement: streamed"), std::string::npos);
}

}  // namespace
}  // namespace sdxlb
