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
  for (const auto& [us, name] : order)
    kernels.push_back({{"name", name},
                       {"us_per_call", us},
                       {"launches_per_call", by_name[name].second / calls},
                       {"launch_us", launches[name]}});
  return {{"gpu_us_per_call", total_us}, {"kernels", kernels}};
}

}  // namespace sdxlb::bench
