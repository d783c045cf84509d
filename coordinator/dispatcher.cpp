#include "coordinator/dispatcher.h"

#include <algorithm>

namespace sdxlb {

Dispatcher::Dispatcher(ItemRanges pending, int64_t batch_size)
    : pending_(std::move(pending)), batch_size_(std::max<int64_t>(1, batch_size)) {
  total_ = remaining_ = pending_.count();
  if (!pending_.ranges().empty()) cursor_ = pending_.ranges().front().first;
}

Dispatcher::Dispatcher(std::vector<int64_t> pending, int64_t batch_size)
    : Dispatcher(ItemRanges::of(std::move(pending)), batch_size) {}

std::vector<int64_t> Dispatcher::next(int worker) {
  std::vector<int64_t> batch;
  if (!requeued_.empty()) {
    batch = std::move(requeued_.front());
    requeued_.pop_front();
  } else {
    const auto& ranges = pending_.ranges();
    if (range_ >= ranges.size()) return {};
    // The pending items of the group of the next item.
    const int64_t group_end = (cursor_ / batch_size_ + 1) * batch_size_;
    while (range_ < ranges.size() && ranges[range_].first < group_end) {
      const int64_t from = std::max(cursor_, ranges[range_].first);
      const int64_t to = std::min(ranges[range_].second, group_end);
      for (int64_t i = from; i < to; ++i) batch.push_back(i);
      if (to < ranges[range_].second) {
        cursor_ = to;
        break;
      }
      if (++range_ < ranges.size()) cursor_ = ranges[range_].first;
    }
  }
  remaining_ -= static_cast<int64_t>(batch.size());
  auto& mine = in_flight_[worker];
  mine.insert(mine.end(), batch.begin(), batch.end());
  return batch;
}

int64_t Dispatcher::finished(int worker, const std::vector<int64_t>& items) {
  auto it = in_flight_.find(worker);
  if (it == in_flight_.end()) return 0;
  auto& mine = it->second;
  int64_t n = 0;
  for (int64_t item : items) {
    auto pos = std::find(mine.begin(), mine.end(), item);
    if (pos != mine.end()) {
      mine.erase(pos);
      ++n;
    }
  }
  if (mine.empty()) in_flight_.erase(it);
  return n;
}

void Dispatcher::requeue(int worker) {
  auto it = in_flight_.find(worker);
  if (it == in_flight_.end()) return;
  std::vector<int64_t> items = std::move(it->second);
  in_flight_.erase(it);
  std::sort(items.begin(), items.end());
  // Regroup by the same fixed groups, so that the batches keep their composition.
  std::vector<std::vector<int64_t>> batches;
  for (size_t i = 0; i < items.size();) {
    const int64_t group = items[i] / batch_size_;
    std::vector<int64_t> batch;
    while (i < items.size() && items[i] / batch_size_ == group) batch.push_back(items[i++]);
    batches.push_back(std::move(batch));
  }
  for (auto b = batches.rbegin(); b != batches.rend(); ++b) {
    remaining_ += static_cast<int64_t>(b->size());
    requeued_.push_front(std::move(*b));
  }
}

int64_t Dispatcher::in_flight() const {
  int64_t n = 0;
  for (const auto& kv : in_flight_) n += static_cast<int64_t>(kv.second.size());
  return n;
}

int64_t Dispatcher::in_flight_of(int worker) const {
  auto it = in_flight_.find(worker);
  return it == in_flight_.end() ? 0 : static_cast<int64_t>(it->second.size());
}

}  // namespace sdxlb
