#include "jobs/item_ranges.h"

#include <algorithm>

namespace sdxlb {

void ItemRanges::append(int64_t begin, int64_t end) {
  if (end <= begin) return;
  if (!ranges_.empty() && ranges_.back().second >= begin) {
    const int64_t old_end = ranges_.back().second;
    if (end > old_end) {
      ranges_.back().second = end;
      count_ += end - old_end;
    }
    return;
  }
  ranges_.emplace_back(begin, end);
  count_ += end - begin;
}

ItemRanges ItemRanges::all_but(int64_t n, const std::vector<int64_t>& sorted_done) {
  ItemRanges r;
  int64_t next = 0;
  for (int64_t d : sorted_done) {
    if (d < next || d >= n) continue;
    r.append(next, d);
    next = d + 1;
  }
  r.append(next, n);
  return r;
}

ItemRanges ItemRanges::of(std::vector<int64_t> items) {
  std::sort(items.begin(), items.end());
  ItemRanges r;
  for (int64_t i : items) r.append(i, i + 1);
  return r;
}

}  // namespace sdxlb
