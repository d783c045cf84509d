// BatchRenderer: a worker's pipeline for the render phase. It binds the worker to its GPU, chooses the memory
// plan, loads the UNet and decoder, and turns a list of items into finished items (pixels and metadata) for
// an ItemSink. Each image is computed on its own, at a place in its UNet call fixed by its item index, so its
// pixels do not depend on the batch it is in.
//
// Overlapped decode (RenderSetup::overlap_decode, the memory plan's choice on a GPU): an image group's VAE
// decode runs on a thread and CUDA stream of its own while the next group denoises, also across dispatched
// batches, and that thread also stores the group's items in the sink (PNG encoding and HDF5 writes off the
// GPU's path; on the main thread instead where the HDF5 library is not thread-safe). The renderer touches
// the sink only while no such thread runs; its items are reported after the next group's denoise, and
// finish() stores the last group. The same pixels.
//
// Out of memory: the first step down denoises one image at a time (same pixels), the next renders the items
// one by one; an item that still fails is stored as failed with the reason (a later run retries it). An
// out-of-memory error also ends the overlapped decode for the rest of the run.
// Not thread-safe: one per worker (its decode thread is its own business).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "common/status.h"
#include "run/protocol.h"
#include "run/run_context.h"
#include "store/embedding_cache.h"
#include "worker/item_sink.h"
#include "worker/render_setup.h"

namespace sdxlb {

class WeightsBroadcast;

/// What the render loop hears from a batch in progress.
struct RenderHooks {
  /// Asked before each image group: true stops the batch there (the groups already rendered are stored).
  std::function<bool()> stop;
  /// Told after each image group, with the items it stored (the coordinator's progress and heartbeat).
  std::function<Status(const WorkRequest& group)> progress;
};

class BatchRenderer {
 public:
  BatchRenderer(const RunContext& ctx, RenderSetup setup, int rank);
  ~BatchRenderer();

  /// Binds the device, applies the memory plan, loads the pipeline and opens the embedding cache. With
  /// `share` (null: none) the weight files come through it, and init() ends its exchange (finish()) whether
  /// or not the load succeeded. Errors: those of SdxlPipeline::load, EmbeddingCache::open and
  /// WeightsBroadcast, and of the memory plan (no plan fits).
  Status init(WeightsBroadcast* share = nullptr);
  /// Renders `items` (one dispatched batch) in image groups, the images that denoise together: at most the
  /// plan's concurrent UNet calls on a GPU, one call on the CPU, each image at its item's place in its call
  /// (worker/call_layout.h), and copies where no item sits, so that one CUDA graph serves every group. Each
  /// item goes to `sink`, its index to report->done or report->failed. Before each group it asks hooks.stop
  /// and lets the sink publish when its time is up; after each group it calls hooks.progress with the items
  /// stored. So a stop waits for at most one group: the images in flight. With the decode overlapped, the
  /// items stored after a group's denoise are the group before's (this batch's or the previous one's), and
  /// the last group is still decoding on return: call finish() before the sink publishes for a stop or the
  /// end; until then the sink must stay alive (the destructor waits for the decode thread, which stores into
  /// it). Errors: a failure that stops the worker (the sink failed, or a LibTorch error outside one group).
  Status render(const std::vector<int64_t>& items, ItemSink& sink, WorkRequest* report,
                const RenderHooks& hooks = {});
  /// Waits for the group still decoding (overlapped decode), stores its items and tells hooks.progress; does
  /// nothing when none is. Errors: the sink's.
  Status finish(ItemSink& sink, const RenderHooks& hooks = {});
  /// Whether a group's decode overlaps the next group's denoise (the plan's choice; off after an
  /// out-of-memory error).
  bool overlaps_decode() const { return setup_.overlap_decode; }
  /// Images rendered together (the images in flight).
  int64_t group_size() const;
  /// Logs the peak GPU memory (on a GPU).
  void log_peak_memory() const;

  int64_t rendered() const { return rendered_.load(); }
  int64_t failed() const { return failed_.load(); }
  double busy_seconds() const { return busy_s_; }

 private:
  struct Group;          // one image group's items, texts, seeds, errors and times
  struct PendingDecode;  // a group whose images decode on the decode thread

  Status apply_memory_plan();
  /// UNet calls denoised at once: the pipeline's streams on a GPU, 1 on the CPU.
  int concurrent_calls() const;
  void release_cached_memory();
  Group make_group(const std::vector<int64_t>& items, int64_t batch) const;
  /// The whole group at once (denoise, then decode), with the out-of-memory fallbacks.
  Status render_padded(const std::vector<int64_t>& items, int64_t batch, ItemSink& sink, WorkRequest* report);
  /// Denoises the group, stores the group decoding before it, and starts the group's decode.
  Status render_overlapped(const std::vector<int64_t>& items, int64_t batch, ItemSink& sink,
                           WorkRequest* report, const RenderHooks& hooks);
  Status finish_pending(ItemSink& sink, WorkRequest* report);
  /// Adds the items a group stored (if any) to `report` (null: none) and tells hooks.progress.
  Status report_stored(const WorkRequest& done, WorkRequest* report, const RenderHooks& hooks);
  /// Blocks until the decode thread (if any) is done; its result stays to be collected.
  void wait_for_decode() const;
  void stop_overlapping(const std::string& why);
  /// Embeddings and denoising; per-image NaN/Inf rows land in the group's errors (zeroed in the latents).
  StatusOr<at::Tensor> denoise_group(Group& g);
  Status render_batch(Group& g, at::Tensor* images);
  Status store_group(const Group& g, const Status& st, const at::Tensor& images, ItemSink& sink,
                     WorkRequest* report);

  const RunContext& ctx_;
  RenderSetup setup_;
  int rank_;
  std::unique_ptr<SdxlPipeline> pipe_;
  std::optional<EmbeddingCache> cache_;
  std::string host_, gpu_;
  std::string scheduler_json_;                    ///< the effective sampler config, recorded with every item
  std::atomic<int64_t> rendered_{0}, failed_{0};  // (the decode thread stores items too)
  double busy_s_ = 0;
  double last_group_s_ = 0;  // wall time of the last image group (the sink's estimate of the next one)
  bool first_batch_ = true;
  bool placement_logged_ = false;
  int64_t oom_faults_left_ = 0;
  std::unique_ptr<PendingDecode> pending_;
};

}  // namespace sdxlb
