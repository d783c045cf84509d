#include "run/protocol.h"

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
  return json{{"done", m.done}, {"failed", m.failed}}.dump();
}
std::string encode_message(const WorkAssignment& m) {
  return m.stop ? json{{"stop", true}}.dump() : json{{"items", m.items}}.dump();
}
std::string encode_message(const WorkerReport& m) {
  return json{{"rendered", m.rendered}, {"failed", m.failed}, {"busy_s", m.busy_s}, {"segments", m.segments}}
      .dump();
}
std::string encode_fatal(const std::string& error) {
  return json{{"error", error}}.dump();
}

StatusOr<WorkRequest> decode_request(const std::string& bytes) {
  SDXLB_ASSIGN_OR_RETURN(auto j, parse(bytes, "work request"));
  try {
    return WorkRequest{j.at("done").get<std::vector<int64_t>>(), j.at("failed").get<std::vector<int64_t>>()};
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

std::string decode_fatal(const std::string& bytes) {
  auto j = parse(bytes, "fatal");
  if (!j.is_ok()) return bytes;
  return j->value("error", bytes);
}

std::string encode_status(const Status& s) {
  return std::to_string(static_cast<int>(s.code())) + "\n" + s.message();
}

Status decode_status(const std::string& bytes) {
  const auto nl = bytes.find('\n');
  if (nl == std::string::npos) return internal_error("malformed status from another rank");
  return Status(static_cast<StatusCode>(std::stoi(bytes.substr(0, nl))), bytes.substr(nl + 1));
}

}  // namespace sdxlb
