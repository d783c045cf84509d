#include "pipeline/samplers/make_sampler.h"

#include "pipeline/samplers/ddim_sampler.h"
#include "pipeline/samplers/dpm_solver_sampler.h"
#include "pipeline/samplers/euler_ancestral_sampler.h"
#include "pipeline/samplers/euler_sampler.h"
#include "pipeline/samplers/schedule.h"
#include "pipeline/samplers/unipc_sampler.h"

namespace sdxlb {

Status check_sampler(const SchedulerConfig& config) {
  const auto sampler = config.sampler();
  if ((sampler == SamplerName::kDpmpp2m || sampler == SamplerName::kDpmpp2mSde) &&
      (config.solver_order < 1 || config.solver_order > 2))
    return unimplemented(config.source + ": DPMSolverMultistepScheduler with \"solver_order\": " +
                         std::to_string(config.solver_order) +
                         " is not supported; DPM-Solver++ runs solver_order 1 or 2 here (dpmpp_2m: 2)");
  if (sampler == SamplerName::kUniPC && (config.solver_order < 1 || config.solver_order > 2))
    return unimplemented(
        config.source +
        ": UniPCMultistepScheduler with \"solver_order\": " + std::to_string(config.solver_order) +
        " is not supported; UniPC runs solver_order 1 or 2 here (unipc: the folder's, default 2)");
  return Status::ok();
}

StatusOr<std::unique_ptr<Sampler>> make_sampler(const SchedulerConfig& config, int64_t steps) {
  SDXLB_RETURN_IF_ERROR(check_sampler(config));
  SDXLB_ASSIGN_OR_RETURN(const Schedule schedule, make_schedule(config, steps));
  switch (config.sampler()) {
    case SamplerName::kEuler:
      return EulerSampler::create(config, schedule);
    case SamplerName::kEulerAncestral:
      return EulerAncestralSampler::create(config, schedule);
    case SamplerName::kDpmpp2m:
    case SamplerName::kDpmpp2mSde:
      return DpmSolverSampler::create(config, schedule, config.sampler() == SamplerName::kDpmpp2mSde);
    case SamplerName::kDdim:
      return DdimSampler::create(config, schedule);
    case SamplerName::kUniPC:
      return UniPcSampler::create(config, schedule);
  }
  return internal_error("make_sampler: unknown sampler");
}

}  // namespace sdxlb
