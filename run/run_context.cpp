#include "run/run_context.h"

#include "common/utc_time.h"

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
  ctx.batch_size = job.batch_size ? *job.batch_size : (on_gpu ? 8 : 1);
  ctx.job = std::move(job);
  return ctx;
}

std::string utc_run_id() {
  return utc_now("%Y%m%dT%H%M%SZ");
}

}  // namespace sdxlb
