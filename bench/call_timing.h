// The time of a short GPU call on the current CUDA stream, for the kernel probes (bench/conv_engines,
// bench/sdpa_engines, bench/gemm_algos). Header-only: each probe is one executable.
#pragma once

#include <algorithm>
#include <vector>

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

namespace sdxlb::bench {

/// Microseconds per call of f: the median of `runs` timings of 10 calls each (CUDA events on the current
/// stream), after 3 warm-up calls.
template <class F>
double median_call_us(F&& f, int runs) {
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  const cudaStream_t s = c10::cuda::getCurrentCUDAStream().stream();
  std::vector<double> times;
  for (int r = 0; r < runs; ++r) {
    cudaEventRecord(a, s);
    for (int i = 0; i < 10; ++i) f();
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, a, b);
    times.push_back(ms * 100.0);
  }
  std::sort(times.begin(), times.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return times[times.size() / 2];
}

/// The same with f's 10 calls captured in a CUDA graph and replayed, so that no host time enters: the time a
/// call takes in the product's UNet graph. Eager, a kernel shorter than its launch's host work (cuBLAS's
/// dispatch, about 15 µs) is timed at that work's rate. f must capture: it launches on the current stream.
template <class F>
double median_graph_call_us(F&& f, int runs) {
  f();  // handles and workspaces made outside the capture
  at::cuda::CUDAGraph graph;
  {
    const c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool());
    graph.capture_begin();
    for (int i = 0; i < 10; ++i) f();
    graph.capture_end();
  }
  return median_call_us([&] { graph.replay(); }, runs) / 10;
}

}  // namespace sdxlb::bench
