// Which of the GPU's products depend on a row's place in a UNet call, at the UNet's shapes. Session 18
// measured images at the second place of a two-image call (images_per_unet_call: 2) whose bits differed from
// the same images at the first place, on the H200, in fp16 and in FP8. The product no longer depends on the
// kernels for this (worker/call_layout.h fixes each image's place); this test finds the kernels that do it.
// It moves the last image of a call to the front and compares its rows, for the products as the UNet runs
// them (use_reproducible_gpu_numerics() first): the fp16 linears (at::linear, cuBLAS), the FP8 ones
// (fp8_linear) and the fp16 convolutions (Conv2d: cuDNN for 3x3, and for the 1x1 shortcuts cuDNN or a GEMM),
// at each k. With SDXLB_INVARIANT_KERNELS=1 (gpu_numerics.h) every product must keep its bits; with the
// libraries' own choices (the default) the test reports the products that do not, and skips. GPU only.
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "pipeline/nn/fp8.h"
#include "pipeline/nn/gpu_numerics.h"
#include "pipeline/nn/layers.h"

namespace sdxlb {
namespace {

struct Gemm {
  int64_t tokens, in, out;
};

// The UNet's transformer linears at 1024²: level 3 (1024 tokens, 1280 wide), level 2 (4096 tokens, 640 wide).
const std::vector<Gemm> kGemms = {{1024, 1280, 1280}, {1024, 1280, 3840}, {1024, 1280, 10240},
                                  {1024, 5120, 1280}, {4096, 640, 640},   {4096, 640, 1920},
                                  {4096, 640, 5120},  {4096, 2560, 640}};

// Rows [k images × 2 CFG rows × tokens, in]; the same rows with the last image moved to the front.
std::pair<at::Tensor, at::Tensor> call_and_moved(int64_t k, const Gemm& g) {
  const int64_t per_image = 2 * g.tokens;
  const at::Tensor x = at::randn({k * per_image, g.in}, at::TensorOptions().device(at::kCUDA)).to(at::kHalf);
  const at::Tensor last = x.narrow(0, (k - 1) * per_image, per_image);
  const at::Tensor moved = k == 1 ? x : at::cat({last, x.narrow(0, 0, (k - 1) * per_image)}, 0);
  return {x, moved};
}

// The end of each test: with the place-invariant kernels no product may depend on the place; with the
// libraries' choices the findings are a report (printed above).
void expect_invariant(int failures) {
  if (!place_invariant_kernels())
    GTEST_SKIP() << failures << " place-dependent shapes with the libraries' own kernels (a report; "
                 << "SDXLB_INVARIANT_KERNELS=1 makes this a check)";
  EXPECT_EQ(failures, 0);
}

template <typename Product>
int count_place_dependent(const char* what, Product product) {
  int failures = 0;
  for (const int64_t k : {int64_t{1}, int64_t{2}, int64_t{4}, int64_t{8}}) {
    for (const Gemm& g : kGemms) {
      const auto [x, moved] = call_and_moved(k, g);
      const int64_t per_image = 2 * g.tokens;
      const at::Tensor y = product(x, g), y_moved = product(moved, g);
      const bool same =
          at::equal(y.narrow(0, (k - 1) * per_image, per_image), y_moved.narrow(0, 0, per_image));
      if (!same) {
        ++failures;
        std::printf("%s: k = %lld, %lld rows x %lld -> %lld: the last image's rows change at the front\n",
                    what, static_cast<long long>(k), static_cast<long long>(k * per_image),
                    static_cast<long long>(g.in), static_cast<long long>(g.out));
      }
    }
  }
  return failures;
}

// The process-wide settings the pipeline makes before its first product.
class GpuNumerics : public ::testing::Environment {
 public:
  void SetUp() override { use_reproducible_gpu_numerics(); }
};
const auto* const kGpuNumerics = ::testing::AddGlobalTestEnvironment(new GpuNumerics);

TEST(BatchInvarianceCuda, Fp16LinearRowsDoNotDependOnTheirPlace) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(23);
  const int failures = count_place_dependent("fp16 linear", [&](const at::Tensor& x, const Gemm& g) {
    at::manual_seed(g.in * 100003 + g.out);
    const auto opt = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
    const at::Tensor w = at::randn({g.out, g.in}, opt) * 0.02, b = at::randn({g.out}, opt) * 0.1;
    return at::linear(x, w, b);
  });
  expect_invariant(failures);
}

TEST(BatchInvarianceCuda, Fp8LinearRowsDoNotDependOnTheirPlace) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  if (!fp8_supported(at::Device(at::kCUDA, 0))) GTEST_SKIP() << "no FP8 on this GPU";
  c10::InferenceMode guard;
  at::manual_seed(29);
  const int failures = count_place_dependent("fp8 linear", [&](const at::Tensor& x, const Gemm& g) {
    at::manual_seed(g.in * 100003 + g.out);
    const auto opt = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
    Fp8Weight w = quantize_weight(at::randn({g.out, g.in}, opt) * 0.02);
    w.fast_accum = true;  // as unet_precision: fp8 runs
    return fp8_linear(x, w, at::randn({g.out}, opt) * 0.1);
  });
  expect_invariant(failures);
}

// The fp16 convolutions (channels-last, as the UNet runs them on the GPU) at the UNet's shapes: the 3x3 ones
// of its resnets (cuDNN), and the 1x1 shortcuts, which stay fp16 in the FP8 UNet too. cuDNN runs those as
// cuBLASLt GEMMs of its own choosing (session 18's FP8 profile: 11 launches, 5 of them "ssched"); Conv2d
// runs them as GEMMs on the channels-last rows where place_invariant_kernels(). The last image's two
// samples moved to the front of the batch keep their bits, and each convolution is the convolution: within
// fp16 rounding of cuDNN's.
TEST(BatchInvarianceCuda, Fp16ConvolutionSamplesDoNotDependOnTheirPlace) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode guard;
  at::manual_seed(31);
  struct Shape {
    int64_t in, out, size, kernel;
  };
  int failures = 0;
  const auto opt = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
  for (const Shape& c :
       {Shape{320, 320, 128, 3}, Shape{640, 640, 64, 3}, Shape{1280, 1280, 32, 3}, Shape{2560, 1280, 32, 3},
        Shape{320, 640, 64, 1}, Shape{640, 1280, 32, 1}, Shape{2560, 1280, 32, 1}, Shape{1920, 1280, 32, 1},
        Shape{1920, 640, 64, 1}, Shape{1280, 640, 64, 1}, Shape{960, 640, 64, 1}, Shape{960, 320, 128, 1},
        Shape{640, 320, 128, 1}}) {
    const int64_t pad = c.kernel / 2;
    Conv2d conv(c.in, c.out, c.kernel, 1, pad);
    conv->weight =
        (at::randn({c.out, c.in, c.kernel, c.kernel}, opt) * 0.02).contiguous(at::MemoryFormat::ChannelsLast);
    conv->bias = at::randn({c.out}, opt) * 0.1;
    for (const int64_t k : {int64_t{1}, int64_t{2}, int64_t{4}}) {
      const at::Tensor x =
          at::randn({2 * k, c.in, c.size, c.size}, opt).contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor moved = k == 1 ? x
                                      : at::cat({x.narrow(0, 2 * (k - 1), 2), x.narrow(0, 0, 2 * (k - 1))}, 0)
                                            .contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor y = conv->forward(x), y_moved = conv->forward(moved);
      if (!at::equal(y.narrow(0, 2 * (k - 1), 2), y_moved.narrow(0, 0, 2))) {
        ++failures;
        std::printf(
            "fp16 %lldx%lld conv: k = %lld, %lld -> %lld at %lldx%lld: the last image changes at the front\n",
            static_cast<long long>(c.kernel), static_cast<long long>(c.kernel), static_cast<long long>(k),
            static_cast<long long>(c.in), static_cast<long long>(c.out), static_cast<long long>(c.size),
            static_cast<long long>(c.size));
      }
      // The convolution itself, against cuDNN's in float32 on the same fp16 operands.
      const at::Tensor ref =
          at::conv2d(x.to(at::kFloat), conv->weight.to(at::kFloat), conv->bias.to(at::kFloat), 1, pad);
      const double err = ((y.to(at::kFloat) - ref).norm() / ref.norm()).item<double>();
      EXPECT_LT(err, 2e-3) << c.kernel << "x" << c.kernel << " conv " << c.in << " -> " << c.out
                           << " at k = " << k;
      EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
  expect_invariant(failures);
}

}  // namespace
}  // namespace sdxlb
