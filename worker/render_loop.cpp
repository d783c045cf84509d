#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "cluster/node_probe.h"
#include "common/log.h"
#include "common/process_clock.h"
#include "coordinator/protocol.h"
#include "pipeline/memory_plan.h"
#include "store/embedding_cache.h"
#include "store/output_folder.h"
#include "store/segment_writer.h"
#include "worker/fault_injection.h"

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace sdxlb {
namespace {

using Clock = std::chrono::steady_clock;

// Texts the encode phase needs: every distinct prompt and non-empty negative, plus "" when the model
// encodes empty negatives instead of zeroing them.
std::vector<std::string> texts_to_encode(const JobPlan& plan, bool force_zeros) {
  std::vector<std::string> out;
  const UniqueTexts& t = plan.texts();
  out.reserve(t.size() + 1);
  for (uint32_t i = 0; i < t.size(); ++i) out.emplace_back(t.text(i));
  if (!force_zeros) out.emplace_back("");
  return out;
}

std::string host_name() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string gpu_name(const at::Device& device) {
#ifdef SDXLB_WITH_CUDA
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index())->name;
#endif
  return "cpu";
}

// Binds this worker to a GPU: the i-th worker on a node takes GPU i mod (GPUs on the node).
at::Device bind_device(const RunContext& ctx) {
  if (!ctx.device.is_cuda()) return ctx.device;
  const int n = static_cast<int>(at::getNumGPUs());
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(n > 0 ? ctx.gpu_slot % n : 0));
}

Status send_fatal(Comm& comm, const Status& error) {
  return comm.send(0, kFatal, encode_fatal(error.to_string()), "reporting a fatal worker error");
}

}  // namespace

Status run_encode_phase(Comm& comm, const RunContext& base_ctx) {
  RunContext ctx = base_ctx;
  const int w = comm.rank() - 1, nw = comm.size() - 1;
  ctx.device = bind_device(ctx);
  // Find what is missing before loading the encoders: a resumed job usually has everything.
  auto probe = SdxlPipeline::load(ctx.job.model, ctx.pipeline_options(false, false));
  if (!probe.is_ok()) return probe.status();
  SDXLB_ASSIGN_OR_RETURN(auto cache,
                         EmbeddingCache::open(ctx.job.embedding_cache, (*probe)->text_encoder_id()));
  const bool force_zeros = (*probe)->force_zeros_for_empty_prompt();
  probe = Status(StatusCode::kInternal, "released");
  const std::vector<std::string> missing = cache.missing(texts_to_encode(*ctx.plan, force_zeros));
  const size_t begin = missing.size() * static_cast<size_t>(w) / static_cast<size_t>(nw);
  const size_t end = missing.size() * static_cast<size_t>(w + 1) / static_cast<size_t>(nw);
  if (begin == end) return Status::ok();

  SDXLB_ASSIGN_OR_RETURN(auto pipe, SdxlPipeline::load(ctx.job.model, ctx.pipeline_options(true, false)));
  const size_t chunk = 64;          // texts per encoder call
  const size_t shard_texts = 4096;  // texts per shard file
  std::vector<std::string> pending;
  std::vector<at::Tensor> embeds, pooled;
  int64_t shard_n = 0;
  auto flush = [&]() -> Status {
    if (pending.empty()) return Status::ok();
    const std::string tag = ctx.run_id + "-r" + std::to_string(comm.rank()) + "-" + std::to_string(shard_n++);
    SDXLB_RETURN_IF_ERROR(cache.write_shard(tag, pending, at::cat(embeds, 0), at::cat(pooled, 0)));
    pending.clear();
    embeds.clear();
    pooled.clear();
    return Status::ok();
  };
  const auto t_encode = Clock::now();
  for (size_t i = begin; i < end; i += chunk) {
    std::vector<std::string> texts(missing.begin() + i, missing.begin() + std::min(end, i + chunk));
    // Always `chunk` rows (padded with the last text): with one shape, a text's embedding does not depend on
    // which texts share its batch, so it is the same whatever the cache held and however many ranks encode.
    const size_t n = texts.size();
    while (texts.size() < chunk) texts.push_back(texts.back());
    SDXLB_ASSIGN_OR_RETURN(auto e, pipe->encode(texts));
    texts.resize(n);
    embeds.push_back(e.prompt_embeds.narrow(0, 0, static_cast<int64_t>(n)).to(at::kCPU, at::kHalf));
    pooled.push_back(e.pooled.narrow(0, 0, static_cast<int64_t>(n)).to(at::kCPU, at::kHalf));
    pending.insert(pending.end(), texts.begin(), texts.end());
    if (pending.size() >= shard_texts) SDXLB_RETURN_IF_ERROR(flush());
  }
  SDXLB_RETURN_IF_ERROR(flush());
  const double secs = std::chrono::duration<double>(Clock::now() - t_encode).count();
  char line[160];
  std::snprintf(line, sizeof line, "encode: %zu texts in %.2f s (%.1f texts/s at batch %zu, stored included)",
                end - begin, secs, static_cast<double>(end - begin) / secs, chunk);
  log_info(line);
  return Status::ok();
}

namespace {

// One worker's rendering state: the pipeline, the embedding cache and the open segment.
class RenderWorker {
 public:
  RenderWorker(Comm& comm, RunContext ctx) : comm_(comm), ctx_(std::move(ctx)) {}

  Status init() {
    ctx_.device = bind_device(ctx_);
    SDXLB_RETURN_IF_ERROR(apply_memory_plan());
    SDXLB_ASSIGN_OR_RETURN(pipe_, SdxlPipeline::load(ctx_.job.model, ctx_.pipeline_options(false, true)));
    SDXLB_ASSIGN_OR_RETURN(auto cache,
                           EmbeddingCache::open(ctx_.job.embedding_cache, pipe_->text_encoder_id()));
    cache_.emplace(std::move(cache));
    host_ = host_name();
    gpu_ = gpu_name(ctx_.device);
    return Status::ok();
  }

  // Renders `items` (one group of the dispatcher) and appends them to the segment: on a GPU in batches of
  // the plan's batch size (the last one padded, so that one CUDA graph serves them all), on the CPU one item
  // at a time. Either way each image is computed on its own, so its pixels do not depend on the batch.
  Status render(const std::vector<int64_t>& items, WorkRequest* report) {
    const auto t0 = Clock::now();
    const size_t step = ctx_.device.is_cpu() ? 1 : static_cast<size_t>(ctx_.batch_size);
    for (size_t i = 0; i < items.size(); i += step) {
      const std::vector<int64_t> chunk(items.begin() + i, items.begin() + std::min(items.size(), i + step));
      SDXLB_RETURN_IF_ERROR(render_padded(chunk, ctx_.device.is_cpu() ? 1 : ctx_.batch_size, report));
    }
    busy_s_ += std::chrono::duration<double>(Clock::now() - t0).count();
    return Status::ok();
  }

 private:
  Status render_padded(const std::vector<int64_t>& items, int64_t batch, WorkRequest* report) {
    const int64_t m = static_cast<int64_t>(items.size());
    const int64_t b = std::max<int64_t>(batch, m);
    std::vector<std::string> pos_texts, neg_texts;
    std::vector<uint64_t> seeds;
    std::vector<PlanItem> plan_items;
    for (int64_t k = 0; k < b; ++k) {
      const PlanItem it =
          ctx_.plan->item(static_cast<uint64_t>(items[std::min(k, m - 1)]));  // pad with the last
      plan_items.push_back(it);
      pos_texts.emplace_back(ctx_.plan->prompt_text(it.prompt));
      neg_texts.emplace_back(ctx_.plan->negative_text(it.prompt));
      seeds.push_back(it.seed);
    }
    std::vector<std::string> errors(m);
    at::Tensor images;
    Status st = render_batch(pos_texts, neg_texts, seeds, items, &images, &errors);
    if (st.code() == StatusCode::kResourceExhausted && pipe_->options().unet_streams > 1) {
      // Out of memory, first step down: denoise the images of a batch one after the other instead of
      // concurrently (the same pixels, one image's activations at a time), and retry the batch.
      log_warn("out of GPU memory on a batch of " + std::to_string(m) +
               " items; denoising one image at a time from now on and retrying (" + st.message() + ")");
      release_cached_memory();
      pipe_->set_unet_streams(1);
      st = render_batch(pos_texts, neg_texts, seeds, items, &images, &errors);
    }
    if (st.code() == StatusCode::kResourceExhausted) {
      // Still out of memory: free the allocator's cache and go one item at a time (each retried once), so
      // that no item is lost; an item that still does not fit is stored as failed and retried by the next
      // run.
      log_warn("out of GPU memory on a batch of " + std::to_string(m) +
               " items; retrying them one at a time (" + st.message() + ")");
      release_cached_memory();
      if (m > 1 || batch > 1) {
        for (int64_t item : items) SDXLB_RETURN_IF_ERROR(render_padded({item}, 1, report));
        return Status::ok();
      }
      st = render_batch(pos_texts, neg_texts, seeds, items, &images, &errors);
    }
    for (int64_t k = 0; k < m; ++k) {
      if (!st.is_ok()) errors[k] = st.to_string();
      ItemRecord r;
      const PlanItem& it = plan_items[k];
      r.item_index = static_cast<int64_t>(it.index);
      r.prompt_index = static_cast<int64_t>(it.prompt);
      r.image_k = static_cast<int32_t>(it.image);
      r.seed = it.seed;
      r.prompt = pos_texts[k];
      r.negative_prompt = neg_texts[k];
      r.steps = static_cast<int32_t>(ctx_.job.steps);
      r.guidance = static_cast<float>(ctx_.job.guidance);
      r.width = static_cast<int32_t>(ctx_.job.width);
      r.height = static_cast<int32_t>(ctx_.job.height);
      r.scheduler = scheduler_name(ctx_.job.scheduler);
      r.model_id = pipe_->model_id();
      r.rank = comm_.rank();
      r.host = host_;
      r.gpu = gpu_;
      r.ms_encode = static_cast<float>(embed_ms_ / b);
      r.ms_denoise = static_cast<float>(pipe_->last_times().denoise_ms / b);
      r.ms_decode = static_cast<float>(pipe_->last_times().decode_ms / b);
      r.ok = errors[k].empty();
      r.error = errors[k];
      const uint8_t* rgb = r.ok ? images[k].data_ptr<uint8_t>() : nullptr;
      SDXLB_RETURN_IF_ERROR(segment_add(r, rgb));
      (r.ok ? report->done : report->failed).push_back(r.item_index);
      (r.ok ? rendered_ : failed_)++;
      FaultPlan::get().maybe_kill(comm_.rank(), rendered_ + failed_);
    }
    return Status::ok();
  }

 public:
  Status finish() {
#ifdef SDXLB_WITH_CUDA
    if (ctx_.device.is_cuda()) {
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(ctx_.device.index());
      char line[128];
      std::snprintf(line, sizeof line,
                    "peak GPU memory: %.2f GiB allocated (%.2f GiB reserved by the allocator)",
                    static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 30),
                    static_cast<double>(stats.reserved_bytes[0].peak) / (1 << 30));
      log_info(line);
    }
#endif
    if (segment_) {
      SDXLB_RETURN_IF_ERROR(segment_->publish());
      segment_.reset();
    }
    WorkerReport r{rendered_, failed_, busy_s_, segments_};
    return comm_.send(0, kBye, encode_message(r), "reporting worker totals");
  }

 private:
  // Caps the caching allocator at memory.max_gpu_gib, chooses the memory plan for this GPU and logs it with
  // its estimate. (No choice of the plan changes pixels, except a tiled decode when nothing else fits.)
  Status apply_memory_plan() {
#ifdef SDXLB_WITH_CUDA
    if (!ctx_.device.is_cuda()) return Status::ok();
    const double total_gib =
        static_cast<double>(at::cuda::getDeviceProperties(ctx_.device.index())->totalGlobalMem) / (1 << 30);
    if (ctx_.job.memory.max_gpu_gib) {
      const double fraction = std::min(1.0, *ctx_.job.memory.max_gpu_gib / total_gib);
      c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, ctx_.device.index());
    }
    const int gpus = static_cast<int>(at::getNumGPUs());
    const int sharing = ranks_sharing_gpu(ctx_.gpu_slot, ctx_.workers_on_node, gpus);
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    char probe[200];
    std::snprintf(
        probe, sizeof probe,
        "node: %d GPUs, %d workers, %d on GPU %d (%.1f GiB total, %.1f GiB free), host RAM %.0f GiB", gpus,
        ctx_.workers_on_node, sharing, static_cast<int>(ctx_.device.index()), total_gib,
        static_cast<double>(free_b) / (1 << 30), host_ram_gib());
    log_info(probe);
    GpuBudgetInput gpu{total_gib, sharing, ctx_.job.memory.max_gpu_gib,
                       host_ram_gib() / std::max(1, ctx_.workers_on_node)};
    MemoryRequest req;
    req.width = ctx_.job.width;
    req.height = ctx_.job.height;
    req.steps = ctx_.job.steps;
    req.tiny_decoder = ctx_.decoder == DecoderKind::kTiny;
    req.batch_size = ctx_.job.batch_size;
    if (ctx_.job.memory.decode != JobSpec::Decode::kAuto) req.decode = decode_name(ctx_.job.memory.decode);
    req.placement = placement_name(ctx_.job.memory.placement);
    if (ctx_.job.memory.concurrent_images)
      req.concurrent_images = static_cast<int>(*ctx_.job.memory.concurrent_images);
    auto chosen = choose_memory_plan(gpu, req);
    if (!chosen.is_ok()) return chosen.status().with_context(ctx_.job.job_file);
    const MemoryPlan& plan = *chosen;
    log_info(plan.describe());
    ctx_.placement = plan.placement == "model_offload" ? Placement::kModelOffload
                     : plan.placement == "streamed"    ? Placement::kStreamed
                     : plan.placement == "sequential"  ? Placement::kSequential
                                                       : Placement::kResident;
    ctx_.unet_streams = plan.unet_streams;
    ctx_.resident_budget_bytes = static_cast<int64_t>(plan.resident_budget_gib * (1 << 30));
    ctx_.unload_for_decode = plan.unload_for_decode;
    ctx_.tight_memory =
        ctx_.job.memory.max_gpu_gib.has_value() || sharing > 1 || plan.placement != "resident";
    if (plan.decode == "tiled") ctx_.decoder = DecoderKind::kTiled;
    ctx_.batch_size = plan.batch_size;
#endif
    return Status::ok();
  }

  void release_cached_memory() {
#ifdef SDXLB_WITH_CUDA
    if (ctx_.device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
  }

  // Renders a padded batch. Per-item problems (NaN latents or images) land in `errors`; a failure of the
  // whole batch is returned.
  Status render_batch(const std::vector<std::string>& pos, const std::vector<std::string>& neg,
                      const std::vector<uint64_t>& seeds, const std::vector<int64_t>& items,
                      at::Tensor* images, std::vector<std::string>* errors) {
    if (oom_faults_left_ > 0) {
      --oom_faults_left_;
      return Status(StatusCode::kResourceExhausted, "injected out-of-memory (SDXLB_FAULT oom_batches)");
    }
    const auto te = Clock::now();
    SDXLB_ASSIGN_OR_RETURN(auto pos_e, cache_->read(pos));
    TextEmbeddings positive{pos_e.first.to(ctx_.device, ctx_.dtype),
                            pos_e.second.to(ctx_.device, ctx_.dtype)};
    TextEmbeddings negative;
    std::vector<std::string> neg_needed;
    for (const auto& n : neg)
      if (!(n.empty() && pipe_->force_zeros_for_empty_prompt())) neg_needed.push_back(n);
    if (neg_needed.size() == neg.size()) {
      SDXLB_ASSIGN_OR_RETURN(auto ne, cache_->read(neg));
      negative = {ne.first.to(ctx_.device, ctx_.dtype), ne.second.to(ctx_.device, ctx_.dtype)};
    } else {
      // Mixed batch: zeros for the empty negatives, stored embeddings for the others.
      negative = {at::zeros_like(positive.prompt_embeds), at::zeros_like(positive.pooled)};
      for (size_t k = 0; k < neg.size(); ++k) {
        if (neg[k].empty() && pipe_->force_zeros_for_empty_prompt()) continue;
        SDXLB_ASSIGN_OR_RETURN(auto ne, cache_->read({neg[k]}));
        negative.prompt_embeds[k].copy_(ne.first[0]);
        negative.pooled[k].copy_(ne.second[0]);
      }
    }
    embed_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - te).count();
    if (first_batch_) {
      first_batch_ = false;
      char line[96];
      std::snprintf(line, sizeof line, "startup: first UNet step at %.2f s after process start",
                    seconds_since_process_start());
      log_info(line);
    }
    SDXLB_ASSIGN_OR_RETURN(auto latents, pipe_->denoise(positive, negative, seeds, ctx_.render_settings()));
    if (!placement_logged_) {
      placement_logged_ = true;
      log_info(pipe_->placement_summary());
    }
    at::Tensor bad;
    {
      c10::InferenceMode guard;
      for (size_t k = 0; k < items.size(); ++k)
        if (FaultPlan::get().nan_items.count(items[k])) latents[k].fill_(NAN);
      // Rows with NaN/Inf are reported per item and zeroed, so the decode keeps its fixed batch shape.
      bad = latents.isfinite().logical_not().flatten(1).any(1).to(at::kCPU);
      latents.masked_fill_(latents.isfinite().logical_not(), 0);
    }
    const bool* bad_rows = bad.data_ptr<bool>();
    for (size_t k = 0; k < items.size(); ++k)
      if (bad_rows[k])
        (*errors)[k] = "the latents of item " + std::to_string(items[k]) +
                       " hold NaN or Inf after denoising (numerical overflow; try dtype bf16 or fp32)";
    SDXLB_ASSIGN_OR_RETURN(*images, pipe_->decode(latents));
    *images = images->contiguous();
    return Status::ok();
  }

  Status segment_add(const ItemRecord& r, const uint8_t* rgb) {
    if (!segment_) {
      SegmentOptions o;
      o.path = segment_file_path(ctx_.job.output, ctx_.run_id, comm_.rank(), segments_);
      o.encoding =
          ctx_.job.image_format == JobSpec::ImageFormat::kPng ? ImageEncoding::kPng : ImageEncoding::kRaw;
      o.height = static_cast<int>(ctx_.job.height);
      o.width = static_cast<int>(ctx_.job.width);
      o.run_id = ctx_.run_id;
      o.rank = comm_.rank();
      SDXLB_ASSIGN_OR_RETURN(auto w, SegmentWriter::create(o));
      segment_ = std::make_unique<SegmentWriter>(std::move(w));
    }
    SDXLB_RETURN_IF_ERROR(segment_->add(r, rgb));
    if (segment_->size() >= ctx_.job.segment_items) {
      SDXLB_RETURN_IF_ERROR(segment_->publish());
      segment_.reset();
      ++segments_;
    }
    return Status::ok();
  }

  Comm& comm_;
  RunContext ctx_;
  std::unique_ptr<SdxlPipeline> pipe_;
  std::optional<EmbeddingCache> cache_;
  std::unique_ptr<SegmentWriter> segment_;
  std::string host_, gpu_;
  int64_t rendered_ = 0, failed_ = 0, segments_ = 0;
  double busy_s_ = 0, embed_ms_ = 0;
  bool first_batch_ = true;
  bool placement_logged_ = false;
  int64_t oom_faults_left_ = FaultPlan::get().oom_batches;
};

}  // namespace

Status run_render_worker(Comm& comm, const RunContext& ctx) {
  RenderWorker worker(comm, ctx);
  Status st = worker.init();
  if (!st.is_ok()) {
    (void)send_fatal(comm, st);
    return st;
  }
  WorkRequest report;
  for (;;) {
    SDXLB_RETURN_IF_ERROR(comm.send(0, kRequest, encode_message(report), "asking for work"));
    report = WorkRequest{};
    SDXLB_ASSIGN_OR_RETURN(auto msg, comm.recv(kWork, "waiting for work"));
    SDXLB_ASSIGN_OR_RETURN(auto work, decode_assignment(msg.bytes));
    if (work.stop) break;
    st = worker.render(work.items, &report);
    if (!st.is_ok()) {
      (void)send_fatal(comm, st);
      return st;
    }
  }
  return worker.finish();
}

}  // namespace sdxlb
