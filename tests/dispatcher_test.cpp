#include "coordinator/dispatcher.h"

#include <gtest/gtest.h>

#include "coordinator/progress.h"

namespace sdxlb {
namespace {

TEST(Dispatcher, BatchesFollowFixedGroups) {
  // Items 1 and 5 are already done: groups of 4 are {0,2,3}, {4,6,7}, {8,9}.
  Dispatcher d({0, 2, 3, 4, 6, 7, 8, 9}, 4);
  EXPECT_EQ(d.total(), 8);
  EXPECT_EQ(d.next(1), (std::vector<int64_t>{0, 2, 3}));
  EXPECT_EQ(d.next(2), (std::vector<int64_t>{4, 6, 7}));
  EXPECT_EQ(d.remaining(), 2);
  EXPECT_EQ(d.in_flight(), 6);
  d.finished(1, {0, 2, 3});
  EXPECT_EQ(d.next(1), (std::vector<int64_t>{8, 9}));
  EXPECT_TRUE(d.next(1).empty());
  EXPECT_FALSE(d.idle());
  d.finished(1, {8, 9});
  d.finished(2, {4, 6, 7});
  EXPECT_TRUE(d.idle());
}

TEST(Dispatcher, CompositionDoesNotDependOnWorkers) {
  std::vector<int64_t> all;
  for (int64_t i = 0; i < 23; ++i) all.push_back(i);
  Dispatcher one(all, 5), three(all, 5);
  std::vector<std::vector<int64_t>> a, b;
  for (auto x = one.next(1); !x.empty(); x = one.next(1)) a.push_back(x);
  int w = 0;
  for (auto x = three.next(w); !x.empty(); x = three.next(w = (w + 1) % 3)) b.push_back(x);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.back(), (std::vector<int64_t>{20, 21, 22}));
}

TEST(Dispatcher, RequeueKeepsGroups) {
  Dispatcher d({0, 1, 2, 3, 4, 5}, 2);
  auto first = d.next(7);
  auto second = d.next(7);
  d.finished(7, {0});
  d.requeue(7);
  EXPECT_EQ(d.in_flight(), 0);
  EXPECT_EQ(d.next(8), (std::vector<int64_t>{1}));
  EXPECT_EQ(d.next(8), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(d.next(8), (std::vector<int64_t>{4, 5}));
}

TEST(ItemRanges, ComplementAndMerging) {
  auto r = ItemRanges::all_but(10, {0, 3, 4, 9, 12});
  EXPECT_EQ(r.ranges(), (std::vector<ItemRanges::Range>{{1, 3}, {5, 9}}));
  EXPECT_EQ(r.count(), 6);
  EXPECT_EQ(ItemRanges::of({5, 1, 2, 2, 3}).ranges(), (std::vector<ItemRanges::Range>{{1, 4}, {5, 6}}));
  EXPECT_TRUE(ItemRanges::all_but(3, {0, 1, 2}).empty());
}

// issue 12, case 7: the dispatcher kept every item index in vectors (1e9 items: 12 GB of RSS). Batches are
// now cut from ranges; a billion pending items cost a handful of bytes.
TEST(Dispatcher, ABillionItemsCostRangesNotVectors) {
  Dispatcher d(ItemRanges::all_but(1000000000, {2, 3}), 4);
  EXPECT_EQ(d.total(), 1000000000 - 2);
  EXPECT_EQ(d.next(1), (std::vector<int64_t>{0, 1}));  // group 0 without the done items 2 and 3
  EXPECT_EQ(d.next(2), (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(d.next(1), (std::vector<int64_t>{8, 9, 10, 11}));
  EXPECT_EQ(d.remaining(), 1000000000 - 2 - 10);
  d.requeue(1);  // its items come back first, in their groups
  EXPECT_EQ(d.next(3), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(d.next(3), (std::vector<int64_t>{8, 9, 10, 11}));
  EXPECT_EQ(d.next(3), (std::vector<int64_t>{12, 13, 14, 15}));
}

TEST(Dispatcher, RangesAcrossGroupBoundaries) {
  // Pending: 1..5 and 7..13 with groups of 4: {1,2,3}, {4,5,7}, {8..11}, {12,13}.
  ItemRanges r;
  r.append(1, 6);
  r.append(7, 14);
  Dispatcher d(r, 4);
  EXPECT_EQ(d.next(1), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(d.next(1), (std::vector<int64_t>{4, 5, 7}));
  EXPECT_EQ(d.next(1), (std::vector<int64_t>{8, 9, 10, 11}));
  EXPECT_EQ(d.next(1), (std::vector<int64_t>{12, 13}));
  EXPECT_TRUE(d.next(1).empty());
  EXPECT_EQ(d.remaining(), 0);
}

TEST(Progress, RateAndEta) {
  Progress p("render", 100, 0, /*quiet=*/true);
  auto t0 = Progress::Clock::now();
  p.add(10, t0 + std::chrono::seconds(5));
  p.add(10, t0 + std::chrono::seconds(10));
  EXPECT_NEAR(p.rate(t0 + std::chrono::seconds(10)), 2.0, 0.05);
  EXPECT_NEAR(p.eta_seconds(t0 + std::chrono::seconds(10)), 40.0, 1.0);
  EXPECT_NE(p.line(t0 + std::chrono::seconds(10)).find("20/100 (20.0%)"), std::string::npos);
  EXPECT_EQ(Progress::format_duration(259), "4m19s");
  EXPECT_EQ(Progress::format_duration(7380), "2h03m");
  EXPECT_EQ(Progress::format_duration(-1), "?");
}

// issue 12 (weak case): a 16384x16384 job printed nothing for hours; a line now comes at least every 30 s
// (and never more often than the interval) while nothing finishes.
TEST(Progress, TickShowsThatSlowWorkIsAlive) {
  auto t0 = Progress::Clock::now();
  Progress p("render", 1, 10, /*quiet=*/false);
  ::testing::internal::CaptureStderr();
  p.tick(t0 + std::chrono::seconds(20));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  ::testing::internal::CaptureStderr();
  p.tick(t0 + std::chrono::seconds(31));
  const std::string line = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(line.find("render: 0/1 (0.0%)"), std::string::npos) << line;
  EXPECT_NE(line.find("31s elapsed"), std::string::npos) << line;
  ::testing::internal::CaptureStderr();
  p.tick(t0 + std::chrono::seconds(40));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  Progress quiet("render", 1, 10, /*quiet=*/true);
  ::testing::internal::CaptureStderr();
  quiet.tick(t0 + std::chrono::seconds(100));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

}  // namespace
}  // namespace sdxlb
