#include "coordinator/job_runner.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <thread>

#include <torch/version.h>

#include "cluster/node_probe.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/utc_time.h"
#include "common/version.h"
#include "coordinator/coordinator.h"
#include "store/dataset_reader.h"
#include "store/output_folder.h"
#include "worker/worker.h"

namespace sdxlb {
namespace {

// A Status that crosses ranks as "<code>\n<message>".
std::string pack(const Status& s) {
  return std::to_string(static_cast<int>(s.code())) + "\n" + s.message();
}
Status unpack(const std::string& bytes) {
  const auto nl = bytes.find('\n');
  if (nl == std::string::npos) return internal_error("malformed status from another rank");
  return Status(static_cast<StatusCode>(std::stoi(bytes.substr(0, nl))), bytes.substr(nl + 1));
}

// Rank 0's status, decided alone, made everyone's.
Status share_from_root(Comm& comm, const Status& mine) {
  std::string bytes = comm.rank() == 0 ? pack(mine) : std::string();
  Status st = comm.broadcast(bytes, 0, "sharing the job's status");
  if (!st.is_ok()) return st;
  return unpack(bytes);
}

// Every rank's status: the first error by rank, or OK.
Status share_all(Comm& comm, const Status& mine) {
  auto all = comm.all_gather(pack(mine), "sharing the encode phase's status");
  if (!all.is_ok()) return all.status();
  for (size_t r = 0; r < all->size(); ++r) {
    Status s = unpack((*all)[r]);
    if (!s.is_ok()) return s.with_context("rank " + std::to_string(r));
  }
  return Status::ok();
}

std::string iso_now() {
  return utc_now("%Y-%m-%dT%H:%M:%SZ");
}

void print_error(const Status& s) {
  std::fprintf(stderr, "sdxl-batch: error: %s\n", s.to_string().c_str());
}

struct Prepared {
  std::vector<int64_t> pending;
  std::string model_id;
  int64_t already_done = 0;
};

// Rank 0: identity, output folder, resume scan.
StatusOr<Prepared> prepare_output(const RunContext& ctx) {
  // Configs and weight headers only: no weights are loaded here.
  SDXLB_ASSIGN_OR_RETURN(auto probe, SdxlPipeline::load(ctx.job.model, ctx.pipeline_options(false, false)));
  Prepared p;
  p.model_id = probe->model_id();
  const std::string identity = ctx.job.identity(p.model_id);
  SDXLB_ASSIGN_OR_RETURN(auto folder,
                         OutputFolder::create_or_open(ctx.job.output, identity, ctx.job.yaml_text,
                                                      ctx.job.to_canonical_json(), ctx.options.overwrite));
  SDXLB_ASSIGN_OR_RETURN(auto scan, folder.scan());
  for (const auto& r : scan.removed_temp) log_info("removed in-flight segment of an earlier run: " + r);
  for (const auto& r : scan.moved_corrupt) log_warn("moved a corrupt segment aside: " + r);
  const int64_t n = static_cast<int64_t>(ctx.plan->num_items());
  p.pending.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    if (!scan.is_done(i)) p.pending.push_back(i);
  p.already_done = n - static_cast<int64_t>(p.pending.size());
  if (folder.resumed() && !ctx.options.quiet)
    std::fprintf(stderr, "resuming %s: %lld of %lld items already done\n", ctx.job.output.c_str(),
                 static_cast<long long>(p.already_done), static_cast<long long>(n));
  return p;
}

int finish_on_root(const RunContext& ctx, const Prepared& prep, const RenderSummary& summary,
                   const std::string& started) {
  auto folder = OutputFolder::create_or_open(ctx.job.output, ctx.job.identity(prep.model_id),
                                             ctx.job.yaml_text, ctx.job.to_canonical_json(), false);
  if (!folder.is_ok()) {
    print_error(folder.status());
    return exit_code_for(folder.status());
  }
  std::map<std::string, std::string> attrs = {
      {"job_yaml", ctx.job.yaml_text},
      {"job_canonical", ctx.job.to_canonical_json()},
      {"tool", "sdxl-batch"},
      {"tool_version", SDXLB_VERSION},
      {"libtorch_version", TORCH_VERSION},
      {"model_id", prep.model_id},
      {"device", ctx.device.str()},
      {"dtype", dtype_name(ctx.job.dtype)},
      {"run_id", ctx.run_id},
      {"start_time", started},
      {"end_time", iso_now()},
  };
  auto index = folder->write_index(static_cast<int64_t>(ctx.plan->num_items()), attrs);
  if (!index.is_ok()) {
    print_error(index.status());
    return exit_code_for(index.status());
  }
  const double rate = summary.seconds > 0 ? static_cast<double>(summary.rendered) / summary.seconds : 0;
  std::printf("sdxl-batch: %lld items this run (%lld rendered, %lld failed) in %.1f s, %.2f images/s\n",
              static_cast<long long>(summary.items), static_cast<long long>(summary.rendered),
              static_cast<long long>(summary.failed), summary.seconds, rate);
  for (const auto& [rank, w] : summary.workers) {
    const double share =
        summary.items ? 100.0 * static_cast<double>(w.rendered + w.failed) / summary.items : 0;
    std::printf("  rank %d: %lld images (%.0f%%), %lld failed, busy %.1f s\n", rank,
                static_cast<long long>(w.rendered), share, static_cast<long long>(w.failed), w.busy_s);
  }
  for (const auto& [rank, err] : summary.fatal) std::printf("  rank %d stopped: %s\n", rank, err.c_str());
  std::printf("dataset: %s (%lld ok, %lld failed, %lld missing of %lld)\n", index->path.c_str(),
              static_cast<long long>(index->ok), static_cast<long long>(index->failed),
              static_cast<long long>(index->missing), static_cast<long long>(index->total_items));
  if (index->failed > 0) {
    // The failures with their reasons (the index keeps all of them; `sdxl-batch inspect` lists them too).
    auto reader = DatasetReader::open(ctx.job.output);
    if (reader.is_ok()) {
      const auto& failed = reader->summary().failed_items;
      const size_t show = std::min<size_t>(failed.size(), 20);
      for (size_t k = 0; k < show; ++k)
        std::printf("  failed item %lld: %s\n", static_cast<long long>(failed[k].first),
                    failed[k].second.c_str());
      if (failed.size() > show)
        std::printf("  ... and %zu more (sdxl-batch inspect %s)\n", failed.size() - show,
                    ctx.job.output.c_str());
    }
  }
  if (index->missing > 0) {
    if (!summary.fatal.empty()) {
      print_error(Status(StatusCode::kInternal, summary.fatal.begin()->second));
      return kExitModelOrIo;
    }
    return kExitInternal;
  }
  return index->failed > 0 ? kExitItemsFailed : kExitOk;
}

}  // namespace

int run_job_on_rank(Comm& comm, const RunOptions& options) {
  const bool root = comm.rank() == 0;
  const std::string started = iso_now();
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
  auto ctx = make_run_context(std::move(*job), options, run_id);
  if (!ctx.is_ok()) {
    if (root) print_error(ctx.status());
    return exit_code_for(ctx.status());
  }

  auto placement = node_placement(comm);
  if (!placement.is_ok()) {
    print_error(placement.status());
    return kExitInternal;
  }
  ctx->gpu_slot = placement->slot;
  ctx->workers_on_node = placement->workers_on_node;

  Prepared prep;
  Status prep_status;
  if (root) {
    auto p = prepare_output(*ctx);
    if (p.is_ok()) prep = std::move(*p);
    prep_status = p.status();
  }
  st = share_from_root(comm, prep_status);
  if (!st.is_ok()) {
    if (root) print_error(st);
    return exit_code_for(st);
  }

  // Phase 1: text embeddings, by the workers, into the shared cache.
  const auto te = std::chrono::steady_clock::now();
  Status enc = root ? Status::ok() : run_encode_phase(comm, *ctx);
  st = share_all(comm, enc);
  if (!st.is_ok()) {
    if (root) print_error(st);
    return exit_code_for(st);
  }
  if (root && !options.quiet)
    std::fprintf(stderr, "encode: done in %.1f s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - te).count());
  if (options.encode_only) {
    if (root) std::printf("embeddings: %s\n", ctx->job.embedding_cache.c_str());
    return kExitOk;
  }

  // Phase 2: render.
  if (!root) {
    Status w = run_render_worker(comm, *ctx);
    return w.is_ok() ? kExitOk : exit_code_for(w);
  }
  auto summary = run_coordinator(comm, *ctx, prep.pending);
  if (!summary.is_ok()) {
    print_error(summary.status());
    return exit_code_for(summary.status());
  }
  return finish_on_root(*ctx, prep, *summary, started);
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
