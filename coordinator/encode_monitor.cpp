#include "coordinator/encode_monitor.h"

#include <chrono>
#include <cstdio>

#include "coordinator/progress.h"
#include "run/protocol.h"
#include "store/embedding_cache.h"

namespace sdxlb {

StatusOr<std::vector<uint32_t>> texts_missing_from_cache(const RunContext& ctx) {
  SDXLB_ASSIGN_OR_RETURN(auto cache,
                         EmbeddingCache::open(ctx.job.embedding_cache, ctx.model.text_encoder_id));
  const std::vector<std::string> texts = texts_to_encode(ctx);
  std::vector<uint32_t> missing;
  for (uint32_t i = 0; i < texts.size(); ++i)
    if (!cache.contains(texts[i])) missing.push_back(i);
  return missing;
}

StatusOr<EncodeSummary> monitor_encode_phase(Comm& comm, const RunContext& ctx, int64_t total,
                                             const std::vector<RankInfo>& ranks) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  Progress progress("encode", total, ctx.job.progress_interval_s, ctx.options.quiet || total == 0, "texts");
  EncodeSummary summary;
  std::map<int, Clock::time_point> active;  // worker -> when it was last heard from
  std::map<int, Status> failed;             // by rank: the first failure is reported
  for (int r = 1; r < comm.size(); ++r) active[r] = t0;
  const double timeout = ctx.job.worker_timeout_s;
  while (!active.empty()) {
    SDXLB_ASSIGN_OR_RETURN(auto msg, comm.recv_for(kAnyTag, 0.25, "waiting for the workers to encode"));
    const auto now = Clock::now();
    progress.tick(now);
    if (msg && active.count(msg->source)) active[msg->source] = now;
    for (const auto& [rank, heard] : active) {
      const double silent = std::chrono::duration<double>(now - heard).count();
      if (silent <= timeout) continue;
      char why[320];
      std::snprintf(
          why, sizeof why,
          "%s sent nothing for %.1f s (worker_timeout_s: %g) during the encode phase; it is hung or "
          "its node is gone",
          describe_rank(rank, ranks).c_str(), silent, timeout);
      summary.lost[rank] = why;
    }
    if (!summary.lost.empty()) return summary;
    if (!msg) continue;
    if (msg->tag == kEncodeProgress) {
      SDXLB_ASSIGN_OR_RETURN(auto report, decode_encode_progress(msg->bytes));
      summary.texts += report.texts;
      if (report.texts > 0) progress.add(report.texts, now);
    } else if (msg->tag == kEncodeDone) {
      const Status s = decode_status(msg->bytes);
      if (!s.is_ok()) failed.emplace(msg->source, s);
      active.erase(msg->source);
    } else {
      return internal_error("rank " + std::to_string(msg->source) + " sent message tag " +
                            std::to_string(msg->tag) + " during the encode phase");
    }
  }
  if (failed.empty()) {
    progress.finish();
  } else {
    const auto& [rank, s] = *failed.begin();
    summary.status = s.with_context("rank " + std::to_string(rank));
  }
  return summary;
}

}  // namespace sdxlb
