// Progress: done/total, throughput and ETA for long phases, printed to stderr at intervals.
//
// The rate is measured over a sliding window (the last ~60 s of completions), so that the ETA follows the
// current speed rather than a start-up average. Not thread-safe: one owner thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

namespace sdxlb {

class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  /// `what` labels the lines ("render", "encode") and `unit` names what is counted ("items", "texts");
  /// `interval_s` <= 0 or `quiet` prints nothing.
  Progress(std::string what, int64_t total, double interval_s, bool quiet, std::string unit = "items");

  /// Adds `n` completed units at time `now`; prints a line when the interval has passed.
  void add(int64_t n, Clock::time_point now = Clock::now());
  /// Prints a line when nothing has been printed for the interval (at least 30 s), so that work whose units
  /// take minutes each (very large images, a slow CPU) still shows it is alive, with the time elapsed.
  void tick(Clock::time_point now = Clock::now());
  /// Units per second over the window (0 before two samples).
  double rate(Clock::time_point now = Clock::now()) const;
  /// Seconds to finish at the current rate, or -1 when unknown.
  double eta_seconds(Clock::time_point now = Clock::now()) const;
  int64_t done() const { return done_; }
  int64_t total() const { return total_; }
  /// "render: 120/1000 (12.0%), 3.40 items/s, ETA 4m19s, 35s elapsed".
  std::string line(Clock::time_point now = Clock::now()) const;
  /// Prints the final line (unless quiet).
  void finish();

  /// "4m19s", "2h03m", "12s".
  static std::string format_duration(double seconds);

 private:
  std::string what_;
  std::string unit_;
  int64_t total_;
  double interval_s_;
  bool quiet_;
  int64_t done_ = 0;
  Clock::time_point start_;
  Clock::time_point last_print_;
  std::deque<std::pair<Clock::time_point, int64_t>> window_;  // (time, done) samples
};

}  // namespace sdxlb
