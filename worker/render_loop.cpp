#include "worker/render_loop.h"

#include "run/protocol.h"
#include "worker/batch_renderer.h"
#include "worker/item_sink.h"

namespace sdxlb {
namespace {

Status send_fatal(Comm& comm, const Status& error) {
  return comm.send(0, kFatal, encode_fatal(error.to_string()), "reporting a fatal worker error");
}

}  // namespace

Status run_render_worker(Comm& comm, const RunContext& ctx, const RenderSetup& setup) {
  BatchRenderer renderer(ctx, setup, comm.rank());
  ItemSink sink(ctx, comm.rank());
  Status st = renderer.init();
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
    st = renderer.render(work.items, sink, &report);
    if (!st.is_ok()) {
      (void)send_fatal(comm, st);
      return st;
    }
  }
  renderer.log_peak_memory();
  SDXLB_RETURN_IF_ERROR(sink.publish());
  WorkerReport r{renderer.rendered(), renderer.failed(), renderer.busy_seconds(), sink.segments()};
  return comm.send(0, kBye, encode_message(r), "reporting worker totals");
}

}  // namespace sdxlb
