#include "worker/render_loop.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>

#include "cluster/stop_signal.h"
#include "common/log.h"
#include "pipeline/io/weights_broadcast.h"
#include "run/protocol.h"
#include "worker/batch_renderer.h"
#include "worker/item_sink.h"

namespace sdxlb {
namespace {

Status send_fatal(Comm& comm, const Status& error) {
  return comm.send(0, kFatal, encode_status(error), "reporting a fatal worker error");
}

}  // namespace

Status run_render_worker(Comm& comm, const RunContext& ctx, const RenderSetup& setup, Comm* node_workers) {
  const auto t0 = std::chrono::steady_clock::now();
  // Made first, so that this worker takes part in the exchange (if only to say it is done) whatever fails.
  std::unique_ptr<WeightsBroadcast> share;
  if (node_workers) share = std::make_unique<WeightsBroadcast>(*node_workers);
  // The sink first: it outlives the renderer, whose destructor waits for a decode thread that stores into it.
  ItemSink sink(ctx, comm.rank());
  BatchRenderer renderer(ctx, setup, comm.rank());
  Status st = ctx.faults->startup_error(comm.rank());
  if (st.is_ok()) st = renderer.init(share.get());
  share.reset();  // done loading (a worker that failed before init says so here)
  if (!st.is_ok()) {
    // The coordinator carries the error (and its exit code) to the job's end; this rank's own exit is clean
    // once it is told, so that the launcher does not end the job before index.h5 is written.
    if (send_fatal(comm, st).is_ok()) return Status::ok();
    return st;
  }
  log_info("startup: render pipeline ready in " +
           std::to_string(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()) +
           " s");

  // A stop comes from a signal to this process, or from the coordinator (kStop).
  bool told_to_stop = false;
  auto stop_requested = [&]() {
    if (told_to_stop || StopSignal::requested()) return true;
    auto waiting = comm.poll(kStop, "checking for a stop");
    if (waiting.is_ok() && *waiting) {
      (void)comm.recv(kStop, "receiving a stop");
      told_to_stop = true;
    }
    return told_to_stop;
  };
  RenderHooks hooks;
  hooks.stop = stop_requested;
  hooks.progress = [&](const WorkRequest& group) {
    if (log_debug_enabled()) {
      std::string line = "stored items";
      for (int64_t i : group.done) line += " " + std::to_string(i);
      for (int64_t i : group.failed) line += " " + std::to_string(i) + "(failed)";
      log_debug(line + " (" + std::to_string(sink.open_items()) + " in the open segment)");
    }
    return comm.send(0, kProgress, encode_message(group), "reporting progress");
  };

  // A failure that stops the worker: keep what was finished (the group still decoding too) when the segment
  // can still be written, and tell the coordinator.
  auto fail = [&](const Status& error) -> Status {
    (void)renderer.finish(sink, hooks);
    (void)sink.publish();
    if (send_fatal(comm, error).is_ok()) return Status::ok();
    return error;
  };

  for (;;) {
    // Everything done so far went out with kProgress; the request only asks for more (or says goodbye).
    WorkRequest request;
    if (stop_requested()) {
      // What is done (the group still decoding too) is saved before the coordinator hears "stopping".
      st = renderer.finish(sink, hooks);
      if (!st.is_ok()) return fail(st);
      SDXLB_RETURN_IF_ERROR(sink.publish());
      request.stopping = true;
    }
    SDXLB_RETURN_IF_ERROR(comm.send(0, kRequest, encode_message(request), "asking for work"));
    // The answer comes at once, unless the coordinator is gone: then a stop signal (the launcher's, before
    // it kills this rank) must still save the open segment.
    std::optional<Message> msg;
    while (!msg) {
      SDXLB_ASSIGN_OR_RETURN(msg, comm.recv_for(kWork, 0.2, "waiting for work"));
      if (!msg && StopSignal::requested()) {
        st = renderer.finish(sink, hooks);
        if (!st.is_ok()) return fail(st);
        SDXLB_RETURN_IF_ERROR(sink.publish());
      }
    }
    SDXLB_ASSIGN_OR_RETURN(auto work, decode_assignment(msg->bytes));
    if (work.stop) break;
    WorkRequest report;
    st = renderer.render(work.items, sink, &report, hooks);
    if (!st.is_ok()) return fail(st);
  }
  st = renderer.finish(sink, hooks);  // the last group's decode
  if (!st.is_ok()) return fail(st);
  renderer.log_peak_memory();
  SDXLB_RETURN_IF_ERROR(sink.publish());
  // A stop the coordinator sent after this worker's last request is still queued: take it.
  while (true) {
    auto waiting = comm.poll(kStop, "checking for a stop");
    if (!waiting.is_ok() || !*waiting) break;
    (void)comm.recv(kStop, "receiving a stop");
  }
  WorkerReport r{renderer.rendered(), renderer.failed(), renderer.busy_seconds(), sink.segments()};
  return comm.send(0, kBye, encode_message(r), "reporting worker totals");
}

}  // namespace sdxlb
