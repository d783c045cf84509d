// The GPU's process-wide numerical choices (pipeline/nn/gpu_numerics.h): what use_reproducible_gpu_numerics()
// sets in LibTorch's context by default and with SDXLB_INVARIANT_KERNELS=1, and the refusal of a malformed
// value. The settings' effect on the GPU's products is tests/batch_invariance_test.cpp's business.
#include "pipeline/nn/gpu_numerics.h"

#include <cstdio>
#include <cstdlib>

#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace sdxlb {
namespace {

TEST(GpuNumerics, DefaultSetsCudnnHeuristicsAndLeavesCublasAlone) {
  ASSERT_EQ(std::getenv("SDXLB_INVARIANT_KERNELS"), nullptr)
      << "run this test without SDXLB_INVARIANT_KERNELS";
  EXPECT_FALSE(place_invariant_kernels());
  auto& context = at::globalContext();
  context.setBenchmarkCuDNN(true);
  context.setDeterministicCuDNN(false);
  const at::BlasBackend backend = context.blasPreferredBackend();
  const at::CuBLASReductionOption fp16 = context.allowFP16ReductionCuBLAS();
  use_reproducible_gpu_numerics();
  EXPECT_FALSE(context.benchmarkCuDNN());
  EXPECT_TRUE(context.deterministicCuDNN());
  EXPECT_EQ(context.blasPreferredBackend(), backend);
  EXPECT_EQ(context.allowFP16ReductionCuBLAS(), fp16);
}

// In a child process (the variable is read once per process): 0 or 1 as place_invariant_kernels() says, 3
// for a refused value (its message on stderr), 4 when the opt-in did not set the context.
int run_with(const char* value) {
  setenv("SDXLB_INVARIANT_KERNELS", value, 1);
  try {
    const bool on = place_invariant_kernels();
    use_reproducible_gpu_numerics();
    use_reproducible_gpu_numerics();  // idempotent
    auto& c = at::globalContext();
    const auto none = at::CuBLASReductionOption::DisallowReducedPrecisionDisallowSplitK;
    if (on && c.hasCuBLASLt() &&
        (c.blasPreferredBackend() != at::BlasBackend::Cublaslt || c.allowFP16ReductionCuBLAS() != none ||
         c.allowBF16ReductionCuBLAS() != none))
      return 4;
    return on ? 1 : 0;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s\n", e.what_without_backtrace());
    return 3;
  }
}

TEST(GpuNumericsDeathTest, InvariantKernelsAreOptInAndTheValueIsChecked) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::exit(run_with("0")), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(std::exit(run_with("1")), ::testing::ExitedWithCode(1), "");
  EXPECT_EXIT(std::exit(run_with("yes")), ::testing::ExitedWithCode(3),
              "SDXLB_INVARIANT_KERNELS: expected 0 or 1, got \"yes\"");
}

}  // namespace
}  // namespace sdxlb
