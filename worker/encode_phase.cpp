#include "worker/encode_phase.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <thread>

#include <ATen/ATen.h>

#include "cluster/stop_signal.h"
#include "common/log.h"
#include "run/protocol.h"
#include "store/embedding_cache.h"
#include "worker/device_binding.h"
#include "worker/embedding_rows.h"

namespace sdxlb {
namespace {

using Clock = std::chrono::steady_clock;

// Encodes the share; run_encode_phase reports its end.
Status encode_share(Comm& comm, const RunContext& ctx, const RenderSetup& base_setup,
                    const std::vector<uint32_t>& missing) {
  RenderSetup setup = base_setup;
  const int w = comm.rank() - 1, nw = comm.size() - 1;
  const size_t begin = missing.size() * static_cast<size_t>(w) / static_cast<size_t>(nw);
  const size_t end = missing.size() * static_cast<size_t>(w + 1) / static_cast<size_t>(nw);
  // The first report, before the encoders load: rank 0's watchdog hears from every worker from the start.
  SDXLB_RETURN_IF_ERROR(
      comm.send(0, kEncodeProgress, encode_message(EncodeProgress{0}), "reporting encode progress"));
  setup.device = bind_device(setup.device, ctx.gpu_slot);
  if (begin == end) return Status::ok();
  const std::vector<std::string> all = texts_to_encode(ctx);
  SDXLB_ASSIGN_OR_RETURN(auto cache,
                         EmbeddingCache::open(ctx.job.embedding_cache, ctx.model.text_encoder_id));
  SDXLB_ASSIGN_OR_RETURN(auto pipe,
                         SdxlPipeline::load(ctx.job.model, setup.pipeline_options(ctx.job, true, false)));
  const size_t chunk = 64;          // texts per encoder call
  const size_t shard_texts = 4096;  // texts per shard file
  std::vector<std::string> pending;
  std::vector<at::Tensor> embeds, pooled;
  int64_t shard_n = 0;
  auto flush = [&]() -> Status {
    if (pending.empty()) return Status::ok();
    const std::string tag = ctx.run_id + "-r" + std::to_string(comm.rank()) + "-" + std::to_string(shard_n++);
    const at::Tensor e = at::cat(embeds, 0).contiguous(), p = at::cat(pooled, 0).contiguous();
    SDXLB_RETURN_IF_ERROR(cache.write_shard(tag, pending, half_rows_view(e), half_rows_view(p)));
    pending.clear();
    embeds.clear();
    pooled.clear();
    return Status::ok();
  };
  // Texts encoded since the last report to rank 0 (at most one report a second).
  int64_t unreported = 0;
  auto last_report = Clock::now();
  const auto t_encode = Clock::now();
  for (size_t i = begin; i < end; i += chunk) {
    if (StopSignal::requested()) {
      SDXLB_RETURN_IF_ERROR(flush());  // the texts encoded so far stay in the cache
      return cancelled(std::string("stopped by ") + StopSignal::name(StopSignal::signal_number()) +
                       " during the encode phase; the texts encoded so far are saved in the embedding cache. "
                       "Resubmit the same command to resume");
    }
    if (ctx.faults->encode_delay_ms() > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(ctx.faults->encode_delay_ms()));
    std::vector<std::string> texts;
    for (size_t j = i; j < std::min(end, i + chunk); ++j) texts.push_back(all[missing[j]]);
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
    unreported += static_cast<int64_t>(n);
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - last_report).count() >= 1.0) {
      SDXLB_RETURN_IF_ERROR(comm.send(0, kEncodeProgress, encode_message(EncodeProgress{unreported}),
                                      "reporting encode progress"));
      unreported = 0;
      last_report = now;
    }
    ctx.faults->maybe_hang_encoding(comm.rank());
  }
  SDXLB_RETURN_IF_ERROR(flush());
  if (unreported > 0)
    SDXLB_RETURN_IF_ERROR(comm.send(0, kEncodeProgress, encode_message(EncodeProgress{unreported}),
                                    "reporting encode progress"));
  const double secs = std::chrono::duration<double>(Clock::now() - t_encode).count();
  char line[160];
  std::snprintf(line, sizeof line,
                "encode: %zu text%s in %.2f s (%.1f texts/s at batch %zu, stored included)", end - begin,
                end - begin == 1 ? "" : "s", secs, static_cast<double>(end - begin) / secs, chunk);
  log_info(line);
  return Status::ok();
}

}  // namespace

Status run_encode_phase(Comm& comm, const RunContext& ctx, const RenderSetup& setup,
                        const std::vector<uint32_t>& missing) {
  Status result;
  try {
    result = encode_share(comm, ctx, setup, missing);
  } catch (const std::exception& e) {  // (the pipeline reports LibTorch's errors itself; this is the rest)
    result = internal_error(std::string("encode phase: ") + e.what());
  }
  const Status sent =
      comm.send(0, kEncodeDone, encode_status(result), "reporting the end of the encode phase");
  return result.is_ok() ? sent : result;
}

}  // namespace sdxlb
