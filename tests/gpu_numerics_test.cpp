// The GPU's process-wide numerical choices (pipeline/nn/gpu_numerics.h): what use_reproducible_gpu_numerics()
// sets in LibTorch's context, and the refusal of a malformed SDXLB_BATCH_INVARIANT. The settings' effect on
// the GPU's products is tests/batch_invariance_test.cpp's business.
#include "pipeline/nn/gpu_numerics.h"

#include <cstdio>
#include <cstdlib>

#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace sdxlb {
namespace {

TEST(GpuNumerics, SetsCudnnHeuristicsAndGemmsWithoutSplitK) {
  ASSERT_EQ(std::getenv("SDXLB_BATCH_INVARIANT"), nullptr) << "run this test without SDXLB_BATCH_INVARIANT";
  EXPECT_TRUE(batch_invariant_products());  // the default
  auto& context = at::globalContext();
  context.setBenchmarkCuDNN(true);
  context.setDeterministicCuDNN(false);
  use_reproducible_gpu_numerics();
  EXPECT_FALSE(context.benchmarkCuDNN());
  EXPECT_TRUE(context.deterministicCuDNN());
  if (!context.hasCuBLASLt()) GTEST_SKIP() << "this LibTorch has no cuBLASLt";
  EXPECT_EQ(context.blasPreferredBackend(), at::BlasBackend::Cublaslt);
  EXPECT_EQ(context.allowFP16ReductionCuBLAS(),
            at::CuBLASReductionOption::DisallowReducedPrecisionDisallowSplitK);
  EXPECT_EQ(context.allowBF16ReductionCuBLAS(),
            at::CuBLASReductionOption::DisallowReducedPrecisionDisallowSplitK);
  use_reproducible_gpu_numerics();  // idempotent
  EXPECT_EQ(context.blasPreferredBackend(), at::BlasBackend::Cublaslt);
}

// In a child process (the value is read once per process).
int batch_invariant_with(const char* value) {
  setenv("SDXLB_BATCH_INVARIANT", value, 1);
  try {
    return batch_invariant_products() ? 1 : 0;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s\n", e.what_without_backtrace());
    return 3;
  }
}

TEST(GpuNumericsDeathTest, EnvironmentVariableIsZeroOrOne) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::exit(batch_invariant_with("0")), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(std::exit(batch_invariant_with("1")), ::testing::ExitedWithCode(1), "");
  EXPECT_EXIT(std::exit(batch_invariant_with("yes")), ::testing::ExitedWithCode(3),
              "SDXLB_BATCH_INVARIANT: expected 0 or 1, got \"yes\"");
}

}  // namespace
}  // namespace sdxlb
