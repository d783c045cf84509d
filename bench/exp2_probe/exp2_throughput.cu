// Probe (issue 16): the throughput of the MUFU unit's exp2, ex2.approx.ftz.f32 against ex2.approx.f16x2 (two
// results per instruction), in results per SM per clock at the GPU's top clock. At head width 64 flash
// attention needs one exp2 per 256 tensor-core FLOPs, so this rate bounds it. Built and run by
// bench/exp2_probe/fmha_variants.sh.
#include <cuda_fp16.h>
#include <cstdint>
#include <cstdio>
constexpr int kIters = 4096, kChains = 8;
__global__ void f32(float* out, float seed) {
  float v[kChains];
  for (int c = 0; c < kChains; ++c) v[c] = seed * (threadIdx.x + c) * 1e-7f - 1.f;
  for (int i = 0; i < kIters; ++i)
#pragma unroll
    for (int c = 0; c < kChains; ++c) asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(v[c]));
  float s = 0;
  for (int c = 0; c < kChains; ++c) s += v[c];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
__global__ void f16x2(float* out, float seed) {
  uint32_t v[kChains];
  for (int c = 0; c < kChains; ++c) {
    __half2 h = __floats2half2_rn(seed * (threadIdx.x + c) * 1e-7f - 1.f, -0.5f);
    v[c] = reinterpret_cast<uint32_t&>(h);
  }
  for (int i = 0; i < kIters; ++i)
#pragma unroll
    for (int c = 0; c < kChains; ++c) asm volatile("ex2.approx.f16x2 %0, %0;" : "+r"(v[c]));
  float s = 0;
  for (int c = 0; c < kChains; ++c) {
    float2 f = __half22float2(reinterpret_cast<__half2&>(v[c]));
    s += f.x + f.y;
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
int main() {
  int sms, clk;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, 0);
  float* out;
  cudaMalloc(&out, sms * 8 * 1024 * 4);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int k = 0; k < 2; ++k) {
    for (int rep = 0; rep < 2; ++rep) {
      cudaEventRecord(a);
      if (k == 0)
        f32<<<sms * 8, 256>>>(out, 1.f);
      else
        f16x2<<<sms * 8, 256>>>(out, 1.f);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      float ms;
      cudaEventElapsedTime(&ms, a, b);
      double results = double(sms) * 8 * 256 * kIters * kChains * (k ? 2 : 1);
      if (rep)
        printf("%s: %.3f ms, %.1f results/clk/SM at the max clock %d MHz (%.2f Tresults/s)\n",
               k ? "ex2.approx.f16x2" : "ex2.approx.ftz.f32", ms, results / (ms * 1e-3) / sms / (clk * 1e3),
               clk / 1000, results / (ms * 1e-3) / 1e12);
    }
  }
  return cudaGetLastError() != cudaSuccess;
}
