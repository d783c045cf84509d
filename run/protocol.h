// The messages between the coordinator (rank 0) and the workers, as JSON over Comm, and the one codec for
// a Status that crosses ranks.
//
//   worker -> coordinator  kRequest  {"done": [items rendered OK], "failed": [items that failed]}
//                                    (the first request has both empty)
//   coordinator -> worker  kWork     {"items": [ascending item indices]}   or   {"stop": true}
//   worker -> coordinator  kBye      {"rendered": n, "failed": n, "busy_s": seconds, "segments": n}
//   worker -> coordinator  kFatal    {"error": "..."}   (the worker cannot go on; it exits after sending)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sdxlb {

enum MessageTag : int { kRequest = 1, kWork = 2, kBye = 3, kFatal = 4 };

struct WorkRequest {
  std::vector<int64_t> done;
  std::vector<int64_t> failed;
};

struct WorkAssignment {
  bool stop = false;
  std::vector<int64_t> items;
};

struct WorkerReport {
  int64_t rendered = 0;
  int64_t failed = 0;
  double busy_s = 0;
  int64_t segments = 0;
};

std::string encode_message(const WorkRequest& m);
std::string encode_message(const WorkAssignment& m);
std::string encode_message(const WorkerReport& m);
std::string encode_fatal(const std::string& error);

StatusOr<WorkRequest> decode_request(const std::string& bytes);
StatusOr<WorkAssignment> decode_assignment(const std::string& bytes);
StatusOr<WorkerReport> decode_report(const std::string& bytes);
std::string decode_fatal(const std::string& bytes);

/// A Status as bytes for another rank ("<code>\n<message>"), and back. decode_status of malformed bytes
/// is an internal error saying so.
std::string encode_status(const Status& status);
Status decode_status(const std::string& bytes);

}  // namespace sdxlb
