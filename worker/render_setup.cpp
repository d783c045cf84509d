#include "worker/render_setup.h"

#include <ATen/Context.h>

#include "pipeline/io/model_source.h"

namespace sdxlb {

at::ScalarType scalar_type(JobSpec::DType dtype) {
  switch (dtype) {
    case JobSpec::DType::kFp16:
      return at::kHalf;
    case JobSpec::DType::kBf16:
      return at::kBFloat16;
    case JobSpec::DType::kFp32:
      break;
  }
  return at::kFloat;
}

PipelineOptions RenderSetup::pipeline_options(const JobSpec& job, bool text_encoders, bool denoiser) const {
  PipelineOptions o;
  o.variant = job.model_variant;
  o.model_config = job.model_config;
  o.vae = job.vae;
  o.dtype = dtype;
  o.device = device;
  o.decoder = decoder;
  o.tiny_vae = job.tiny_vae;
  o.vae_fp16_safe = job.vae_fp16_safe;
  if (job.vae_dtype) o.vae_dtype = scalar_type(*job.vae_dtype);
  o.load_text_encoders = text_encoders;
  o.load_denoiser = denoiser;
  o.placement = placement;
  o.unet_streams = unet_streams;
  o.images_per_unet_call = job.images_per_unet_call;
  o.resident_budget_bytes = resident_budget_bytes;
  o.unload_for_decode = unload_for_decode;
  o.project_context = project_context;
  o.tight_memory = tight_memory;
  o.sampler = job.scheduler;
  o.approximations = job.approximations;
  o.loras = job.loras;
  return o;
}

RenderSettings render_settings(const JobSpec& job) {
  RenderSettings s;
  s.steps = job.steps;
  s.guidance = job.guidance;
  s.width = job.width;
  s.height = job.height;
  return s;
}

MemoryRequest memory_request(const JobSpec& job, DecoderKind decoder) {
  MemoryRequest req;
  req.width = job.width;
  req.height = job.height;
  req.steps = job.steps;
  req.tiny_decoder = decoder == DecoderKind::kTiny;
  req.batch_size = job.batch_size;
  req.images_per_call = job.images_per_unet_call;
  if (const auto& dc = job.approximations.deep_cache)
    req.cached_gib_per_image = deep_cache_gib_per_image(job.width, job.height, dc->cache_branch_id);
  req.fp8_unet = job.approximations.unet_precision == UNetPrecision::kFp8;
  req.vae_fp32 = !req.tiny_decoder && vae_decodes_in_fp32(job);
  if (job.memory.decode != JobSpec::Decode::kAuto) req.decode = decode_name(job.memory.decode);
  req.placement = placement_name(job.memory.placement);
  if (job.memory.concurrent_images) req.concurrent_images = static_cast<int>(*job.memory.concurrent_images);
  if (job.memory.overlap_decode != JobSpec::OverlapDecode::kAuto)
    req.overlap_decode = job.memory.overlap_decode == JobSpec::OverlapDecode::kOn;
  return req;
}

StatusOr<MemoryPlan> choose_job_memory_plan(const JobSpec& job, DecoderKind decoder,
                                            const GpuBudgetInput& gpu) {
  const MemoryRequest req = memory_request(job, decoder);
  auto plan = choose_memory_plan(gpu, req);
  if (!plan.is_ok()) return plan.status().with_context(job.job_file);
  if (req.overlap_decode.value_or(false) && !plan->overlap_decode)
    return failed_precondition(
        job.job_file + ": memory.overlap_decode is on, but the memory plan for this GPU keeps the UNet " +
        plan->placement +
        ", which moves its weights around the decode, so the decode cannot overlap the denoise; use "
        "memory.overlap_decode: auto (or off), or a GPU with room for the resident UNet");
  return plan;
}

bool vae_decodes_in_fp32(const JobSpec& job) {
  if (job.vae_dtype) return *job.vae_dtype == JobSpec::DType::kFp32;
  if (job.dtype == JobSpec::DType::kFp32) return true;
  if (job.dtype == JobSpec::DType::kBf16 || job.vae_fp16_safe) return false;
  auto source = ModelSource::open(job.model, job.model_config, job.vae);
  if (!source.is_ok()) return true;
  auto config = source->config("vae");
  if (!config.is_ok() || !config->is_object()) return true;
  const auto it = config->find("force_upcast");
  return it == config->end() || !it->is_boolean() || it->get<bool>();
}

bool gpu_present() {
  return at::hasCUDA();
}

StatusOr<RenderSetup> resolve_render_setup(const RunContext& ctx) {
  return resolve_render_setup(ctx, gpu_present());
}

StatusOr<RenderSetup> resolve_render_setup(const RunContext& ctx, bool have_cuda) {
  const JobSpec& job = ctx.job;
  RenderSetup setup;
  switch (job.device) {
    case JobSpec::Device::kCpu:
      setup.device = at::kCPU;
      break;
    case JobSpec::Device::kCuda:
      if (!have_cuda)
        return invalid_argument(job.job_file +
                                ": device is cuda, but LibTorch sees no CUDA GPU on this node "
                                "(check CUDA_VISIBLE_DEVICES and the driver, or set device: cpu)");
      setup.device = at::Device(at::kCUDA, 0);
      break;
    case JobSpec::Device::kAuto:
      setup.device = have_cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
      break;
  }
  setup.dtype = scalar_type(job.dtype);
  if (setup.device.is_cpu() && setup.dtype != at::kFloat)
    return invalid_argument(
        job.job_file + ": dtype " + dtype_name(job.dtype) +
        " is for GPUs; this run is on the CPU (set dtype: fp32, or device: cuda on a GPU node)");
  if (setup.device.is_cpu() && job.vae_dtype && *job.vae_dtype != JobSpec::DType::kFp32)
    return invalid_argument(
        job.job_file + ": vae_dtype " + dtype_name(*job.vae_dtype) +
        " is for GPUs; this run is on the CPU (remove vae_dtype, or set device: cuda on a "
        "GPU node)");
  if (job.resolved_decoder() == JobSpec::Decoder::kTiny) {
    setup.decoder = DecoderKind::kTiny;
  } else {
    switch (job.memory.decode) {
      case JobSpec::Decode::kSliced:
        setup.decoder = DecoderKind::kSliced;
        break;
      case JobSpec::Decode::kTiled:
        setup.decoder = DecoderKind::kTiled;
        break;
      default:
        setup.decoder = DecoderKind::kFull;
        break;
    }
  }
  setup.overlap_decode = job.memory.overlap_decode == JobSpec::OverlapDecode::kOn;
  if (setup.overlap_decode && job.memory.placement != JobSpec::Placement::kAuto &&
      job.memory.placement != JobSpec::Placement::kResident)
    return invalid_argument(
        job.job_file + ": memory.overlap_decode is on, but memory.placement " +
        placement_name(job.memory.placement) +
        " moves the UNet's weights around the decode, so the decode cannot overlap the "
        "denoise; use memory.placement: resident (or auto), or memory.overlap_decode: auto");
  switch (job.memory.placement) {
    case JobSpec::Placement::kModelOffload:
      setup.placement = Placement::kModelOffload;
      break;
    case JobSpec::Placement::kStreamed:
      setup.placement = Placement::kStreamed;
      break;
    case JobSpec::Placement::kSequential:
      setup.placement = Placement::kSequential;
      break;
    default:
      setup.placement = Placement::kResident;
      break;
  }
  return setup;
}

}  // namespace sdxlb
