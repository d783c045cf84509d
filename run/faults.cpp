#include "run/faults.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>

namespace sdxlb {
namespace {

bool to_int(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end != '\0') return false;
  *out = v;
  return true;
}

}  // namespace

StatusOr<Faults> Faults::parse(const std::string& spec) {
  Faults f;
  std::stringstream ss(spec);
  std::string part;
  auto bad = [&](const std::string& what) {
    return invalid_argument("SDXLB_FAULT=\"" + spec + "\": " + what +
                            " (keys: kill_rank, kill_after, hang_rank, hang_after, nan_items, oom_batches, "
                            "item_delay_ms, encode_delay_ms, encode_hang_rank, fail_rank, fail_code, "
                            "export_kill_after, place_skew)");
  };
  while (std::getline(ss, part, ',')) {
    if (part.empty()) continue;
    const auto eq = part.find('=');
    if (eq == std::string::npos) return bad("\"" + part + "\" is not key=value");
    const std::string key = part.substr(0, eq), value = part.substr(eq + 1);
    int64_t v = 0;
    if (key == "nan_items") {
      std::stringstream vs(value);
      std::string item;
      while (std::getline(vs, item, ':')) {
        if (!to_int(item, &v)) return bad("nan_items wants item numbers separated by ':'");
        f.nan_items_.insert(v);
      }
      continue;
    }
    if (key == "fail_code") {
      if (value != "out_of_memory" && value != "model" && value != "bad_input")
        return bad("fail_code is one of out_of_memory, model, bad_input");
      f.fail_code_ = value;
      continue;
    }
    if (!to_int(value, &v)) return bad(key + " wants an integer, got \"" + value + "\"");
    if (key == "kill_rank") {
      f.kill_rank_ = static_cast<int>(v);
    } else if (key == "kill_after") {
      f.kill_after_ = v;
    } else if (key == "hang_rank") {
      f.hang_rank_ = static_cast<int>(v);
    } else if (key == "hang_after") {
      f.hang_after_ = v;
    } else if (key == "oom_batches") {
      f.oom_batches_ = v;
    } else if (key == "item_delay_ms") {
      f.item_delay_ms_ = v;
    } else if (key == "encode_delay_ms") {
      f.encode_delay_ms_ = v;
    } else if (key == "encode_hang_rank") {
      f.encode_hang_rank_ = static_cast<int>(v);
    } else if (key == "export_kill_after") {
      f.export_kill_after_ = v;
    } else if (key == "fail_rank") {
      f.fail_rank_ = static_cast<int>(v);
    } else if (key == "place_skew") {
      f.place_skew_milli_ = v;
    } else {
      return bad("unknown key \"" + key + "\"");
    }
  }
  return f;
}

StatusOr<std::shared_ptr<const Faults>> Faults::from_environment() {
  const char* env = std::getenv("SDXLB_FAULT");
  if (!env) return std::make_shared<const Faults>();
  SDXLB_ASSIGN_OR_RETURN(auto f, parse(env));
  return std::make_shared<const Faults>(std::move(f));
}

void Faults::maybe_kill(int rank, int64_t count) const {
  if (rank == kill_rank_ && kill_after_ >= 0 && count >= kill_after_) ::kill(::getpid(), SIGKILL);
}

void Faults::maybe_kill_export(int64_t samples) const {
  if (export_kill_after_ >= 0 && samples >= export_kill_after_) ::kill(::getpid(), SIGKILL);
}

void Faults::maybe_hang(int rank, int64_t count) const {
  if (rank != hang_rank_ || hang_after_ < 0 || count < hang_after_) return;
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

void Faults::maybe_hang_encoding(int rank) const {
  if (rank != encode_hang_rank_) return;
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

Status Faults::startup_error(int rank) const {
  if (rank != fail_rank_ || fail_code_.empty()) return Status::ok();
  if (fail_code_ == "out_of_memory")
    return Status(StatusCode::kResourceExhausted, "injected: no memory plan fits this GPU (SDXLB_FAULT)");
  if (fail_code_ == "model") return data_loss("injected: a weight file is corrupt (SDXLB_FAULT)");
  return invalid_argument("injected: a setting this worker cannot use (SDXLB_FAULT)");
}

}  // namespace sdxlb
