#include "worker/call_layout.h"

#include <algorithm>
#include <map>

namespace sdxlb {
namespace {

// Assigns items to calls one by one: an item goes to the first call of its block whose place for it is free,
// else to a new call.
class Assigner {
 public:
  explicit Assigner(int64_t per_call) : k_(std::max<int64_t>(1, per_call)) {}

  int64_t place(int64_t item) {
    const int64_t block = item / k_, at = item % k_;
    for (const int64_t call : calls_of_[block]) {
      if (!taken_[static_cast<size_t>(call)][static_cast<size_t>(at)]) {
        taken_[static_cast<size_t>(call)][static_cast<size_t>(at)] = true;
        return call * k_ + at;
      }
    }
    const int64_t call = calls_++;
    calls_of_[block].push_back(call);
    taken_.emplace_back(static_cast<size_t>(k_), false);
    taken_.back()[static_cast<size_t>(at)] = true;
    return call * k_ + at;
  }
  // The calls an item would need with it placed, without placing it.
  int64_t calls_with(int64_t item) const {
    const int64_t block = item / k_, at = item % k_;
    const auto it = calls_of_.find(block);
    if (it != calls_of_.end())
      for (const int64_t call : it->second)
        if (!taken_[static_cast<size_t>(call)][static_cast<size_t>(at)]) return calls_;
    return calls_ + 1;
  }
  int64_t calls() const { return calls_; }

 private:
  int64_t k_;
  int64_t calls_ = 0;
  std::map<int64_t, std::vector<int64_t>> calls_of_;
  std::vector<std::vector<bool>> taken_;
};

}  // namespace

CallLayout lay_out_calls(const std::vector<int64_t>& items, int64_t per_call, int64_t images) {
  const int64_t k = std::max<int64_t>(1, per_call);
  CallLayout l;
  Assigner a(k);
  for (const int64_t item : items) l.position.push_back(a.place(item));
  const int64_t wanted = (std::max<int64_t>(images, 0) + k - 1) / k;
  l.padded = std::max(a.calls(), wanted) * k;
  l.source.assign(static_cast<size_t>(l.padded), -1);
  l.real.assign(static_cast<size_t>(l.padded), false);
  for (size_t i = 0; i < items.size(); ++i) {
    l.source[static_cast<size_t>(l.position[i])] = static_cast<int64_t>(i);
    l.real[static_cast<size_t>(l.position[i])] = true;
  }
  const int64_t last = static_cast<int64_t>(items.size()) - 1;
  for (int64_t call = 0; call * k < l.padded; ++call) {
    int64_t fill = last;  // a call without items: copies of the last item
    for (int64_t p = call * k; p < (call + 1) * k; ++p)
      if (l.real[static_cast<size_t>(p)]) {
        fill = l.source[static_cast<size_t>(p)];
        break;
      }
    for (int64_t p = call * k; p < (call + 1) * k; ++p)
      if (!l.real[static_cast<size_t>(p)]) l.source[static_cast<size_t>(p)] = fill;
  }
  return l;
}

size_t group_end(const std::vector<int64_t>& items, size_t begin, int64_t per_call, int64_t calls) {
  Assigner a(per_call);
  size_t end = begin;
  while (end < items.size() && (end == begin || a.calls_with(items[end]) <= std::max<int64_t>(1, calls))) {
    a.place(items[end]);
    ++end;
  }
  return end;
}

}  // namespace sdxlb
