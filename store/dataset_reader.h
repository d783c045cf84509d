// DatasetReader: reads a job's output folder after (or during) a run, for `sdxl-batch inspect` and `export`.
//
// It reads index.h5 when present (the item table, status and columns) and the segment files for pixels
// (raw images or PNG bytes, decoded). Read-only: it never deletes or moves anything, so it is safe to run
// while a job is writing. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/item_table.h"

namespace sdxlb {

struct DatasetSummary {
  int64_t total_items = 0;
  int64_t ok = 0;
  int64_t failed = 0;
  int64_t missing = 0;
  std::string encoding;  ///< "raw" or "png"
  int height = 0, width = 0;
  std::string job_yaml;  ///< the job file as submitted
  std::string start_time, end_time;
  std::vector<int64_t> missing_items;                         ///< never rendered
  std::vector<std::pair<int64_t, std::string>> failed_items;  ///< (item, error)
};

class DatasetReader {
 public:
  /// Opens `<output>/index.h5`. Errors: kNotFound (no index yet: the job has not finished once; run it),
  /// kDataLoss for an unreadable index.
  static StatusOr<DatasetReader> open(const std::string& output_dir);

  const DatasetSummary& summary() const { return summary_; }
  /// The prompt of item i (empty when never rendered).
  const std::string& prompt(int64_t item) const { return prompts_.at(static_cast<size_t>(item)); }
  /// Whether item i is stored OK.
  bool ok(int64_t item) const { return status_.at(static_cast<size_t>(item)) == 1; }
  /// RGB pixels (height x width x 3) of an OK item. Errors: kNotFound when not OK, kDataLoss for a bad file.
  StatusOr<std::vector<uint8_t>> image(int64_t item) const;
  /// The image of an OK item as PNG bytes: the stored bytes of a PNG dataset as they are, a raw image
  /// encoded at `compression_level`. Errors as image().
  StatusOr<std::vector<uint8_t>> png(int64_t item, int compression_level = 3) const;
  /// The metadata of items [first, first+count) from index.h5's per-item columns (count past the end: to
  /// the end). Errors: kDataLoss for an unreadable index.
  StatusOr<ItemColumns> records(int64_t first, int64_t count) const;

 private:
  std::string dir_;
  DatasetSummary summary_;
  std::vector<std::string> segments_;
  std::vector<int32_t> item_segment_;
  std::vector<int64_t> item_row_;
  std::vector<int8_t> status_;
  std::vector<std::string> prompts_;
};

}  // namespace sdxlb
