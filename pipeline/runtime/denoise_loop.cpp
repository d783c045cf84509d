#include "pipeline/runtime/denoise_loop.h"

#include <algorithm>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/runtime/graph_memsets.h"
#endif

#include "pipeline/io/torch_error.h"

namespace sdxlb {

bool DenoiseLoop::Key::operator==(const Key& o) const {
  return batch == o.batch && channels == o.channels && height == o.height && width == o.width &&
         seq == o.seq && dim == o.dim && pooled == o.pooled && dtype == o.dtype && cfg == o.cfg &&
         guidance == o.guidance && streams == o.streams && cuda_graph == o.cuda_graph &&
         sampler == o.sampler && coefficient_width == o.coefficient_width && history == o.history &&
         noise == o.noise && approximations == o.approximations && project_context == o.project_context &&
         images_per_call == o.images_per_call && zero_negatives == o.zero_negatives;
}

DenoiseLoop::Key DenoiseLoop::key_for(const Sampler& sampler) {
  Key k;
  k.sampler = sampler.step_signature();
  k.coefficient_width = sampler.coefficient_width();
  k.history = sampler.history_buffers();
  k.noise = sampler.draws_noise();
  return k;
}

struct DenoiseLoop::State {
  UNet2DConditionModel unet{nullptr};
  // Static inputs, the step's coefficient row and noise, the sampler's history (device tensors); `latents`
  // is also the output.
  at::Tensor latents, embeds, pooled, time_ids, row, noise;
  std::vector<at::Tensor> history;
  // Approximations: the images' seeds (int64 [batch]) and the step index (int64 []) for ToMe's random
  // destinations; DeepCache's cached features, one per UNet call (allocated by the first full step).
  at::Tensor seeds, step;
  std::vector<at::Tensor> features;
  // Each UNet call's cross-attention keys and values of its prompt rows, projected once per batch by load()
  // into the same storage (the graph reads them there).
  std::vector<ContextProjections> projected;
#ifdef SDXLB_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  std::unique_ptr<at::cuda::CUDAGraph> shallow_graph;  // DeepCache's shallow step (shares graph's pool)
  std::vector<c10::cuda::CUDAStream> side;  // streams 1.. of the concurrent calls (0 is the capture stream)
  std::vector<at::cuda::CUDAEvent> joined;  // one per side stream: its work of this step is done
  at::cuda::CUDAEvent forked;               // the step's inputs are ready on the capture stream
#endif
};

DenoiseLoop::DenoiseLoop() : s_(std::make_unique<State>()) {}
DenoiseLoop::~DenoiseLoop() = default;

namespace {

// One UNet call's step for its images (t's rows): the sampler's model input, the UNet on the images' CFG
// pairs, guidance, the sampler's step (which updates the images' rows of `latents` and of the history in
// place).
void call_step(DenoiseLoop::Key const& k, UNet2DConditionModel& unet, const Sampler& sampler,
               const SamplerTensors& t, const at::Tensor& embeds, const at::Tensor& pooled,
               const at::Tensor& time_ids, const at::Tensor& row, const UNetCall& call) {
  const int64_t n = t.x.size(0);
  // With CFG the images twice, negatives' rows first ([x_0 .. x_{n-1}, x_0 .. x_{n-1}]), as load() lays out
  // the conditioning rows of each call.
  at::Tensor model_in =
      k.cfg ? t.x.unsqueeze(0).expand({2, n, t.x.size(1), t.x.size(2), t.x.size(3)}).flatten(0, 1) : t.x;
  // Channels-last on CUDA (the fast convolution layout there); on the CPU the layout diffusers runs in.
  model_in =
      sampler.model_input(model_in, row)
          .contiguous(model_in.is_cuda() ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  at::Tensor out = unet->forward(model_in, row.select(0, 0), embeds, pooled, time_ids, call);
  if (k.cfg) {
    // Classifier-free guidance: uncond + g · (cond − uncond) per image, in the model's dtype as diffusers
    // does.
    const at::Tensor halves = out.unflatten(0, {2, n});
    const at::Tensor uncond = halves.select(0, 0), cond = halves.select(0, 1);
    out = uncond + k.guidance * (cond - uncond);
  }
  sampler.step(t, out, row);
}

// Projects every UNet call's prompt rows for the cross-attentions (UNetCall::projected), into the storage of
// the earlier batch when there is one.
void project_context(DenoiseLoop::Key const& k, DenoiseLoop::State& s) {
  if (!k.project_context) return;
  c10::InferenceMode guard;
  const int64_t rows = (k.cfg ? 2 : 1) * k.images_per_call;
  const int64_t calls = k.batch / k.images_per_call;
  s.projected.resize(static_cast<size_t>(calls));
  for (int64_t i = 0; i < calls; ++i) {
    ContextProjections fresh;
    s.unet->project_context(s.embeds.narrow(0, i * rows, rows), fresh);
    ContextProjections& kept = s.projected[static_cast<size_t>(i)];
    if (kept.kv.empty()) {
      kept = std::move(fresh);
      continue;
    }
    for (auto& [module, kv] : fresh.kv) {
      auto& [key, value] = kept.kv.at(module);
      key.copy_(kv.first);
      value.copy_(kv.second);
    }
    for (auto& [module, scale] : fresh.value_scale) kept.value_scale.at(module).copy_(scale);
  }
}

// The step for the whole batch, written once for the warm-up runs and the capture: UNet call i (images
// i·images_per_call onwards) runs on stream i mod streams, forked from and joined back into the current
// stream.
void run_step(DenoiseLoop::Key const& k, DenoiseLoop::State& s, const Sampler& sampler, bool full) {
  const int64_t per_call = k.images_per_call;
  const int64_t rows = (k.cfg ? 2 : 1) * per_call;
  const int64_t calls = k.batch / per_call;
  const Approximations& ap = k.approximations;
  auto unet_call = [&](int64_t i) {
    SamplerTensors t;
    t.x = s.latents.narrow(0, i * per_call, per_call);
    for (const auto& h : s.history) t.history.push_back(h.narrow(0, i * per_call, per_call));
    if (s.noise.defined()) t.noise = s.noise.narrow(0, i * per_call, per_call);
    TokenReduction tokens;
    tokens.merging = ap.token_merging ? &*ap.token_merging : nullptr;
    tokens.downsampling = ap.token_downsampling ? &*ap.token_downsampling : nullptr;
    tokens.seed = s.seeds.select(0, i * per_call);  // (ToMe runs with one image per call)
    tokens.step = s.step;
    DeepCacheCall cache;
    UNetCall call;
    call.tokens = &tokens;
    // Every negative's conditioning is zero: the call's first per_call samples (load()'s layout).
    if (k.cfg && k.zero_negatives) call.zero_context_samples = per_call;
    if (k.project_context) call.projected = &s.projected[static_cast<size_t>(i)];
    if (ap.deep_cache) {
      cache.block = ap.deep_cache->cache_branch_id / 3;
      cache.layer = ap.deep_cache->cache_branch_id % 3;
      cache.full = full;
      cache.features = &s.features[static_cast<size_t>(i)];
      call.deep_cache = &cache;
    }
    call_step(k, s.unet, sampler, t, s.embeds.narrow(0, i * rows, rows), s.pooled.narrow(0, i * rows, rows),
              s.time_ids.narrow(0, i * rows, rows), s.row, call);
  };
#ifdef SDXLB_WITH_CUDA
  if (!s.side.empty()) {
    const auto main = c10::cuda::getCurrentCUDAStream();
    s.forked.record(main);
    for (auto& st : s.side) s.forked.block(st);
    for (int64_t i = 0; i < calls; ++i) {
      const size_t lane = static_cast<size_t>(i % k.streams);
      c10::cuda::CUDAStreamGuard guard(lane == 0 ? main : s.side[lane - 1]);
      unet_call(i);
    }
    for (size_t j = 0; j < s.side.size(); ++j) {
      s.joined[j].record(s.side[j]);
      s.joined[j].block(main);
    }
    return;
  }
#endif
  for (int64_t i = 0; i < calls; ++i) unet_call(i);
}

}  // namespace

StatusOr<std::unique_ptr<DenoiseLoop>> DenoiseLoop::create(UNet2DConditionModel unet, const Sampler& sampler,
                                                           const Key& key, at::Device device, int warmup) {
  const Key want = key_for(sampler);
  if (key.sampler != want.sampler || key.coefficient_width != want.coefficient_width ||
      key.history != want.history || key.noise != want.noise)
    return invalid_argument("denoise loop: the key was made for sampler '" + key.sampler + "', not '" +
                            want.sampler + "' (use DenoiseLoop::key_for)");
  if (key.images_per_call < 1 || key.batch % key.images_per_call != 0)
    return invalid_argument("denoise loop: a batch of " + std::to_string(key.batch) +
                            " images is not a whole number of UNet calls of " +
                            std::to_string(key.images_per_call));
  if (key.images_per_call > 1 && key.approximations.token_merging)
    return invalid_argument(
        "denoise loop: token merging draws its destinations per UNet call from one "
        "image's seed, so it runs with one image per call");
  if (key.cuda_graph && !device.is_cuda()) return invalid_argument("CUDA graphs need a CUDA device");
#ifndef SDXLB_WITH_CUDA
  if (key.cuda_graph) return unimplemented("this build has no CUDA: CUDA graphs are not available");
  (void)warmup;
#endif
  std::unique_ptr<DenoiseLoop> g(new DenoiseLoop());
  g->key_ = key;
  State& s = *g->s_;
  s.unet = unet;
  try {
    c10::InferenceMode guard;
    const auto opts = at::TensorOptions().dtype(key.dtype).device(device);
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    const int64_t rows = key.cfg ? 2 * key.batch : key.batch;
    const std::vector<int64_t> shape = {key.batch, key.channels, key.height, key.width};
    s.latents = at::zeros(shape, opts);
    s.embeds = at::zeros({rows, key.seq, key.dim}, opts);
    s.pooled = at::zeros({rows, key.pooled}, opts);
    s.time_ids = at::zeros({rows, 6}, opts);
    // A plausible first row for the warm-up and the capture (the values are replaced before every step).
    std::vector<float> first(sampler.coefficients().begin(),
                             sampler.coefficients().begin() + sampler.coefficient_width());
    s.row = at::tensor(first, at::TensorOptions().dtype(at::kFloat)).to(device);
    for (int64_t j = 0; j < key.history; ++j) s.history.push_back(at::zeros(shape, f32));
    if (key.noise) s.noise = at::zeros(shape, opts.dtype(sampler.noise_dtype(key.dtype)));
    s.seeds = at::zeros({key.batch}, at::TensorOptions().dtype(at::kLong).device(device));
    s.step = at::zeros({}, at::TensorOptions().dtype(at::kLong).device(device));
    s.features.resize(static_cast<size_t>(key.batch / key.images_per_call));
    project_context(key, s);
    if (!key.cuda_graph) return g;
#ifdef SDXLB_WITH_CUDA
    auto stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    const int streams = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>(key.streams, key.batch / key.images_per_call)));
    for (int j = 1; j < streams; ++j) {
      s.side.push_back(c10::cuda::getStreamFromPool(false, device.index()));
      s.joined.emplace_back();
    }
    {
      c10::cuda::CUDAStreamGuard sg(stream);
      // Warm-up on the capture stream: cuBLAS/cuDNN handles, autotuning and workspaces exist before capture.
      // DeepCache: a full step first (it allocates the cached features), and a shallow one.
      const bool deep_cache = key.approximations.deep_cache.has_value();
      for (int i = 0; i < std::max(warmup, deep_cache ? 1 : 0); ++i) run_step(key, s, sampler, true);
      if (deep_cache) run_step(key, s, sampler, false);
      stream.synchronize();
      // The warm-up's cached blocks cannot serve the graph's private pool: give them back first, so that
      // a memory cap (max_gpu_gib) does not count them twice.
      c10::cuda::CUDACachingAllocator::emptyCache();
      auto capture = [&](std::unique_ptr<at::cuda::CUDAGraph>& graph, bool full, at::cuda::MempoolId_t pool) {
        // Kept uninstantiated after capture, so that its memset nodes can become kernel nodes first.
        graph = std::make_unique<at::cuda::CUDAGraph>(/*keep_graph=*/true);
        graph->capture_begin(pool);
        try {
          run_step(key, s, sampler, full);
        } catch (...) {
          // End the broken capture, or every later CUDA call of this process fails ("operation not
          // permitted when stream is capturing") and the out-of-memory fallback cannot run.
          try {
            graph->capture_end();
          } catch (...) {
          }
          (void)cudaGetLastError();
          graph.reset();
          throw;
        }
        graph->capture_end();
        instantiate_graph(*graph);
      };
      capture(s.graph, true, {0, 0});
      // The shallow step never runs at the same time as the full one: it shares its memory pool.
      if (deep_cache) capture(s.shallow_graph, false, s.graph->pool());
    }
    stream.synchronize();
#endif
  } catch (const c10::Error& e) {
    return torch_error_status(
        key.cuda_graph ? "capturing the denoising CUDA graph" : "allocating the denoising buffers", e);
  }
  return g;
}

bool DenoiseLoop::full_step(int64_t i) const {
  const auto& dc = key_.approximations.deep_cache;
  return !dc || dc->cache_interval <= 1 || i % dc->cache_interval == 0;
}

void DenoiseLoop::load(const at::Tensor& latents, const at::Tensor& embeds, const at::Tensor& pooled,
                       const at::Tensor& time_ids, const std::vector<uint64_t>& seeds) {
  if (!seeds.empty()) {
    std::vector<int64_t> bits(seeds.size());
    for (size_t i = 0; i < seeds.size(); ++i) bits[i] = static_cast<int64_t>(seeds[i]);
    s_->seeds.copy_(at::tensor(bits, at::TensorOptions().dtype(at::kLong)));
  }
  s_->latents.copy_(latents, /*non_blocking=*/true);
  // With CFG, each UNet call's rows as diffusers lays out a batch: its images' negatives, then their
  // positives (the input comes grouped per image).
  const auto place = [this](at::Tensor& dst, const at::Tensor& src) {
    if (!key_.cfg) {
      dst.copy_(src, true);
      return;
    }
    const int64_t per_call = key_.images_per_call, calls = key_.batch / per_call;
    std::vector<int64_t> grouped = {calls, per_call, 2}, laid = {calls, 2, per_call};
    for (int64_t d = 1; d < src.dim(); ++d) {
      grouped.push_back(src.size(d));
      laid.push_back(src.size(d));
    }
    dst.view(laid).copy_(src.reshape(grouped).transpose(1, 2), true);
  };
  place(s_->embeds, embeds);
  place(s_->pooled, pooled);
  place(s_->time_ids, time_ids);
  for (auto& h : s_->history) h.zero_();
  project_context(key_, *s_);
}

void DenoiseLoop::run(const Sampler& sampler, const StepNoise& noise) {
  State& s = *s_;
  c10::InferenceMode guard;
  const int64_t n = sampler.num_steps();
  // The whole table in one upload; row i is copied into the static row before step i (a device-side copy,
  // no host synchronisation).
  const at::Tensor table =
      at::from_blob(const_cast<float*>(sampler.coefficients().data()), {n, sampler.coefficient_width()},
                    at::TensorOptions().dtype(at::kFloat))
          .to(s.row.device());
  const at::Tensor steps = at::arange(n, at::TensorOptions().dtype(at::kLong).device(s.step.device()));
  for (int64_t i = 0; i < n; ++i) {
    s.row.copy_(table[i], /*non_blocking=*/true);
    s.step.copy_(steps[i], /*non_blocking=*/true);
    if (s.noise.defined()) {
      at::Tensor draws = noise(i);
      // Pinned (on CUDA) so that the copy is asynchronous; the host allocator keeps the block until the copy
      // has run.
      if (s.noise.is_cuda()) draws = draws.pin_memory();
      s.noise.copy_(draws, /*non_blocking=*/true);
    }
#ifdef SDXLB_WITH_CUDA
    if (s.graph) {
      (full_step(i) ? s.graph : s.shallow_graph)->replay();
      continue;
    }
#endif
    run_step(key_, s, sampler, full_step(i));
  }
}

const at::Tensor& DenoiseLoop::latents() const {
  return s_->latents;
}

}  // namespace sdxlb
