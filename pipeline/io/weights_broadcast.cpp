#include "pipeline/io/weights_broadcast.h"

#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "pipeline/io/safetensors.h"

namespace sdxlb {
namespace {

constexpr const char* kHint = "sharing weight files between the workers of this node (weights_broadcast)";
constexpr const char* kOff = "set weights_broadcast: off to have every worker read its own files";
constexpr char kSeparator = '\0';  // cannot occur in a path or a message
const std::string kOpen = "open";
const std::string kDone = "done";

// One worker's part of an exchange: the file it opens (or kDone from finish()), and on the reader what
// opening it gave.
struct Request {
  std::string kind;
  std::string path;
  bool has_result = false;
  StatusCode code = StatusCode::kOk;
  std::string detail = {};  // the file's size in bytes when code is kOk, else the error message
};

std::string encode(const Request& r) {
  std::string out = r.kind + kSeparator + r.path;
  if (r.has_result) out += kSeparator + std::to_string(static_cast<int>(r.code)) + kSeparator + r.detail;
  return out;
}

Request decode(const std::string& bytes) {
  std::vector<std::string> parts(1);
  for (char c : bytes) {
    if (c == kSeparator && parts.size() < 4)
      parts.emplace_back();
    else
      parts.back() += c;
  }
  Request r;
  r.kind = parts[0];
  if (parts.size() > 1) r.path = parts[1];
  if (parts.size() == 4) {
    r.has_result = true;
    r.code = static_cast<StatusCode>(std::atoi(parts[2].c_str()));
    r.detail = parts[3];
  }
  return r;
}

std::string describe(const Request& r) {
  return r.kind == kDone ? "had finished loading" : "opened " + r.path;
}

}  // namespace

struct WeightsBroadcast::State {
  Comm* node = nullptr;  // null once the exchange is over: opens read from disk
  bool reader = false;
  std::map<std::string, std::shared_ptr<const SafetensorsFile>> held;  // this exchange's files, by path
  int64_t files = 0;
  uint64_t bytes = 0;

  void end() {
    node = nullptr;
    held.clear();
  }

  // Step 1 (and finish()'s only step): every worker's request. A Comm failure ends the exchange.
  StatusOr<std::vector<Request>> gather(const Request& mine) {
    auto all = node->all_gather(encode(mine), kHint);
    if (!all.is_ok()) {
      end();
      return all.status();
    }
    std::vector<Request> out;
    for (const auto& bytes : *all) out.push_back(decode(bytes));
    return out;
  }

  // Step 2: the same request everywhere, or an error on every worker (which ends the exchange: a worker that
  // had finished takes part in no further step).
  Status compare(const std::vector<Request>& all) {
    std::string others;
    for (size_t r = 1; r < all.size(); ++r)
      if (all[r].kind != all[0].kind || all[r].path != all[0].path)
        others += (others.empty() ? "" : ", ") + std::string("worker ") + std::to_string(r) +
                  " of the node " + describe(all[r]);
    if (others.empty()) return Status::ok();
    const int me = node->rank();
    end();
    return failed_precondition(
        "weights_broadcast: the workers of this node did not open the same weight files: the node's first "
        "worker " +
        describe(all[0]) + ", " + others + " (this is worker " + std::to_string(me) + ", which " +
        describe(all[static_cast<size_t>(me)]) +
        "). Every worker of a node must load the same model with the same settings (a worker that stopped "
        "early has logged its own error); or " +
        kOff);
  }

  // Step 3: whether every receiver holds the file's memory; `mine` is this worker's error ("" when it does).
  Status agree_on_memory(const std::string& path, uint64_t size, const std::string& mine) {
    SDXLB_ASSIGN_OR_RETURN(auto all, node->all_gather(mine, kHint));
    for (size_t r = 0; r < all.size(); ++r)
      if (!all[r].empty())
        return Status(StatusCode::kResourceExhausted,
                      "weights_broadcast: worker " + std::to_string(r) + " of this node cannot hold " + path +
                          " (" + std::to_string(size) + " bytes) in memory: " + all[r] +
                          "; free host memory, or " + kOff + " (they map the file from disk)");
    return Status::ok();
  }

  StatusOr<std::shared_ptr<const SafetensorsFile>> open(const std::string& path) {
    if (!node) return SafetensorsFile::open(path);
    if (auto it = held.find(path); it != held.end()) return it->second;
    Request mine{kOpen, path};
    StatusOr<std::shared_ptr<const SafetensorsFile>> read = internal_error("not read");
    if (reader) {
      read = SafetensorsFile::open(path);
      mine.has_result = true;
      mine.code = read.status().code();
      mine.detail = read.is_ok() ? std::to_string((*read)->file_bytes().size()) : read.status().message();
    }
    SDXLB_ASSIGN_OR_RETURN(const auto all, gather(mine));
    SDXLB_RETURN_IF_ERROR(compare(all));
    const Request& first = all[0];
    if (!first.has_result) {
      end();
      return internal_error(std::string(kHint) + ": the first worker's request for " + path +
                            " carries no result");
    }
    if (first.code != StatusCode::kOk) {
      if (reader) return read.status();
      return Status(first.code, first.detail +
                                    " (read by this node's first worker, which shares the weight files with "
                                    "the node's other workers: weights_broadcast)");
    }
    const uint64_t size = std::stoull(first.detail);
    std::shared_ptr<const SafetensorsFile> file;
    if (reader) {
      SDXLB_RETURN_IF_ERROR(agree_on_memory(path, size, ""));
      // MPI_Bcast only reads the root's buffer (and the mapping is a private, writable one anyway).
      char* data = const_cast<char*>((*read)->file_bytes().data());
      SDXLB_RETURN_IF_ERROR(node->broadcast_bytes(data, size, 0, kHint));
      file = *read;
    } else {
      bool filled = false;
      auto got = SafetensorsFile::from_buffer(path, size, [&](void* data) -> Status {
        filled = true;
        SDXLB_RETURN_IF_ERROR(agree_on_memory(path, size, ""));
        return node->broadcast_bytes(data, size, 0, kHint);
      });
      // No memory for the file: still take part in step 3, so that every worker returns the error.
      if (!got.is_ok() && !filled) return agree_on_memory(path, size, got.status().message());
      SDXLB_RETURN_IF_ERROR(got.status());
      file = *got;
    }
    held[path] = file;
    ++files;
    bytes += size;
    return file;
  }
};

WeightsBroadcast::WeightsBroadcast(Comm& node) : state_(std::make_shared<State>()) {
  state_->node = &node;
  state_->reader = node.rank() == 0;
}

WeightsBroadcast::~WeightsBroadcast() {
  if (state_->node) (void)finish();
}

FileOpener WeightsBroadcast::opener() const {
  std::shared_ptr<State> state = state_;
  return [state](const std::string& path) { return state->open(path); };
}

Status WeightsBroadcast::finish() {
  State& s = *state_;
  if (!s.node) return Status::ok();
  SDXLB_ASSIGN_OR_RETURN(const auto all, s.gather(Request{kDone, ""}));
  Status same = s.compare(all);
  s.end();
  return same;
}

int64_t WeightsBroadcast::files() const {
  return state_->files;
}
uint64_t WeightsBroadcast::bytes() const {
  return state_->bytes;
}
bool WeightsBroadcast::reads() const {
  return state_->reader;
}

}  // namespace sdxlb
