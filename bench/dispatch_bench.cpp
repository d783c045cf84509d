// The coordinator's dispatch rate with many workers (issue 18): run_coordinator on the in-process backend
// against N worker threads that render nothing (each batch is reported done as soon as it arrives), so that
// the coordinator's own work (the dispatcher, progress, the watchdog, the message codec) is all that is
// timed. With more worker threads than CPUs the threads' scheduling is included too, so the rate is a floor.
// Prints one JSON line: workers, items, batches, seconds, requests per second (a request is one batch
// asked for and handed out) and items per second.
// Usage: dispatch_bench [workers=256] [batches_per_worker=40] [batch_size=8]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/coordinator.h"

using namespace sdxlb;

namespace {

RunContext context(long items, long batch_size) {
  JobLoadOptions o;
  o.check_paths = false;
  auto spec =
      JobSpec::parse("model: m\noutput: o\nprompts: [a]\nimages_per_prompt: " + std::to_string(items) +
                         "\nbatch_size: " + std::to_string(batch_size) + "\nprogress_interval_s: 1000\n",
                     "job.yaml", "/tmp", o);
  if (!spec.is_ok()) {
    std::fprintf(stderr, "dispatch_bench: %s\n", spec.status().to_string().c_str());
    std::exit(1);
  }
  RunOptions opts;
  opts.quiet = true;
  auto ctx = make_run_context(std::move(*spec), opts, "run", false);
  if (!ctx.is_ok()) {
    std::fprintf(stderr, "dispatch_bench: %s\n", ctx.status().to_string().c_str());
    std::exit(1);
  }
  return std::move(*ctx);
}

// As worker/render_loop.cpp talks to the coordinator, with no rendering: ask, report the batch, ask again.
void worker(Comm& c, long* batches) {
  for (;;) {
    if (!c.send(0, kRequest, encode_message(WorkRequest{}), "bench").is_ok()) std::exit(2);
    auto m = c.recv(kWork, "bench");
    if (!m.is_ok()) std::exit(2);
    auto work = decode_assignment(m->bytes);
    if (!work.is_ok()) std::exit(2);
    if (work->stop || work->items.empty()) break;
    ++*batches;
    if (!c.send(0, kProgress, encode_message(WorkRequest{work->items, {}}), "bench").is_ok()) std::exit(2);
  }
  if (!c.send(0, kBye, encode_message(WorkerReport{}), "bench").is_ok()) std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  const int workers = argc > 1 ? std::atoi(argv[1]) : 256;
  const long per_worker = argc > 2 ? std::atol(argv[2]) : 40;
  const long batch_size = argc > 3 ? std::atol(argv[3]) : 8;
  if (workers < 1 || per_worker < 1 || batch_size < 1) {
    std::fprintf(stderr, "usage: dispatch_bench [workers>=1] [batches_per_worker>=1] [batch_size>=1]\n");
    return 2;
  }
  const long items = workers * per_worker * batch_size;
  const RunContext ctx = context(items, batch_size);
  std::vector<Comm> comms = Comm::local_group(workers + 1);
  std::vector<long> batches(static_cast<size_t>(workers), 0);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int w = 1; w <= workers; ++w)
    threads.emplace_back(worker, std::ref(comms[static_cast<size_t>(w)]),
                         &batches[static_cast<size_t>(w - 1)]);
  auto summary = run_coordinator(comms[0], ctx, ItemRanges::all_but(items, {}));
  for (auto& t : threads) t.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!summary.is_ok()) {
    std::fprintf(stderr, "dispatch_bench: %s\n", summary.status().to_string().c_str());
    return 1;
  }
  long handed = 0;
  for (long b : batches) handed += b;
  std::printf(
      "{\"workers\": %d, \"items\": %ld, \"batch_size\": %ld, \"batches\": %ld, \"seconds\": %.3f, "
      "\"requests_per_s\": %.0f, \"items_per_s\": %.0f, \"hardware_threads\": %u}\n",
      workers, items, batch_size, handed, s, static_cast<double>(handed) / s, static_cast<double>(items) / s,
      std::thread::hardware_concurrency());
  return summary->rendered == items ? 0 : 1;
}
