#include "coordinator/progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace sdxlb {

namespace {
constexpr double kWindowSeconds = 60.0;
double seconds(Progress::Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}
}  // namespace

Progress::Progress(std::string what, int64_t total, double interval_s, bool quiet, std::string unit)
    : what_(std::move(what)),
      unit_(std::move(unit)),
      total_(total),
      interval_s_(interval_s),
      quiet_(quiet || interval_s <= 0) {
  start_ = last_print_ = Clock::now();
  window_.emplace_back(start_, 0);
}

void Progress::add(int64_t n, Clock::time_point now) {
  done_ += n;
  window_.emplace_back(now, done_);
  while (window_.size() > 2 && seconds(now - window_.front().first) > kWindowSeconds) window_.pop_front();
  if (!quiet_ && seconds(now - last_print_) >= interval_s_) {
    std::fprintf(stderr, "%s\n", line(now).c_str());
    last_print_ = now;
  }
}

void Progress::tick(Clock::time_point now) {
  if (!quiet_ && seconds(now - last_print_) >= std::max(interval_s_, 30.0)) {
    std::fprintf(stderr, "%s\n", line(now).c_str());
    last_print_ = now;
  }
}

double Progress::rate(Clock::time_point now) const {
  if (window_.size() < 2) return 0;
  const auto& first = window_.front();
  const double dt = seconds(now - first.first);
  return dt > 0 ? static_cast<double>(done_ - first.second) / dt : 0;
}

double Progress::eta_seconds(Clock::time_point now) const {
  const double r = rate(now);
  if (r <= 0) return -1;
  return static_cast<double>(total_ - done_) / r;
}

std::string Progress::format_duration(double s) {
  if (s < 0) return "?";
  const long t = std::lround(s);
  char buf[32];
  if (t < 60)
    std::snprintf(buf, sizeof buf, "%lds", t);
  else if (t < 3600)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  return buf;
}

std::string Progress::line(Clock::time_point now) const {
  char buf[256];
  const double pct = total_ > 0 ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 100.0;
  std::snprintf(buf, sizeof buf, "%s: %lld/%lld (%.1f%%), %.2f %s/s, ETA %s, %s elapsed", what_.c_str(),
                static_cast<long long>(done_), static_cast<long long>(total_), pct, rate(now), unit_.c_str(),
                format_duration(eta_seconds(now)).c_str(), format_duration(seconds(now - start_)).c_str());
  return buf;
}

void Progress::finish() {
  if (quiet_) return;
  const double elapsed = seconds(Clock::now() - start_);
  std::fprintf(stderr, "%s: %lld/%lld done in %s\n", what_.c_str(), static_cast<long long>(done_),
               static_cast<long long>(total_), format_duration(elapsed).c_str());
}

}  // namespace sdxlb
