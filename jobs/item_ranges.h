// ItemRanges: a set of item indices as sorted, disjoint [begin, end) ranges, so that what is left of a job of
// a billion items costs memory in proportion to the gaps the earlier runs left, not to the items.
// A value type; not thread-safe to mutate.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace sdxlb {

class ItemRanges {
 public:
  using Range = std::pair<int64_t, int64_t>;  ///< [first, second)

  /// [0, n) without the items of `sorted_done` (ascending; duplicates and items outside [0, n) ignored).
  static ItemRanges all_but(int64_t n, const std::vector<int64_t>& sorted_done);
  /// The items of `items` (any order, duplicates ignored).
  static ItemRanges of(std::vector<int64_t> items);

  /// Appends [begin, end); begin must not be below the last range's end (adjacent ranges merge).
  void append(int64_t begin, int64_t end);
  const std::vector<Range>& ranges() const { return ranges_; }
  int64_t count() const { return count_; }
  bool empty() const { return count_ == 0; }

 private:
  std::vector<Range> ranges_;
  int64_t count_ = 0;
};

}  // namespace sdxlb
