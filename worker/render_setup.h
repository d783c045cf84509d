// RenderSetup: how this rank's worker runs the job on its machine: device, dtype, decoder and the UNet's
// placement, resolved from the RunContext (and later refined by the memory plan on a GPU). It turns them
// into the pipeline's options. A value type.
#pragma once

#include <cstdint>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "common/status.h"
#include "pipeline/runtime/memory_plan.h"
#include "pipeline/sdxl_pipeline.h"
#include "run/run_context.h"

namespace sdxlb {

struct RenderSetup {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  DecoderKind decoder = DecoderKind::kFull;
  /// From the memory plan (on a GPU): where the UNet's weights live, how many images denoise
  /// concurrently, and (streamed) how much of the UNet stays on the GPU.
  Placement placement = Placement::kResident;
  int unet_streams = 2;  ///< (the out-of-memory fallback steps it down to 1; the CPU path ignores it)
  int64_t resident_budget_bytes = 0;
  bool unload_for_decode = false;
  bool project_context = true;  ///< see MemoryPlan::project_context
  bool tight_memory = false;    ///< a memory cap or a non-resident plan (see PipelineOptions::tight_memory)
  /// Each image group's VAE decode runs on a thread of its own while the next group denoises (BatchRenderer):
  /// the job's memory.overlap_decode: on, or the memory plan's choice on a GPU.
  bool overlap_decode = false;

  /// The pipeline options for `job` (render or encode).
  PipelineOptions pipeline_options(const JobSpec& job, bool text_encoders, bool denoiser) const;
};

/// The LibTorch type of a job's dtype name.
at::ScalarType scalar_type(JobSpec::DType dtype);

/// The render settings (steps, guidance, size) of `job`.
RenderSettings render_settings(const JobSpec& job);

/// Resolves the job for this machine: device auto -> cuda when LibTorch sees a GPU; fp16/bf16 on the CPU is
/// an error with a fix; decoder and decode mode from the job; placement: the job's, resident when auto (the
/// worker's memory plan decides on a GPU); memory.overlap_decode: on with a placement other than resident
/// is an error. Every rank calls it, so that rank 0 reports these errors before
/// anything is written.
StatusOr<RenderSetup> resolve_render_setup(const RunContext& ctx);
/// The same for a node that has a GPU or not (`sdxl-batch check` on a login node checks for the GPU nodes).
StatusOr<RenderSetup> resolve_render_setup(const RunContext& ctx, bool have_gpu);

/// What the job asks of the memory plan (runtime/memory_plan.h): its size, steps, batch, the `memory:` keys,
/// the FP8 UNet, DeepCache's cached features, the VAE's decode dtype; `decoder` is the setup's (the tiny VAE
/// or the full one). The worker chooses its plan from it, and so does `sdxl-batch check --gpu-gib`.
MemoryRequest memory_request(const JobSpec& job, DecoderKind decoder);
/// choose_memory_plan for the job on `gpu`, its errors naming the job file, and memory.overlap_decode: on
/// refused where the plan moves the UNet's weights around the decode.
StatusOr<MemoryPlan> choose_job_memory_plan(const JobSpec& job, DecoderKind decoder,
                                            const GpuBudgetInput& gpu);

/// Whether the job's full VAE will decode in float32, as load_vae decides it: vae_dtype when set, else the
/// job's dtype, fp16 upcast when the VAE's config says force_upcast (diffusers' default when the key is
/// missing) and vae_fp16_safe is off. Reads the config from the model (a folder's vae/config.json, a single
/// file's config folder or the built-in SDXL configs); when it cannot be read, true (the larger memory
/// estimate; the load reports the problem). For the memory plan, which runs before the load.
bool vae_decodes_in_fp32(const JobSpec& job);

/// Whether LibTorch sees a CUDA GPU on this node.
bool gpu_present();

}  // namespace sdxlb
