// make_sampler: the Sampler for a resolved scheduler config (scheduler_config.h) and a step count.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "pipeline/samplers/sampler.h"
#include "pipeline/samplers/scheduler_config.h"

namespace sdxlb {

/// Whether a sampler here runs `config`. Errors: kUnimplemented naming the file, the key and what is
/// supported (UniPC's solver_order 3, ...).
Status check_sampler(const SchedulerConfig& config);

/// The sampler of `config` (config.sampler()) for `steps` steps: its schedule (make_schedule) and its
/// per-step coefficients. Errors: those of make_schedule (kInvalidArgument for a step count out of range,
/// naming it) and kUnimplemented for a config this port does not run (naming the key).
StatusOr<std::unique_ptr<Sampler>> make_sampler(const SchedulerConfig& config, int64_t steps);

}  // namespace sdxlb
