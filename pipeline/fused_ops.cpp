#include "pipeline/fused_ops.h"

#include <ATen/ATen.h>

#ifdef SDXLB_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/kernels/geglu_kernel.h"
#include "pipeline/kernels/group_norm_kernel.h"
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

at::Tensor group_norm(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                      double eps, bool silu) {
#ifdef SDXLB_WITH_CUDA
  const auto dt = x.scalar_type();
  if (x.is_cuda() && x.dim() == 4 && (dt == at::kHalf || dt == at::kBFloat16) && x.size(1) % 8 == 0 &&
      x.size(1) % groups == 0 && x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
      weight.scalar_type() == dt && bias.scalar_type() == dt) {
    const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
    at::Tensor y = at::empty_like(x, x.options(), at::MemoryFormat::ChannelsLast);
    at::Tensor ws =
        at::empty({kernels::group_norm_workspace_floats(n, hw, c, groups)}, x.options().dtype(at::kFloat));
    auto stream = c10::cuda::getCurrentCUDAStream(x.device().index());
    C10_CUDA_CHECK(kernels::launch_group_norm_nhwc(
        dt == at::kHalf ? 0 : 1, x.data_ptr(), weight.contiguous().data_ptr(), bias.contiguous().data_ptr(),
        y.data_ptr(), ws.data_ptr<float>(), n, hw, c, groups, static_cast<float>(eps), silu, stream));
    return y;
  }
#endif
  at::Tensor y = at::group_norm(x, groups, weight, bias, eps);
  return silu ? at::silu(y) : y;
}

}  // namespace sdxlb
