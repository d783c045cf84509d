#include "coordinator/coordinator.h"

#include <chrono>
#include <cstdio>

#include "cluster/stop_signal.h"
#include "common/log.h"
#include "coordinator/dispatcher.h"
#include "coordinator/progress.h"

namespace sdxlb {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

std::string describe_rank(int rank, const std::vector<RankInfo>& ranks) {
  std::string s = "rank " + std::to_string(rank);
  if (rank >= 0 && rank < static_cast<int>(ranks.size()))
    s += " on host " + ranks[rank].host + " (pid " + std::to_string(ranks[rank].pid) + ")";
  return s;
}

StatusOr<RenderSummary> run_coordinator(Comm& comm, const RunContext& ctx, const ItemRanges& pending,
                                        const std::vector<RankInfo>& ranks) {
  const auto t0 = Clock::now();
  Dispatcher dispatcher(pending, ctx.batch_size);
  Progress progress("render", dispatcher.total(), ctx.job.progress_interval_s, ctx.options.quiet);
  RenderSummary summary;
  summary.items = dispatcher.total();
  std::map<int, Clock::time_point> active;  // worker -> when it was last heard from
  for (int r = 1; r < comm.size(); ++r) active[r] = t0;
  int64_t reported = 0;
  Clock::time_point stop_started, last_watch = t0;
  const double timeout = ctx.job.worker_timeout_s;

  // Hands out nothing more and tells every active worker to finish its images in flight.
  auto stop_all = [&](const std::string& reason) -> Status {
    if (summary.stopped) return Status::ok();
    summary.stopped = true;
    stop_started = Clock::now();
    for (const auto& [rank, heard] : active)
      SDXLB_RETURN_IF_ERROR(comm.send(rank, kStop, encode_stop(reason), "telling workers to stop"));
    return Status::ok();
  };
  // Counts newly finished items (a worker reports each group, then again with its request).
  auto count = [&](int src, const WorkRequest& req) {
    const int64_t ok = dispatcher.finished(src, req.done);
    const int64_t bad = dispatcher.finished(src, req.failed);
    summary.rendered += ok;
    summary.failed += bad;
    if (ok + bad) progress.add(ok + bad);
    reported += ok + bad;
    ctx.faults->maybe_kill(comm.rank(), reported);
  };

  while (!active.empty()) {
    if (!summary.stopped && StopSignal::requested()) {
      summary.stop_signal = StopSignal::signal_number();
      log_warn(
          std::string("stop: ") + StopSignal::name(summary.stop_signal) +
          " received; no more work is handed out, the workers finish the images in flight and save them");
      SDXLB_RETURN_IF_ERROR(
          stop_all(std::string("the job received ") + StopSignal::name(summary.stop_signal)));
    }
    SDXLB_ASSIGN_OR_RETURN(auto msg, comm.recv_for(kAnyTag, 0.25, "waiting for workers"));
    const auto now = Clock::now();
    progress.tick(now);
    if (seconds_between(last_watch, now) >= 0.25) {
      // The watchdog (whether or not messages arrive: busy workers must not hide a silent one): a worker
      // that has said nothing for worker_timeout_s is lost.
      last_watch = now;
      for (auto it = active.begin(); it != active.end();) {
        const double silent = seconds_between(it->second, now);
        if (silent <= timeout) {
          ++it;
          continue;
        }
        const int rank = it->first;
        char why[320];
        std::snprintf(
            why, sizeof why,
            "%s sent nothing for %.1f s (worker_timeout_s: %g) with %lld items in flight; it is hung "
            "or its node is gone",
            describe_rank(rank, ranks).c_str(), silent, timeout,
            static_cast<long long>(dispatcher.in_flight_of(rank)));
        log_error(std::string(why) + "; stopping the job (the other workers save their work)");
        summary.lost[rank] = why;
        it = active.erase(it);
        SDXLB_RETURN_IF_ERROR(stop_all("a worker was lost"));
      }
    }
    if (!msg) continue;
    const int src = msg->source;
    if (active.count(src)) active[src] = now;
    if (msg->tag == kProgress) {
      SDXLB_ASSIGN_OR_RETURN(auto req, decode_request(msg->bytes));
      count(src, req);
    } else if (msg->tag == kRequest) {
      SDXLB_ASSIGN_OR_RETURN(auto req, decode_request(msg->bytes));
      count(src, req);
      WorkAssignment work;
      if (summary.stopped || req.stopping) {
        // A worker that stops on its own (a signal reached it alone) gives its unfinished items back.
        if (!summary.stopped) dispatcher.requeue(src);
        work.stop = true;
      } else {
        work.items = dispatcher.next(src);
        work.stop = work.items.empty();
      }
      SDXLB_RETURN_IF_ERROR(comm.send(src, kWork, encode_message(work), "handing out work"));
    } else if (msg->tag == kBye) {
      SDXLB_ASSIGN_OR_RETURN(summary.workers[src], decode_report(msg->bytes));
      active.erase(src);
    } else if (msg->tag == kFatal) {
      summary.fatal[src] = decode_status(msg->bytes);
      if (!summary.stopped) dispatcher.requeue(src);  // another worker renders its batch
      active.erase(src);
    }
  }
  progress.finish();
  const auto end = Clock::now();
  if (summary.stopped) summary.stop_seconds = seconds_between(stop_started, end);
  summary.seconds = seconds_between(t0, end);
  return summary;
}

}  // namespace sdxlb
