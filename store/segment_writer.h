// SegmentWriter: one worker's output file, `<out>/segments/seg-<run>-r<rank>-<n>.h5`.
//
// The file is written under a temporary name (`<path>.tmp`) and published (flush, close, fsync, rename,
// fsync of the folder) only by publish(), so a reader (OutputFolder::scan) sees either nothing or a complete
// segment: a process killed at any moment loses only the items of its open segment. Contents:
//   images  uint8 [n, H, W, 3], one image per chunk          (encoding "raw")
//   png     vlen uint8 [n], PNG bytes, empty for failed items (encoding "png")
//   item_index, prompt_index, image_k, seed, prompt, ... status, error: n-element columns (ItemColumns)
//   attributes: format="sdxlb-segment", format_version, encoding, height, width, run_id, rank, items, and
//               job_identity (which lets a folder whose job.json was lost be resumed safely)
// A failed item (record.ok == false) stores an all-zero image (raw) or empty bytes (png).
//
// Images are written as they are added; the metadata columns are kept in memory (a few hundred bytes per
// item) and written by publish(). Not thread-safe: one writer belongs to one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "store/item_table.h"

namespace sdxlb {

/// How images are stored.
enum class ImageEncoding {
  kRaw,  ///< uint8 [n, H, W, 3]; index.h5 gets a virtual `images` dataset over all segments
  kPng,  ///< PNG bytes per item (smaller, slower to write; no virtual dataset in index.h5)
};

/// "raw" or "png".
const char* encoding_name(ImageEncoding encoding);
/// Parses "raw" / "png". kInvalidArgument otherwise.
StatusOr<ImageEncoding> parse_encoding(const std::string& name);

struct SegmentOptions {
  std::string path;  ///< final path, normally OutputFolder::segment_path(run_id, rank, n)
  ImageEncoding encoding = ImageEncoding::kRaw;
  int height = 0;  ///< every item's image has this size (records must agree)
  int width = 0;
  std::string run_id;             ///< recorded as an attribute
  std::string job_identity;       ///< the job's identity (hex), recorded as an attribute when not empty
  int rank = 0;                   ///< recorded as an attribute
  int png_compression_level = 3;  ///< zlib level 0..9 for the png encoding
  /// Fletcher32 checksums on the images and numeric columns. Always on in runs; bench/store_bench turns
  /// them off to measure what they cost.
  bool checksums = true;
};

class SegmentWriter {
 public:
  /// Starts `<path>.tmp` (replacing a stale one). Errors: kInvalidArgument (bad options),
  /// kFailedPrecondition (`path` already exists: published segments are never replaced), kIoError.
  static StatusOr<SegmentWriter> create(const SegmentOptions& options);

  SegmentWriter(SegmentWriter&&) noexcept;
  SegmentWriter& operator=(SegmentWriter&&) noexcept;
  SegmentWriter(const SegmentWriter&) = delete;
  SegmentWriter& operator=(const SegmentWriter&) = delete;
  /// Aborts (removes the temporary file) unless publish() succeeded.
  ~SegmentWriter();

  /// Appends one item. `rgb` is height x width x 3 uint8 (row-major), or nullptr for a failed item
  /// (record.ok == false). Errors: kInvalidArgument (size mismatch, ok item without pixels), kIoError
  /// (then the writer is broken: every later call returns the same error; abort() it).
  Status add(const ItemRecord& record, const uint8_t* rgb);

  /// Writes the metadata, closes, fsyncs and renames the file into place. A writer with no items publishes
  /// nothing (its temporary file is removed) and returns OK. On error the temporary file is removed.
  Status publish();

  /// Drops everything written so far and removes the temporary file. Safe to call more than once.
  void abort();

  /// Items added so far.
  int64_t size() const;
  /// The final path (exists only after publish()).
  const std::string& path() const;
  /// Whether publish() succeeded.
  bool published() const;

 private:
  struct State;
  explicit SegmentWriter(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace sdxlb
