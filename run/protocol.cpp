#include "run/protocol.h"

#include <cstring>

#include <nlohmann/json.hpp>

namespace sdxlb {
namespace {
using json = nlohmann::json;

StatusOr<json> parse(const std::string& bytes, const char* what) {
  try {
    return json::parse(bytes);
  } catch (const json::exception& e) {
    return internal_error(std::string("malformed ") + what + " message: " + e.what());
  }
}
}  // namespace

std::string encode_message(const WorkRequest& m) {
  return json{{"done", m.done}, {"failed", m.failed}, {"stopping", m.stopping}}.dump();
}
std::string encode_message(const WorkAssignment& m) {
  return m.stop ? json{{"stop", true}}.dump() : json{{"items", m.items}}.dump();
}
std::string encode_message(const WorkerReport& m) {
  return json{{"rendered", m.rendered}, {"failed", m.failed}, {"busy_s", m.busy_s}, {"segments", m.segments}}
      .dump();
}
std::string encode_message(const EncodeProgress& m) {
  return json{{"texts", m.texts}}.dump();
}
std::string encode_stop(const std::string& reason) {
  return json{{"reason", reason}}.dump();
}

StatusOr<WorkRequest> decode_request(const std::string& bytes) {
  SDXLB_ASSIGN_OR_RETURN(auto j, parse(bytes, "work request"));
  try {
    WorkRequest r{j.at("done").get<std::vector<int64_t>>(), j.at("failed").get<std::vector<int64_t>>()};
    r.stopping = j.value("stopping", false);
    return r;
  } catch (const json::exception& e) {
    return internal_error(std::string("malformed work request: ") + e.what());
  }
}

StatusOr<WorkAssignment> decode_assignment(const std::string& bytes) {
  SDXLB_ASSIGN_OR_RETURN(auto j, parse(bytes, "work assignment"));
  WorkAssignment a;
  a.stop = j.value("stop", false);
  if (!a.stop) {
    try {
      a.items = j.at("items").get<std::vector<int64_t>>();
    } catch (const json::exception& e) {
      return internal_error(std::string("malformed work assignment: ") + e.what());
    }
  }
  return a;
}

StatusOr<WorkerReport> decode_report(const std::string& bytes) {
  SDXLB_ASSIGN_OR_RETURN(auto j, parse(bytes, "worker report"));
  WorkerReport r;
  r.rendered = j.value("rendered", int64_t{0});
  r.failed = j.value("failed", int64_t{0});
  r.busy_s = j.value("busy_s", 0.0);
  r.segments = j.value("segments", int64_t{0});
  return r;
}

StatusOr<EncodeProgress> decode_encode_progress(const std::string& bytes) {
  SDXLB_ASSIGN_OR_RETURN(auto j, parse(bytes, "encode progress"));
  try {
    return EncodeProgress{j.at("texts").get<int64_t>()};
  } catch (const json::exception& e) {
    return internal_error(std::string("malformed encode progress: ") + e.what());
  }
}

std::string encode_text_indices(const std::vector<uint32_t>& indices) {
  // Every rank of a job runs the same build on the same kind of host: native byte order.
  if (indices.empty()) return std::string();
  return std::string(reinterpret_cast<const char*>(indices.data()), indices.size() * sizeof(uint32_t));
}

StatusOr<std::vector<uint32_t>> decode_text_indices(const std::string& bytes) {
  if (bytes.size() % sizeof(uint32_t) != 0)
    return internal_error("malformed text list from rank 0: " + std::to_string(bytes.size()) + " bytes");
  std::vector<uint32_t> indices(bytes.size() / sizeof(uint32_t));
  if (!indices.empty()) std::memcpy(indices.data(), bytes.data(), bytes.size());  // (memcpy of null: UB)
  return indices;
}

std::string encode_status(const Status& s) {
  return std::to_string(static_cast<int>(s.code())) + "\n" + s.message();
}

Status decode_status(const std::string& bytes) {
  const auto nl = bytes.find('\n');
  if (nl == std::string::npos || nl == 0 || nl > 3)
    return internal_error("malformed status from another rank");
  int code = 0;
  for (size_t i = 0; i < nl; ++i) {
    if (bytes[i] < '0' || bytes[i] > '9') return internal_error("malformed status from another rank");
    code = code * 10 + (bytes[i] - '0');
  }
  if (code > static_cast<int>(StatusCode::kCancelled)) code = static_cast<int>(StatusCode::kInternal);
  return Status(static_cast<StatusCode>(code), bytes.substr(nl + 1));
}

}  // namespace sdxlb
