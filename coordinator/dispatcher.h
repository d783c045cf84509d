// Dispatcher: which items go to which worker, in which batches.
//
// Items are grouped by their index into fixed groups of `batch_size` consecutive items (group g holds items
// [g*B, (g+1)*B)). A batch handed out is the pending items of one group, so a batch's composition depends
// only on the job, never on the number of ranks, the order of requests or what an earlier run finished.
//
// The pending items are kept as ranges (jobs/item_ranges.h) and batches are cut from them as they are
// handed out, so a job of a billion items costs memory in proportion to what is in flight and to the gaps
// earlier runs left, not to its size.
//
// Not thread-safe: the coordinator's thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <vector>

#include "jobs/item_ranges.h"

namespace sdxlb {

class Dispatcher {
 public:
  Dispatcher(ItemRanges pending, int64_t batch_size);
  /// `pending` need not be sorted; duplicates are ignored.
  Dispatcher(std::vector<int64_t> pending, int64_t batch_size);

  /// The next batch (ascending item indices), or empty when none is left. Marks it in flight for `worker`.
  std::vector<int64_t> next(int worker);
  /// The worker finished these items (rendered or failed): they leave the in-flight set. Returns how many
  /// of them were in flight for `worker` (an item reported twice counts once).
  int64_t finished(int worker, const std::vector<int64_t>& items);
  /// A worker went away: its in-flight items go back to the front of the queue.
  void requeue(int worker);

  int64_t total() const { return total_; }
  int64_t remaining() const { return remaining_; }  ///< not yet handed out
  int64_t in_flight() const;
  /// Items in flight for `worker`.
  int64_t in_flight_of(int worker) const;
  bool idle() const { return remaining() == 0 && in_flight() == 0; }
  int64_t batch_size() const { return batch_size_; }

 private:
  ItemRanges pending_;
  size_t range_ = 0;                           // the range that holds the next item to cut
  int64_t cursor_ = 0;                         // the next item to cut (within ranges_[range_])
  std::deque<std::vector<int64_t>> requeued_;  // batches given back, handed out first
  std::map<int, std::vector<int64_t>> in_flight_;
  int64_t batch_size_;
  int64_t total_ = 0;
  int64_t remaining_ = 0;
};

}  // namespace sdxlb
