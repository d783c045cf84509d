// RunContext: one job as every rank runs it: the validated JobSpec, its plan, and the settings resolved
// for this machine (device, dtype, decoder, batch size). Built identically on every rank from the same job
// file, so the ranks agree without shipping the job around.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "common/status.h"
#include "jobs/job_plan.h"
#include "jobs/job_spec.h"
#include "pipeline/sdxl_pipeline.h"

namespace sdxlb {

/// What the command line asked for.
struct RunOptions {
  std::string job_file;
  bool overwrite = false;  ///< replace an output folder that holds another job
  bool quiet = false;      ///< no progress lines
  bool encode_only = false;
};

struct RunContext {
  JobSpec job;
  std::shared_ptr<const JobPlan> plan;
  RunOptions options;
  std::string run_id;  ///< UTC start time, shared by all ranks; names segments and shards
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  DecoderKind decoder = DecoderKind::kFull;
  int64_t batch_size = 1;
  /// From the memory plan (worker::init on a GPU): where the UNet's weights live, how many images denoise
  /// concurrently, and (streamed) how much of the UNet stays on the GPU.
  Placement placement = Placement::kResident;
  int unet_streams = 2;  ///< (the out-of-memory fallback steps it down to 1; the CPU path ignores it)
  int64_t resident_budget_bytes = 0;
  bool unload_for_decode = false;
  bool tight_memory = false;  ///< a memory cap or a non-resident plan (see PipelineOptions::tight_memory)
  /// This worker's index among the workers on its node (it takes GPU gpu_slot mod GPUs-per-node).
  int gpu_slot = 0;
  /// Worker ranks on this node (with gpu_slot: how many share this worker's GPU).
  int workers_on_node = 1;

  /// The pipeline options for this job (render or encode).
  PipelineOptions pipeline_options(bool text_encoders, bool denoiser) const;
  /// The render settings (steps, guidance, size).
  RenderSettings render_settings() const;
};

/// Resolves `job` for this machine: device auto -> cuda when LibTorch sees a GPU; fp16/bf16 on the CPU is an
/// error with a fix; decoder and decode mode from the job; batch size auto -> 8 on a GPU (the dispatch
/// unit; the memory plan may choose another render batch), 1 on the CPU; placement: the job's, resident
/// when auto (the worker's memory plan decides on a GPU).
StatusOr<RunContext> make_run_context(JobSpec job, const RunOptions& options, const std::string& run_id);

/// "20261125T120501Z": the current UTC time, sortable.
std::string utc_run_id();

}  // namespace sdxlb
