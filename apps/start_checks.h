// What rank 0 checks of a job before anything is written, shared by `sdxl-batch run` (apps/job_runner.h)
// and `sdxl-batch check` (apps/job_check.h): the model as far as it can be read without loading weights, and
// on the CPU whether one image fits in this worker's share of RAM.
#pragma once

#include "common/status.h"
#include "run/run_context.h"
#include "worker/render_setup.h"

namespace sdxlb {

/// The model's identity from its configs and weight headers (no weights are loaded): every component's
/// config, the LoRAs matched against the weight headers, the sampler, and on the CPU the refusal of the FP8
/// keys. Logs the LoRAs' summary. Errors: those of SdxlPipeline::load (a missing or corrupt file names it).
StatusOr<ModelIdentity> read_model_identity(const RunContext& ctx, const RenderSetup& setup);

/// On the CPU nothing limits memory but the host: an image whose activations (by the model's own widths)
/// cannot fit in this worker's share of RAM (ctx.workers_on_node) is refused with kResourceExhausted and a
/// fix, instead of growing until the kernel kills it (16384x16384 did, after writing the embeddings). OK on
/// a GPU, whose memory plan decides there.
Status check_cpu_memory(const RunContext& ctx, const RenderSetup& setup);

}  // namespace sdxlb
