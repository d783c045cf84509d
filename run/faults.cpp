#include "run/faults.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

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
                            " (keys: kill_rank, kill_after, nan_items, oom_batches)");
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
    if (!to_int(value, &v)) return bad(key + " wants an integer, got \"" + value + "\"");
    if (key == "kill_rank") {
      f.kill_rank_ = static_cast<int>(v);
    } else if (key == "kill_after") {
      f.kill_after_ = v;
    } else if (key == "oom_batches") {
      f.oom_batches_ = v;
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

}  // namespace sdxlb
