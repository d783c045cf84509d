// RunContext: one job as every rank runs it: the validated JobSpec, its plan, the command line's options, the
// run id, the model's identity (read once by rank 0 and broadcast), where this rank sits on its node, and
// the fault-injection seam. Built identically on every rank from the same job file, so the ranks agree
// without shipping the job around. No LibTorch: the worker resolves its device settings from it
// (worker/render_setup.h). A value type; not mutated once the roles start.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "jobs/job_plan.h"
#include "jobs/job_spec.h"
#include "run/faults.h"

namespace sdxlb {

/// What the command line asked for.
struct RunOptions {
  std::string job_file;
  bool overwrite = false;  ///< replace an output folder that holds another job
  bool quiet = false;      ///< no progress lines
  bool encode_only = false;
};

/// The model as rank 0 read it (configs and weight headers), shared with every rank.
struct ModelIdentity {
  std::string model_id;         ///< all weights (text encoders, UNet, VAE, tiny VAE)
  std::string text_encoder_id;  ///< the text encoders only (the embedding cache's key)
  bool force_zeros_for_empty_prompt = true;
  /// The sampler that renders, with its full effective config (SchedulerConfig::effective_json, compact
  /// JSON): the folder's scheduler with the job's choice applied.
  std::string scheduler;
  /// What the output folder's resume identity covers beyond the job: the weights and the sampler.
  std::string render_identity() const { return scheduler.empty() ? model_id : model_id + "\n" + scheduler; }
};

struct RunContext {
  JobSpec job;
  std::shared_ptr<const JobPlan> plan;
  RunOptions options;
  std::string run_id;  ///< UTC start time, shared by all ranks; names segments and shards
  /// Items per dispatched batch: the job's batch_size, or when auto 8 on a GPU node (a multiple of two
  /// UNet calls of images_per_unet_call) and one UNet call's images on the CPU.
  int64_t batch_size = 1;
  ModelIdentity model;
  /// This worker's index among the workers on its node (it takes GPU gpu_slot mod GPUs-per-node).
  int gpu_slot = 0;
  /// Worker ranks on this node.
  int workers_on_node = 1;
  /// Workers of this node on this worker's GPU, itself included (cluster/node_probe.h:
  /// workers_sharing_device): what the memory plan divides the GPU by.
  int workers_sharing_gpu = 1;
  /// Never null (no faults in production).
  std::shared_ptr<const Faults> faults = std::make_shared<const Faults>();
};

/// The job's plan and dispatch batch size (`gpu_present`: whether this node runs on a GPU).
StatusOr<RunContext> make_run_context(JobSpec job, const RunOptions& options, const std::string& run_id,
                                      bool gpu_present);

/// The texts whose embeddings the job's renders need (the encode phase's input): every distinct prompt and
/// non-empty negative, plus "" when the model encodes empty negatives instead of zeroing them. The same list,
/// in the same order, on every rank; each text once.
std::vector<std::string> texts_to_encode(const RunContext& ctx);

/// "20261125T120501123Z": the current UTC time to the millisecond, sortable.
std::string utc_run_id();

}  // namespace sdxlb
