#include "store/output_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

namespace sdxlb {
namespace {

using json = nlohmann::json;

std::string this_host() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::string utc_time() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json my_record(const std::string& run_id) {
  return {{"format", "sdxlb-lock"},
          {"host", this_host()},
          {"pid", static_cast<int64_t>(::getpid())},
          {"slurm_job_id", env_or("SLURM_JOB_ID", "")},
          {"slurm_restart_count", std::atoi(env_or("SLURM_RESTART_COUNT", "0").c_str())},
          {"run_id", run_id},
          {"started", utc_time()}};
}

// Whether process `pid` of this host is alive and still an sdxl-batch: not gone, not a zombie (a killed rank
// whose launcher has exited is one for a moment), and not a reused pid.
bool sdxl_batch_alive(int64_t pid) {
  if (pid == ::getpid()) return true;  // this process holds it (another thread's run, or a test)
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  const std::string proc = "/proc/" + std::to_string(pid);
  std::string stat;
  if (std::FILE* f = std::fopen((proc + "/stat").c_str(), "rb")) {
    char buf[512];
    const size_t n = std::fread(buf, 1, sizeof buf, f);
    stat.assign(buf, n);
    std::fclose(f);
  }
  const auto paren = stat.rfind(')');
  if (paren != std::string::npos && paren + 2 < stat.size() &&
      (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X'))
    return false;
  if (stat.empty()) return true;  // no /proc to ask: trust kill()
  return stat.find("(sdxl-batch)") != std::string::npos;
}

// Why the holder described by `holder` (a lock file of age `age_s`) is gone, or "" when it may be alive. A
// holder on this host that is alive gets a few seconds to finish exiting (a run that is draining).
std::string stale_reason(const json& holder, double age_s, const OutputLockOptions& o) {
  const std::string host = holder.value("host", "");
  const int64_t pid = holder.value("pid", int64_t{0});
  if (host == this_host() && pid > 0) {
    for (int i = 0; i < 20 && sdxl_batch_alive(pid); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!sdxl_batch_alive(pid)) return "its process " + std::to_string(pid) + " on this host is gone";
  }
  const std::string job = holder.value("slurm_job_id", "");
  if (!job.empty() && job == env_or("SLURM_JOB_ID", "") &&
      holder.value("slurm_restart_count", 0) < std::atoi(env_or("SLURM_RESTART_COUNT", "0").c_str()))
    return "it was an earlier start of this SLURM job (" + job + "), which SLURM has ended";
  if (age_s > o.stale_after_s) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "it was last refreshed %.0f s ago (a live run refreshes it every %.0f s)",
                  age_s, o.heartbeat_s);
    return buf;
  }
  return "";
}

std::string describe_holder(const json& h) {
  std::string s = "sdxl-batch on host " + h.value("host", std::string("?")) + ", pid " +
                  std::to_string(h.value("pid", int64_t{0}));
  const std::string job = h.value("slurm_job_id", "");
  if (!job.empty()) s += ", SLURM job " + job;
  s += ", run " + h.value("run_id", std::string("?")) + ", started " + h.value("started", std::string("?"));
  return s;
}

// Reads the lock file at `path`: its holder (an empty object when unreadable: a run killed while writing it,
// or not ours, judged by its age alone) and its age in seconds. False when there is none.
bool read_lock(const std::string& path, json* holder, double* age_s) {
  std::string text;
  struct stat st {};
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[1024];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < 65536) text.append(buf, n);
    std::fclose(f);
  }
  if (::stat(path.c_str(), &st) != 0) return false;
  *age_s = std::difftime(std::time(nullptr), st.st_mtime);
  *holder = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (holder->is_discarded() || !holder->is_object()) *holder = json::object();
  return true;
}

Status in_use(const std::string& output_dir, const std::string& path, const json& holder) {
  return failed_precondition("the output folder " + output_dir + " is in use by " + describe_holder(holder) +
                             " (" + path +
                             "). Two runs on one folder would render the same items twice. Fix: wait for "
                             "that run to end or stop it; if it is certainly dead, delete " +
                             path);
}

}  // namespace

Status OutputLock::check_free(const std::string& output_dir, const OutputLockOptions& options) {
  const std::string path = output_dir + "/lock";
  json holder;
  double age = 0;
  if (!read_lock(path, &holder, &age)) return Status::ok();
  return stale_reason(holder, age, options).empty() ? in_use(output_dir, path, holder) : Status::ok();
}

struct OutputLock::State {
  std::string path;
  std::string record;  // our contents, to recognise the file as ours
  OutputLockOptions options;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  bool released = false;
  std::thread heartbeat;
};

StatusOr<std::unique_ptr<OutputLock>> OutputLock::acquire(const std::string& output_dir,
                                                          const std::string& run_id,
                                                          const OutputLockOptions& options,
                                                          std::string* warning) {
  const std::string path = output_dir + "/lock";
  const std::string record = my_record(run_id).dump() + "\n";
  for (int attempt = 0; attempt < 5; ++attempt) {
    const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd >= 0) {
      const bool ok = ::write(fd, record.data(), record.size()) == static_cast<ssize_t>(record.size()) &&
                      ::fsync(fd) == 0;
      ::close(fd);
      if (!ok) {
        ::unlink(path.c_str());
        return io_error("cannot write the lock file " + path + ": " + std::strerror(errno));
      }
      auto s = std::make_unique<State>();
      s->path = path;
      s->record = record;
      s->options = options;
      State* raw = s.get();
      s->heartbeat = std::thread([raw] {
        std::unique_lock<std::mutex> lock(raw->mu);
        while (!raw->cv.wait_for(lock, std::chrono::duration<double>(raw->options.heartbeat_s),
                                 [raw] { return raw->stop; }))
          ::utimes(raw->path.c_str(), nullptr);  // a live run's lock stays fresh
      });
      return std::unique_ptr<OutputLock>(new OutputLock(std::move(s)));
    }
    if (errno != EEXIST) return io_error("cannot create the lock file " + path + ": " + std::strerror(errno));
    // Someone holds it: read who, and whether they are gone.
    json holder;
    double age = 0;
    if (!read_lock(path, &holder, &age)) continue;  // released meanwhile: try again
    const std::string why = stale_reason(holder, age, options);
    if (why.empty()) return in_use(output_dir, path, holder);
    // Stale: move it aside (only one of several contenders succeeds), then try to create ours again.
    const std::string aside = path + ".stale-" + std::to_string(::getpid());
    if (::rename(path.c_str(), aside.c_str()) == 0) {
      ::unlink(aside.c_str());
      if (warning) *warning = "took over the stale lock of " + describe_holder(holder) + ": " + why;
    }
  }
  return failed_precondition("could not take the lock file " + path + " (other runs keep taking it)");
}

OutputLock::OutputLock(std::unique_ptr<State> s) : s_(std::move(s)) {}

OutputLock::~OutputLock() {
  release();
}

const std::string& OutputLock::path() const {
  return s_->path;
}

void OutputLock::release() {
  if (!s_ || s_->released) return;
  {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->stop = true;
  }
  s_->cv.notify_all();
  if (s_->heartbeat.joinable()) s_->heartbeat.join();
  s_->released = true;
  // Only our own lock is removed (a takeover by another run after we were judged stale leaves theirs).
  std::string text;
  if (std::FILE* f = std::fopen(s_->path.c_str(), "rb")) {
    char buf[1024];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < 65536) text.append(buf, n);
    std::fclose(f);
  }
  if (text == s_->record) ::unlink(s_->path.c_str());
}

}  // namespace sdxlb
