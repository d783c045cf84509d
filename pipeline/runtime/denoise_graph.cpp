#include "pipeline/runtime/denoise_graph.h"

#include <algorithm>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "pipeline/io/torch_error.h"

namespace sdxlb {

bool DenoiseGraph::Key::operator==(const Key& o) const {
  return batch == o.batch && channels == o.channels && height == o.height && width == o.width &&
         seq == o.seq && dim == o.dim && pooled == o.pooled && dtype == o.dtype && cfg == o.cfg &&
         guidance == o.guidance && streams == o.streams;
}

struct DenoiseGraph::State {
  UNet2DConditionModel unet{nullptr};
  // Static inputs and scalars (device tensors), and the output of the captured step.
  at::Tensor latents, embeds, pooled, time_ids, timestep, input_scale, sigma, dt;
#ifdef SDXLB_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  std::vector<c10::cuda::CUDAStream> side;  // streams 1.. of the concurrent images (0 is the capture stream)
  std::vector<at::cuda::CUDAEvent> joined;  // one per side stream: its work of this step is done
  at::cuda::CUDAEvent forked;               // the step's inputs are ready on the capture stream
#endif
};

DenoiseGraph::DenoiseGraph() : s_(std::make_unique<State>()) {}
DenoiseGraph::~DenoiseGraph() = default;

namespace {

// One image's step: its CFG pair through the UNet, guidance, and diffusers' Euler update for epsilon
// prediction in float32 (as euler_step() does it). Updates `latents` (the image's row) in place.
void image_step(DenoiseGraph::Key const& k, UNet2DConditionModel& unet, at::Tensor latents,
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
  const at::Tensor sample = latents.to(at::kFloat);
  const at::Tensor pred_original = sample - sigma * eps;
  const at::Tensor derivative = (sample - pred_original) / sigma;
  latents.copy_(sample + derivative * dt);
}

// The step for the whole batch, written once for the warm-up runs and the capture: image i runs on stream
// i mod streams, forked from and joined back into the current stream.
void run_step(DenoiseGraph::Key const& k, DenoiseGraph::State& s) {
  const int64_t rows = k.cfg ? 2 : 1;
#ifdef SDXLB_WITH_CUDA
  const auto main = c10::cuda::getCurrentCUDAStream();
  if (!s.side.empty()) {
    s.forked.record(main);
    for (auto& st : s.side) s.forked.block(st);
  }
#endif
  for (int64_t i = 0; i < k.batch; ++i) {
#ifdef SDXLB_WITH_CUDA
    const size_t lane = static_cast<size_t>(i % k.streams);
    c10::cuda::CUDAStreamGuard guard(lane == 0 ? main : s.side[lane - 1]);
#endif
    image_step(k, s.unet, s.latents.narrow(0, i, 1), s.embeds.narrow(0, i * rows, rows),
               s.pooled.narrow(0, i * rows, rows), s.time_ids.narrow(0, i * rows, rows), s.timestep,
               s.input_scale, s.sigma, s.dt);
  }
#ifdef SDXLB_WITH_CUDA
  for (size_t j = 0; j < s.side.size(); ++j) {
    s.joined[j].record(s.side[j]);
    s.joined[j].block(main);
  }
#endif
}

}  // namespace

StatusOr<std::unique_ptr<DenoiseGraph>> DenoiseGraph::capture(UNet2DConditionModel unet, const Key& key,
                                                              at::Device device, int warmup) {
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
    const int streams = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(key.streams, key.batch)));
    g->key_.streams = key.streams;
    for (int j = 1; j < streams; ++j) {
      s.side.push_back(c10::cuda::getStreamFromPool(false, device.index()));
      s.joined.emplace_back();
    }
    {
      c10::cuda::CUDAStreamGuard sg(stream);
      // Warm-up on the capture stream: cuBLAS/cuDNN handles, autotuning and workspaces exist before capture.
      for (int i = 0; i < warmup; ++i) run_step(key, s);
      stream.synchronize();
      // The warm-up's cached blocks cannot serve the graph's private pool: give them back first, so that
      // a memory cap (max_gpu_gib) does not count them twice.
      c10::cuda::CUDACachingAllocator::emptyCache();
      s.graph = std::make_unique<at::cuda::CUDAGraph>();
      s.graph->capture_begin();
      try {
        run_step(key, s);
      } catch (...) {
        // End the broken capture, or every later CUDA call of this process fails ("operation not
        // permitted when stream is capturing") and the out-of-memory fallback cannot run.
        try {
          s.graph->capture_end();
        } catch (...) {
        }
        (void)cudaGetLastError();
        s.graph.reset();
        throw;
      }
      s.graph->capture_end();
    }
    stream.synchronize();
  } catch (const c10::Error& e) {
    return torch_error_status("capturing the denoising CUDA graph", e);
  }
  return g;
#else
  (void)unet, (void)key, (void)device, (void)warmup;
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
