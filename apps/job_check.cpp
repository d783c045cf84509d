#include "apps/job_check.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/start_checks.h"
#include "common/exit_codes.h"
#include "coordinator/dataset_bookkeeping.h"
#include "jobs/job_spec.h"
#include "run/run_context.h"
#include "store/embedding_cache.h"
#include "worker/render_setup.h"

namespace sdxlb {
namespace {

std::string count(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

int check_job(const std::string& job_file, const CheckOptions& check) {
  auto job = JobSpec::load_file(job_file);
  if (!job.is_ok()) return report_error(job.status());
  const JobSpec::Device device = job->device;
  // A login node has no GPU; the job's GPU nodes do (device cuda), or are meant to (auto).
  const bool here = gpu_present();
  const bool for_gpu = here || device != JobSpec::Device::kCpu;
  RunOptions options;
  options.job_file = job_file;
  auto ctx = make_run_context(std::move(*job), options, "", for_gpu);
  if (!ctx.is_ok()) return report_error(ctx.status());
  auto setup = resolve_render_setup(*ctx, for_gpu);
  if (!setup.is_ok()) return report_error(setup.status());
  const JobSpec& j = ctx->job;
  const JobPlan& plan = *ctx->plan;
  std::printf("job file: %s: valid\n", j.job_file.c_str());
  std::printf("prompts:  %s from %s, %s each: %s\n", count(plan.num_prompts(), "prompt", "prompts").c_str(),
              j.prompt_source.from_file ? j.prompt_source.file.c_str() : "the job file",
              count(plan.images_per_prompt(), "image", "images").c_str(),
              count(plan.num_items(), "item", "items").c_str());

  if (Status memory = check_cpu_memory(*ctx, *setup); !memory.is_ok()) return report_error(memory);
  auto id = read_model_identity(*ctx, *setup);
  if (!id.is_ok()) return report_error(id.status());
  ctx->model = *id;
  const auto sampler = nlohmann::json::parse(id->scheduler, nullptr, /*allow_exceptions=*/false);
  std::printf("model:    %s: configs and weight headers read (model id %.12s)\n", j.model.c_str(),
              id->model_id.c_str());
  std::printf("render:   %lldx%lld, %lld steps, guidance %g, %s, dtype %s on %s, %s per batch\n",
              static_cast<long long>(j.width), static_cast<long long>(j.height),
              static_cast<long long>(j.steps), j.guidance,
              sampler.is_object() ? sampler.value("_class_name", std::string("?")).c_str() : "?",
              dtype_name(j.dtype), for_gpu ? "a GPU" : "the CPU",
              count(static_cast<uint64_t>(ctx->batch_size), "item", "items").c_str());

  // The texts the encode phase would compute (run's list, run/run_context.h): those not in the embedding
  // cache yet (read where it exists; EmbeddingCache::open would create it).
  const std::vector<std::string> needed = texts_to_encode(*ctx);
  const size_t texts = needed.size();
  size_t cached = 0;
  std::error_code ec;
  if (std::filesystem::is_directory(j.embedding_cache + "/" + id->text_encoder_id, ec)) {
    auto cache = EmbeddingCache::open(j.embedding_cache, id->text_encoder_id);
    if (!cache.is_ok()) return report_error(cache.status());
    for (const std::string& t : needed) cached += cache->contains(t) ? 1 : 0;
  }
  std::printf("encode:   %zu of %s in the embedding cache (%s); the encode phase computes %zu\n", cached,
              count(texts, "distinct text", "distinct texts").c_str(), j.embedding_cache.c_str(),
              texts - cached);

  // The memory plan a worker on the nodes' GPU would choose (run: BatchRenderer::apply_memory_plan); host
  // RAM is the nodes', unknown here, so the placements' RAM need is not checked.
  if (check.gpu_gib && for_gpu) {
    const GpuBudgetInput gpu{*check.gpu_gib, std::max(1, check.workers_per_gpu), j.memory.max_gpu_gib,
                             std::nullopt};
    auto memory = choose_job_memory_plan(j, setup->decoder, gpu);
    if (!memory.is_ok()) return report_error(memory.status());
    const std::string shared =
        check.workers_per_gpu > 1 ? " shared by " + std::to_string(check.workers_per_gpu) + " workers" : "";
    std::printf("memory:   on a %g GiB GPU%s: %s\n", *check.gpu_gib, shared.c_str(),
                memory->describe().c_str());
  }

  auto out = preview_output(*ctx);
  if (!out.is_ok()) return report_error(out.status());
  const long long items = static_cast<long long>(plan.num_items());
  if (!out->resumes) {
    std::printf("output:   %s: %s; the run renders all %lld items\n", j.output.c_str(),
                out->exists ? "holds no job yet" : "will be created", items);
  } else {
    const std::string failed =
        out->failed
            ? " (" + count(static_cast<uint64_t>(out->failed), "failed item", "failed items") + " among them)"
            : "";
    std::printf("output:   %s: this job's folder, resumed: %lld of %lld items done, %lld to render%s\n",
                j.output.c_str(), static_cast<long long>(out->done), items,
                items - static_cast<long long>(out->done), failed.c_str());
  }
  if (!here && for_gpu)
    std::printf(
        "note:     this machine has no GPU: checked as on a GPU node; FP8 support%s checked when the "
        "job starts there\n",
        check.gpu_gib ? " is" : " and the memory plan (or give --gpu-gib) are");
  if (check.gpu_gib && !for_gpu)
    std::printf("note:     --gpu-gib ignored: this job runs on the CPU (device: cpu)\n");
  std::printf("ok: `sdxl-batch run %s` would start\n", job_file.c_str());
  return kExitOk;
}

}  // namespace sdxlb
