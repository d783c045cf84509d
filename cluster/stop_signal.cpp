#include "cluster/stop_signal.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <initializer_list>

namespace sdxlb {
namespace {

std::atomic<int> g_stop{0};  // 0: running; otherwise the signal number, or -1 for request(0)
std::atomic<bool> g_installed{false};
static_assert(std::atomic<int>::is_always_lock_free, "the stop flag is set from a signal handler");

void on_signal(int sig) {
  int expected = 0;
  if (!g_stop.compare_exchange_strong(expected, sig) && expected == SIGINT && sig == SIGINT) {
    // Ctrl-C again while stopping: the user insists. (A repeated SIGTERM does not do this: SLURM may deliver
    // it twice, to the batch script's launcher and to the tasks directly.)
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  static const char msg[] =
      "sdxl-batch: stop signal received: finishing the images in flight, then saving and exiting "
      "(Ctrl-C again exits at once)\n";
  (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
}

}  // namespace

void StopSignal::install() {
  // Installed again on every call (the same handler): a library initialised in between (MPI) may have put
  // its own in place.
  g_installed.store(true);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
}

bool StopSignal::requested() {
  return g_stop.load(std::memory_order_relaxed) != 0;
}

int StopSignal::signal_number() {
  const int s = g_stop.load(std::memory_order_relaxed);
  return s > 0 ? s : 0;
}

void StopSignal::request(int signal) {
  int expected = 0;
  g_stop.compare_exchange_strong(expected, signal > 0 ? signal : -1);
}

void StopSignal::reset() {
  g_stop.store(0);
}

const char* StopSignal::name(int signal) {
  switch (signal) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "a stop request";
  }
}

}  // namespace sdxlb
