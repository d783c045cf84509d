// WebDataset export: a job's images and metadata as tar shards that the `webdataset` Python package (and any
// tar reader) streams, for `sdxl-batch export --format webdataset`.
//
// Layout of the export folder:
//   webdataset.json          the export's manifest (shard size, key width, which items), written first
//   shard-000000.tar         samples 0 .. shard_size-1, complete (published by rename)
//   shard-000001.tar.tmp     a shard being written, or left by a killed export (deleted by the next one)
// A sample is two tar members, `<key>.png` and `<key>.json`, where the key is the item index zero-padded to
// WebDatasetLayout::key_digits. Only items stored OK are exported, in item order; failed and never-rendered
// items are skipped (their keys are absent). Shards are byte-reproducible: the same dataset and shard size
// give the same bytes (fixed mtime, owner and mode), however often the export was interrupted.
//
// Exactly once: a shard is written under `.tmp`, fsync-ed and renamed, so a file with a final name is
// complete. A rerun keeps the final shards, after checking that each holds exactly the members it must (the
// tar member list is read back), and writes the rest; a manifest that disagrees with this export (another
// shard size, another set of items) is refused instead of mixing two layouts.
//
// Files go through the store's Env (store/env.h), so tests can inject faults. Not thread-safe; one export
// per folder at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/dataset_reader.h"
#include "store/item_table.h"

namespace sdxlb {

struct WebDatasetOptions {
  int64_t shard_size = 1000;      ///< samples per shard (the last shard may hold fewer); at least 1
  int64_t limit = 0;              ///< export only the first `limit` OK items (0: all)
  int png_compression_level = 3;  ///< for raw datasets; PNG datasets pass their stored bytes through
};

/// What export_webdataset did.
struct WebDatasetReport {
  int64_t samples = 0;          ///< samples in the whole export (OK items, up to the limit)
  int64_t shards = 0;           ///< shards in the whole export
  int64_t shards_kept = 0;      ///< complete shards found from an earlier run and kept
  int64_t shards_written = 0;   ///< shards written by this call
  int64_t samples_written = 0;  ///< samples in the shards written by this call
  int64_t skipped_failed = 0;   ///< items not exported because their rendering failed
  int64_t skipped_missing = 0;  ///< items not exported because they were never rendered
};

/// Called after each sample is added to the shard being written: (samples added by this call, samples this
/// call has to add). For progress lines and for tests' fault injection (it may kill the process).
using WebDatasetProgress = std::function<void(int64_t done, int64_t to_do)>;

/// Exports the OK items of `dataset` to the folder `out_dir` (created when missing). Resumes an earlier,
/// interrupted export of the same dataset to the same folder. Errors:
///   kInvalidArgument   shard_size < 1 or limit < 0;
///   kFailedPrecondition  `out_dir` holds an export with another shard size or another set of items, or
///                      shards without a manifest (the message says how to finish or where else to export);
///   kDataLoss          a final-name shard does not hold the members it must (names it: delete it and rerun),
///                      or the dataset cannot be read;
///   kIoError           the folder or a shard cannot be created or written (names the path and the reason).
/// On error, shards already published stay (they are complete); a half-written `.tmp` is removed.
StatusOr<WebDatasetReport> export_webdataset(const DatasetReader& dataset, const std::string& out_dir,
                                             const WebDatasetOptions& options,
                                             const WebDatasetProgress& progress = {});

/// "shard-000012.tar" (six digits, more when n needs them).
std::string webdataset_shard_name(int64_t n);

/// The `<key>.json` document of one item: the settings that made its image (item_index, prompt_index,
/// image_k, seed, prompt, negative_prompt, steps, guidance, width, height, scheduler, model_id,
/// approximations; scheduler and approximations as objects). Where it ran (rank, host, GPU, timings) is
/// left out: it does not change the image, and samples stay the same on any cluster shape. kDataLoss when
/// the scheduler or approximations column is not a JSON object.
StatusOr<std::string> webdataset_sample_json(const ItemRecord& item);

/// The member names of the tar file `path`, in order. kNotFound, or kDataLoss for a damaged archive.
StatusOr<std::vector<std::string>> read_tar_member_names(const std::string& path);

}  // namespace sdxlb
