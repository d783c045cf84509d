// Probe (issue 16): the UNet's fp16 linears (y = x Wᵀ + b, fp32 accumulation) in PyTorch's at::linear
// against every algorithm cuBLASLt's heuristics list for the same product (with its bias epilogue where the
// layer has a bias): the time of each, in a CUDA graph as the product runs them (no host time), per shape and
// weighted by the shape's count in one UNet call, and the configuration of the fastest (tile, stages,
// split-K, reduction scheme, swizzle, cluster). The GEMMs are the largest part of the call (15.5 of 29.7 ms
// on an H100, session 34) at about 80% of a dense fp16 GEMM's rate; this says how much of that another of
// cuBLASLt's own algorithms, fixed per shape, would give back. Prints one line per shape and the totals; no
// files. The feed-forward's projection runs in our GEGLU GEMM (not probed here).
//   gemm_algos [IMAGES_PER_CALL=1] [ALGOS=32]
// cuBLASLt is reached through the library LibTorch has loaded (no link-time dependency on its soname).
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <cublasLt.h>

#include "bench/call_timing.h"

namespace {

// The cuBLASLt entry points the probe calls, looked up in the process (LibTorch's libcublasLt).
struct Lt {
  decltype(&cublasLtMatmulDescCreate) desc_create;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set;
  decltype(&cublasLtMatrixLayoutCreate) layout_create;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic;
  decltype(&cublasLtMatmulAlgoConfigGetAttribute) config_get;
  decltype(&cublasLtMatmul) matmul;
};

template <class T>
bool find(void* lib, const char* name, T& fn) {
  fn = reinterpret_cast<T>(dlsym(lib, name));
  if (fn == nullptr) std::fprintf(stderr, "gemm_algos: %s not found in libcublasLt.so.13\n", name);
  return fn != nullptr;
}

bool load(Lt& lt) {
  void* lib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) lib = dlopen("libcublasLt.so.13", RTLD_NOW);
  if (lib == nullptr) {
    std::fprintf(stderr, "gemm_algos: libcublasLt.so.13: %s\n", dlerror());
    return false;
  }
  return find(lib, "cublasLtMatmulDescCreate", lt.desc_create) &&
         find(lib, "cublasLtMatmulDescDestroy", lt.desc_destroy) &&
         find(lib, "cublasLtMatmulDescSetAttribute", lt.desc_set) &&
         find(lib, "cublasLtMatrixLayoutCreate", lt.layout_create) &&
         find(lib, "cublasLtMatrixLayoutDestroy", lt.layout_destroy) &&
         find(lib, "cublasLtMatmulPreferenceCreate", lt.pref_create) &&
         find(lib, "cublasLtMatmulPreferenceDestroy", lt.pref_destroy) &&
         find(lib, "cublasLtMatmulPreferenceSetAttribute", lt.pref_set) &&
         find(lib, "cublasLtMatmulAlgoGetHeuristic", lt.heuristic) &&
         find(lib, "cublasLtMatmulAlgoConfigGetAttribute", lt.config_get) &&
         find(lib, "cublasLtMatmul", lt.matmul);
}

// One linear of the UNet: rows = images × 2 (guidance) × tokens, `count` of them per one-image call.
struct Shape {
  int64_t tokens, n, k, count;
  bool bias;
  const char* what;
};

// The algorithm's configuration, each attribute read in its own type (cublasLt.h: the id and split count
// int32, the inner and cluster shapes uint16, the rest uint32); a size that does not match is refused.
std::string config_of(const Lt& lt, const cublasLtMatmulAlgo_t& algo) {
  const auto get = [&](cublasLtMatmulAlgoConfigAttributes_t a, auto v) {
    size_t written = 0;
    lt.config_get(&algo, a, &v, sizeof(v), &written);
    return static_cast<long>(v);
  };
  char s[200];
  std::snprintf(
      s, sizeof(s),
      "id %ld tile %ld stages %ld splitk %ld reduction %ld swizzle %ld custom %ld cluster %ld inner %ld",
      get(CUBLASLT_ALGO_CONFIG_ID, int32_t{0}), get(CUBLASLT_ALGO_CONFIG_TILE_ID, uint32_t{0}),
      get(CUBLASLT_ALGO_CONFIG_STAGES_ID, uint32_t{0}), get(CUBLASLT_ALGO_CONFIG_SPLITK_NUM, int32_t{0}),
      get(CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, uint32_t{0}),
      get(CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, uint32_t{0}),
      get(CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, uint32_t{0}),
      get(CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, uint16_t{0}),
      get(CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, uint16_t{0}));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t images = argc > 1 ? std::atoll(argv[1]) : 1;
  const int max_algos = argc > 2 ? std::atoi(argv[2]) : 32;
  if (images < 1 || max_algos < 1) {
    std::fprintf(stderr, "usage: gemm_algos [IMAGES_PER_CALL >= 1] [ALGOS >= 1]\n");
    return 2;
  }
  if (!at::cuda::is_available()) {
    std::fprintf(stderr, "gemm_algos: no CUDA GPU here (it probes cuBLASLt on the GPU machine)\n");
    return 1;
  }
  (void)at::matmul(at::ones({8, 8}, at::kCUDA), at::ones({8, 8}, at::kCUDA));
  Lt lt{};
  if (!load(lt)) return 1;
  // SDXL base at 1024²: 10 transformer blocks over 4096 tokens of 640 channels (5 Transformer2D), 60 over
  // 1024 tokens of 1280 (6 Transformer2D); per block the fused QKV and the cross-attention's query (no bias),
  // the two attention outputs and the feed-forward's output (with bias); per Transformer2D proj_in and
  // proj_out (with bias).
  const std::vector<Shape> shapes = {{4096, 1920, 640, 10, false, "self-attention QKV"},
                                     {4096, 640, 640, 30, true, "attention out, proj"},
                                     {4096, 640, 640, 10, false, "cross-attention Q"},
                                     {4096, 640, 2560, 10, true, "feed-forward out"},
                                     {1024, 3840, 1280, 60, false, "self-attention QKV"},
                                     {1024, 1280, 1280, 132, true, "attention out, proj"},
                                     {1024, 1280, 1280, 60, false, "cross-attention Q"},
                                     {1024, 1280, 5120, 60, true, "feed-forward out"}};
  const cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  const size_t workspace_bytes = 32u << 20;
  const at::Tensor workspace = at::empty({static_cast<int64_t>(workspace_bytes)},
                                         at::TensorOptions().device(at::kCUDA).dtype(at::kByte));
  double total_torch = 0, total_first = 0, total_best = 0;
  at::manual_seed(0);
  for (const Shape& sh : shapes) {
    const int64_t m = images * 2 * sh.tokens;
    const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
    const at::Tensor x = at::randn({m, sh.k}, opts), w = at::randn({sh.n, sh.k}, opts) / 32,
                     b = at::randn({sh.n}, opts);
    at::Tensor y = at::empty({m, sh.n}, opts);
    const at::Tensor bias_or_none = sh.bias ? b : at::Tensor();
    const double torch_us =
        sdxlb::bench::median_graph_call_us([&] { (void)at::linear(x, w, bias_or_none); }, 20);
    const at::Tensor want = at::linear(x, w, bias_or_none);

    // Column-major: y (n × m) = Wᵀ-op (n × k, W stored k × n) · x (k × m), plus the bias per row n if any.
    cublasLtMatmulDesc_t desc = nullptr;
    lt.desc_create(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const cublasOperation_t t = CUBLAS_OP_T, nt = CUBLAS_OP_N;
    lt.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t));
    lt.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSB, &nt, sizeof(nt));
    if (sh.bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      lt.desc_set(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
      const void* bias = b.data_ptr();
      lt.desc_set(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias));
    }
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
    lt.layout_create(&la, CUDA_R_16F, sh.k, sh.n, sh.k);
    lt.layout_create(&lb, CUDA_R_16F, sh.k, m, sh.k);
    lt.layout_create(&lc, CUDA_R_16F, sh.n, m, sh.n);
    cublasLtMatmulPreference_t pref = nullptr;
    lt.pref_create(&pref);
    lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes));
    std::vector<cublasLtMatmulHeuristicResult_t> found(max_algos);
    int returned = 0;
    lt.heuristic(handle, desc, la, lb, lc, lc, pref, max_algos, found.data(), &returned);
    const float one = 1.f, zero = 0.f;
    double first_us = 0, best_us = 0, best_same = 0;
    std::string best_config;
    int best_index = -1;
    for (int i = 0; i < returned; ++i) {
      if (found[i].state != CUBLAS_STATUS_SUCCESS || found[i].workspaceSize > workspace_bytes) continue;
      const auto run = [&] {
        return lt.matmul(handle, desc, &one, w.data_ptr(), la, x.data_ptr(), lb, &zero, y.data_ptr(), lc,
                         y.data_ptr(), lc, &found[i].algo, workspace.data_ptr(), workspace_bytes,
                         c10::cuda::getCurrentCUDAStream().stream());
      };
      if (run() != CUBLAS_STATUS_SUCCESS) continue;
      const double us = sdxlb::bench::median_graph_call_us([&] { (void)run(); }, 20);
      // Another algorithm rounds differently; one that is wrong is not a candidate.
      const double err =
          ((y.to(at::kFloat) - want.to(at::kFloat)).abs().max() / want.to(at::kFloat).abs().max())
              .item<double>();
      if (err > 1e-2) {
        std::printf("  algorithm %d: relative difference %.3g from at::linear, skipped\n", i, err);
        continue;
      }
      if (i == 0) first_us = us;
      if (best_index < 0 || us < best_us) {
        best_us = us;
        best_index = i;
        best_config = config_of(lt, found[i].algo);
        best_same = y.eq(want).to(at::kDouble).mean().item<double>();
      }
    }
    // Where an algorithm did not run, the call keeps at::linear's time (and the line says so).
    if (first_us == 0) first_us = torch_us;
    if (best_index < 0) {
      best_us = torch_us;
      best_config = "none ran";
    }
    lt.pref_destroy(pref);
    lt.layout_destroy(la);
    lt.layout_destroy(lb);
    lt.layout_destroy(lc);
    lt.desc_destroy(desc);
    const double tflop = 2.0 * m * sh.n * sh.k / 1e12;
    std::printf(
        "%6ldx%5ldx%5ld x%3ld (%s): at::linear %7.1f us (%4.0f TFLOP/s), heuristic #0 %7.1f, best #%d of %d "
        "%7.1f us (%4.0f TFLOP/s, %.3f of at::linear's bits) [%s]\n",
        static_cast<long>(m), static_cast<long>(sh.n), static_cast<long>(sh.k), static_cast<long>(sh.count),
        sh.what, torch_us, tflop / (torch_us * 1e-6), first_us, best_index, returned, best_us,
        tflop / (best_us * 1e-6), best_same, best_config.c_str());
    total_torch += sh.count * torch_us;
    total_first += sh.count * first_us;
    total_best += sh.count * best_us;
  }
  std::printf(
      "per UNet call (%ld image(s)): at::linear %.2f ms, heuristic #0 %.2f ms, best per shape %.2f ms\n",
      static_cast<long>(images), total_torch / 1e3, total_first / 1e3, total_best / 1e3);
  return 0;
}
