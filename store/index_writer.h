// Writes `<out>/index.h5`: the whole job's output in item order, over the complete segments of a scan.
//
//   segments      vlen str [S]       segment file names (relative to <out>/segments)
//   item_segment  int32 [N]          segment id of item i, -1 when it was never rendered
//   item_row      int64 [N]          row of item i inside that segment, -1 when never rendered
//   item_index, prompt_index, ..., status, error: [N] the per-item columns of the segments gathered in item
//                 order; status is 1 ok, 0 failed, -1 never rendered (other columns then read 0 / "")
//   images        uint8 [N, H, W, 3] virtual dataset over the segments' `images` (raw encoding only);
//                 items that were never rendered (or failed) read as zeros
//   attributes    the caller's string map plus format, format_version, total_items, items_ok,
//                 items_failed, items_missing, duplicates, encoding, height, width
//
// The file is written as index.h5.tmp and renamed into place. The virtual dataset names its sources by
// relative paths ("segments/seg-....h5"), which HDF5 resolves against index.h5's folder, so the output
// folder can be moved or copied as a whole.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/status.h"
#include "store/output_folder.h"

namespace sdxlb {

/// Writes `<out_dir>/index.h5` from `scan` (of the same folder) for items 0..total_items-1.
/// Errors: kFailedPrecondition (an item outside 0..total_items-1), kDataLoss (a segment changed or became
/// unreadable since the scan), kIoError.
StatusOr<IndexSummary> write_index_file(const std::string& out_dir, const ScanResult& scan,
                                        int64_t total_items,
                                        const std::map<std::string, std::string>& attributes);

}  // namespace sdxlb
