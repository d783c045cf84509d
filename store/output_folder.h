// OutputFolder: a job's output folder and its exactly-once bookkeeping.
//
//   <out>/job.json       {"format": "sdxlb-job", "identity": <hex>, "job": <canonical job JSON>}
//   <out>/job.yaml       the job file as the user wrote it
//   <out>/segments/      complete segment files (SegmentWriter), plus *.tmp ones in flight
//   <out>/segments/corrupt/  segments that failed to open, moved aside by scan()
//   <out>/index.h5       written by write_index() when the job ends (see docs/output-format.md)
//
// Every file is published atomically (temporary name, fsync, rename), so after a crash the folder holds
// only complete files plus stale temporaries, and resuming is a scan of the complete segments.
//
// Contract: scan() deletes *.tmp segments, so call it only while no SegmentWriter of this job is active
// (at start-up, before work is handed out). write_index() does not delete anything.
// Not thread-safe; one process (the coordinator) owns the folder's bookkeeping.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace sdxlb {

/// Where the record that counts for one item lives.
struct ItemEntry {
  int64_t item = 0;
  int32_t segment = 0;  ///< index into ScanResult::segments
  int64_t row = 0;      ///< row inside that segment
  bool ok = false;
};

struct FailedItem {
  int64_t item = 0;
  std::string error;
};

struct ScanResult {
  /// Complete segment file names (no folder), sorted; an ItemEntry's `segment` indexes this list.
  std::vector<std::string> segments;
  /// Number of items (rows) in each segment, parallel to `segments`.
  std::vector<int64_t> segment_items;
  /// One entry per item found, sorted by item: the first OK record by (segment name, row), else the first
  /// failed one. A failed record followed by an OK one is a retry, not a duplicate.
  std::vector<ItemEntry> items;
  /// Items whose entry failed, with the error text (sorted by item).
  std::vector<FailedItem> failed;
  /// One message per item stored OK more than once (must not happen; the first by name is kept).
  std::vector<std::string> duplicates;
  /// Stale temporary segments removed (names).
  std::vector<std::string> removed_temp;
  /// Segments moved to segments/corrupt/ ("<name>: <reason>").
  std::vector<std::string> moved_corrupt;
  /// Image encoding ("raw"/"png") and size shared by the segments; "" and 0 when there are none.
  std::string encoding;
  int height = 0;
  int width = 0;

  /// Items whose entry is OK, sorted.
  std::vector<int64_t> done_items() const;
  /// Whether `item` is stored OK.
  bool is_done(int64_t item) const;
  int64_t ok_count() const;
};

struct IndexSummary {
  std::string path;
  int64_t total_items = 0;
  int64_t ok = 0;
  int64_t failed = 0;
  int64_t missing = 0;  ///< never rendered (or only in a corrupt segment)
  int64_t duplicates = 0;
  int64_t segments = 0;
};

/// Checks one stored row against the job: "" when item `item` with seed `seed` is one of the job's, else why
/// not. A segment with such a row is corrupt (moved aside by scan(), skipped by write_index()).
using ItemCheck = std::function<std::string(int64_t item, uint64_t seed)>;

/// The path OutputFolder::segment_path gives, for writers that do not own the folder (workers).
std::string segment_file_path(const std::string& output_dir, const std::string& run_id, int rank, int64_t n);

class OutputFolder {
 public:
  /// Opens (resume) or creates the output folder of the job `job_identity_hex`.
  /// First checks that `path` is (or can be created as) a writable folder, before anything is written.
  /// New folder: writes job.json and job.yaml (atomically) and creates segments/.
  /// Folder of the same job: resumes (job.yaml is rewritten only when missing). A folder without job.json
  /// whose segments all record this job's identity is resumed too, and its job files are written again.
  /// Folder of another job: kFailedPrecondition naming both identities, the settings that differ and the
  /// fix; with `overwrite`, its segments, index and job files are deleted and it starts fresh.
  /// Errors: kIoError (not writable, with the reason and a fix), kFailedPrecondition, kDataLoss (unreadable
  /// job.json), kInvalidArgument (job_canonical_json is not JSON).
  static StatusOr<OutputFolder> create_or_open(const std::string& path, const std::string& job_identity_hex,
                                               const std::string& job_yaml_text,
                                               const std::string& job_canonical_json, bool overwrite);

  /// What create_or_open(path, job_identity_hex, ..., overwrite = false) would find, writing nothing (for
  /// `sdxl-batch check`): resumed() when the folder holds this job; not when the path is missing or holds
  /// no job (create_or_open would start one). The same refusals (another job, or segments of one without
  /// job.json: kFailedPrecondition; an unreadable job.json: kDataLoss), and kIoError when the folder, or
  /// for a missing one the nearest folder above it, is not writable by its permissions and mount (nothing
  /// is tried: a full disk shows only when the run writes).
  static StatusOr<OutputFolder> open_read_only(const std::string& path, const std::string& job_identity_hex,
                                               const std::string& job_canonical_json);

  const std::string& path() const { return path_; }
  std::string segments_dir() const { return path_ + "/segments"; }
  std::string index_path() const { return path_ + "/index.h5"; }
  /// True when create_or_open found this job's folder (a resume), false when it started it.
  bool resumed() const { return resumed_; }

  /// `<out>/segments/seg-<run_id>-r<rank, 5 digits>-<n, 6 digits>.h5`; zero padding keeps name order equal
  /// to numeric order. `run_id` should sort in time order (e.g. a UTC timestamp "20260509T101500Z").
  std::string segment_path(const std::string& run_id, int rank, int64_t n) const;

  /// Removes stale *.tmp segments, moves segments that fail to open, are inconsistent, or record another
  /// job's identity to segments/corrupt/ with a warning, and reads every complete segment's item_index and
  /// status.
  /// Errors: kIoError (cannot list or move files, or the storage fails to read a segment: EIO; such a
  /// segment is neither trusted nor moved), kFailedPrecondition (segments disagree on encoding or image
  /// size).
  StatusOr<ScanResult> scan() const;
  /// What scan() would find, deleting and moving nothing: stale temporaries are ignored, unreadable or
  /// foreign segments skipped with a warning. Errors as scan()'s.
  StatusOr<ScanResult> peek() const { return scan_segments(/*clean=*/false); }
  /// The job's row check, used by scan() and write_index() from now on.
  void set_item_check(ItemCheck check) { item_check_ = std::move(check); }

  /// Writes `<out>/index.h5` atomically for items 0..total_items-1 (see docs/output-format.md), with
  /// `attributes` as string attributes of the root group (job yaml, tool/torch/CUDA versions, model
  /// identity, start/end times, ...). Reads the segments as they are (deletes and moves nothing; corrupt
  /// segments are skipped with a warning). Errors: kFailedPrecondition (an item index >= total_items, or
  /// segments that disagree), kIoError, kDataLoss.
  StatusOr<IndexSummary> write_index(int64_t total_items,
                                     const std::map<std::string, std::string>& attributes) const;

 private:
  explicit OutputFolder(std::string path) : path_(std::move(path)) {}
  StatusOr<ScanResult> scan_segments(bool clean) const;

  std::string path_;
  std::string job_identity_;  // segments that record another identity are not served
  bool resumed_ = false;
  ItemCheck item_check_;
};

}  // namespace sdxlb
