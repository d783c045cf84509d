#include "pipeline/nn/gpu_numerics.h"

#include <cstdlib>
#include <cstring>

#include <ATen/Context.h>
#include <c10/util/Exception.h>

namespace sdxlb {
namespace {

bool read_invariant_kernels() {
  const char* env = std::getenv("SDXLB_INVARIANT_KERNELS");
  if (env == nullptr || std::strcmp(env, "0") == 0) return false;
  if (std::strcmp(env, "1") == 0) return true;
  TORCH_CHECK(false, "SDXLB_INVARIANT_KERNELS: expected 0 or 1, got \"", env,
              "\" (unset it for the default, 0: the libraries' own kernel choices)");
}

// LibTorch warns once that choosing a BLAS backend is "an experimental feature"; the product chose it on
// purpose, and the warning would read as a fault in every worker's log.
class DropWarnings : public c10::WarningHandler {
 public:
  void process(const c10::Warning&) override {}
};

}  // namespace

bool place_invariant_kernels() {
  static const bool on = read_invariant_kernels();
  return on;
}

void use_reproducible_gpu_numerics() {
  auto& context = at::globalContext();
  context.setBenchmarkCuDNN(false);
  context.setDeterministicCuDNN(true);
  if (!place_invariant_kernels() || !context.hasCuBLASLt()) return;
  DropWarnings drop;
  c10::WarningUtils::WarningHandlerGuard guard(&drop);
  context.setBlasPreferredBackend(at::BlasBackend::Cublaslt);
  context.setAllowFP16ReductionCuBLAS(/*allow_reduced_precision=*/false, /*allow_splitk=*/false);
  context.setAllowBF16ReductionCuBLAS(/*allow_reduced_precision=*/false, /*allow_splitk=*/false);
}

}  // namespace sdxlb
