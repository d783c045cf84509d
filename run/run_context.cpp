#include "run/run_context.h"

#include <algorithm>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "pipeline/runtime/memory_plan.h"

namespace sdxlb {

StatusOr<RunContext> make_run_context(JobSpec job, const RunOptions& options, const std::string& run_id,
                                      bool gpu_present) {
  RunContext ctx;
  ctx.options = options;
  ctx.run_id = run_id;
  SDXLB_ASSIGN_OR_RETURN(auto plan, JobPlan::build(job));
  ctx.plan = std::make_shared<const JobPlan>(std::move(plan));
  const bool on_gpu =
      job.device == JobSpec::Device::kCuda || (job.device == JobSpec::Device::kAuto && gpu_present);
  // Auto: the memory plan's on a GPU, one UNet call's images on the CPU.
  const int64_t per_call = std::max<int64_t>(1, job.images_per_unet_call);
  ctx.batch_size = job.batch_size ? *job.batch_size : (on_gpu ? auto_batch_size(per_call) : per_call);
  ctx.job = std::move(job);
  return ctx;
}

std::string utc_run_id() {
  // Milliseconds too: a job resubmitted within the same second (a retry loop, a quick requeue after a
  // crash) got the same run id, and its first segment name collided with the crashed run's ("already
  // exists; published segments are never replaced").
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  const size_t n = std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, "%03dZ", static_cast<int>(ms));
  return buf;
}

std::vector<std::string> texts_to_encode(const RunContext& ctx) {
  std::vector<std::string> out;
  const UniqueTexts& t = ctx.plan->texts();
  out.reserve(t.size() + 1);
  bool has_empty = false;
  for (uint32_t i = 0; i < t.size(); ++i) {
    out.emplace_back(t.text(i));
    has_empty = has_empty || out.back().empty();
  }
  if (!ctx.model.force_zeros_for_empty_prompt && !has_empty) out.emplace_back("");
  return out;
}

}  // namespace sdxlb
