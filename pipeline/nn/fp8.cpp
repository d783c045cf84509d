#include "pipeline/nn/fp8.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include "pipeline/nn/attention.h"
#include "pipeline/nn/gpu_numerics.h"
#include "pipeline/nn/layers.h"

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/nn/kernels/fp8_conv_kernel.h"
#include "pipeline/nn/kernels/fp8_gemm_kernel.h"
#include "pipeline/nn/kernels/fp8_quantize_kernel.h"
#endif

namespace sdxlb {
namespace {

constexpr double kE4m3Max = 448.0;
constexpr double kMinScale = 5.9604644775390625e-08;  // 2^-24

#ifdef SDXLB_WITH_CUDA
// fp8_linear in our CUTLASS GEMM (kernels/fp8_gemm_kernel.h), whose rows do not depend on their place, with
// place_invariant_kernels() (gpu_numerics.h) and where it takes the layer: Hopper, fp16 output, fast
// accumulation (what `unet_precision: fp8` runs) and the kernel's shapes. Undefined otherwise, launching
// nothing.
at::Tensor fp8_linear_cutlass(const Fp8Activation& x, const Fp8Weight& w, const at::Tensor& bias) {
  if (!place_invariant_kernels() || !our_fp8_gemm_takes(x, w) ||
      (bias.defined() && bias.scalar_type() != at::kHalf))
    return {};
  const at::Tensor xq = x.q.contiguous(), xs = x.scale.contiguous(), ws = w.scale.contiguous();
  const at::Tensor b = bias.defined() ? bias.contiguous() : at::Tensor();
  const int64_t rows = xq.size(0), k = xq.size(1), n = w.q.size(0);
  at::Tensor y = at::empty({rows, n}, xq.options().dtype(at::kHalf));
  const cudaError_t e =
      kernels::launch_fp8_gemm(xq.data_ptr(), w.q.data_ptr(), xs.data_ptr<float>(), ws.data_ptr<float>(),
                               b.defined() ? b.data_ptr() : nullptr, y.data_ptr(), rows, k, n,
                               c10::cuda::getCurrentCUDAStream(xq.device().index()));
  if (e == cudaErrorNotSupported) {
    (void)cudaGetLastError();  // a shape the kernel does not take: at::_scaled_mm
    return {};
  }
  C10_CUDA_CHECK(e);
  return y;
}
#endif

}  // namespace

bool our_fp8_gemm_takes(const Fp8Activation& x, const Fp8Weight& w) {
#ifdef SDXLB_WITH_CUDA
  if (!x.q.is_cuda() || x.dtype != at::kHalf || !w.fast_accum || !w.q.is_contiguous() ||
      !kernels::fp8_gemm_compiled())
    return false;
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(x.q.device().index());
  return p->major == 9 && p->minor == 0;
#else
  (void)x;
  (void)w;
  return false;
#endif
}

bool fp8_supported(const c10::Device& device, std::string* why) {
  auto no = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (!device.is_cuda())
    return no(
        "FP8 GEMMs need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper); this job runs on the " +
        device.str());
#ifdef SDXLB_WITH_CUDA
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
  if (p->major * 10 + p->minor < 89)
    return no(std::string("FP8 GEMMs need a GPU of compute capability 8.9 or newer (Ada, Hopper); ") +
              p->name + " is " + std::to_string(p->major) + "." + std::to_string(p->minor));
  return true;
#else
  return no("this build has no CUDA, and FP8 GEMMs need a CUDA GPU of compute capability 8.9 or newer");
#endif
}

at::Tensor e4m3_scale_of(const at::Tensor& amax) {
  return (amax.to(at::kFloat) / kE4m3Max).clamp_min(kMinScale);
}

std::pair<at::Tensor, at::Tensor> quantize_rows_reference(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2, "quantize_rows: expected [rows, cols], got ", x.sizes());
  const at::Tensor f = x.to(at::kFloat);
  const at::Tensor scale = e4m3_scale_of(f.abs().amax(-1, /*keepdim=*/true));
  return {(f * scale.reciprocal()).to(at::kFloat8_e4m3fn), scale};
}

std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x) {
#ifdef SDXLB_WITH_CUDA
  if (x.is_cuda() && x.dim() == 2 && x.is_contiguous() &&
      (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16)) {
    const int64_t rows = x.size(0), cols = x.size(1);
    at::Tensor q = at::empty({rows, cols}, x.options().dtype(at::kFloat8_e4m3fn));
    at::Tensor scale = at::empty({rows, 1}, x.options().dtype(at::kFloat));
    C10_CUDA_CHECK(kernels::launch_quantize_rows_e4m3(x.scalar_type() == at::kHalf ? 1 : 2, x.data_ptr(),
                                                      rows, cols, q.data_ptr(), scale.data_ptr<float>(),
                                                      c10::cuda::getCurrentCUDAStream(x.device().index())));
    return {q, scale};
  }
#endif
  return quantize_rows_reference(x);
}

Fp8Weight quantize_weight(const at::Tensor& weight) {
  auto [q, scale] = quantize_rows(weight.contiguous());
  return {q, scale.view({1, -1}).contiguous()};
}

Fp8Activation quantize_activation(const at::Tensor& x) {
  auto [q, scale] = quantize_rows(x.reshape({-1, x.size(-1)}).contiguous());
  return make_activation(q, scale, x.sizes().vec(), x.scalar_type());
}

Fp8Activation make_activation(at::Tensor q, at::Tensor scale, std::vector<int64_t> shape,
                              at::ScalarType dtype) {
  Fp8Activation a;
  a.q = std::move(q);
  a.scale = std::move(scale);
  a.shape = std::move(shape);
  a.dtype = dtype;
  return a;
}

at::Tensor fp8_linear(const Fp8Activation& x, const Fp8Weight& w, const at::Tensor& bias) {
  TORCH_CHECK(x.q.size(1) == w.q.size(1), "fp8_linear: input width ", x.q.size(1),
              " does not match the weight's ", w.q.size(1));
  at::Tensor y;
#ifdef SDXLB_WITH_CUDA
  y = fp8_linear_cutlass(x, w, bias);  // undefined where our kernel does not take the layer
#endif
  if (!y.defined() && x.q.is_cuda()) {
    std::optional<at::Tensor> b;
    if (bias.defined()) b = bias;
    y = at::_scaled_mm(x.q, w.q.t(), x.scale, w.scale, b, /*scale_result=*/std::nullopt, x.dtype,
                       w.fast_accum);
  }
  if (!y.defined()) {
    // LibTorch's CPU _scaled_mm takes per-tensor scales only: the same product of the dequantised operands in
    // float32 (the CPU runs this only in tests; the pipeline refuses FP8 there).
    y = at::matmul(x.q.to(at::kFloat) * x.scale, (w.q.to(at::kFloat) * w.scale.t()).t());
    if (bias.defined()) y = y + bias.to(at::kFloat);
    y = y.to(x.dtype);
  }
  std::vector<int64_t> shape = x.shape;
  shape.back() = w.q.size(0);
  return y.view(shape);
}

at::Tensor fp8_linear(const at::Tensor& x, const Fp8Weight& w, const at::Tensor& bias) {
  return fp8_linear(quantize_activation(x), w, bias);
}

Fp8ConvWeight quantize_conv_weight(const at::Tensor& weight) {
  TORCH_CHECK(
      weight.dim() == 4 && weight.size(2) == weight.size(3) && (weight.size(2) == 3 || weight.size(2) == 2),
      "quantize_conv_weight: expected a 3x3 or 2x2 weight [out, in, k, k], got ", weight.sizes());
  const int64_t out = weight.size(0), in = weight.size(1), k = weight.size(2);
  auto [q, scale] = quantize_rows(weight.permute({0, 2, 3, 1}).reshape({out, k * k * in}).contiguous());
  return {q.view({out, k, k, in}), scale.view({out})};
}

std::pair<at::Tensor, at::Tensor> quantize_samples_reference(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "quantize_samples: expected [N, C, H, W], got ", x.sizes());
  const at::Tensor nhwc = x.permute({0, 2, 3, 1}).contiguous();
  auto [q, scale] = quantize_rows_reference(nhwc.view({x.size(0), -1}));
  return {q.view(nhwc.sizes()), scale};
}

bool fp8_conv_supported(const c10::Device& device, std::string* why) {
  auto no = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (!fp8_supported(device, why)) return false;
#ifdef SDXLB_WITH_CUDA
  if (!kernels::fp8_conv_compiled())
    return no("this build has no FP8 convolution kernel (CUTLASS was not found at configure time)");
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
  if (p->major != 9 || p->minor != 0)
    return no(std::string("the FP8 convolution kernel is built for Hopper (compute capability 9.0); ") +
              p->name + " is " + std::to_string(p->major) + "." + std::to_string(p->minor));
  return true;
#else
  return no("this build has no CUDA");
#endif
}

#ifdef SDXLB_WITH_CUDA
namespace {

// x [N, C, H, W] fp16/bf16 on CUDA quantised per sample: {q [N, H, W, C] e4m3, each pixel's scale
// [N · H · W]}.
std::pair<at::Tensor, at::Tensor> quantize_samples_cuda(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const at::Tensor xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor q = at::empty({n, h, w, c}, x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor pixel_scale = at::empty({n * h * w}, x.options().dtype(at::kFloat));
  at::Tensor amax = at::empty({n}, x.options().dtype(at::kInt));
  C10_CUDA_CHECK(kernels::launch_quantize_samples_e4m3(x.scalar_type() == at::kHalf ? 1 : 2, xc.data_ptr(), n,
                                                       h * w * c, q.data_ptr(), pixel_scale.data_ptr<float>(),
                                                       h * w, static_cast<unsigned*>(amax.data_ptr()),
                                                       c10::cuda::getCurrentCUDAStream(x.device().index())));
  return {q, pixel_scale};
}

// The kernel's numbers are the reference's on the CPU; ATen's reference on the GPU differs in the last bit of
// some scales (it divides by 448 as a product with the reciprocal), so 16-bit GPU input always takes the
// kernel.
bool quantize_samples_on_gpu(const at::Tensor& x) {
  return x.is_cuda() && x.dim() == 4 && (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16) &&
         x.size(1) % 8 == 0;
}

}  // namespace
#endif

std::pair<at::Tensor, at::Tensor> quantize_samples(const at::Tensor& x) {
#ifdef SDXLB_WITH_CUDA
  if (quantize_samples_on_gpu(x)) {
    auto [q, pixel_scale] = quantize_samples_cuda(x);
    return {q, pixel_scale.view({x.size(0), -1}).narrow(1, 0, 1).contiguous()};
  }
#endif
  return quantize_samples_reference(x);
}

at::Tensor fp8_conv(const at::Tensor& q, const at::Tensor& pixel_scale, const Fp8ConvWeight& w,
                    at::ScalarType dtype) {
  TORCH_CHECK(
      q.dim() == 4 && q.scalar_type() == at::kFloat8_e4m3fn && q.size(3) == w.q.size(3) && q.is_contiguous(),
      "fp8_conv: the quantised input ", q.sizes(), " (", q.scalar_type(),
      ") is not a contiguous e4m3 [N, H, W, C] with the weight's ", w.q.size(3), " input channels");
  [[maybe_unused]] const int64_t n = q.size(0), h = q.size(1), wd = q.size(2), c = q.size(3), k = w.q.size(0);
  const int64_t size = w.q.size(1);
  TORCH_CHECK(pixel_scale.scalar_type() == at::kFloat && pixel_scale.numel() == n * h * wd &&
                  pixel_scale.is_contiguous(),
              "fp8_conv: pixel_scale ", pixel_scale.sizes(), " is not float32 [", n, ", ", h * wd, "]");
#ifdef SDXLB_WITH_CUDA
  if (q.is_cuda()) {
    TORCH_CHECK(dtype == at::kHalf, "fp8_conv writes fp16 on the GPU, not ", dtype);
    // The kernel scales each output pixel: a 2x2 convolution has one more row and column than its input.
    const int64_t ho = h + 3 - size, wo = wd + 3 - size;
    const at::Tensor out_scale =
        size == 3 ? pixel_scale
                  : pixel_scale.view({n, h * wd}).narrow(1, 0, 1).expand({n, ho * wo}).contiguous();
    at::Tensor y =
        at::empty({n, k, ho, wo}, q.options().dtype(dtype).memory_format(at::MemoryFormat::ChannelsLast));
    const cudaError_t e = kernels::launch_fp8_conv(
        q.data_ptr(), w.q.data_ptr(), out_scale.data_ptr<float>(), w.scale.data_ptr<float>(), y.data_ptr(),
        static_cast<int>(n), static_cast<int>(h), static_cast<int>(wd), static_cast<int>(c),
        static_cast<int>(k), static_cast<int>(size), c10::cuda::getCurrentCUDAStream(q.device().index()));
    TORCH_CHECK(e != cudaErrorNotSupported, "fp8_conv: the FP8 convolution kernel cannot run [", n, ", ", c,
                ", ", h, ", ", wd, "] with ", k, " output channels of size ", size,
                " on this GPU (it needs Hopper, channels in multiples of 16 and a "
                "build with CUTLASS); use unet_precision: fp16");
    C10_CUDA_CHECK(e);
    return y;
  }
#endif
  // The same product of the dequantised operands in float32 (the CPU runs this only in tests; the pipeline
  // switches convolutions only where fp8_conv_supported).
  const at::Tensor scale = pixel_scale.reshape({n, h * wd}).narrow(1, 0, 1);
  const at::Tensor xf = (q.to(at::kFloat) * scale.view({n, 1, 1, 1})).permute({0, 3, 1, 2});
  const at::Tensor wf = (w.q.to(at::kFloat) * w.scale.view({k, 1, 1, 1})).permute({0, 3, 1, 2});
  return at::conv2d(xf, wf, {}, {1, 1}, {1, 1}).to(dtype);
}

at::Tensor fp8_conv(const at::Tensor& x, const Fp8ConvWeight& w) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == w.q.size(3), "fp8_conv: input ", x.sizes(),
              " does not match the weight's ", w.q.size(3), " input channels");
  const int64_t n = x.size(0), h = x.size(2), wd = x.size(3);
#ifdef SDXLB_WITH_CUDA
  if (quantize_samples_on_gpu(x) && x.scalar_type() == at::kHalf) {  // the kernel writes fp16
    auto [q, pixel_scale] = quantize_samples_cuda(x);
    return fp8_conv(q, pixel_scale, w, x.scalar_type());
  }
#endif
  auto [q, scale] = quantize_samples_reference(x);
  return fp8_conv(q, scale.expand({n, h * wd}).contiguous(), w, x.scalar_type());
}

int64_t use_fp8_convolutions(torch::nn::Module& unet, const std::optional<c10::Device>& quantize_on) {
  at::NoGradGuard no_grad;
  int64_t switched = 0;
  for (const auto& item : unet.named_modules()) {
    const std::string& name = item.key();
    auto* conv = item.value()->as<Conv2dImpl>();
    if (conv == nullptr) continue;
    if (name.find(".resnets.") == std::string::npos && name.find(".upsamplers.") == std::string::npos)
      continue;
    // 3x3, or an upsampler's 2x2 phase convolution (resnet_block.h), each with padding 1.
    if ((conv->kernel_size() != 3 && conv->kernel_size() != 2) || conv->stride() != 1 || conv->padding() != 1)
      continue;
    if (conv->weight.size(0) % 16 != 0 || conv->weight.size(1) % 16 != 0) continue;
    const c10::Device home = conv->weight.device();
    Fp8ConvWeight w = quantize_conv_weight(conv->weight.to(quantize_on.value_or(home)));
    conv->use_fp8({w.q.to(home), w.scale.to(home)});
    ++switched;
  }
  return switched;
}

int64_t use_fp8_linears(torch::nn::Module& unet, const Fp8Layers& which,
                        const std::optional<c10::Device>& quantize_on) {
  at::NoGradGuard no_grad;
  int64_t switched = 0;
  for (const auto& item : unet.named_modules()) {
    const std::string& name = item.key();
    auto* linear = item.value()->as<LinearImpl>();
    if (linear == nullptr || name.find(".attentions.") == std::string::npos) continue;
    // attn2's keys and values project the prompt (77 tokens), once per batch: they stay in the model's dtype.
    if (name.find("attn2.to_k") != std::string::npos || name.find("attn2.to_v") != std::string::npos)
      continue;
    const bool attention =
        name.find(".attn1.") != std::string::npos || name.find(".attn2.") != std::string::npos;
    const bool feed_forward = name.find(".ff.") != std::string::npos;
    if (attention ? !which.attention : feed_forward ? !which.feed_forward : !which.projections) continue;
    // The e4m3 copy replaces the weight: its bytes are released (the parameter keeps its name, now empty).
    const c10::Device home = linear->weight.device();
    Fp8Weight w = quantize_weight(linear->weight.to(quantize_on.value_or(home)));
    linear->use_fp8({w.q.to(home), w.scale.to(home), which.fast_accum});
    ++switched;
  }
  // Self-attention's to_q/to_k/to_v as one GEMM where all three switched.
  for (const auto& m : unet.modules())
    if (auto* attention = m->as<AttentionImpl>(); attention != nullptr) attention->fuse_fp8_projections();
  return switched;
}

}  // namespace sdxlb
