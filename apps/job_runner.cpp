#include "apps/job_runner.h"

#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

#include <unistd.h>

#include <torch/version.h>

#include "apps/start_checks.h"
#include "cluster/node_probe.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/utc_time.h"
#include "common/version.h"
#include "coordinator/coordinator.h"
#include "coordinator/dataset_bookkeeping.h"
#include "coordinator/encode_monitor.h"
#include "pipeline/runtime/memory_plan.h"
#include "run/protocol.h"
#include "worker/device_binding.h"
#include "worker/encode_phase.h"
#include "worker/render_loop.h"
#include "worker/render_setup.h"

namespace sdxlb {
namespace {

// Rank 0's status, decided alone, made everyone's.
Status share_from_root(Comm& comm, const Status& mine) {
  std::string bytes = comm.rank() == 0 ? encode_status(mine) : std::string();
  Status st = comm.broadcast(bytes, 0, "sharing the job's status");
  if (!st.is_ok()) return st;
  return decode_status(bytes);
}

// Ends every rank at once (MPI_Abort) with `code`: a lost rank may be alive but hung, and would keep the
// launcher (and the SLURM job) waiting forever.
void abort_job(Comm& comm, int code, ResumeState* resume) {
  record_exit_code(code);
  resume->lock.reset();  // MPI_Abort skips destructors
  std::fflush(stdout);
  std::fflush(stderr);
  comm.abort(code);
}

std::string iso_now() {
  return utc_now("%Y-%m-%dT%H:%M:%SZ");
}

// Seconds per start-up phase, for the log ("job file 0.01 s, ranks 0.02 s, ...").
class StartupClock {
 public:
  void lap(const char* what) {
    const auto now = std::chrono::steady_clock::now();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%s %.2f s", text_.empty() ? "" : ", ", what,
                  std::chrono::duration<double>(now - last_).count());
    text_ += buf;
    last_ = now;
  }
  std::string summary() const { return text_; }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::string text_;
};

// Host and pid of every rank, indexed by rank (for the coordinator's messages about a lost worker).
StatusOr<std::vector<RankInfo>> gather_rank_info(Comm& comm) {
  SDXLB_ASSIGN_OR_RETURN(auto all, comm.all_gather(std::to_string(::getpid()) + " " + host_name(),
                                                   "finding where the ranks run"));
  std::vector<RankInfo> out(all.size());
  for (size_t r = 0; r < all.size(); ++r) {
    const auto sp = all[r].find(' ');
    out[r].pid = std::atoi(all[r].substr(0, sp).c_str());
    out[r].host = sp == std::string::npos ? "" : all[r].substr(sp + 1);
  }
  return out;
}

std::string encode_identity(const ModelIdentity& id) {
  return id.model_id + "\n" + id.text_encoder_id + "\n" + (id.force_zeros_for_empty_prompt ? "1" : "0") +
         "\n" + id.scheduler;
}

ModelIdentity decode_identity(const std::string& bytes) {
  ModelIdentity id;
  const auto a = bytes.find('\n');
  const auto b = bytes.find('\n', a == std::string::npos ? a : a + 1);
  if (a == std::string::npos || b == std::string::npos) return id;
  id.model_id = bytes.substr(0, a);
  id.text_encoder_id = bytes.substr(a + 1, b - a - 1);
  const auto c = bytes.find('\n', b + 1);
  id.force_zeros_for_empty_prompt = bytes.substr(b + 1, c == std::string::npos ? c : c - b - 1) == "1";
  if (c != std::string::npos) id.scheduler = bytes.substr(c + 1);
  return id;
}

}  // namespace

int run_job_on_rank(Comm& comm, const RunOptions& options) {
  const bool root = comm.rank() == 0;
  const std::string started = iso_now();
  StartupClock clock;
  auto job = JobSpec::load_file(options.job_file);
  if (!job.is_ok()) {
    if (root) print_error(job.status());
    return exit_code_for(job.status());
  }
  std::string run_id = root ? utc_run_id() : std::string();
  Status st = comm.broadcast(run_id, 0, "sharing the run id");
  if (!st.is_ok()) {
    if (root) print_error(st);
    return kExitInternal;
  }
  auto faults = Faults::from_environment();
  if (!faults.is_ok()) {
    if (root) print_error(faults.status());
    return exit_code_for(faults.status());
  }
  auto ctx = make_run_context(std::move(*job), options, run_id, gpu_present());
  if (!ctx.is_ok()) {
    if (root) print_error(ctx.status());
    return exit_code_for(ctx.status());
  }
  ctx->faults = *faults;
  auto setup = resolve_render_setup(*ctx);
  if (!setup.is_ok()) {
    if (root) print_error(setup.status());
    return exit_code_for(setup.status());
  }
  if (root) {
    const std::string large =
        large_image_warning(ctx->job.width, ctx->job.height, setup->device.is_cpu(), host_ram_gib());
    if (!large.empty()) log_warn(ctx->job.job_file + ": " + large);
  }
  clock.lap("job file");

  auto placement = node_placement(comm);
  if (!placement.is_ok()) {
    print_error(placement.status());
    return kExitInternal;
  }
  ctx->gpu_slot = placement->slot;
  ctx->workers_on_node = placement->workers_on_node;
  // The workers of each node as a Comm of their own (collective over every rank). Through it each worker
  // learns how many workers share its physical GPU, whatever the launcher's binding (the memory plan divides
  // the GPU by that), and with weights_broadcast its first worker reads the weight files for all of them
  // (the same choice on every rank: the same job file and launcher; auto: under MPI, on the nodes with more
  // than one worker).
  auto workers = node_workers(comm);
  if (!workers.is_ok()) {
    print_error(workers.status());
    return kExitInternal;
  }
  auto sharing =
      workers_sharing_device(*workers, root ? std::string("coordinator")
                                            : device_identity(bind_device(setup->device, ctx->gpu_slot)));
  if (!sharing.is_ok()) {
    print_error(sharing.status());
    return kExitInternal;
  }
  ctx->workers_sharing_gpu = *sharing;
  std::optional<Comm> weights_comm;
  const JobSpec::WeightsBroadcast broadcast = ctx->job.weights_broadcast;
  if (!root && (broadcast == JobSpec::WeightsBroadcast::kOn ||
                (broadcast == JobSpec::WeightsBroadcast::kAuto && std::string(comm.backend()) == "mpi" &&
                 workers->size() > 1)))
    weights_comm.emplace(std::move(*workers));
  auto ranks = gather_rank_info(comm);
  if (!ranks.is_ok()) {
    print_error(ranks.status());
    return kExitInternal;
  }
  clock.lap("ranks");

  // Rank 0 alone reads the model's identity (configs and weight headers) and opens the output folder; every
  // rank gets the identity (or the error) from it, so the shared filesystem serves those reads once.
  ResumeState resume;
  Status prep_status;
  std::string identity_bytes;
  if (root) {
    auto id = read_model_identity(*ctx, *setup);
    clock.lap("model identity");
    Status memory = id.is_ok() ? check_cpu_memory(*ctx, *setup) : Status::ok();
    if (!memory.is_ok()) {
      prep_status = memory;
    } else if (id.is_ok()) {
      ctx->model = *id;
      identity_bytes = encode_identity(*id);
      auto p = open_output(*ctx);
      if (p.is_ok()) resume = std::move(*p);
      prep_status = p.status();
      clock.lap("output folder");
    } else {
      prep_status = id.status();
    }
  }
  st = share_from_root(comm, prep_status);
  if (!st.is_ok()) {
    if (root) print_error(st);
    return exit_code_for(st);
  }
  st = comm.broadcast(identity_bytes, 0, "sharing the model identity");
  if (!st.is_ok()) {
    if (root) print_error(st);
    return kExitInternal;
  }
  if (!root) ctx->model = decode_identity(identity_bytes);
  if (root) log_info("startup: " + clock.summary());

  // Phase 1: text embeddings, by the workers, into the shared cache. Rank 0 lists the texts the cache lacks,
  // once for every worker (worker/encode_phase.h), and shows their progress.
  const auto te = std::chrono::steady_clock::now();
  std::vector<uint32_t> missing;
  std::string missing_bytes;
  Status listed;
  if (root) {
    auto m = texts_missing_from_cache(*ctx);
    listed = m.status();
    if (m.is_ok()) missing = std::move(*m), missing_bytes = encode_text_indices(missing);
  }
  st = share_from_root(comm, listed);
  if (st.is_ok()) st = comm.broadcast(missing_bytes, 0, "sharing the texts to encode");
  if (st.is_ok() && !root) {
    auto m = decode_text_indices(missing_bytes);
    st = m.status();
    if (m.is_ok()) missing = std::move(*m);
  }
  if (!st.is_ok()) {
    if (root) {
      print_error(st);
      discard_unused_output(*ctx, &resume);
    }
    return exit_code_for(st);
  }
  Status enc;
  if (root) {
    auto encoded = monitor_encode_phase(comm, *ctx, static_cast<int64_t>(missing.size()), *ranks);
    if (encoded.is_ok() && !encoded->lost.empty()) {
      // A lost worker never ends its phase. The folder's job files stay, as after a lost worker in the
      // render phase: the resubmitted job is the same one, and the cache (maybe inside the folder) too.
      std::fprintf(stderr,
                   "sdxl-batch: error: %s. The texts encoded so far are saved in the embedding cache; "
                   "resubmit the same command to resume\n",
                   encoded->lost.begin()->second.c_str());
      abort_job(comm, kExitWorkerLost, &resume);
    }
    enc = encoded.is_ok() ? encoded->status : encoded.status();
  } else {
    enc = run_encode_phase(comm, *ctx, *setup, missing);
  }
  st = share_from_root(comm, enc);
  if (!st.is_ok()) {
    if (root) {
      print_error(st);
      // A stop signal resumes the same job with the texts encoded so far (the cache may be inside the
      // folder); any other error may be fixed first, and the fixed job must not look like "another job".
      if (exit_code_for(st) != kExitStopped) discard_unused_output(*ctx, &resume);
    }
    return exit_code_for(st);
  }
  if (root && !options.quiet && missing.empty())
    std::fprintf(stderr, "encode: every text is in the embedding cache (%.1f s)\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - te).count());
  if (options.encode_only) {
    if (root) std::printf("embeddings: %s\n", ctx->job.embedding_cache.c_str());
    return kExitOk;
  }

  // Phase 2: render.
  if (!root) {
    Status w = run_render_worker(comm, *ctx, *setup, weights_comm ? &*weights_comm : nullptr);
    return w.is_ok() ? kExitOk : exit_code_for(w);
  }
  auto summary = run_coordinator(comm, *ctx, resume.pending, *ranks);
  if (!summary.is_ok()) {
    print_error(summary.status());
    discard_unused_output(*ctx, &resume);
    return exit_code_for(summary.status());
  }
  const std::map<std::string, std::string> attrs = {
      {"tool", "sdxl-batch"},
      {"tool_version", SDXLB_VERSION},
      {"libtorch_version", TORCH_VERSION},
      {"device", setup->device.str()},
      {"dtype", dtype_name(ctx->job.dtype)},
      {"start_time", started},
      {"end_time", iso_now()},
  };
  const int code = finish_output(*ctx, *summary, attrs);
  // Workers that refused the model at start-up: nothing was rendered, and the folder's job files would make
  // the fixed model's run look like "another job".
  if ((code == kExitModelOrIo || code == kExitBadInput || code == kExitOutOfMemory) &&
      summary->rendered + summary->failed == 0)
    discard_unused_output(*ctx, &resume);
  if (!summary->lost.empty()) abort_job(comm, code, &resume);
  return code;
}

int run_job(Comm& world, const RunOptions& options) {
  if (world.size() >= 2) return run_job_on_rank(world, options);
  auto group = Comm::local_group(2);
  int worker_code = 0;
  std::thread worker([&] { worker_code = run_job_on_rank(group[1], options); });
  const int code = run_job_on_rank(group[0], options);
  worker.join();
  return code != kExitOk ? code : worker_code;
}

}  // namespace sdxlb
