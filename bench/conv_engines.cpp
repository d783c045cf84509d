// Probe (issue 16): the UNet's fp16 3x3 convolutions (channels-last) in PyTorch's at::conv2d (cuDNN, its
// heuristics' first engine) against the engine configurations cuDNN's frontend lists for the same
// convolution under heuristics modes A and B: the time of each, per shape and weighted by the shape's count
// in one UNet call. Prints one line per shape and the totals; no files.
//   conv_engines [BATCH=2] [PLANS=8]
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
  int64_t c, k, hw, stride, count;
};

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 2;
  const int64_t max_plans = argc > 2 ? std::atoll(argv[2]) : 8;
  fe::cudnn_dlhandle = sdxlb::bench::open_cudnn();
  if (fe::cudnn_dlhandle == nullptr) return 1;
  at::globalContext().setBenchmarkCuDNN(false);
  at::globalContext().setDeterministicCuDNN(true);
  (void)at::matmul(at::ones({8, 8}, at::kCUDA), at::ones({8, 8}, at::kCUDA));
  const std::vector<Shape> shapes = {
      {320, 320, 128, 1, 7},  {320, 320, 128, 2, 1},  {320, 640, 64, 1, 1},    {640, 640, 64, 1, 6},
      {640, 640, 64, 2, 1},   {640, 1280, 32, 1, 1},  {1280, 1280, 32, 1, 10}, {2560, 1280, 32, 1, 2},
      {1920, 1280, 32, 1, 1}, {1280, 1280, 64, 1, 1}, {1920, 640, 64, 1, 1},   {1280, 640, 64, 1, 1},
      {960, 640, 64, 1, 1},   {640, 640, 128, 1, 1},  {960, 320, 128, 1, 1},   {640, 320, 128, 1, 2}};
  cudnnHandle_t handle = at::native::getCudnnHandle();
  fe::detail::set_stream(handle, c10::cuda::getCurrentCUDAStream().stream());
  double total_torch = 0, total_a0 = 0, total_b0 = 0, total_best = 0;
  std::printf("batch %ld; us per call: shape | count | at::conv2d | A[0] | B[0] | best (which) | plans A/B\n",
              static_cast<long>(n));
  for (const Shape& sh : shapes) {
    const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
    const at::Tensor x = at::randn({n, sh.c, sh.hw, sh.hw}, opts).contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor w =
        (at::randn({sh.k, sh.c, 3, 3}, opts) / 30).contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor want = at::conv2d(x, w, {}, {sh.stride, sh.stride}, {1, 1});
    const double t_torch = sdxlb::bench::median_call_us(
        [&] {
          (void)at::conv2d(x, w, {}, {sh.stride, sh.stride}, {1, 1});
        },
        5);
    const int64_t ho = want.size(2), wo = want.size(3);
    at::Tensor y = at::empty_like(want);
    double best = 1e30, a0 = 0, b0 = 0;
    std::string best_name;
    int counts[2] = {0, 0};
    for (int mode = 0; mode < 2; ++mode) {
      auto g = std::make_shared<fe::graph::Graph>();
      g->set_io_data_type(fe::DataType_t::HALF)
          .set_intermediate_data_type(fe::DataType_t::FLOAT)
          .set_compute_data_type(fe::DataType_t::FLOAT);
      auto X = g->tensor(fe::graph::Tensor_attributes()
                             .set_name("x")
                             .set_dim({n, sh.c, sh.hw, sh.hw})
                             .set_stride({sh.c * sh.hw * sh.hw, 1, sh.hw * sh.c, sh.c}));
      auto W = g->tensor(fe::graph::Tensor_attributes()
                             .set_name("w")
                             .set_dim({sh.k, sh.c, 3, 3})
                             .set_stride({sh.c * 9, 1, 3 * sh.c, sh.c}));
      auto Y = g->conv_fprop(X, W,
                             fe::graph::Conv_fprop_attributes()
                                 .set_padding({1, 1})
                                 .set_stride({sh.stride, sh.stride})
                                 .set_dilation({1, 1}));
      Y->set_output(true).set_dim({n, sh.k, ho, wo}).set_stride({sh.k * ho * wo, 1, wo * sh.k, sh.k});
      if (!g->validate().is_good() || !g->build_operation_graph(handle).is_good() ||
          !g->create_execution_plans({mode == 0 ? fe::HeurMode_t::A : fe::HeurMode_t::B}).is_good()) {
        std::printf("  mode %c: no plans\n", mode == 0 ? 'A' : 'B');
        continue;
      }
      (void)g->check_support(handle);
      const int64_t count = g->get_execution_plan_count();
      int tried = 0;
      for (int64_t i = 0; i < count && tried < max_plans; ++i) {
        std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*> pack = {
            {X, x.data_ptr()}, {W, w.data_ptr()}, {Y, y.data_ptr()}};
        const sdxlb::bench::PlanRun run = sdxlb::bench::run_plan(*g, handle, i, pack, 5);
        if (!run.ran) continue;
        const double diff = (y.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<double>();
        if (tried == 0) (mode == 0 ? a0 : b0) = run.us;
        if (run.us < best && diff < 0.05) {
          best = run.us;
          best_name = std::string(mode == 0 ? "A" : "B") + std::to_string(i) + " " + run.name;
        }
        std::printf("    %c%ld %8.1f us  ws %ld  diff %.3g  %s\n", mode == 0 ? 'A' : 'B',
                    static_cast<long>(i), run.us, static_cast<long>(run.workspace), diff, run.name.c_str());
        ++tried;
      }
      counts[mode] = static_cast<int>(count);
    }
    std::printf("%ld->%ld @%ld s%ld | %ld | %.1f | %.1f | %.1f | %.1f (%s) | %d/%d\n",
                static_cast<long>(sh.c), static_cast<long>(sh.k), static_cast<long>(sh.hw),
                static_cast<long>(sh.stride), static_cast<long>(sh.count), t_torch, a0, b0, best,
                best_name.c_str(), counts[0], counts[1]);
    std::fflush(stdout);
    total_torch += sh.count * t_torch;
    total_a0 += sh.count * a0;
    total_b0 += sh.count * b0;
    total_best += sh.count * std::min(best, t_torch);
  }
  std::printf("per UNet call (us): at::conv2d %.0f, A[0] %.0f, B[0] %.0f, best of all %.0f\n", total_torch,
              total_a0, total_b0, total_best);
  return 0;
}
