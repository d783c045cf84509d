#include "pipeline/denoise_graph.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace sdxlb {

bool DenoiseGraph::Key::operator==(const Key& o) const {
  return batch == o.batch && channels == o.channels && height == o.height && width == o.width &&
         seq == o.seq && dim == o.dim && pooled == o.pooled && dtype == o.dtype && cfg == o.cfg &&
         guidance == o.guidance;
}

struct DenoiseGraph::State {
  UNet2DConditionModel unet{nullptr};
  // Static inputs and scalars (device tensors), and the output of the captured step.
  at::Tensor latents, embeds, pooled, time_ids, timestep, input_scale, sigma, dt;
#ifdef SDXLB_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
};

DenoiseGraph::DenoiseGraph() : s_(std::make_unique<State>()) {}
DenoiseGraph::~DenoiseGraph() = default;

namespace {

// The step, written once for the warm-up runs and the capture. Updates `latents` in place.
void run_step(DenoiseGraph::Key const& k, UNet2DConditionModel& unet, at::Tensor& latents,
              const at::Tensor& embeds, const at::Tensor& pooled, const at::Tensor& time_ids,
              const at::Tensor& timestep, const at::Tensor& input_scale, const at::Tensor& sigma,
              const at::Tensor& dt) {
  at::Tensor model_in = k.cfg ? at::cat({latents, latents}, 0) : latents;
  model_in = (model_in * input_scale).contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor eps = unet->forward(model_in, timestep, embeds, pooled, time_ids);
  if (k.cfg) {
    auto chunks = eps.chunk(2, 0);
    eps = chunks[0] + k.guidance * (chunks[1] - chunks[0]);
  }
  // diffusers' Euler step for epsilon prediction, in float32, as euler_step() does it.
  const at::Tensor sample = latents.to(at::kFloat);
  const at::Tensor pred_original = sample - sigma * eps;
  const at::Tensor derivative = (sample - pred_original) / sigma;
  latents.copy_(sample + derivative * dt);
}

}  // namespace

StatusOr<std::unique_ptr<DenoiseGraph>> DenoiseGraph::capture(UNet2DConditionModel unet, const Key& key,
                                                              at::Device device) {
#ifdef SDXLB_WITH_CUDA
  if (!device.is_cuda()) return invalid_argument("CUDA graphs need a CUDA device");
  std::unique_ptr<DenoiseGraph> g(new DenoiseGraph());
  g->key_ = key;
  State& s = *g->s_;
  s.unet = unet;
  try {
    c10::InferenceMode guard;
    const auto opts = at::TensorOptions().dtype(key.dtype).device(device);
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    const int64_t rows = key.cfg ? 2 * key.batch : key.batch;
    s.latents = at::zeros({key.batch, key.channels, key.height, key.width}, opts);
    s.embeds = at::zeros({rows, key.seq, key.dim}, opts);
    s.pooled = at::zeros({rows, key.pooled}, opts);
    s.time_ids = at::zeros({rows, 6}, opts);
    s.timestep = at::full({}, 999.0, f32);
    s.input_scale = at::full({}, 0.1, f32);
    s.sigma = at::full({}, 1.0, f32);
    s.dt = at::full({}, -0.01, f32);
    auto stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    {
      c10::cuda::CUDAStreamGuard sg(stream);
      // Warm-up on the capture stream: cuBLAS/cuDNN handles, autotuning and workspaces exist before capture.
      for (int i = 0; i < 2; ++i)
        run_step(key, s.unet, s.latents, s.embeds, s.pooled, s.time_ids, s.timestep, s.input_scale, s.sigma,
                 s.dt);
      stream.synchronize();
      s.graph = std::make_unique<at::cuda::CUDAGraph>();
      s.graph->capture_begin();
      run_step(key, s.unet, s.latents, s.embeds, s.pooled, s.time_ids, s.timestep, s.input_scale, s.sigma,
               s.dt);
      s.graph->capture_end();
    }
    stream.synchronize();
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (what.find("out of memory") != std::string::npos)
      return Status(StatusCode::kResourceExhausted, "capturing the denoising CUDA graph: " + what);
    return internal_error("capturing the denoising CUDA graph: " + what);
  }
  return g;
#else
  (void)unet, (void)key, (void)device;
  return unimplemented("this build has no CUDA: CUDA graphs are not available");
#endif
}

void DenoiseGraph::load(const at::Tensor& latents, const at::Tensor& embeds, const at::Tensor& pooled,
                        const at::Tensor& time_ids) {
  s_->latents.copy_(latents, /*non_blocking=*/true);
  s_->embeds.copy_(embeds, true);
  s_->pooled.copy_(pooled, true);
  s_->time_ids.copy_(time_ids, true);
}

void DenoiseGraph::step(float timestep, float input_scale, float sigma, float dt) {
  s_->timestep.fill_(timestep);
  s_->input_scale.fill_(input_scale);
  s_->sigma.fill_(sigma);
  s_->dt.fill_(dt);
#ifdef SDXLB_WITH_CUDA
  s_->graph->replay();
#endif
}

const at::Tensor& DenoiseGraph::latents() const {
  return s_->latents;
}

}  // namespace sdxlb
