// What the cuDNN engine probes (bench/conv_engines, bench/sdpa_engines) share: the cuDNN library that cuDNN's
// frontend calls through when it loads it dynamically, and one engine configuration's run, timed
// (bench/call_timing.h). Header-only: each probe is one executable.
#pragma once

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <cudnn_frontend.h>

#include "bench/call_timing.h"

namespace sdxlb::bench {

/// libcudnn.so.9 (the one LibTorch has loaded, else loaded now), for cudnn_frontend::cudnn_dlhandle; null,
/// with dlerror()'s reason on stderr, where it cannot be loaded.
inline void* open_cudnn() {
  void* h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_NOLOAD);
  if (h == nullptr) h = dlopen("libcudnn.so.9", RTLD_NOW);
  if (h == nullptr) std::fprintf(stderr, "libcudnn.so.9: %s\n", dlerror());
  return h;
}

/// One engine configuration of a cuDNN frontend graph, run: its workspace bytes, its name and its time.
struct PlanRun {
  bool ran = false;  ///< false: the plan did not build or run (the rest is unset)
  int64_t workspace = 0;
  std::string name;
  double us = 0;  ///< median_call_us over `runs`
};

/// Builds plan `index` of `graph` (its execution plans created), runs it once on `pack` (the graph's tensors
/// and their device pointers; the outputs then hold its result) and times it.
inline PlanRun run_plan(
    cudnn_frontend::graph::Graph& graph, cudnnHandle_t handle, int64_t index,
    std::unordered_map<std::shared_ptr<cudnn_frontend::graph::Tensor_attributes>, void*>& pack, int runs) {
  PlanRun r;
  if (!graph.build_plan_at_index(handle, index).is_good()) return r;
  if (!graph.get_workspace_size_plan_at_index(index, r.workspace).is_good()) return r;
  const at::Tensor workspace =
      at::empty({std::max<int64_t>(r.workspace, 1)}, at::TensorOptions().device(at::kCUDA).dtype(at::kByte));
  if (!graph.execute_plan_at_index(handle, pack, workspace.data_ptr(), index).is_good()) return r;
  cudaDeviceSynchronize();
  r.us = median_call_us([&] { (void)graph.execute_plan_at_index(handle, pack, workspace.data_ptr(), index); },
                        runs);
  (void)graph.get_plan_name_at_index(index, r.name);
  r.ran = true;
  return r;
}

}  // namespace sdxlb::bench
