// BatchRenderer: a worker's pipeline for the render phase. It binds the worker to its GPU, chooses the memory
// plan, loads the UNet and decoder, and turns a list of items into finished items (pixels and metadata) for
// an ItemSink. Each image is computed on its own, so its pixels do not depend on the batch it is in.
//
// Out of memory: the first step down denoises one image at a time (same pixels), the next renders the items
// one by one; an item that still fails is stored as failed with the reason (a later run retries it).
// Not thread-safe: one per worker.
#pragma once

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
  /// Renders `items` (one dispatched batch) in image groups, the images that denoise together: as many as
  /// the plan's concurrent images on a GPU (the last group padded, so that one CUDA graph serves them all),
  /// one on the CPU. Each item goes to `sink`, its index to report->done or report->failed. Before each
  /// group it asks hooks.stop and lets the sink publish when its time is up; after each group it calls
  /// hooks.progress. So a stop waits for at most one group: the images in flight. Errors: a failure that
  /// stops the worker (the sink failed, or a LibTorch error outside one group).
  Status render(const std::vector<int64_t>& items, ItemSink& sink, WorkRequest* report,
                const RenderHooks& hooks = {});
  /// Images rendered together (the images in flight).
  int64_t group_size() const;
  /// Logs the peak GPU memory (on a GPU).
  void log_peak_memory() const;

  int64_t rendered() const { return rendered_; }
  int64_t failed() const { return failed_; }
  double busy_seconds() const { return busy_s_; }

 private:
  Status apply_memory_plan();
  void release_cached_memory();
  Status render_padded(const std::vector<int64_t>& items, int64_t batch, ItemSink& sink, WorkRequest* report);
  Status render_batch(const std::vector<std::string>& pos, const std::vector<std::string>& neg,
                      const std::vector<uint64_t>& seeds, const std::vector<int64_t>& items,
                      at::Tensor* images, std::vector<std::string>* errors);

  const RunContext& ctx_;
  RenderSetup setup_;
  int rank_;
  std::unique_ptr<SdxlPipeline> pipe_;
  std::optional<EmbeddingCache> cache_;
  std::string host_, gpu_;
  std::string scheduler_json_;  ///< the effective sampler config, recorded with every item
  int64_t rendered_ = 0, failed_ = 0;
  double busy_s_ = 0, embed_ms_ = 0;
  double last_group_s_ = 0;  // wall time of the last image group (the sink's estimate of the next one)
  bool first_batch_ = true;
  bool placement_logged_ = false;
  int64_t oom_faults_left_ = 0;
};

}  // namespace sdxlb
