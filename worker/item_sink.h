// ItemSink: where a worker's finished items go: its open segment file, published (atomically, see
// store/segment_writer.h) after `segment_items` items or `segment_seconds` of work, whichever comes first,
// and when the worker stops. Items in the open segment are lost if the process dies (a later run renders
// them again), so a kill -9 at any moment costs at most about segment_seconds of work per worker.
// Not thread-safe: one per worker. (BatchRenderer's decode thread stores its groups here too, never while the
// worker's main thread uses it.)
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "common/status.h"
#include "run/run_context.h"
#include "store/item_table.h"
#include "store/segment_writer.h"

namespace sdxlb {

class ItemSink {
 public:
  using Clock = std::chrono::steady_clock;

  ItemSink(const RunContext& ctx, int rank);
  ItemSink(ItemSink&&) noexcept = default;
  ~ItemSink();

  /// Called before the worker starts on the next images, which it expects to take `next_work_s` seconds:
  /// publishes the open segment when its work (counted from when work on its first item began) would then
  /// exceed segment_seconds, and starts the clock of the next segment. Errors: those of publish().
  Status before_work(double next_work_s, Clock::time_point now = Clock::now());
  /// Appends one item (`rgb`: H x W x 3 uint8, or nullptr for a failed item) to the open segment, starting
  /// one when none is open; publishes the segment when it holds `segment_items` items.
  Status add(const ItemRecord& record, const uint8_t* rgb);
  /// Publishes the open segment, if any.
  Status publish();
  /// Items in the open (unpublished) segment.
  int64_t open_items() const { return segment_ ? segment_->size() : 0; }
  /// Segments published so far.
  int64_t segments() const { return segments_; }

 private:
  const RunContext* ctx_;
  int rank_;
  std::string job_identity_;  // recorded in each segment; computed on first use (after the model identity)
  std::unique_ptr<SegmentWriter> segment_;
  int64_t segments_ = 0;
  bool clock_running_ = false;
  Clock::time_point work_start_;  // when work on the open segment's first item began
};

}  // namespace sdxlb
