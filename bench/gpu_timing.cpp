#include "bench/gpu_timing.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/profiler_kineto.h>

namespace sdxlb::bench {

double median_seconds(const std::function<void()>& fn, int iters) {
  std::vector<double> times;
  for (int i = 0; i < iters + 3; ++i) {
    c10::cuda::device_synchronize();
    auto t0 = std::chrono::steady_clock::now();
    fn();
    c10::cuda::device_synchronize();
    if (i >= 3) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// GPU microseconds per kernel name for one call of fn (averaged over `calls` calls), and the kernel count.
nlohmann::json profile_kernels(const std::function<void()>& fn, int calls) {
  namespace prof = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<ActivityType> activities{ActivityType::CPU, ActivityType::CUDA};
  fn();
  c10::cuda::device_synchronize();
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  for (int i = 0; i < calls; ++i) fn();
  c10::cuda::device_synchronize();
  auto result = prof::disableProfiler();
  std::map<std::string, std::pair<double, int>> by_name;
  std::map<std::string, std::vector<double>> launches;  // each launch's µs in the order they ran, all calls
  std::vector<const torch::autograd::profiler::KinetoEvent*> gpu;
  for (const auto& e : result->events())
    if (e.deviceType() == c10::DeviceType::CUDA) gpu.push_back(&e);
  std::sort(gpu.begin(), gpu.end(), [](const auto* a, const auto* b) { return a->startNs() < b->startNs(); });
  double total_us = 0;
  for (const auto* e : gpu) {
    const double us = static_cast<double>(e->durationNs()) / 1e3 / calls;
    const std::string name = e->name().substr(0, 160);
    auto& slot = by_name[name];
    slot.first += us;
    slot.second += 1;
    total_us += us;
    launches[name].push_back(static_cast<double>(e->durationNs()) / 1e3);
  }
  std::vector<std::pair<double, std::string>> order;
  for (const auto& [name, v] : by_name) order.push_back({v.first, name});
  std::sort(order.rbegin(), order.rend());
  nlohmann::json kernels = nlohmann::json::array();
  std::map<std::string, size_t> index;
  for (const auto& [us, name] : order) {
    index[name] = kernels.size();
    kernels.push_back({{"name", name},
                       {"us_per_call", us},
                       {"launches_per_call", by_name[name].second / calls},
                       {"launch_us", launches[name]}});
  }
  // The first call's launches in the order they ran: [kernel index, start µs from the call's first launch,
  // µs], and the GPU's idle time between them (where a launch starts after the one before it ended), to see
  // which boundaries the gaps between kernels sit at.
  const size_t per_call = calls > 0 ? gpu.size() / static_cast<size_t>(calls) : 0;
  nlohmann::json first_call = nlohmann::json::array();
  double idle_us = 0;
  for (size_t i = 0; i < per_call; ++i) {
    const auto* e = gpu[i];
    const double start = static_cast<double>(e->startNs() - gpu[0]->startNs()) / 1e3;
    first_call.push_back(
        {index[e->name().substr(0, 160)], start, static_cast<double>(e->durationNs()) / 1e3});
    if (i > 0) {
      const auto* prev = gpu[i - 1];
      const int64_t gap =
          static_cast<int64_t>(e->startNs()) - static_cast<int64_t>(prev->startNs() + prev->durationNs());
      if (gap > 0) idle_us += static_cast<double>(gap) / 1e3;
    }
  }
  return {{"gpu_us_per_call", total_us},
          {"first_call_idle_us", idle_us},
          {"first_call", first_call},
          {"kernels", kernels}};
}

}  // namespace sdxlb::bench
