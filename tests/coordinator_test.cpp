// The coordinator against scripted workers on the in-process backend: stopping on a signal, and the
// watchdog that declares a silent worker lost; the same for the encode phase's monitor.
#include "coordinator/coordinator.h"

#include <signal.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "cluster/stop_signal.h"
#include "coordinator/encode_monitor.h"

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

// An encode-phase worker as worker/encode_phase.cpp reports: a first report of 0, then `chunks` reports
// of `texts` each, `chunk_ms` apart, then its end with `result`.
void encoding_worker(Comm& c, int chunks, int64_t texts, int chunk_ms, const Status& result) {
  ASSERT_TRUE(c.send(0, kEncodeProgress, encode_message(EncodeProgress{0}), "test").is_ok());
  for (int i = 0; i < chunks; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(chunk_ms));
    ASSERT_TRUE(c.send(0, kEncodeProgress, encode_message(EncodeProgress{texts}), "test").is_ok());
  }
  ASSERT_TRUE(c.send(0, kEncodeDone, encode_status(result), "test").is_ok());
}

TEST(EncodeMonitor, SumsTheWorkersReportsUntilEveryOneHasEnded) {
  const RunContext ctx = context("");
  auto comms = Comm::local_group(3);
  std::thread w1([&] { encoding_worker(comms[1], 3, 64, 5, Status::ok()); });
  std::thread w2([&] { encoding_worker(comms[2], 2, 10, 5, Status::ok()); });
  auto summary = monitor_encode_phase(comms[0], ctx, 212);
  w1.join();
  w2.join();
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  EXPECT_TRUE(summary->status.is_ok());
  EXPECT_TRUE(summary->lost.empty());
  EXPECT_EQ(summary->texts, 212);
}

TEST(EncodeMonitor, AWorkersErrorIsTheResultWithItsRank) {
  const RunContext ctx = context("");
  auto comms = Comm::local_group(4);
  std::thread w1([&] { encoding_worker(comms[1], 2, 64, 5, Status::ok()); });
  std::thread w2([&] { encoding_worker(comms[2], 0, 0, 0, Status(StatusCode::kIoError, "disk full")); });
  std::thread w3([&] { encoding_worker(comms[3], 1, 8, 30, cancelled("stopped by SIGTERM")); });
  auto summary = monitor_encode_phase(comms[0], ctx, 200);
  w1.join();
  w2.join();
  w3.join();
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  // Every worker was waited for, and the lowest failed rank's error is the phase's.
  EXPECT_EQ(summary->texts, 136);
  EXPECT_EQ(summary->status.code(), StatusCode::kIoError);
  EXPECT_EQ(summary->status.message(), "rank 2: disk full");
}

TEST(EncodeMonitor, ASilentWorkerIsLostAfterTheTimeout) {
  const RunContext ctx = context("worker_timeout_s: 1\n");
  auto comms = Comm::local_group(3);
  std::thread w1([&] { encoding_worker(comms[1], 2, 64, 5, Status::ok()); });
  // Rank 2 says it has started and then nothing more (hung while loading or encoding).
  std::thread w2([&] {
    ASSERT_TRUE(comms[2].send(0, kEncodeProgress, encode_message(EncodeProgress{0}), "t").is_ok());
  });
  const auto t0 = Clock::now();
  auto summary = monitor_encode_phase(comms[0], ctx, 500, {{"h0", 10}, {"h1", 11}, {"node7", 12}});
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  w1.join();
  w2.join();
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  ASSERT_EQ(summary->lost.size(), 1u);
  EXPECT_NE(summary->lost.at(2).find("rank 2 on host node7 (pid 12) sent nothing for"), std::string::npos)
      << summary->lost.at(2);
  EXPECT_NE(summary->lost.at(2).find("during the encode phase"), std::string::npos);
  EXPECT_GT(s, 1.0);
  EXPECT_LT(s, 3.0);
}

TEST(EncodeMonitor, AnotherPhasesMessageIsAnInternalError) {
  const RunContext ctx = context("");
  auto comms = Comm::local_group(2);
  ASSERT_TRUE(comms[1].send(0, kRequest, encode_message(WorkRequest{}), "test").is_ok());
  auto summary = monitor_encode_phase(comms[0], ctx, 1);
  ASSERT_FALSE(summary.is_ok());
  EXPECT_EQ(summary.status().code(), StatusCode::kInternal);
  EXPECT_NE(summary.status().message().find("during the encode phase"), std::string::npos);
}

}  // namespace
}  // namespace sdxlb
