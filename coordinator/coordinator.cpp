#include "coordinator/coordinator.h"

#include <chrono>
#include <set>

#include "coordinator/dispatcher.h"
#include "coordinator/progress.h"

namespace sdxlb {

StatusOr<RenderSummary> run_coordinator(Comm& comm, const RunContext& ctx,
                                        const std::vector<int64_t>& pending) {
  const auto t0 = std::chrono::steady_clock::now();
  Dispatcher dispatcher(pending, ctx.batch_size);
  Progress progress("render", dispatcher.total(), ctx.job.progress_interval_s, ctx.options.quiet);
  RenderSummary summary;
  summary.items = dispatcher.total();
  std::set<int> active;
  for (int r = 1; r < comm.size(); ++r) active.insert(r);
  int64_t reported = 0;

  while (!active.empty()) {
    SDXLB_ASSIGN_OR_RETURN(auto msg, comm.recv(kAnyTag, "waiting for workers"));
    const int src = msg.source;
    if (msg.tag == kRequest) {
      SDXLB_ASSIGN_OR_RETURN(auto req, decode_request(msg.bytes));
      dispatcher.finished(src, req.done);
      dispatcher.finished(src, req.failed);
      const int64_t n = static_cast<int64_t>(req.done.size() + req.failed.size());
      summary.rendered += static_cast<int64_t>(req.done.size());
      summary.failed += static_cast<int64_t>(req.failed.size());
      if (n) progress.add(n);
      reported += n;
      ctx.faults->maybe_kill(comm.rank(), reported);
      WorkAssignment work;
      work.items = dispatcher.next(src);
      work.stop = work.items.empty();
      SDXLB_RETURN_IF_ERROR(comm.send(src, kWork, encode_message(work), "handing out work"));
    } else if (msg.tag == kBye) {
      SDXLB_ASSIGN_OR_RETURN(summary.workers[src], decode_report(msg.bytes));
      active.erase(src);
    } else if (msg.tag == kFatal) {
      summary.fatal[src] = decode_fatal(msg.bytes);
      dispatcher.requeue(src);  // another worker renders its batch
      active.erase(src);
    }
  }
  progress.finish();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace sdxlb
