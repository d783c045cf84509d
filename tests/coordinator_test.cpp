// The coordinator against scripted workers on the in-process backend: stopping on a signal, and the
// watchdog that declares a silent worker lost.
#include "coordinator/coordinator.h"

#include <signal.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "cluster/stop_signal.h"

namespace sdxlb {
namespace {

using Clock = std::chrono::steady_clock;

RunContext context(const std::string& extra_yaml) {
  JobLoadOptions o;
  o.check_paths = false;
  auto spec = JobSpec::parse(
      "model: m\noutput: o\nprompts: [a, b, c, d]\nimages_per_prompt: 4\nbatch_size: 2\n"
      "progress_interval_s: 100\n" +
          extra_yaml,
      "job.yaml", "/tmp", o);
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
  RunOptions opts;
  opts.quiet = true;
  auto ctx = make_run_context(std::move(*spec), opts, "run", false);
  EXPECT_TRUE(ctx.is_ok()) << ctx.status().to_string();
  return std::move(*ctx);
}

// A worker that renders each batch's items one by one (taking `item_ms` each), reports them, and honours
// kStop between items, as worker/render_loop.cpp does.
void scripted_worker(Comm& c, int item_ms, int64_t* stored) {
  bool stop = false;
  WorkRequest req;
  for (;;) {
    auto waiting = c.poll(kStop, "test");
    if (waiting.is_ok() && *waiting) {
      (void)c.recv(kStop, "test");
      stop = true;
    }
    req.stopping = stop;
    ASSERT_TRUE(c.send(0, kRequest, encode_message(req), "test").is_ok());
    req = WorkRequest{};
    auto m = c.recv(kWork, "test");
    ASSERT_TRUE(m.is_ok());
    auto work = decode_assignment(m->bytes);
    ASSERT_TRUE(work.is_ok());
    if (work->stop) break;
    for (int64_t item : work->items) {
      auto w = c.poll(kStop, "test");
      if (w.is_ok() && *w) {
        (void)c.recv(kStop, "test");
        stop = true;
      }
      if (stop) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(item_ms));
      WorkRequest group{{item}, {}};
      ASSERT_TRUE(c.send(0, kProgress, encode_message(group), "test").is_ok());
      ++*stored;
    }
  }
  ASSERT_TRUE(c.send(0, kBye, encode_message(WorkerReport{}), "test").is_ok());
}

ItemRanges all_items(int64_t n) {
  return ItemRanges::all_but(n, {});
}

TEST(Coordinator, RendersEverythingWithoutAStop) {
  StopSignal::reset();
  const RunContext ctx = context("");
  auto comms = Comm::local_group(3);
  int64_t stored[3] = {0, 0, 0};
  std::thread w1([&] { scripted_worker(comms[1], 1, &stored[1]); });
  std::thread w2([&] { scripted_worker(comms[2], 1, &stored[2]); });
  auto summary = run_coordinator(comms[0], ctx, all_items(16));
  w1.join();
  w2.join();
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  EXPECT_EQ(summary->rendered, 16);
  EXPECT_EQ(stored[1] + stored[2], 16);
  EXPECT_FALSE(summary->stopped);
  EXPECT_EQ(summary->workers.size(), 2u);
}

TEST(Coordinator, AStopSignalEndsTheRenderAfterTheItemsInFlight) {
  StopSignal::reset();
  const RunContext ctx = context("");
  auto comms = Comm::local_group(3);
  int64_t stored[3] = {0, 0, 0};
  std::thread w1([&] { scripted_worker(comms[1], 50, &stored[1]); });
  std::thread w2([&] { scripted_worker(comms[2], 50, &stored[2]); });
  std::thread signaller([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(220));
    StopSignal::request(SIGTERM);
  });
  const auto t0 = Clock::now();
  auto summary = run_coordinator(comms[0], ctx, all_items(16));
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  w1.join();
  w2.join();
  signaller.join();
  StopSignal::reset();
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  EXPECT_TRUE(summary->stopped);
  EXPECT_EQ(summary->stop_signal, SIGTERM);
  EXPECT_TRUE(summary->lost.empty());
  // Everything stored was reported, and the rest was never started.
  EXPECT_EQ(summary->rendered, stored[1] + stored[2]);
  EXPECT_GT(summary->rendered, 0);
  EXPECT_LT(summary->rendered, 16);
  EXPECT_LT(s, 2.0);
}

TEST(Coordinator, ASilentWorkerIsLostAfterTheTimeout) {
  StopSignal::reset();
  const RunContext ctx = context("worker_timeout_s: 1\n");
  auto comms = Comm::local_group(3);
  int64_t stored[3] = {0, 0, 0};
  std::thread w1([&] { scripted_worker(comms[1], 50, &stored[1]); });
  // Rank 2 takes a batch and then never says anything again (a hung or vanished process).
  std::thread w2([&] {
    ASSERT_TRUE(comms[2].send(0, kRequest, encode_message(WorkRequest{}), "test").is_ok());
    (void)comms[2].recv(kWork, "test");
  });
  const auto t0 = Clock::now();
  auto summary = run_coordinator(comms[0], ctx, all_items(64), {{"h0", 10}, {"h1", 11}, {"node7", 12}});
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  w1.join();
  w2.join();
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  ASSERT_EQ(summary->lost.size(), 1u);
  EXPECT_NE(summary->lost.at(2).find("rank 2 on host node7 (pid 12)"), std::string::npos)
      << summary->lost.at(2);
  EXPECT_TRUE(summary->stopped);
  EXPECT_EQ(summary->stop_signal, 0);
  // Detected within the timeout plus a poll, and the other worker was stopped, not left to finish alone.
  EXPECT_GT(s, 1.0);
  EXPECT_LT(s, 3.0);
  EXPECT_LT(summary->rendered, 62);
}

}  // namespace
}  // namespace sdxlb
