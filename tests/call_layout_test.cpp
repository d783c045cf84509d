// CallLayout (worker/call_layout.h): an item's place in its UNet call is its index mod k, whatever the batch
// it comes in; aligned blocks fill whole calls; the groups a batch is cut into hold at most the calls asked.
#include "worker/call_layout.h"

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

namespace sdxlb {
namespace {

// Each item's place in its call.
std::vector<int64_t> places(const CallLayout& l, int64_t k) {
  std::vector<int64_t> out;
  for (const int64_t p : l.position) out.push_back(p % k);
  return out;
}

TEST(CallLayout, OneImagePerCallIsThePlainOrder) {
  const CallLayout l = lay_out_calls({7, 3, 9}, 1, 4);
  EXPECT_EQ(l.position, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(l.padded, 4);
  EXPECT_EQ(l.source, (std::vector<int64_t>{0, 1, 2, 2}));  // padded with the last item, as before
  EXPECT_EQ(l.real, (std::vector<bool>{true, true, true, false}));
}

TEST(CallLayout, AnItemSitsAtItsIndexModKWhateverItsBatch) {
  const int64_t k = 2;
  // Items 4..7 in one batch of 4: two full calls.
  CallLayout l = lay_out_calls({4, 5, 6, 7}, k, 4);
  EXPECT_EQ(l.position, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(l.padded, 4);
  // Item 5 alone (batch 1): at place 1, with a copy of itself at place 0.
  l = lay_out_calls({5}, k, 1);
  EXPECT_EQ(l.position, (std::vector<int64_t>{1}));
  EXPECT_EQ(l.padded, 2);
  EXPECT_EQ(l.source, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(l.real, (std::vector<bool>{false, true}));
  // A batch of 3 not aligned to k (5, 6, 7): item 5 keeps place 1, 6 and 7 share a call.
  l = lay_out_calls({5, 6, 7}, k, 4);
  EXPECT_EQ(places(l, k), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(l.position[1] / k, l.position[2] / k);
  EXPECT_NE(l.position[0] / k, l.position[1] / k);
  EXPECT_EQ(l.padded, 4);
  // k = 4 with gaps (items an earlier run finished): each at its index mod 4.
  l = lay_out_calls({1, 3, 8, 14}, 4, 8);
  EXPECT_EQ(places(l, 4), (std::vector<int64_t>{1, 3, 0, 2}));
  EXPECT_EQ(l.padded, 12);  // blocks 0, 2 and 3: three calls
  for (int64_t p = 0; p < l.padded; ++p) {
    const int64_t s = l.source[static_cast<size_t>(p)];
    ASSERT_GE(s, 0);
    if (!l.real[static_cast<size_t>(p)]) continue;
    EXPECT_EQ(l.position[static_cast<size_t>(s)], p);
  }
}

TEST(CallLayout, CopiesFillTheirOwnCall) {
  const CallLayout l = lay_out_calls({2, 9}, 4, 12);  // blocks 0 and 2, and a third, empty call
  EXPECT_EQ(l.padded, 12);
  for (int64_t p = 0; p < 4; ++p) EXPECT_EQ(l.source[static_cast<size_t>(p)], 0);
  for (int64_t p = 4; p < 8; ++p) EXPECT_EQ(l.source[static_cast<size_t>(p)], 1);
  for (int64_t p = 8; p < 12; ++p) EXPECT_EQ(l.source[static_cast<size_t>(p)], 1);  // the last item
}

TEST(CallLayout, RepeatedItemsTakeAnotherCall) {
  const CallLayout l = lay_out_calls({3, 3}, 2, 2);
  EXPECT_EQ(l.position, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(l.padded, 4);
}

TEST(CallLayout, GroupsHoldAtMostTheirCalls) {
  const std::vector<int64_t> items = {5, 6, 7, 8, 9, 10, 11};
  // k = 2, two calls per group: {5}+{6,7} (blocks 2 and 3), then {8,9}+{10,11}.
  EXPECT_EQ(group_end(items, 0, 2, 2), 3u);
  EXPECT_EQ(group_end(items, 3, 2, 2), 7u);
  // k = 1: the calls are the images.
  EXPECT_EQ(group_end(items, 0, 1, 3), 3u);
  // Always at least one item; never past the end.
  EXPECT_EQ(group_end(items, 6, 4, 1), 7u);
  EXPECT_EQ(group_end(items, 7, 2, 2), 7u);
  // Aligned batches fill whole groups.
  const std::vector<int64_t> aligned = {8, 9, 10, 11, 12, 13, 14, 15};
  EXPECT_EQ(group_end(aligned, 0, 4, 2), 8u);
  EXPECT_EQ(lay_out_calls(aligned, 4, 8).padded, 8);
}

}  // namespace
}  // namespace sdxlb
