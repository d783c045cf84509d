// The messages between the coordinator (rank 0) and the workers, as JSON over Comm, and the one codec for
// a Status that crosses ranks (its code travels with it, so a worker's out-of-memory ends the job with the
// out-of-memory exit code).
//
//   worker -> coordinator  kRequest  {"done": [items stored OK], "failed": [items stored as failed],
//                                     "stopping": bool}       asks for the next batch (the first request has
//                                                             both lists empty); stopping: the worker stops
//                                                             after this report (a stop signal reached it)
//   worker -> coordinator  kProgress {"done": [...], "failed": [...]}   after each image group: progress, and
//                                                             the heartbeat the coordinator's watchdog reads
//   coordinator -> worker  kWork     {"items": [ascending item indices]}   or   {"stop": true}
//   coordinator -> worker  kStop     {"reason": "..."}        finish the images in flight, publish, then ask
//                                                             for work (the answer is stop)
//   worker -> coordinator  kBye      {"rendered": n, "failed": n, "busy_s": seconds, "segments": n}
//   worker -> coordinator  kFatal    <encoded Status>         the worker cannot go on; it exits after sending
//
// The encode phase (before the render phase; rank 0 has decided which texts to encode and broadcast them):
//   worker -> coordinator  kEncodeProgress {"texts": n}       n more texts encoded (stored with the worker's
//                                                             next shard); the first (n = 0) before the
//                                                             encoders load, then at most one a second:
//                                                             progress, and the watchdog's heartbeat
//   worker -> coordinator  kEncodeDone     <encoded Status>   the worker's share is stored (or why not); the
//                                                             last message of its encode phase
//
// Items reported done are in the worker's segment, which may not be published yet: the coordinator counts
// them for progress only. What a later run trusts is what the resume scan finds in published segments.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sdxlb {

enum MessageTag : int {
  kRequest = 1,
  kWork = 2,
  kBye = 3,
  kFatal = 4,
  kProgress = 5,
  kStop = 6,
  kEncodeProgress = 7,
  kEncodeDone = 8,
};

struct WorkRequest {
  std::vector<int64_t> done;
  std::vector<int64_t> failed;
  bool stopping = false;
};

struct WorkAssignment {
  bool stop = false;
  std::vector<int64_t> items;
};

struct EncodeProgress {
  int64_t texts = 0;  ///< encoded since the worker's previous report
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
std::string encode_message(const EncodeProgress& m);
std::string encode_stop(const std::string& reason);

StatusOr<WorkRequest> decode_request(const std::string& bytes);
StatusOr<WorkAssignment> decode_assignment(const std::string& bytes);
StatusOr<WorkerReport> decode_report(const std::string& bytes);
StatusOr<EncodeProgress> decode_encode_progress(const std::string& bytes);

/// The encode phase's text list (indices into the job's texts), as bytes for Comm::broadcast, and back.
/// decode_text_indices of bytes that are not a whole number of indices is an internal error.
std::string encode_text_indices(const std::vector<uint32_t>& indices);
StatusOr<std::vector<uint32_t>> decode_text_indices(const std::string& bytes);

/// A Status as bytes for another rank ("<code>\n<message>"), and back. decode_status of malformed bytes is
/// an internal error saying so; an unknown code is kept as internal. kFatal carries encode_status.
std::string encode_status(const Status& status);
Status decode_status(const std::string& bytes);

}  // namespace sdxlb
