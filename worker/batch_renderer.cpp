#include "worker/batch_renderer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <thread>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "cluster/node_probe.h"
#include "common/log.h"
#include "common/process_clock.h"
#include "pipeline/io/weights_broadcast.h"
#include "pipeline/runtime/memory_plan.h"
#include "store/hdf5.h"
#include "worker/call_layout.h"
#include "worker/device_binding.h"
#include "worker/embedding_rows.h"

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace sdxlb {
namespace {
using Clock = std::chrono::steady_clock;

// Adds `from`'s stored and failed items to `to`.
void append_items(const WorkRequest& from, WorkRequest* to) {
  to->done.insert(to->done.end(), from.done.begin(), from.done.end());
  to->failed.insert(to->failed.end(), from.failed.begin(), from.failed.end());
}

#ifdef SDXLB_WITH_CUDA
// The overlapped decode's streams, one pair per process (a worker renders on one GPU), the same every time:
// the caching allocator's blocks belong to the stream they were allocated on, so one decode stream reuses
// one decode's memory. Both are non-blocking pool streams, so neither waits for the other.
struct OverlapStreams {
  c10::cuda::CUDAStream denoise, decode;
};
// The denoise's graph replays at high priority (a graph runs at the priority of the stream it is launched
// into), the decode at low: its blocks take the SMs the UNet's kernels leave idle. Measured on an H200
// (MLPerf row, FP8): 6.64 s per batch of 16 against 6.66 with the priorities the other way round and 6.71
// without the overlap (bench/results/2026-12-04-h200-session17.md).
const OverlapStreams& overlap_streams(c10::DeviceIndex index) {
  static const OverlapStreams s{c10::cuda::getStreamFromPool(/*isHighPriority=*/true, index),
                                c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index)};
  return s;
}
#endif
}  // namespace

struct BatchRenderer::Group {
  std::vector<int64_t> items;     // the group's items (m)
  std::vector<int64_t> position;  // per item: its image among the padded ones (worker/call_layout.h)
  int64_t padded = 0;             // images denoised: whole UNet calls, at least the group size
  // Per image denoised: its item's, or a copy's where no item sits.
  std::vector<PlanItem> plan_items;
  std::vector<std::string> pos, neg;
  std::vector<uint64_t> seeds;
  std::vector<std::string> errors;  // per item: "" or why it failed
  double embed_ms = 0, denoise_ms = 0, decode_ms = 0;
};

// What the decode thread hands back: the images, or (where it stored them itself) what storing them gave.
struct DecodedGroup {
  StatusOr<at::Tensor> images = at::Tensor();
  bool stored = false;  // the thread stored the group's items in the sink
  Status store_status;  // (stored) the sink's answer
  WorkRequest done;     // (stored) the items stored
};

struct BatchRenderer::PendingDecode {
  Group group;
  at::Tensor latents;  // read by the decode thread; kept until it is done
  std::future<DecodedGroup> result;
};

BatchRenderer::BatchRenderer(const RunContext& ctx, RenderSetup setup, int rank)
    : ctx_(ctx), setup_(std::move(setup)), rank_(rank), oom_faults_left_(ctx.faults->oom_batches()) {}

BatchRenderer::~BatchRenderer() {
  wait_for_decode();  // its thread uses pipe_ and the sink
}

void BatchRenderer::wait_for_decode() const {
  if (pending_ && pending_->result.valid()) pending_->result.wait();
}

Status BatchRenderer::init(WeightsBroadcast* share) {
  setup_.device = bind_device(setup_.device, ctx_.gpu_slot);
  Status st = apply_memory_plan();
  PipelineOptions options = setup_.pipeline_options(ctx_.job, false, true);
  if (share) options.weights_opener = share->opener();
  const auto t_load = Clock::now();
  if (st.is_ok()) {
    auto pipe = SdxlPipeline::load(ctx_.job.model, options);
    if (pipe.is_ok()) pipe_ = std::move(*pipe);
    st = pipe.status();
  }
  if (share) {
    // Every worker of the node ends the exchange, also after a failure, so that none waits for it.
    const Status done = share->finish();
    if (st.is_ok()) st = done;
    if (st.is_ok()) {
      char line[200];
      std::snprintf(line, sizeof line, "weights: %lld files (%.2f GiB) %s in %.2f s (weights_broadcast)",
                    static_cast<long long>(share->files()), static_cast<double>(share->bytes()) / (1 << 30),
                    share->reads() ? "read and shared with this node's other workers"
                                   : "received from this node's first worker",
                    std::chrono::duration<double>(Clock::now() - t_load).count());
      log_info(line);
    }
  }
  SDXLB_RETURN_IF_ERROR(st);
  const int64_t together = group_size();
  if (ctx_.job.batch_size && *ctx_.job.batch_size % together != 0)
    log_warn("batch_size " + std::to_string(*ctx_.job.batch_size) + " is not a multiple of the " +
             std::to_string(together) + " images denoised together (" + std::to_string(concurrent_calls()) +
             " concurrent UNet call(s) of " + std::to_string(ctx_.job.images_per_unet_call) +
             " image(s)): groups that are not full are padded with copies (each image keeps its place in its "
             "UNet call), which costs time but changes no pixel; use a multiple of " +
             std::to_string(together));
  // A CUDA graph capture must not meet the decode thread's work: it waits for that first.
  pipe_->set_before_capture([this] { wait_for_decode(); });
  if (setup_.overlap_decode)
    log_info(
        "decode: each image group's VAE decode overlaps the next group's denoise (memory.overlap_decode)");
  SDXLB_ASSIGN_OR_RETURN(auto cache,
                         EmbeddingCache::open(ctx_.job.embedding_cache, pipe_->text_encoder_id()));
  cache_.emplace(std::move(cache));
  scheduler_json_ = pipe_->scheduler_config().effective_json().dump();
  if (!ctx_.model.scheduler.empty() && scheduler_json_ != ctx_.model.scheduler)
    return failed_precondition("the model's scheduler changed while the job started (rank 0 read " +
                               ctx_.model.scheduler + ", this worker " + scheduler_json_ +
                               "); do not edit the model folder during a run");
  host_ = host_name();
  gpu_ = device_name(setup_.device);
  return Status::ok();
}

int BatchRenderer::concurrent_calls() const {
  if (setup_.device.is_cpu() || !pipe_) return 1;
  return std::max(1, pipe_->options().unet_streams);
}

int64_t BatchRenderer::group_size() const {
  return concurrent_calls() * std::max<int64_t>(1, ctx_.job.images_per_unet_call);
}

Status BatchRenderer::render(const std::vector<int64_t>& items, ItemSink& sink, WorkRequest* report,
                             const RenderHooks& hooks) {
  size_t i = 0;
  while (i < items.size()) {
    if (hooks.stop && hooks.stop()) break;
    ctx_.faults->maybe_hang(rank_, rendered_ + failed_);
    // (The group size is read each time: the out-of-memory fallback may lower it.)
    const int64_t group = group_size();
    const int64_t per_call = std::max<int64_t>(1, ctx_.job.images_per_unet_call);
    const size_t end = group_end(items, i, per_call, std::max<int64_t>(1, group / per_call));
    const std::vector<int64_t> chunk(items.begin() + static_cast<std::ptrdiff_t>(i),
                                     items.begin() + static_cast<std::ptrdiff_t>(end));
    const auto t0 = Clock::now();
    if (setup_.overlap_decode) {
      // (It asks the sink and reports progress itself, while no decode thread runs.)
      SDXLB_RETURN_IF_ERROR(render_overlapped(chunk, group, sink, report, hooks));
    } else {
      SDXLB_RETURN_IF_ERROR(sink.before_work(last_group_s_));
      WorkRequest done;
      SDXLB_RETURN_IF_ERROR(render_padded(chunk, group, sink, &done));
      SDXLB_RETURN_IF_ERROR(report_stored(done, report, hooks));
    }
    if (ctx_.faults->item_delay_ms() > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(ctx_.faults->item_delay_ms()));
    last_group_s_ = std::chrono::duration<double>(Clock::now() - t0).count();
    busy_s_ += last_group_s_;
    i = end;
  }
  return Status::ok();
}

Status BatchRenderer::finish(ItemSink& sink, const RenderHooks& hooks) {
  WorkRequest done;
  SDXLB_RETURN_IF_ERROR(finish_pending(sink, &done));
  return report_stored(done, nullptr, hooks);
}

Status BatchRenderer::report_stored(const WorkRequest& done, WorkRequest* report, const RenderHooks& hooks) {
  if (done.done.empty() && done.failed.empty()) return Status::ok();
  if (report) append_items(done, report);
  return hooks.progress ? hooks.progress(done) : Status::ok();
}

BatchRenderer::Group BatchRenderer::make_group(const std::vector<int64_t>& items, int64_t batch) const {
  Group g;
  g.items = items;
  const int64_t m = static_cast<int64_t>(items.size());
  const CallLayout layout = lay_out_calls(items, ctx_.job.images_per_unet_call, batch);
  g.position = layout.position;
  g.padded = layout.padded;
  for (int64_t p = 0; p < g.padded; ++p) {
    const PlanItem it = ctx_.plan->item(static_cast<uint64_t>(items[layout.source[static_cast<size_t>(p)]]));
    g.plan_items.push_back(it);
    g.pos.emplace_back(ctx_.plan->prompt_text(it.prompt));
    g.neg.emplace_back(ctx_.plan->negative_text(it.prompt));
    g.seeds.push_back(it.seed);
  }
  g.errors.assign(static_cast<size_t>(m), std::string());
  return g;
}

Status BatchRenderer::render_padded(const std::vector<int64_t>& items, int64_t batch, ItemSink& sink,
                                    WorkRequest* report) {
  const int64_t m = static_cast<int64_t>(items.size());
  Group g = make_group(items, batch);
  at::Tensor images;
  Status st = render_batch(g, &images);
  if (st.code() == StatusCode::kResourceExhausted && pipe_->options().unet_streams > 1) {
    // Out of memory, first step down: denoise the images of a batch one after the other instead of
    // concurrently (the same pixels, one image's activations at a time), and retry the batch.
    log_warn("out of GPU memory on a batch of " + std::to_string(m) +
             " items; denoising one image at a time from now on and retrying (" + st.message() + ")");
    release_cached_memory();
    pipe_->set_unet_streams(1);
    g = make_group(items, batch);
    st = render_batch(g, &images);
  }
  if (st.code() == StatusCode::kResourceExhausted) {
    // Still out of memory: free the allocator's cache and go one item at a time (each retried once), so
    // that no item is lost; an item that still does not fit is stored as failed and retried by the next
    // run.
    log_warn("out of GPU memory on a batch of " + std::to_string(m) +
             " items; retrying them one at a time (" + st.message() + ")");
    release_cached_memory();
    if (m > 1 || batch > 1) {
      for (int64_t item : items) SDXLB_RETURN_IF_ERROR(render_padded({item}, 1, sink, report));
      return Status::ok();
    }
    g = make_group(items, batch);
    st = render_batch(g, &images);
  }
  return store_group(g, st, images, sink, report);
}

Status BatchRenderer::render_overlapped(const std::vector<int64_t>& items, int64_t batch, ItemSink& sink,
                                        WorkRequest* report, const RenderHooks& hooks) {
  Group g = make_group(items, batch);
  const at::Device device = setup_.device;
#ifdef SDXLB_WITH_CUDA
  std::optional<c10::cuda::CUDAStreamGuard> on_denoise_stream;
  if (device.is_cuda()) on_denoise_stream.emplace(overlap_streams(device.index()).denoise);
#endif
  StatusOr<at::Tensor> latents = denoise_group(g);
  // The group before decoded (and was stored) while this one denoised: collect it. No decode thread runs
  // from here until the next one starts, so the sink is this thread's.
  WorkRequest done;
  SDXLB_RETURN_IF_ERROR(finish_pending(sink, &done));
  if (!latents.is_ok()) {
    // The whole-group path retries with its out-of-memory steps down, or stores the items as failed.
    if (latents.status().code() == StatusCode::kResourceExhausted)
      stop_overlapping("out of GPU memory while denoising");
    SDXLB_RETURN_IF_ERROR(render_padded(items, batch, sink, &done));
  }
  SDXLB_RETURN_IF_ERROR(report_stored(done, report, hooks));
  if (!latents.is_ok()) return Status::ok();
  SDXLB_RETURN_IF_ERROR(sink.before_work(last_group_s_));

  auto p = std::make_unique<PendingDecode>();
  p->group = std::move(g);
  p->latents = *latents;
  // The decode thread's stream waits for this thread's work on the latents (the denoise and the NaN rows
  // zeroed), and only for that.
#ifdef SDXLB_WITH_CUDA
  std::shared_ptr<at::cuda::CUDAEvent> ready;
  if (device.is_cuda()) {
    ready = std::make_shared<at::cuda::CUDAEvent>();
    ready->record(at::cuda::getCurrentCUDAStream(device.index()));
  }
#endif
  // The thread stores the group too (PNG encoding and HDF5 writes off the GPU's path), unless the HDF5
  // library cannot take two threads at once: this thread reads embeddings meanwhile.
  static const bool store_there = h5::library_threadsafe();
  PendingDecode* pending = p.get();
  ItemSink* out = &sink;
  p->result = std::async(std::launch::async, [=]() -> DecodedGroup {
    DecodedGroup r;
    try {
      c10::InferenceMode guard;
#ifdef SDXLB_WITH_CUDA
      std::optional<c10::cuda::CUDAGuard> on_device;
      std::optional<c10::cuda::CUDAStreamGuard> on_stream;
      if (device.is_cuda()) {
        on_device.emplace(device);
        on_stream.emplace(overlap_streams(device.index()).decode);
        ready->block(on_stream->current_stream());
      }
#endif
      r.images = pipe_->decode(pending->latents);
      if (r.images.is_ok()) r.images = r.images->contiguous();
    } catch (const std::exception& e) {  // (decode() reports LibTorch's errors itself; this is the rest)
      r.images = Status(StatusCode::kInternal, std::string("decoding on the decode thread: ") + e.what());
    }
    if (r.images.status().code() == StatusCode::kResourceExhausted) return r;  // rendered again
    pending->group.decode_ms = pipe_->last_times().decode_ms;
    if (store_there) {
      r.stored = true;
      r.store_status = store_group(pending->group, r.images.status(),
                                   r.images.is_ok() ? *r.images : at::Tensor(), *out, &r.done);
    }
    return r;
  });
  pending_ = std::move(p);
  return Status::ok();
}

Status BatchRenderer::finish_pending(ItemSink& sink, WorkRequest* report) {
  if (!pending_) return Status::ok();
  std::unique_ptr<PendingDecode> p = std::move(pending_);
  DecodedGroup r = p->result.get();
  p->latents = at::Tensor();  // the decode is done with them
  if (r.images.status().code() == StatusCode::kResourceExhausted) {
    stop_overlapping("out of GPU memory while decoding");
    return render_padded(p->group.items, p->group.padded, sink, report);
  }
  if (r.stored) {
    append_items(r.done, report);
    return r.store_status;
  }
  return store_group(p->group, r.images.status(), r.images.is_ok() ? *r.images : at::Tensor(), sink, report);
}

void BatchRenderer::stop_overlapping(const std::string& why) {
  log_warn(why +
           "; each group's decode no longer overlaps the next group's denoise (it holds a decode's "
           "memory beside the denoising), and the group is rendered again");
  setup_.overlap_decode = false;
  release_cached_memory();
}

Status BatchRenderer::store_group(const Group& g, const Status& st, const at::Tensor& images, ItemSink& sink,
                                  WorkRequest* report) {
  const int64_t m = static_cast<int64_t>(g.items.size());
  const double b = static_cast<double>(g.padded);
  for (int64_t k = 0; k < m; ++k) {
    std::string error = st.is_ok() ? g.errors[k] : st.to_string();
    ItemRecord r;
    const int64_t p = g.position[k];
    const PlanItem& it = g.plan_items[p];
    r.item_index = static_cast<int64_t>(it.index);
    r.prompt_index = static_cast<int64_t>(it.prompt);
    r.image_k = static_cast<int32_t>(it.image);
    r.seed = it.seed;
    r.prompt = g.pos[p];
    r.negative_prompt = g.neg[p];
    r.steps = static_cast<int32_t>(ctx_.job.steps);
    r.guidance = static_cast<float>(ctx_.job.guidance);
    r.width = static_cast<int32_t>(ctx_.job.width);
    r.height = static_cast<int32_t>(ctx_.job.height);
    r.scheduler = scheduler_json_;
    r.approximations = ctx_.job.approximations.to_json();
    r.model_id = pipe_->model_id();
    r.rank = rank_;
    r.host = host_;
    r.gpu = gpu_;
    r.ms_encode = static_cast<float>(g.embed_ms / b);
    r.ms_denoise = static_cast<float>(g.denoise_ms / b);
    r.ms_decode = static_cast<float>(g.decode_ms / b);
    r.ok = error.empty();
    r.error = error;
    const uint8_t* rgb = r.ok ? images[p].data_ptr<uint8_t>() : nullptr;
    SDXLB_RETURN_IF_ERROR(sink.add(r, rgb));
    (r.ok ? report->done : report->failed).push_back(r.item_index);
    (r.ok ? rendered_ : failed_)++;
    ctx_.faults->maybe_kill(rank_, rendered_ + failed_);
  }
  return Status::ok();
}

void BatchRenderer::log_peak_memory() const {
#ifdef SDXLB_WITH_CUDA
  if (setup_.device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(setup_.device.index());
    char line[128];
    std::snprintf(line, sizeof line,
                  "peak GPU memory: %.2f GiB allocated (%.2f GiB reserved by the allocator)",
                  static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 30),
                  static_cast<double>(stats.reserved_bytes[0].peak) / (1 << 30));
    log_info(line);
  }
#endif
}

// Caps the caching allocator at memory.max_gpu_gib, chooses the memory plan for this GPU and logs it with its
// estimate. (No choice of the plan changes pixels, except a tiled decode when nothing else fits.)
Status BatchRenderer::apply_memory_plan() {
#ifdef SDXLB_WITH_CUDA
  if (!setup_.device.is_cuda()) return Status::ok();
  const double total_gib =
      static_cast<double>(at::cuda::getDeviceProperties(setup_.device.index())->totalGlobalMem) / (1 << 30);
  if (ctx_.job.memory.max_gpu_gib) {
    const double fraction = std::min(1.0, *ctx_.job.memory.max_gpu_gib / total_gib);
    c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, setup_.device.index());
  }
  const int gpus = static_cast<int>(at::getNumGPUs());
  const int sharing = ctx_.workers_sharing_gpu;
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  char probe[200];
  std::snprintf(probe, sizeof probe,
                "node: %d GPUs, %d workers, %d on GPU %d (%.1f GiB total, %.1f GiB free), host RAM %.0f GiB",
                gpus, ctx_.workers_on_node, sharing, static_cast<int>(setup_.device.index()), total_gib,
                static_cast<double>(free_b) / (1 << 30), host_ram_gib());
  log_info(probe);
  GpuBudgetInput gpu{total_gib, sharing, ctx_.job.memory.max_gpu_gib,
                     host_ram_gib() / std::max(1, ctx_.workers_on_node)};
  auto chosen = choose_job_memory_plan(ctx_.job, setup_.decoder, gpu);
  if (!chosen.is_ok()) return chosen.status();
  const MemoryPlan& plan = *chosen;
  log_info(plan.describe());
  setup_.placement = plan.placement == "model_offload" ? Placement::kModelOffload
                     : plan.placement == "streamed"    ? Placement::kStreamed
                     : plan.placement == "sequential"  ? Placement::kSequential
                                                       : Placement::kResident;
  setup_.unet_streams = plan.unet_streams;
  setup_.resident_budget_bytes = static_cast<int64_t>(plan.resident_budget_gib * (1 << 30));
  setup_.unload_for_decode = plan.unload_for_decode;
  setup_.project_context = plan.project_context;
  setup_.tight_memory =
      ctx_.job.memory.max_gpu_gib.has_value() || sharing > 1 || plan.placement != "resident";
  if (plan.decode == "tiled") setup_.decoder = DecoderKind::kTiled;
  setup_.overlap_decode = plan.overlap_decode;
#endif
  return Status::ok();
}

void BatchRenderer::release_cached_memory() {
#ifdef SDXLB_WITH_CUDA
  if (setup_.device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

StatusOr<at::Tensor> BatchRenderer::denoise_group(Group& g) {
  if (oom_faults_left_ > 0) {
    --oom_faults_left_;
    return Status(StatusCode::kResourceExhausted, "injected out-of-memory (SDXLB_FAULT oom_batches)");
  }
  const std::vector<std::string>& pos = g.pos;
  const std::vector<std::string>& neg = g.neg;
  const auto te = Clock::now();
  // Stored float16 rows as the pipeline's embeddings, on its device in its dtype.
  const auto on_device = [&](StoredEmbeddings s) {
    return TextEmbeddings{half_tensor(std::move(s.prompt_embeds)).to(setup_.device, setup_.dtype),
                          half_tensor(std::move(s.pooled)).to(setup_.device, setup_.dtype)};
  };
  SDXLB_ASSIGN_OR_RETURN(auto pos_e, cache_->read(pos));
  TextEmbeddings positive = on_device(std::move(pos_e));
  TextEmbeddings negative;
  std::vector<std::string> neg_needed;
  for (const auto& n : neg)
    if (!(n.empty() && pipe_->force_zeros_for_empty_prompt())) neg_needed.push_back(n);
  if (neg_needed.size() == neg.size()) {
    SDXLB_ASSIGN_OR_RETURN(auto ne, cache_->read(neg));
    negative = on_device(std::move(ne));
  } else {
    // Mixed batch: zeros for the empty negatives, stored embeddings for the others.
    negative = {at::zeros_like(positive.prompt_embeds), at::zeros_like(positive.pooled)};
    for (size_t k = 0; k < neg.size(); ++k) {
      if (neg[k].empty() && pipe_->force_zeros_for_empty_prompt()) continue;
      SDXLB_ASSIGN_OR_RETURN(auto ne, cache_->read({neg[k]}));
      const TextEmbeddings one = on_device(std::move(ne));
      negative.prompt_embeds[k].copy_(one.prompt_embeds[0]);
      negative.pooled[k].copy_(one.pooled[0]);
    }
  }
  g.embed_ms = std::chrono::duration<double, std::milli>(Clock::now() - te).count();
  if (first_batch_) {
    first_batch_ = false;
    char line[96];
    std::snprintf(line, sizeof line, "startup: first UNet step at %.2f s after process start",
                  seconds_since_process_start());
    log_info(line);
  }
  RenderSettings settings = render_settings(ctx_.job);
  // A fact of the whole job (not of this batch), so that every batch runs the same kernels.
  settings.zero_negatives = ctx_.plan->every_negative_empty() && pipe_->force_zeros_for_empty_prompt();
  SDXLB_ASSIGN_OR_RETURN(auto latents, pipe_->denoise(positive, negative, g.seeds, settings));
  g.denoise_ms = pipe_->last_times().denoise_ms;
  if (!placement_logged_) {
    placement_logged_ = true;
    log_info(pipe_->placement_summary());
    log_info(pipe_->decoder_summary());
  }
  at::Tensor bad;
  {
    c10::InferenceMode guard;
    for (size_t k = 0; k < g.items.size(); ++k)
      if (ctx_.faults->nan_item(g.items[k])) latents[g.position[k]].fill_(NAN);
    if (ctx_.faults->place_skew() != 0) {
      // Each image's latents shifted by its place in its UNet call: what a GPU whose kernels round a row
      // by its place would do, for the tests of the call layout.
      const int64_t per_call = std::max<int64_t>(1, ctx_.job.images_per_unet_call);
      for (int64_t p = 0; p < g.padded; ++p)
        latents[p].add_(ctx_.faults->place_skew() * static_cast<double>(p % per_call));
    }
    // Rows with NaN/Inf are reported per item and zeroed, so the decode keeps its fixed batch shape.
    bad = latents.isfinite().logical_not().flatten(1).any(1).to(at::kCPU);
    latents.masked_fill_(latents.isfinite().logical_not(), 0);
  }
  const bool* bad_rows = bad.data_ptr<bool>();
  // The hint fits the dtype in use: in fp32 the job's own numbers (guidance, sigmas) are what overflow.
  const char* hint = setup_.dtype == at::kFloat
                         ? "numerical overflow in fp32: check the job's guidance and scheduler settings"
                         : "numerical overflow; try dtype bf16 or fp32";
  for (size_t k = 0; k < g.items.size(); ++k)
    if (bad_rows[g.position[k]])
      g.errors[k] = "the latents of item " + std::to_string(g.items[k]) +
                    " hold NaN or Inf after denoising (" + hint + ")";
  return latents;
}

// Renders a padded group whole. Per-item problems (NaN latents) land in the group's errors; a failure of the
// whole group is returned.
Status BatchRenderer::render_batch(Group& g, at::Tensor* images) {
  SDXLB_ASSIGN_OR_RETURN(auto latents, denoise_group(g));
  SDXLB_ASSIGN_OR_RETURN(*images, pipe_->decode(latents));
  g.decode_ms = pipe_->last_times().decode_ms;
  *images = images->contiguous();
  return Status::ok();
}

}  // namespace sdxlb
