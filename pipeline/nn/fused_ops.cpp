#include "pipeline/nn/fused_ops.h"

#include <array>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/nn/kernels/concat_kernel.h"
#include "pipeline/nn/kernels/geglu_gemm_kernel.h"
#include "pipeline/nn/kernels/geglu_kernel.h"
#include "pipeline/nn/kernels/group_norm_kernel.h"
#include "pipeline/nn/kernels/layer_norm_kernel.h"
#include "pipeline/nn/kernels/short_attention_kernel.h"
#include "pipeline/nn/kernels/softmax_kernel.h"
#include "pipeline/nn/kernels/upsample_kernel.h"
#endif

#include "pipeline/nn/disabled_fusions.h"
#include "pipeline/nn/fp8.h"

namespace sdxlb {
namespace {

constexpr std::array<const char*, static_cast<size_t>(Fusion::kCount)> kFusionNames{
    "geglu",          "groupnorm", "layernorm", "upsample",   "wideattention", "fp8qkv",       "pdl",
    "crossattention", "gelutable", "geglugemm", "qkv",        "memsetkernels", "upsampleconv", "fp8crossout",
    "gnbound",        "concat",    "timeproj",  "fillchains", "zeronegatives"};
// One name per Fusion, in its order: the array has one slot per fusion, and a fusion added without its name
// would leave a null in it.
constexpr bool all_named() {
  for (const char* n : kFusionNames)
    if (n == nullptr) return false;
  return true;
}
static_assert(all_named(), "kFusionNames: one name per Fusion");

// Rows per value or gate block of the interleaved GEGLU order (interleave_geglu), and the fused GEMM's tile
// width (kernels/geglu_gemm_kernel.h).
constexpr int64_t kGegluBlock = 8;
constexpr int64_t kGegluGemmColumns = 128;

// Read once: SDXLB_DISABLE_FUSION="groupnorm,layernorm" or "all". An unknown name is an error, so that a
// typo cannot silently measure the wrong thing.
std::array<bool, kFusionNames.size()> read_enabled() {
  std::array<bool, kFusionNames.size()> on;
  on.fill(true);
  for (const std::string& name : disabled_fusion_names()) {
    if (name == "all") {
      on.fill(false);
      continue;
    }
    bool known = false;
    for (size_t i = 0; i < kFusionNames.size(); ++i) {
      if (name == kFusionNames[i]) {
        on[i] = false;
        known = true;
      }
    }
    if (!known) {
      std::string names;
      for (const char* n : kFusionNames) names += std::string(n) + ", ";
      TORCH_CHECK(false, "SDXLB_DISABLE_FUSION: unknown fusion \"", name, "\" (known: ", names, "all)");
    }
  }
  return on;
}

#ifdef SDXLB_WITH_CUDA
bool half_or_bf16(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// Whether the GEGLU kernels take this projection output.
bool fused_geglu_applies(const at::Tensor& proj) {
  return proj.is_cuda() && half_or_bf16(proj) && proj.is_contiguous() && fusion_enabled(Fusion::kGeglu);
}

bool same_type_contiguous(const at::Tensor& t, const at::Tensor& like) {
  return !t.defined() ||
         (t.is_contiguous() && t.scalar_type() == like.scalar_type() && t.device() == like.device());
}

// The 16-bit type code the kernels' launchers take (element_types.cuh): 1 fp16, 2 bf16.
int kernel_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf ? 1 : 2;
}

// A launcher's result: true once launched; false for cudaErrorInvalidValue, which the launchers return for
// inputs their kernel does not take, before launching anything (the caller then runs the ops); any other
// error throws.
bool launched(cudaError_t err) {
  if (err == cudaErrorInvalidValue) {
    (void)cudaGetLastError();
    return false;
  }
  C10_CUDA_CHECK(err);
  return true;
}
#endif

at::Tensor group_norm_act_ops(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                              const at::Tensor& bias, double eps, bool silu, const at::Tensor& add_c,
                              const at::Tensor& add_nc) {
  at::Tensor v = x;
  if (add_c.defined()) v = v + add_c.view({1, -1, 1, 1});
  if (add_nc.defined()) v = v + add_nc.view({add_nc.size(0), add_nc.size(1), 1, 1});
  at::Tensor y = at::group_norm(v, groups, weight, bias, eps);
  return silu ? at::silu(y) : y;
}

}  // namespace

bool fusion_enabled(Fusion fusion) {
  static const std::array<bool, kFusionNames.size()> enabled = read_enabled();
  return enabled[static_cast<size_t>(fusion)];
}

bool fused_kernels_available() {
#ifdef SDXLB_WITH_CUDA
  return true;
#else
  return false;
#endif
}

at::Tensor scaled_softmax(const at::Tensor& scores, double scale, at::ScalarType dtype) {
  TORCH_CHECK(scores.scalar_type() == at::kFloat &&
                  (dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat),
              "scaled_softmax takes float32 scores to fp16, bf16 or float32, got ", scores.scalar_type(),
              " to ", dtype);
#ifdef SDXLB_WITH_CUDA
  if (scores.is_cuda() && scores.is_contiguous() && scores.dim() >= 1) {
    const int64_t cols = scores.size(-1);
    at::Tensor y = at::empty(scores.sizes(), scores.options().dtype(dtype));
    if (launched(kernels::launch_softmax_rows(
            dtype == at::kHalf       ? 1
            : dtype == at::kBFloat16 ? 2
                                     : 3,
            scores.const_data_ptr<float>(), y.data_ptr(), cols > 0 ? scores.numel() / cols : 0, cols,
            static_cast<float>(scale), c10::cuda::getCurrentCUDAStream(scores.device().index()))))
      return y;
  }
#endif
  return at::_softmax(scores * scale, -1, false).to(dtype);
}

#ifdef SDXLB_WITH_CUDA
namespace {

// Whether our short-attention kernel takes q [B, heads, N, 64] and k, v [B, heads, M, 64] (the fusion
// "crossattention" on; the kernel still checks alignment and strides), and its views' strides.
bool short_attention_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const auto dt = q.scalar_type();
  return q.is_cuda() && half_or_bf16(q) && k.scalar_type() == dt && v.scalar_type() == dt && q.dim() == 4 &&
         k.dim() == 4 && v.dim() == 4 && q.size(-1) == kernels::kShortAttentionHeadDim &&
         k.size(-1) == q.size(-1) && v.size(-1) == q.size(-1) && k.size(2) == v.size(2) &&
         k.size(2) <= kernels::kShortAttentionMaxKeys && q.size(0) == k.size(0) && q.size(0) == v.size(0) &&
         q.size(1) == k.size(1) && q.size(1) == v.size(1) && q.stride(-1) == 1 && k.stride(-1) == 1 &&
         v.stride(-1) == 1 && fusion_enabled(Fusion::kCrossAttention);
}
kernels::HeadStrides strides(const at::Tensor& t) {
  return kernels::HeadStrides{t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace
#endif

at::Tensor short_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           std::optional<double> scale) {
#ifdef SDXLB_WITH_CUDA
  if (short_attention_takes(q, k, v)) {
    const int64_t b = q.size(0), heads = q.size(1), n = q.size(2);
    at::Tensor o = at::empty({b, n, heads, q.size(-1)}, q.options());
    if (launched(kernels::launch_short_attention(
            kernel_dtype(q), q.const_data_ptr(), strides(q), k.const_data_ptr(), strides(k),
            v.const_data_ptr(), strides(v), o.data_ptr(), b, heads, n, k.size(2),
            static_cast<float>(scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))))),
            c10::cuda::getCurrentCUDAStream(q.device().index()))))
      return o.transpose(1, 2);
  }
#endif
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/false,
                                          scale);
}

std::optional<std::pair<at::Tensor, at::Tensor>> short_attention_e4m3(const at::Tensor& q,
                                                                      const at::Tensor& k,
                                                                      const at::Tensor& v,
                                                                      const at::Tensor& out_scale,
                                                                      std::optional<double> scale) {
#ifdef SDXLB_WITH_CUDA
  if (short_attention_takes(q, k, v) && out_scale.defined() && out_scale.scalar_type() == at::kFloat &&
      out_scale.device() == q.device() && out_scale.is_contiguous() && out_scale.numel() == q.size(0) &&
      fusion_enabled(Fusion::kFp8CrossOut)) {
    const int64_t b = q.size(0), heads = q.size(1), n = q.size(2);
    at::Tensor o = at::empty({b, n, heads * q.size(-1)}, q.options().dtype(at::kFloat8_e4m3fn));
    at::Tensor row_scale = at::empty({b * n, 1}, q.options().dtype(at::kFloat));
    if (launched(kernels::launch_short_attention_e4m3(
            kernel_dtype(q), q.const_data_ptr(), strides(q), k.const_data_ptr(), strides(k),
            v.const_data_ptr(), strides(v), o.data_ptr(), out_scale.const_data_ptr<float>(),
            row_scale.data_ptr<float>(), b, heads, n, k.size(2),
            static_cast<float>(scale.value_or(1.0 / std::sqrt(static_cast<double>(q.size(-1))))),
            c10::cuda::getCurrentCUDAStream(q.device().index()))))
      return std::make_pair(o, row_scale);
  }
#endif
  return std::nullopt;
}

at::Tensor context_value_scale(const at::Tensor& v) {
  TORCH_CHECK(v.dim() == 3, "context_value_scale: expected values [B, M, C], got ", v.sizes());
  return e4m3_scale_of(v.abs().amax({1, 2})).contiguous();
}

at::Tensor upsample_nearest2x(const at::Tensor& x) {
#ifdef SDXLB_WITH_CUDA
  if (x.is_cuda() && (half_or_bf16(x) || x.scalar_type() == at::kFloat) && x.dim() == 4 &&
      x.size(1) % 8 == 0 && x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
      fusion_enabled(Fusion::kUpsample)) {
    at::Tensor y = at::empty({x.size(0), x.size(1), 2 * x.size(2), 2 * x.size(3)},
                             x.options().memory_format(at::MemoryFormat::ChannelsLast));
    C10_CUDA_CHECK(kernels::launch_upsample_nearest2x(x.data_ptr(), y.data_ptr(), x.size(0), x.size(2),
                                                      x.size(3), x.size(1) * x.element_size(),
                                                      c10::cuda::getCurrentCUDAStream(x.device().index())));
    return y;
  }
#endif
  const std::vector<double> scale{2.0, 2.0};
  return at::upsample_nearest2d(x, at::OptionalIntArrayRef(), at::ArrayRef<double>(scale));
}

at::Tensor concat_channels(const at::Tensor& a, const at::Tensor& b) {
#ifdef SDXLB_WITH_CUDA
  const auto cl = at::MemoryFormat::ChannelsLast;
  if (a.is_cuda() && a.dim() == 4 && b.dim() == 4 && a.device() == b.device() &&
      a.scalar_type() == b.scalar_type() && a.size(0) == b.size(0) && a.size(2) == b.size(2) &&
      a.size(3) == b.size(3) && a.is_contiguous(cl) && b.is_contiguous(cl) &&
      (a.size(1) * a.element_size()) % 16 == 0 && (b.size(1) * b.element_size()) % 16 == 0 &&
      fusion_enabled(Fusion::kConcat)) {
    at::Tensor out =
        at::empty({a.size(0), a.size(1) + b.size(1), a.size(2), a.size(3)}, a.options().memory_format(cl));
    if (launched(kernels::launch_concat_rows(a.data_ptr(), b.data_ptr(), out.data_ptr(),
                                             a.size(0) * a.size(2) * a.size(3), a.size(1) * a.element_size(),
                                             b.size(1) * b.element_size(),
                                             c10::cuda::getCurrentCUDAStream(a.device().index()))))
      return out;
  }
#endif
  return at::cat({a, b}, 1);
}

at::Tensor upsample_phases(const at::Tensor& y, const at::Tensor& bias) {
  TORCH_CHECK(y.dim() == 4 && y.size(1) % 4 == 0 && y.size(2) >= 2 && y.size(3) >= 2,
              "upsample_phases takes a phase convolution's output [N, 4C, H + 1, W + 1], got ", y.sizes());
  const int64_t n = y.size(0), c = y.size(1) / 4, h = y.size(2) - 1, w = y.size(3) - 1;
  TORCH_CHECK(!bias.defined() || bias.numel() == c, "upsample_phases: bias of ", bias.numel(), " values for ",
              c, " channels");
  const auto layout = y.is_contiguous(at::MemoryFormat::ChannelsLast) ? at::MemoryFormat::ChannelsLast
                                                                      : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty({n, c, 2 * h, 2 * w}, y.options().memory_format(layout));
#ifdef SDXLB_WITH_CUDA
  if (y.is_cuda() && (half_or_bf16(y) || y.scalar_type() == at::kFloat) &&
      layout == at::MemoryFormat::ChannelsLast && same_type_contiguous(bias, y)) {
    const int dtype = y.scalar_type() == at::kFloat ? 0 : kernel_dtype(y);
    if (launched(kernels::launch_upsample_phases(
            dtype, y.const_data_ptr(), bias.defined() ? bias.const_data_ptr() : nullptr, out.data_ptr(), n, h,
            w, c, c10::cuda::getCurrentCUDAStream(y.device().index()))))
      return out;
  }
#endif
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t b = 0; b < 2; ++b)
      out.slice(2, a, 2 * h, 2)
          .slice(3, b, 2 * w, 2)
          .copy_(y.narrow(1, (2 * a + b) * c, c).narrow(2, a, h).narrow(3, b, w));
  return bias.defined() ? out.add_(bias.view({1, -1, 1, 1})) : out;
}

at::Tensor geglu(const at::Tensor& proj) {
#ifdef SDXLB_WITH_CUDA
  const auto dt = proj.scalar_type();
  if (fused_geglu_applies(proj)) {
    const int64_t f = proj.size(-1) / 2;
    const int64_t rows = proj.numel() / proj.size(-1);
    auto sizes = proj.sizes().vec();
    sizes.back() = f;
    at::Tensor out = at::empty(sizes, proj.options());
    auto stream = c10::cuda::getCurrentCUDAStream(proj.device().index());
    if (fusion_enabled(Fusion::kGeluTable) &&
        launched(kernels::launch_geglu_table(kernel_dtype(proj), proj.data_ptr(), out.data_ptr(), rows, f,
                                             stream)))
      return out;
    C10_CUDA_CHECK(dt == at::kHalf
                       ? kernels::launch_geglu_f16(proj.data_ptr(), out.data_ptr(), rows, f, stream)
                       : kernels::launch_geglu_bf16(proj.data_ptr(), out.data_ptr(), rows, f, stream));
    return out;
  }
#endif
  auto parts = proj.chunk(2, -1);
  return parts[0] * at::gelu(parts[1]);
}

at::Tensor interleave_geglu(const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 1 && t.size(0) % (2 * kGegluBlock) == 0,
              "interleave_geglu: a GEGLU projection's weight or bias has 2F rows with 2F a multiple of ",
              2 * kGegluBlock, ", got ", t.sizes());
  std::vector<int64_t> blocks{2, t.size(0) / (2 * kGegluBlock), kGegluBlock};
  blocks.insert(blocks.end(), t.sizes().begin() + 1, t.sizes().end());
  // [2 (value, gate), F/8, 8, ...] -> [F/8, 2, 8, ...]
  return t.reshape(blocks).transpose(0, 1).reshape(t.sizes()).contiguous();
}

bool geglu_gemm_takes(int64_t two_f, int64_t k) {
  return two_f > 0 && k > 0 && two_f % kGegluGemmColumns == 0 && k % 8 == 0;
}

bool geglu_gemm_supported(const c10::Device& device, at::ScalarType dtype) {
#ifdef SDXLB_WITH_CUDA
  if (!device.is_cuda() || dtype != at::kHalf || !kernels::geglu_gemm_compiled() ||
      !fusion_enabled(Fusion::kGegluGemm))
    return false;
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
  return p->major == 9 && p->minor == 0;
#else
  (void)device;
  (void)dtype;
  return false;
#endif
}

at::Tensor linear_geglu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  TORCH_CHECK(w.dim() == 2 && w.size(0) % (2 * kGegluBlock) == 0 && x.dim() >= 1 && x.size(-1) == w.size(1),
              "linear_geglu: weight [2F, K] with 2F a multiple of ", 2 * kGegluBlock,
              " for input [..., K], got ", w.sizes(), " and ", x.sizes());
  const int64_t two_f = w.size(0);
  auto sizes = x.sizes().vec();
  sizes.back() = two_f / 2;
#ifdef SDXLB_WITH_CUDA
  static_assert(kGegluBlock == kernels::kGegluInterleave && kGegluGemmColumns == kernels::kGegluGemmColumns);
  if (geglu_gemm_supported(x.device(), x.scalar_type()) && w.scalar_type() == at::kHalf &&
      w.is_contiguous() && w.device() == x.device() && same_type_contiguous(b, x)) {
    const at::Tensor xc = x.contiguous();
    at::Tensor out = at::empty(sizes, x.options());
    const cudaError_t e = kernels::launch_geglu_gemm(
        xc.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr, out.data_ptr(),
        xc.numel() / xc.size(-1), xc.size(-1), two_f, c10::cuda::getCurrentCUDAStream(x.device().index()));
    if (e != cudaErrorNotSupported) {
      C10_CUDA_CHECK(e);
      return out;
    }
    (void)cudaGetLastError();  // a shape the kernel does not take: the ops below
  }
#endif
  const at::Tensor p = at::linear(x, w, b);  // [..., 2F], interleaved
  std::vector<int64_t> blocks(p.sizes().begin(), p.sizes().end() - 1);
  blocks.insert(blocks.end(), {two_f / (2 * kGegluBlock), 2, kGegluBlock});
  auto in_order = x.sizes().vec();
  in_order.back() = two_f;
  // [..., F/8, 2, 8] -> [..., 2 (values, gates), F/8, 8]: diffusers' [..., 2F]
  return geglu(p.view(blocks).transpose(-3, -2).reshape(in_order));
}

bool fused_group_norm_applies(const at::Tensor& x) {
#ifdef SDXLB_WITH_CUDA
  return x.is_cuda() && (half_or_bf16(x) || x.scalar_type() == at::kFloat) && x.dim() == 4 &&
         x.size(1) % 8 == 0 && x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         fusion_enabled(Fusion::kGroupNorm);
#else
  (void)x;
  return false;
#endif
}

#ifdef SDXLB_WITH_CUDA
namespace {

// A per-(sample, channel) addition the GroupNorm kernel reads: [n, c] of x's type on its device, each row
// contiguous; the rows may lie further apart (a slice of a wider tensor: the time embeddings of every resnet,
// projected at once).
bool kernel_rows(const at::Tensor& t, const at::Tensor& x) {
  return !t.defined() ||
         (t.dim() == 2 && t.size(0) == x.size(0) && t.size(1) == x.size(1) &&
          (t.size(1) == 1 || t.stride(1) == 1) && (t.size(0) == 1 || t.stride(0) >= t.size(1)) &&
          t.scalar_type() == x.scalar_type() && t.device() == x.device());
}

// The GroupNorm kernel's arguments (all but the output) and workspace for group_norm_act(_e4m3)'s input, or
// false when the kernel does not take it.
bool group_norm_kernel_args(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                            const at::Tensor& bias, double eps, bool silu, const at::Tensor& add_c,
                            const at::Tensor& add_nc, kernels::GroupNormArgs* a, at::Tensor* workspace) {
  if (!fused_group_norm_applies(x) || !same_type_contiguous(weight, x) || !same_type_contiguous(bias, x) ||
      !weight.defined() || !bias.defined() || !same_type_contiguous(add_c, x) || !kernel_rows(add_nc, x))
    return false;
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  const size_t ws_bytes = kernels::group_norm_workspace_bytes(n, hw, c, groups);
  if (ws_bytes == 0) return false;
  *workspace = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
  a->x = x.data_ptr();
  a->gamma = weight.data_ptr();
  a->beta = bias.data_ptr();
  a->add_c = add_c.defined() ? add_c.data_ptr() : nullptr;
  a->add_nc = add_nc.defined() ? add_nc.data_ptr() : nullptr;
  a->add_nc_stride = add_nc.defined() && add_nc.size(0) > 1 ? add_nc.stride(0) : 0;
  a->n = n;
  a->hw = hw;
  a->c = c;
  a->groups = groups;
  a->eps = static_cast<float>(eps);
  a->silu = silu;
  return true;
}

}  // namespace
#endif

at::Tensor group_norm_act(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                          const at::Tensor& bias, double eps, bool silu, const at::Tensor& add_c,
                          const at::Tensor& add_nc) {
#ifdef SDXLB_WITH_CUDA
  kernels::GroupNormArgs a;
  at::Tensor ws;
  if (group_norm_kernel_args(x, groups, weight, bias, eps, silu, add_c, add_nc, &a, &ws)) {
    at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
    a.y = y.data_ptr();
    const auto launch = x.scalar_type() == at::kHalf       ? kernels::launch_group_norm_f16
                        : x.scalar_type() == at::kBFloat16 ? kernels::launch_group_norm_bf16
                                                           : kernels::launch_group_norm_f32;
    if (launched(launch(a, ws.data_ptr(), c10::cuda::getCurrentCUDAStream(x.device().index())))) return y;
  }
#endif
  return group_norm_act_ops(x, groups, weight, bias, eps, silu, add_c, add_nc);
}

E4m3Samples group_norm_act_e4m3(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                                const at::Tensor& bias, double eps, bool silu, const at::Tensor& add_c,
                                const at::Tensor& add_nc) {
  TORCH_CHECK(x.dim() == 4, "group_norm_act_e4m3 takes [N, C, H, W], got ", x.sizes());
  [[maybe_unused]] const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  E4m3Samples r;
#ifdef SDXLB_WITH_CUDA
  kernels::GroupNormArgs a;
  at::Tensor ws;
  if (x.scalar_type() != at::kFloat &&
      group_norm_kernel_args(x, groups, weight, bias, eps, silu, add_c, add_nc, &a, &ws)) {
    r.q = at::empty({n, h, w, c}, x.options().dtype(at::kFloat8_e4m3fn));
    r.pixel_scale = at::empty({n, h * w}, x.options().dtype(at::kFloat));
    at::Tensor amax = at::empty({n}, x.options().dtype(at::kInt));
    if (launched(kernels::launch_group_norm_e4m3(
            kernel_dtype(x), a, ws.data_ptr(), r.q.data_ptr(), r.pixel_scale.data_ptr<float>(),
            static_cast<unsigned*>(amax.data_ptr()), fusion_enabled(Fusion::kGroupNormBound),
            c10::cuda::getCurrentCUDAStream(x.device().index()))))
      return r;
  }
#endif
  at::Tensor scale;
  std::tie(r.q, scale) = quantize_samples(group_norm_act(x, groups, weight, bias, eps, silu, add_c, add_nc));
  r.pixel_scale = scale.expand({n, h * w}).contiguous();
  return r;
}

at::Tensor add_bias_residual(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& residual,
                             const at::Tensor& residual_bias) {
#ifdef SDXLB_WITH_CUDA
  const auto cl = at::MemoryFormat::ChannelsLast;
  if (fused_group_norm_applies(x) && residual.sizes() == x.sizes() && residual.is_contiguous(cl) &&
      residual.scalar_type() == x.scalar_type() && same_type_contiguous(bias, x) && bias.defined() &&
      same_type_contiguous(residual_bias, x)) {
    at::Tensor out = at::empty_like(x, cl);
    auto stream = c10::cuda::getCurrentCUDAStream(x.device().index());
    const auto launch = x.scalar_type() == at::kHalf       ? kernels::launch_bias_residual_f16
                        : x.scalar_type() == at::kBFloat16 ? kernels::launch_bias_residual_bf16
                                                           : kernels::launch_bias_residual_f32;
    if (launched(launch(x.data_ptr(), bias.data_ptr(), residual.data_ptr(),
                        residual_bias.defined() ? residual_bias.data_ptr() : nullptr, out.data_ptr(),
                        x.numel(), x.size(1), stream)))
      return out;
  }
#endif
  const at::Tensor r = residual_bias.defined() ? residual + residual_bias.view({1, -1, 1, 1}) : residual;
  if (!bias.defined()) return r + x;
  return r + (x + bias.view({1, -1, 1, 1}));
}

at::Tensor add_channel_bias_(at::Tensor& x, const at::Tensor& bias) {
#ifdef SDXLB_WITH_CUDA
  if (fused_group_norm_applies(x) && same_type_contiguous(bias, x) && bias.defined() &&
      bias.numel() == x.size(1)) {
    auto stream = c10::cuda::getCurrentCUDAStream(x.device().index());
    const auto launch = x.scalar_type() == at::kHalf       ? kernels::launch_bias_residual_f16
                        : x.scalar_type() == at::kBFloat16 ? kernels::launch_bias_residual_bf16
                                                           : kernels::launch_bias_residual_f32;
    if (launched(launch(x.data_ptr(), bias.data_ptr(), nullptr, nullptr, x.data_ptr(), x.numel(), x.size(1),
                        stream)))
      return x;
  }
#endif
  return x.add_(bias.view({1, -1, 1, 1}));
}

namespace {

#ifdef SDXLB_WITH_CUDA
// Whether the LayerNorm kernel takes these operands (residual undefined or not).
bool fused_layer_norm_applies(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                              const at::Tensor& bias) {
  const int64_t d = x.size(-1);
  return x.is_cuda() && half_or_bf16(x) && x.is_contiguous() && fusion_enabled(Fusion::kLayerNorm) &&
         weight.defined() && bias.defined() && same_type_contiguous(weight, x) &&
         same_type_contiguous(bias, x) && weight.numel() == d && bias.numel() == d &&
         same_type_contiguous(residual, x) && (!residual.defined() || residual.sizes() == x.sizes());
}
#endif

// The fused LayerNorm of x (+ residual, written to *sum) into *y, or with q and scale given quantised to
// e4m3 into them instead; false when the kernel does not take these inputs.
bool fused_layer_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                      const at::Tensor& bias, double eps, at::Tensor* sum, at::Tensor* y,
                      at::Tensor* q = nullptr, at::Tensor* scale = nullptr) {
#ifdef SDXLB_WITH_CUDA
  if (!fused_layer_norm_applies(x, residual, weight, bias)) return false;
  const int64_t d = x.size(-1), rows = x.numel() / d;
  if (residual.defined()) *sum = at::empty_like(x);
  void* sum_ptr = residual.defined() ? sum->data_ptr() : nullptr;
  const void* res_ptr = residual.defined() ? residual.data_ptr() : nullptr;
  auto stream = c10::cuda::getCurrentCUDAStream(x.device().index());
  if (q != nullptr) {
    *q = at::empty({rows, d}, x.options().dtype(at::kFloat8_e4m3fn));
    *scale = at::empty({rows, 1}, x.options().dtype(at::kFloat));
    return launched(kernels::launch_layer_norm_e4m3(
        kernel_dtype(x), x.data_ptr(), res_ptr, sum_ptr, weight.data_ptr(), bias.data_ptr(), q->data_ptr(),
        scale->data_ptr<float>(), rows, d, static_cast<float>(eps), stream));
  }
  *y = at::empty_like(x);
  const auto launch =
      x.scalar_type() == at::kHalf ? kernels::launch_layer_norm_f16 : kernels::launch_layer_norm_bf16;
  return launched(launch(x.data_ptr(), res_ptr, sum_ptr, weight.data_ptr(), bias.data_ptr(), y->data_ptr(),
                         rows, d, static_cast<float>(eps), stream));
#else
  (void)x, (void)residual, (void)weight, (void)bias, (void)eps, (void)sum, (void)y, (void)q, (void)scale;
  return false;
#endif
}

}  // namespace

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  at::Tensor y;
  if (fused_layer_norm(x, {}, weight, bias, eps, nullptr, &y)) return y;
  return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
}

std::pair<at::Tensor, at::Tensor> add_layer_norm(const at::Tensor& x, const at::Tensor& residual,
                                                 const at::Tensor& weight, const at::Tensor& bias,
                                                 double eps) {
  at::Tensor sum, y;
  if (fused_layer_norm(x, residual, weight, bias, eps, &sum, &y)) return {sum, y};
  sum = x + residual;
  return {sum, at::layer_norm(sum, {sum.size(-1)}, weight, bias, eps)};
}

E4m3Rows layer_norm_e4m3(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                         const at::Tensor& bias, double eps, at::Tensor* sum) {
  TORCH_CHECK(residual.defined() == (sum != nullptr), "layer_norm_e4m3: a residual needs a sum to write");
  E4m3Rows r;
  at::Tensor unused;
  if (fused_layer_norm(x, residual, weight, bias, eps, sum != nullptr ? sum : &unused, nullptr, &r.q,
                       &r.scale))
    return r;
  at::Tensor y;
  if (residual.defined()) {
    std::tie(*sum, y) = add_layer_norm(x, residual, weight, bias, eps);
  } else {
    y = layer_norm(x, weight, bias, eps);
  }
  std::tie(r.q, r.scale) = quantize_rows(y.reshape({-1, y.size(-1)}).contiguous());
  return r;
}

E4m3Samples upsample_nearest2x_e4m3(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "upsample_nearest2x_e4m3 takes [N, C, H, W], got ", x.sizes());
  [[maybe_unused]] const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  E4m3Samples r;
  at::Tensor scale;
#ifdef SDXLB_WITH_CUDA
  if (x.is_cuda() && half_or_bf16(x) && c % 16 == 0 && x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
      fusion_enabled(Fusion::kUpsample)) {
    at::Tensor q;
    std::tie(q, scale) = quantize_samples(x);  // q [N, H, W, C]
    r.q = at::empty({n, 2 * h, 2 * w, c}, q.options());
    C10_CUDA_CHECK(kernels::launch_upsample_nearest2x(q.data_ptr(), r.q.data_ptr(), n, h, w, c,
                                                      c10::cuda::getCurrentCUDAStream(x.device().index())));
    r.pixel_scale = scale.expand({n, 4 * h * w}).contiguous();
    return r;
  }
#endif
  std::tie(r.q, scale) = quantize_samples(upsample_nearest2x(x));
  r.pixel_scale = scale.expand({n, 4 * h * w}).contiguous();
  return r;
}

E4m3Rows geglu_e4m3(const at::Tensor& proj) {
  E4m3Rows r;
#ifdef SDXLB_WITH_CUDA
  if (fused_geglu_applies(proj)) {
    const int64_t f = proj.size(-1) / 2;
    const int64_t rows = proj.numel() / proj.size(-1);
    r.q = at::empty({rows, f}, proj.options().dtype(at::kFloat8_e4m3fn));
    r.scale = at::empty({rows, 1}, proj.options().dtype(at::kFloat));
    const int dtype = kernel_dtype(proj);
    auto stream = c10::cuda::getCurrentCUDAStream(proj.device().index());
    if (fusion_enabled(Fusion::kGeluTable) &&
        launched(kernels::launch_geglu_table_e4m3(dtype, proj.data_ptr(), r.q.data_ptr(),
                                                  r.scale.data_ptr<float>(), rows, f, stream)))
      return r;
    if (launched(kernels::launch_geglu_e4m3(dtype, proj.data_ptr(), r.q.data_ptr(), r.scale.data_ptr<float>(),
                                            rows, f, stream)))
      return r;
  }
#endif
  const at::Tensor y = geglu(proj);
  std::tie(r.q, r.scale) = quantize_rows(y.reshape({-1, y.size(-1)}).contiguous());
  return r;
}

}  // namespace sdxlb
