#include "coordinator/dispatcher.h"

#include <algorithm>

namespace sdxlb {

Dispatcher::Dispatcher(std::vector<int64_t> pending, int64_t batch_size)
    : batch_size_(std::max<int64_t>(1, batch_size)) {
  std::sort(pending.begin(), pending.end());
  pending.erase(std::unique(pending.begin(), pending.end()), pending.end());
  total_ = static_cast<int64_t>(pending.size());
  remaining_ = total_;
  std::vector<std::vector<int64_t>> batches;
  for (size_t i = 0; i < pending.size();) {
    const int64_t group = pending[i] / batch_size_;
    std::vector<int64_t> batch;
    while (i < pending.size() && pending[i] / batch_size_ == group) batch.push_back(pending[i++]);
    batches.push_back(std::move(batch));
  }
  queue_.assign(batches.rbegin(), batches.rend());
}

std::vector<int64_t> Dispatcher::next(int worker) {
  if (queue_.empty()) return {};
  std::vector<int64_t> batch = std::move(queue_.back());
  queue_.pop_back();
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
    queue_.push_back(std::move(*b));
  }
}

int64_t Dispatcher::remaining() const {
  return remaining_;
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
