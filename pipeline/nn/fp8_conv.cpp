#include "pipeline/nn/fp8_conv.h"

#include <algorithm>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "pipeline/nn/fp8.h"
#include "pipeline/nn/layers.h"
#include "pipeline/nn/resnet_block.h"

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/nn/kernels/fp8_quantize_kernel.h"
#endif

#ifdef SDXLB_WITH_CUDNN_FRONTEND
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include <ATen/cudnn/Handle.h>
#include <cudnn_frontend.h>

#include "pipeline/nn/cudnn_library.h"
#endif

namespace sdxlb {
namespace {

#ifdef SDXLB_WITH_CUDNN_FRONTEND
namespace fe = cudnn_frontend;

// One cuDNN FP8 convolution graph for a shape: conv_fprop of e4m3 NHWC operands, then the per-image and
// per-channel dequantisation in its epilogue.
struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;
  std::shared_ptr<fe::graph::Tensor_attributes> x, w, x_scale, w_scale, y;
  int64_t workspace = 0;
};

// device, N, C, H, W, K, k, stride, padding, output dtype
using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int>;

std::shared_ptr<Plan> build_plan(cudnnHandle_t handle, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
                                 int64_t r, int64_t stride, int64_t padding, at::ScalarType out) {
  auto p = std::make_shared<Plan>();
  p->graph = std::make_shared<fe::graph::Graph>();
  fe::graph::Graph& g = *p->graph;
  const fe::DataType_t out_type = out == at::kBFloat16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF;
  g.set_io_data_type(out_type)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  p->x = g.tensor(fe::graph::Tensor_attributes()
                      .set_name("X")
                      .set_dim({n, c, h, w})
                      .set_stride({c * h * w, 1, c * w, c})
                      .set_data_type(fe::DataType_t::FP8_E4M3));
  p->w = g.tensor(fe::graph::Tensor_attributes()
                      .set_name("W")
                      .set_dim({k, c, r, r})
                      .set_stride({c * r * r, 1, c * r, c})
                      .set_data_type(fe::DataType_t::FP8_E4M3));
  p->x_scale = g.tensor(fe::graph::Tensor_attributes()
                            .set_name("X_scale")
                            .set_dim({n, 1, 1, 1})
                            .set_stride({1, 1, 1, 1})
                            .set_data_type(fe::DataType_t::FLOAT));
  p->w_scale = g.tensor(fe::graph::Tensor_attributes()
                            .set_name("W_scale")
                            .set_dim({1, k, 1, 1})
                            .set_stride({k, 1, 1, 1})
                            .set_data_type(fe::DataType_t::FLOAT));
  auto conv = g.conv_fprop(p->x, p->w,
                           fe::graph::Conv_fprop_attributes()
                               .set_name("sdxlb_fp8_conv")
                               .set_padding({padding, padding})
                               .set_stride({stride, stride})
                               .set_dilation({1, 1}));
  auto mul = fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::MUL);
  auto y = g.pointwise(g.pointwise(conv, p->x_scale, mul), p->w_scale, mul);
  const int64_t ho = (h + 2 * padding - r) / stride + 1, wo = (w + 2 * padding - r) / stride + 1;
  y->set_output(true).set_dim({n, k, ho, wo}).set_stride({k * ho * wo, 1, k * wo, k}).set_data_type(out_type);
  p->y = y;
  auto check = [&](fe::error_t e, const char* step) {
    TORCH_CHECK(e.is_good(), "cuDNN FP8 convolution ([", n, ", ", c, ", ", h, ", ", w, "] * [", k, ", ", c,
                ", ", r, ", ", r, "], stride ", stride, ", padding ", padding, "): ", step,
                " failed: ", e.get_message());
  };
  check(g.validate(), "validate");
  check(g.build_operation_graph(handle), "build_operation_graph");
  check(g.create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans");
  check(g.check_support(handle), "check_support");
  check(g.build_plans(handle), "build_plans");
  check(g.get_workspace_size(p->workspace), "get_workspace_size");
  return p;
}

std::shared_ptr<Plan> plan_for(cudnnHandle_t handle, int device, int64_t n, int64_t c, int64_t h, int64_t w,
                               int64_t k, int64_t r, int64_t stride, int64_t padding, at::ScalarType out) {
  static std::mutex mutex;
  static std::map<PlanKey, std::shared_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = plans[PlanKey{device, n, c, h, w, k, r, stride, padding, static_cast<int>(out)}];
  if (!slot) slot = build_plan(handle, n, c, h, w, k, r, stride, padding, out);
  return slot;
}
#endif

}  // namespace

bool fp8_conv_supported(const c10::Device& device, std::string* why) {
  auto no = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (!device.is_cuda())
    return no(
        "FP8 convolutions need cuDNN's FP8 convolution on a Hopper GPU (compute capability 9.0) or "
        "newer; this job runs on the " +
        device.str());
#ifndef SDXLB_WITH_CUDNN_FRONTEND
  return no(
      "this build has no cuDNN frontend (the nvidia-cudnn-frontend headers were not found when it was "
      "configured), which FP8 convolutions need; rebuild after scripts/setup.sh");
#else
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
  if (p->major < 9)
    return no(std::string("FP8 convolutions need a Hopper GPU (compute capability 9.0) or newer; ") +
              p->name + " is " + std::to_string(p->major) + "." + std::to_string(p->minor));
  if (!cudnn_frontend_library_error().empty()) return no(cudnn_frontend_library_error());
  return true;
#endif
}

Fp8ConvWeight quantize_conv_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4, "quantize_conv_weight: expected [out, in, k, k], got ", weight.sizes());
  // Per output channel: the rows of [out, in·k·k] in channels-last order (the scale does not depend on it).
  const at::Tensor nhwc = weight.permute({0, 2, 3, 1}).contiguous();
  auto [q, scale] = quantize_rows(nhwc.reshape({weight.size(0), -1}));
  Fp8ConvWeight w;
  w.q = q.view(nhwc.sizes()).permute({0, 3, 1, 2});  // [out, in, k, k] with channels-last strides
  w.scale = scale.view({-1}).contiguous();
  return w;
}

Fp8Images quantize_images_reference(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, "quantize_images: expected [N, ...], got ", x.sizes());
  auto [q, scale] = quantize_rows_reference(x.reshape({x.size(0), -1}));
  Fp8Images out;
  out.q = at::empty_like(x, x.options().dtype(at::kFloat8_e4m3fn));
  out.q.copy_(q.view(x.sizes()));
  out.scale = scale.view({-1}).contiguous();
  return out;
}

Fp8Images quantize_images(const at::Tensor& x) {
#ifdef SDXLB_WITH_CUDA
  const bool layout = x.dim() == 4 && (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast));
  if (x.is_cuda() && layout && (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16)) {
    const int64_t images = x.size(0);
    Fp8Images out;
    out.q = at::empty_like(x, x.options().dtype(at::kFloat8_e4m3fn));
    out.scale = at::empty({images}, x.options().dtype(at::kFloat));
    at::Tensor amax = at::empty({images}, x.options().dtype(at::kFloat));
    C10_CUDA_CHECK(kernels::launch_quantize_images_e4m3(
        x.scalar_type() == at::kHalf ? 1 : 2, x.data_ptr(), images, x.numel() / std::max<int64_t>(images, 1),
        out.q.data_ptr(), amax.data_ptr<float>(), out.scale.data_ptr<float>(),
        c10::cuda::getCurrentCUDAStream(x.device().index())));
    return out;
  }
#endif
  return quantize_images_reference(x);
}

at::Tensor fp8_conv2d_reference(const Fp8Images& x, const Fp8ConvWeight& w, int64_t stride, int64_t padding,
                                at::ScalarType out_dtype) {
  const at::Tensor xf = x.q.to(at::kFloat) * x.scale.view({-1, 1, 1, 1});
  const at::Tensor wf = w.q.to(at::kFloat) * w.scale.view({-1, 1, 1, 1});
  return at::conv2d(xf, wf, {}, {stride, stride}, {padding, padding})
      .to(out_dtype)
      .contiguous(at::MemoryFormat::ChannelsLast);
}

at::Tensor fp8_conv2d(const Fp8Images& x, const Fp8ConvWeight& w, int64_t stride, int64_t padding,
                      at::ScalarType out_dtype) {
  TORCH_CHECK(x.q.dim() == 4 && w.q.dim() == 4 && x.q.size(1) == w.q.size(1) && w.q.size(2) == w.q.size(3),
              "fp8_conv2d: input ", x.q.sizes(), " does not fit the square weight ", w.q.sizes());
  TORCH_CHECK(x.q.scalar_type() == at::kFloat8_e4m3fn && w.q.scalar_type() == at::kFloat8_e4m3fn,
              "fp8_conv2d: the input and the weight must be e4m3");
  if (!x.q.is_cuda()) return fp8_conv2d_reference(x, w, stride, padding, out_dtype);
#ifdef SDXLB_WITH_CUDNN_FRONTEND
  std::string why;
  TORCH_CHECK(fp8_conv_supported(x.q.device(), &why), "fp8_conv2d: ", why);
  TORCH_CHECK(out_dtype == at::kHalf || out_dtype == at::kBFloat16,
              "fp8_conv2d: the output must be float16 or bfloat16, not ", out_dtype);
  const at::Tensor xq = x.q.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wq = w.q.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t n = xq.size(0), c = xq.size(1), h = xq.size(2), wd = xq.size(3), k = wq.size(0),
                r = wq.size(2);
  cudnnHandle_t handle = at::native::getCudnnHandle();
  const int device = xq.device().index();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  TORCH_CHECK(fe::detail::set_stream(handle, stream) == CUDNN_STATUS_SUCCESS,
              "cuDNN FP8 convolution: cudnnSetStream failed");
  const std::shared_ptr<Plan> p = plan_for(handle, device, n, c, h, wd, k, r, stride, padding, out_dtype);
  const int64_t ho = (h + 2 * padding - r) / stride + 1, wo = (wd + 2 * padding - r) / stride + 1;
  at::Tensor y =
      at::empty({n, k, ho, wo}, xq.options().dtype(out_dtype).memory_format(at::MemoryFormat::ChannelsLast));
  at::Tensor workspace = at::empty({std::max<int64_t>(p->workspace, 1)}, xq.options().dtype(at::kByte));
  const at::Tensor xs = x.scale.contiguous(), ws = w.scale.contiguous();
  std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*> pack = {
      {p->x, xq.data_ptr()},
      {p->w, wq.data_ptr()},
      {p->x_scale, xs.data_ptr()},
      {p->w_scale, ws.data_ptr()},
      {p->y, y.data_ptr()}};
  fe::error_t e = p->graph->execute(handle, pack, workspace.data_ptr());
  TORCH_CHECK(e.is_good(), "cuDNN FP8 convolution failed to run: ", e.get_message());
  return y;
#else
  std::string why;
  fp8_conv_supported(x.q.device(), &why);
  TORCH_CHECK(false, "fp8_conv2d: ", why);
#endif
}

int64_t use_fp8_convs(torch::nn::Module& unet) {
  at::NoGradGuard no_grad;
  int64_t switched = 0;
  for (const auto& m : unet.modules()) {
    auto* resnet = m->as<ResnetBlock2DImpl>();
    if (resnet == nullptr) continue;
    for (const auto& child : resnet->named_children()) {
      if (child.key() != "conv1" && child.key() != "conv2") continue;
      auto* conv = child.value()->as<Conv2dImpl>();
      if (conv == nullptr || conv->is_fp8()) continue;
      conv->fp8 = quantize_conv_weight(conv->weight);
      conv->weight.set_data(at::empty({0}, conv->weight.options()));
      ++switched;
    }
  }
  return switched;
}

}  // namespace sdxlb
