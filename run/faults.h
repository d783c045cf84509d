// Faults: the seam through which tests make a real process fail at a chosen moment (an Env in leveldb's
// sense). The job runner builds one from the environment variable SDXLB_FAULT and hands it to both roles
// through the RunContext; nothing reads a global in the hot loop. SDXLB_FAULT is a comma-separated list of:
//   kill_rank=R         the rank that kills itself with SIGKILL ...
//   kill_after=N        ... once it has rendered (worker) or received reports of (coordinator) N items
//   hang_rank=R         the worker that stops answering (sleeps forever, as under SIGSTOP) ...
//   hang_after=N        ... once it has rendered N items (0: before its first batch)
//   nan_items=I:J:K     items whose latents are replaced by NaN before decoding (to test failed items)
//   oom_batches=N       the first N batches a worker renders fail as out of memory (to test the fallback)
//   item_delay_ms=M     every rendered image group takes M ms longer (to widen time windows in tests)
//   encode_delay_ms=M   every encode chunk takes M ms longer
//   encode_hang_rank=R  the worker that stops answering in the encode phase, after its first chunk
//   fail_rank=R         the worker whose start-up fails with ...
//   fail_code=NAME      ... this error kind: out_of_memory, model, bad_input (to test exit codes)
//   export_kill_after=N `sdxl-batch export --format webdataset` kills itself with SIGKILL once it has added N
//                       samples (the shard holding the Nth is then half-written, under its .tmp name)
//   place_skew=N        every image's latents are shifted by N/1000 per place in its UNet call after
//   denoising
//                       (what a GPU whose kernels round a row by its place in the call does; to test that an
//                       image's place does not depend on the batch, worker/call_layout.h)
// Unset in production: every query then answers "no fault". Immutable after parsing, so it may be read
// from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "common/status.h"

namespace sdxlb {

class Faults {
 public:
  /// No faults.
  Faults() = default;
  /// Parses a SDXLB_FAULT value. kInvalidArgument names an unknown key or a bad value.
  static StatusOr<Faults> parse(const std::string& spec);
  /// From $SDXLB_FAULT (no faults when unset).
  static StatusOr<std::shared_ptr<const Faults>> from_environment();

  /// SIGKILLs this process when `rank` and `count` match the plan.
  void maybe_kill(int rank, int64_t count) const;
  /// Sleeps forever when `rank` and `count` match the plan (a worker that stops answering).
  void maybe_hang(int rank, int64_t count) const;
  /// Sleeps forever when `rank` is the plan's encode_hang_rank (called after each encode chunk).
  void maybe_hang_encoding(int rank) const;
  bool nan_item(int64_t item) const { return nan_items_.count(item) != 0; }
  int64_t oom_batches() const { return oom_batches_; }
  int64_t item_delay_ms() const { return item_delay_ms_; }
  int64_t encode_delay_ms() const { return encode_delay_ms_; }
  /// The shift per place in a UNet call (0: none).
  double place_skew() const { return static_cast<double>(place_skew_milli_) / 1000.0; }
  /// SIGKILLs this process when an export has added `samples` samples and the plan says so.
  void maybe_kill_export(int64_t samples) const;
  /// The injected start-up error of worker `rank`, or OK.
  Status startup_error(int rank) const;

 private:
  int kill_rank_ = -1;
  int64_t kill_after_ = -1;
  int hang_rank_ = -1;
  int64_t hang_after_ = -1;
  std::set<int64_t> nan_items_;
  int64_t oom_batches_ = 0;
  int64_t item_delay_ms_ = 0;
  int64_t encode_delay_ms_ = 0;
  int encode_hang_rank_ = -1;
  int fail_rank_ = -1;
  std::string fail_code_;
  int64_t export_kill_after_ = -1;
  int64_t place_skew_milli_ = 0;
};

}  // namespace sdxlb
