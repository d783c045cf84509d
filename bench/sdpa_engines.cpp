// Probe (issue 16): the UNet's fp16 self-attention (head width 64; 20 heads over 1024 tokens and 10 heads
// over 4096 at 1024x1024, per sample) in PyTorch's at::scaled_dot_product_attention (what the product runs:
// cuDNN's flash attention, its heuristics' first engine) against every engine configuration cuDNN's frontend
// lists for the same graph under heuristics modes A, B and the fallback list: the time of each, its largest
// difference from PyTorch's output, and the total per UNet call weighted by each shape's count. The query,
// key and value are column slices of one fused projection, as the product lays them out. Prints one line per
// configuration and the totals; no files.
//   sdpa_engines [K=1] [PLANS=12]   (K images per UNet call: 2K samples with CFG)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cudnn/Handle.h>
#include <c10/cuda/CUDAStream.h>
#include <cudnn_frontend.h>

#include "bench/engine_probe.h"

namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}
namespace fe = cudnn_frontend;

namespace {

struct Shape {
  int64_t heads, tokens, count;  // count: per UNet call
};

}  // namespace

int main(int argc, char** argv) {
  const int64_t k = argc > 1 ? std::atoll(argv[1]) : 1;
  const int64_t max_plans = argc > 2 ? std::atoll(argv[2]) : 12;
  fe::cudnn_dlhandle = sdxlb::bench::open_cudnn();
  if (fe::cudnn_dlhandle == nullptr) return 1;
  (void)at::matmul(at::ones({8, 8}, at::kCUDA), at::ones({8, 8}, at::kCUDA));
  const int64_t b = 2 * k, d = 64;
  const std::vector<Shape> shapes = {{20, 1024, 60}, {10, 4096, 10}};
  cudnnHandle_t handle = at::native::getCudnnHandle();
  fe::detail::set_stream(handle, c10::cuda::getCurrentCUDAStream().stream());
  const float scale = 0.125f;  // 1/sqrt(64)
  double total_torch = 0, total_a0 = 0, total_best = 0;
  std::printf("%ld samples; us per call: heads x tokens | count | PyTorch | A[0] | best (which)\n",
              static_cast<long>(b));
  for (const Shape& sh : shapes) {
    const int64_t n = sh.tokens, hd = sh.heads * d;
    const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
    const at::Tensor qkv = at::randn({b, n, 3 * hd}, opts);
    auto slice = [&](int i) { return qkv.narrow(2, i * hd, hd).view({b, n, sh.heads, d}).transpose(1, 2); };
    const at::Tensor q = slice(0), kk = slice(1), v = slice(2);
    const at::Tensor want = at::scaled_dot_product_attention(q, kk, v);
    const double t_torch =
        sdxlb::bench::median_call_us([&] { (void)at::scaled_dot_product_attention(q, kk, v); }, 7);
    at::Tensor o = at::empty({b, n, sh.heads, d}, opts);
    double best = 1e30, a0 = 0;
    std::string best_name;
    const fe::HeurMode_t modes[] = {fe::HeurMode_t::A, fe::HeurMode_t::B, fe::HeurMode_t::FALLBACK};
    const char* mode_names = "ABF";
    for (int mode = 0; mode < 3; ++mode) {
      auto g = std::make_shared<fe::graph::Graph>();
      g->set_io_data_type(fe::DataType_t::HALF)
          .set_intermediate_data_type(fe::DataType_t::FLOAT)
          .set_compute_data_type(fe::DataType_t::FLOAT);
      auto tensor = [&](const char* name, const at::Tensor& t) {
        return g->tensor(fe::graph::Tensor_attributes()
                             .set_name(name)
                             .set_dim(t.sizes().vec())
                             .set_stride(t.strides().vec()));
      };
      auto Q = tensor("Q", q), K = tensor("K", kk), V = tensor("V", v);
      auto [O, stats] = g->sdpa(Q, K, V,
                                fe::graph::SDPA_attributes()
                                    .set_name("sdpa")
                                    .set_generate_stats(false)
                                    .set_causal_mask(false)
                                    .set_attn_scale(scale));
      (void)stats;
      O->set_output(true).set_dim({b, sh.heads, n, d}).set_stride({n * hd, d, hd, 1});
      if (!g->validate().is_good() || !g->build_operation_graph(handle).is_good() ||
          !g->create_execution_plans({modes[mode]}).is_good()) {
        std::printf("  mode %c: no plans\n", mode_names[mode]);
        continue;
      }
      (void)g->check_support(handle);
      const int64_t count = g->get_execution_plan_count();
      int tried = 0;
      for (int64_t i = 0; i < count && tried < max_plans; ++i) {
        std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*> pack = {
            {Q, q.data_ptr()}, {K, kk.data_ptr()}, {V, v.data_ptr()}, {O, o.data_ptr()}};
        const sdxlb::bench::PlanRun run = sdxlb::bench::run_plan(*g, handle, i, pack, 7);
        if (!run.ran) continue;
        const at::Tensor got = o.transpose(1, 2);
        const double diff = (got.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<double>();
        const bool same = at::equal(got.contiguous(), want.contiguous());
        if (mode == 0 && tried == 0) a0 = run.us;
        if (run.us < best && diff < 0.01) {
          best = run.us;
          best_name = std::string(1, mode_names[mode]) + std::to_string(i) + " " + run.name;
        }
        std::printf("    %c%ld %8.1f us  ws %ld  diff %.3g%s  %s\n", mode_names[mode], static_cast<long>(i),
                    run.us, static_cast<long>(run.workspace), diff, same ? " (PyTorch's bits)" : "",
                    run.name.c_str());
        std::fflush(stdout);
        ++tried;
      }
      std::printf("  mode %c: %ld plans\n", mode_names[mode], static_cast<long>(count));
    }
    std::printf("%ldx%ld | %ld | %.1f | %.1f | %.1f (%s)\n", static_cast<long>(sh.heads),
                static_cast<long>(n), static_cast<long>(sh.count), t_torch, a0, best, best_name.c_str());
    std::fflush(stdout);
    total_torch += sh.count * t_torch;
    total_a0 += sh.count * a0;
    total_best += sh.count * std::min(best, t_torch);
  }
  std::printf("per UNet call (us): PyTorch %.0f, A[0] %.0f, best of all %.0f\n", total_torch, total_a0,
              total_best);
  return 0;
}
