// ItemSink: where a worker's finished items go: its open segment file, published (atomically, see
// store/segment_writer.h) every `segment_items` items and when the worker ends. Items added but not yet
// published are lost if the process dies; a later run renders them again. Not thread-safe: one per worker.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "run/run_context.h"
#include "store/item_table.h"
#include "store/segment_writer.h"

namespace sdxlb {

class ItemSink {
 public:
  ItemSink(const RunContext& ctx, int rank);
  ItemSink(ItemSink&&) noexcept = default;
  ~ItemSink();

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
  std::unique_ptr<SegmentWriter> segment_;
  int64_t segments_ = 0;
};

}  // namespace sdxlb
