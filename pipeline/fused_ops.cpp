#include "pipeline/fused_ops.h"

#include <ATen/ATen.h>

#ifdef SDXLB_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/kernels/geglu_kernel.h"
#endif

namespace sdxlb {

bool fused_kernels_available() {
#ifdef SDXLB_WITH_CUDA
  return true;
#else
  return false;
#endif
}

at::Tensor geglu(const at::Tensor& proj) {
#ifdef SDXLB_WITH_CUDA
  const auto dt = proj.scalar_type();
  if (proj.is_cuda() && (dt == at::kHalf || dt == at::kBFloat16) && proj.is_contiguous()) {
    const int64_t f = proj.size(-1) / 2;
    const int64_t rows = proj.numel() / proj.size(-1);
    auto sizes = proj.sizes().vec();
    sizes.back() = f;
    at::Tensor out = at::empty(sizes, proj.options());
    auto stream = c10::cuda::getCurrentCUDAStream(proj.device().index());
    C10_CUDA_CHECK(dt == at::kHalf
                       ? kernels::launch_geglu_f16(proj.data_ptr(), out.data_ptr(), rows, f, stream)
                       : kernels::launch_geglu_bf16(proj.data_ptr(), out.data_ptr(), rows, f, stream));
    return out;
  }
#endif
  auto parts = proj.chunk(2, -1);
  return parts[0] * at::gelu(parts[1]);
}

}  // namespace sdxlb
