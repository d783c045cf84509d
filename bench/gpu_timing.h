// Timing helpers of the GPU benchmarks (bench/unet_parity, bench/vae_timing): wall time of a GPU call and the
// GPU time per kernel name of one (Kineto).
#pragma once

#include <functional>

#include <nlohmann/json.hpp>

namespace sdxlb::bench {

/// Median wall seconds of fn() over `iters` calls after 3 warm-up calls, the device synchronised around each.
double median_seconds(const std::function<void()>& fn, int iters);

/// GPU microseconds per kernel name for one call of fn (averaged over `calls` calls, after one unprofiled
/// call), with the launches per call: {"gpu_us_per_call": total, "kernels": [{name, us_per_call,
/// launches_per_call, launch_us}, ...]} from the most time to the least; launch_us lists every launch's
/// microseconds in the order they ran (all `calls` calls), to see which shapes of a kernel cost the time.
/// Also the first call's launches in order, "first_call": [[kernel index, start µs, µs], ...], and
/// "first_call_idle_us": the GPU's time between them with no kernel running (the gaps a CUDA graph leaves
/// when fn replays one; for an eager fn they include the CPU's launches).
nlohmann::json profile_kernels(const std::function<void()>& fn, int calls);

}  // namespace sdxlb::bench
