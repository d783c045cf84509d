#include "worker/run_context.h"

#include <ATen/Context.h>

#include "common/utc_time.h"

namespace sdxlb {

PipelineOptions RunContext::pipeline_options(bool text_encoders, bool denoiser) const {
  PipelineOptions o;
  o.variant = job.model_variant;
  o.dtype = dtype;
  o.device = device;
  o.decoder = decoder;
  o.tiny_vae = job.tiny_vae;
  o.vae_fp16_safe = job.vae_fp16_safe;
  o.load_text_encoders = text_encoders;
  o.load_denoiser = denoiser;
  o.placement = placement;
  o.unet_streams = unet_streams;
  o.resident_budget_bytes = resident_budget_bytes;
  o.unload_for_decode = unload_for_decode;
  o.tight_memory = tight_memory;
  return o;
}

RenderSettings RunContext::render_settings() const {
  RenderSettings s;
  s.steps = job.steps;
  s.guidance = job.guidance;
  s.width = job.width;
  s.height = job.height;
  return s;
}

StatusOr<RunContext> make_run_context(JobSpec job, const RunOptions& options, const std::string& run_id) {
  RunContext ctx;
  ctx.options = options;
  ctx.run_id = run_id;
  SDXLB_ASSIGN_OR_RETURN(auto plan, JobPlan::build(job));
  ctx.plan = std::make_shared<const JobPlan>(std::move(plan));

  const bool have_cuda = at::hasCUDA();
  switch (job.device) {
    case JobSpec::Device::kCpu:
      ctx.device = at::kCPU;
      break;
    case JobSpec::Device::kCuda:
      if (!have_cuda)
        return failed_precondition(job.job_file +
                                   ": device is cuda, but LibTorch sees no CUDA GPU on this node "
                                   "(check CUDA_VISIBLE_DEVICES and the driver, or set device: cpu)");
      ctx.device = at::Device(at::kCUDA, 0);
      break;
    case JobSpec::Device::kAuto:
      ctx.device = have_cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
      break;
  }
  switch (job.dtype) {
    case JobSpec::DType::kFp16:
      ctx.dtype = at::kHalf;
      break;
    case JobSpec::DType::kBf16:
      ctx.dtype = at::kBFloat16;
      break;
    case JobSpec::DType::kFp32:
      ctx.dtype = at::kFloat;
      break;
  }
  if (ctx.device.is_cpu() && ctx.dtype != at::kFloat)
    return invalid_argument(
        job.job_file + ": dtype " + dtype_name(job.dtype) +
        " is for GPUs; this run is on the CPU (set dtype: fp32, or device: cuda on a GPU node)");
  if (job.resolved_decoder() == JobSpec::Decoder::kTiny) {
    ctx.decoder = DecoderKind::kTiny;
  } else {
    switch (job.memory.decode) {
      case JobSpec::Decode::kSliced:
        ctx.decoder = DecoderKind::kSliced;
        break;
      case JobSpec::Decode::kTiled:
        ctx.decoder = DecoderKind::kTiled;
        break;
      default:
        ctx.decoder = DecoderKind::kFull;
        break;
    }
  }
  switch (job.memory.placement) {
    case JobSpec::Placement::kModelOffload:
      ctx.placement = Placement::kModelOffload;
      break;
    case JobSpec::Placement::kStreamed:
      ctx.placement = Placement::kStreamed;
      break;
    case JobSpec::Placement::kSequential:
      ctx.placement = Placement::kSequential;
      break;
    default:
      ctx.placement = Placement::kResident;
      break;
  }
  ctx.batch_size = job.batch_size ? *job.batch_size : (ctx.device.is_cuda() ? 8 : 1);
  ctx.job = std::move(job);
  return ctx;
}

std::string utc_run_id() {
  return utc_now("%Y%m%dT%H%M%SZ");
}

}  // namespace sdxlb
