#include "pipeline/nn/fp8_attention.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "pipeline/nn/fused_ops.h"

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/nn/kernels/fp8_gemm_kernel.h"
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

#include "pipeline/nn/cudnn_loader.h"
#endif

namespace sdxlb {
namespace {

constexpr float kE4m3Max = 448.f;
// e4m3 rounds a value by at most half a unit in its last place: 2^-4 of it.
constexpr double kInputRounding = 1.0 + 1.0 / 16;

#ifdef SDXLB_WITH_CUDNN_FRONTEND
namespace fe = cudnn_frontend;

// One cuDNN FP8 attention graph for a shape, with the handles of its tensors for the variant pack.
struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;
  std::shared_ptr<fe::graph::Tensor_attributes> q, k, v, o, descale_q, descale_k, descale_v, descale_s,
      scale_s, scale_o, amax_s, amax_o;
  int64_t workspace = 0;
};

using PlanKey =
    std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;  // device, B, N, heads, d,
                                                                            // batch and token strides

std::shared_ptr<Plan> build_plan(cudnnHandle_t handle, int64_t b, int64_t n, int64_t h, int64_t d,
                                 int64_t batch_stride, int64_t token_stride) {
  auto p = std::make_shared<Plan>();
  p->graph = std::make_shared<fe::graph::Graph>();
  fe::graph::Graph& g = *p->graph;
  g.set_io_data_type(fe::DataType_t::FP8_E4M3)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  // [B, N, heads·d] memory (rows `token_stride` apart: the three thirds of a fused projection's output) seen
  // as [B, heads, N, d]; the output is contiguous.
  const std::vector<int64_t> dims{b, h, n, d}, strides{batch_stride, d, token_stride, 1},
      out_strides{n * h * d, d, h * d, 1};
  auto tensor = [&](const char* name) {
    return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_dim(dims).set_stride(strides));
  };
  auto scalar = [&](const char* name) {
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_name(name)
                        .set_dim({1, 1, 1, 1})
                        .set_stride({1, 1, 1, 1})
                        .set_data_type(fe::DataType_t::FLOAT));
  };
  p->q = tensor("Q");
  p->k = tensor("K");
  p->v = tensor("V");
  p->descale_q = scalar("Descale_Q");
  p->descale_k = scalar("Descale_K");
  p->descale_v = scalar("Descale_V");
  p->descale_s = scalar("Descale_S");
  p->scale_s = scalar("Scale_S");
  p->scale_o = scalar("Scale_O");
  auto options = fe::graph::SDPA_fp8_attributes()
                     .set_name("sdxlb_fp8_self_attention")
                     .set_generate_stats(false)
                     .set_causal_mask(false)
                     .set_attn_scale(1.f / std::sqrt(static_cast<float>(d)));
  auto [o, stats, amax_s, amax_o] = g.sdpa_fp8(p->q, p->k, p->v, p->descale_q, p->descale_k, p->descale_v,
                                               p->descale_s, p->scale_s, p->scale_o, options);
  (void)stats;  // inference: none
  o->set_output(true).set_dim(dims).set_stride(out_strides).set_data_type(fe::DataType_t::FP8_E4M3);
  amax_s->set_output(true)
      .set_dim({1, 1, 1, 1})
      .set_stride({1, 1, 1, 1})
      .set_data_type(fe::DataType_t::FLOAT);
  amax_o->set_output(true)
      .set_dim({1, 1, 1, 1})
      .set_stride({1, 1, 1, 1})
      .set_data_type(fe::DataType_t::FLOAT);
  p->o = o;
  p->amax_s = amax_s;
  p->amax_o = amax_o;
  auto check = [&](fe::error_t e, const char* step) {
    TORCH_CHECK(e.is_good(), "cuDNN FP8 attention (B ", b, ", ", n, " tokens, ", h, " heads of ", d,
                "): ", step, " failed: ", e.get_message());
  };
  check(g.validate(), "validate");
  check(g.build_operation_graph(handle), "build_operation_graph");
  check(g.create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans");
  check(g.check_support(handle), "check_support");
  check(g.build_plans(handle), "build_plans");
  check(g.get_workspace_size(p->workspace), "get_workspace_size");
  return p;
}

// The plan of a shape: built on first use (a warm-up call, before any CUDA graph captures it), then shared.
std::shared_ptr<Plan> plan_for(cudnnHandle_t handle, int device, int64_t b, int64_t n, int64_t h, int64_t d,
                               int64_t batch_stride, int64_t token_stride) {
  static std::mutex mutex;
  static std::map<PlanKey, std::shared_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = plans[PlanKey{device, b, n, h, d, batch_stride, token_stride}];
  if (!slot) slot = build_plan(handle, b, n, h, d, batch_stride, token_stride);
  return slot;
}
#endif

}  // namespace

bool fp8_attention_supported(const c10::Device& device, std::string* why) {
  auto no = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (!device.is_cuda())
    return no(
        "FP8 attention needs cuDNN's FP8 flash attention on a Hopper GPU (compute capability 9.0) or "
        "newer; this job runs on the " +
        device.str());
#ifndef SDXLB_WITH_CUDNN_FRONTEND
  return no(
      "this build has no cuDNN frontend (the nvidia-cudnn-frontend headers were not found when it was "
      "configured), which FP8 attention needs; rebuild after scripts/setup.sh");
#else
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
  if (p->major < 9)
    return no(std::string("FP8 attention needs a Hopper GPU (compute capability 9.0) or newer; ") + p->name +
              " is " + std::to_string(p->major) + "." + std::to_string(p->minor));
  if (!cudnn_library_error().empty()) return no(cudnn_library_error());
  const size_t version = fe::detail::get_backend_version();
  if (version < 90100 || version == 91000)
    return no("FP8 attention needs cuDNN 9.1 or newer (not 9.10.0); this process loaded cuDNN " +
              std::to_string(version));
  return true;
#endif
}

double layer_norm_radius(const at::Tensor& weight, const at::Tensor& bias) {
  // On the CPU, so that a UNet gets the same number wherever its weights are (resident or streamed).
  const at::Tensor w = weight.to(at::kCPU).to(at::kDouble);
  double r = w.abs().max().item<double>() * std::sqrt(static_cast<double>(w.numel()));
  if (bias.defined()) r += bias.to(at::kCPU).to(at::kDouble).norm().item<double>();
  return r;
}

float fp8_projection_scale(const Fp8Weight& w, const at::Tensor& bias, double radius) {
  // The weight the GEMM multiplies by: e4m3 rows times their scales. On the CPU, as layer_norm_radius.
  const at::Tensor rows =
      w.q.to(at::kCPU).to(at::kDouble) * w.scale.to(at::kCPU).to(at::kDouble).view({-1, 1});
  at::Tensor bound = rows.norm(2, /*dim=*/1) * (radius * kInputRounding);
  if (bias.defined()) bound = bound + bias.to(at::kCPU).to(at::kDouble).abs().view({-1});
  const double scale = bound.max().item<double>() / kE4m3Max;
  return static_cast<float>(scale > 0 ? scale : 1.0);
}

at::Tensor quantize_fixed_reference(const at::Tensor& x, float scale) {
  const float inverse = 1.f / scale;
  return (x.to(at::kFloat) * inverse).clamp(-kE4m3Max, kE4m3Max).to(at::kFloat8_e4m3fn);
}

std::vector<at::Tensor> quantize_fixed(c10::ArrayRef<at::Tensor> xs, c10::ArrayRef<float> scales) {
  TORCH_CHECK(!xs.empty() && xs.size() <= 3 && xs.size() == scales.size(),
              "quantize_fixed: one to three tensors, each with a scale");
  std::vector<at::Tensor> out;
#ifdef SDXLB_WITH_CUDA
  bool kernel = true;
  for (const at::Tensor& x : xs)
    kernel = kernel && x.is_cuda() && x.is_contiguous() && x.sizes() == xs[0].sizes() &&
             x.scalar_type() == xs[0].scalar_type() && x.device() == xs[0].device() &&
             (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16);
  if (kernel) {
    const void* in[3]{};
    void* q[3]{};
    float inverse[3]{};
    for (size_t t = 0; t < xs.size(); ++t) {
      out.push_back(at::empty(xs[t].sizes(), xs[t].options().dtype(at::kFloat8_e4m3fn)));
      in[t] = xs[t].data_ptr();
      q[t] = out.back().data_ptr();
      inverse[t] = 1.f / scales[t];
    }
    C10_CUDA_CHECK(kernels::launch_quantize_fixed_e4m3(
        xs[0].scalar_type() == at::kHalf ? 1 : 2, static_cast<int>(xs.size()), in, q, inverse, xs[0].numel(),
        c10::cuda::getCurrentCUDAStream(xs[0].device().index())));
    return out;
  }
#endif
  for (size_t t = 0; t < xs.size(); ++t) out.push_back(quantize_fixed_reference(xs[t], scales[t]));
  return out;
}

at::Tensor fp8_linear_e4m3(const Fp8Activation& x, const Fp8Weight& w, float scale) {
#ifdef SDXLB_WITH_CUDA
  if (our_fp8_gemm_takes(x, w) && fusion_enabled(Fusion::kFp8Qkv)) {
    const at::Tensor xq = x.q.contiguous(), xs = x.scale.contiguous(), ws = w.scale.contiguous();
    const int64_t rows = xq.size(0), k = xq.size(1), n = w.q.size(0);
    TORCH_CHECK(k == w.q.size(1), "fp8_linear_e4m3: input width ", k, " does not match the weight's ",
                w.q.size(1));
    at::Tensor q = at::empty({rows, n}, xq.options());
    const cudaError_t e = kernels::launch_fp8_gemm_e4m3(
        xq.data_ptr(), w.q.data_ptr(), xs.data_ptr<float>(), ws.data_ptr<float>(), 1.f / scale, q.data_ptr(),
        rows, k, n, c10::cuda::getCurrentCUDAStream(xq.device().index()));
    if (e != cudaErrorNotSupported) {
      C10_CUDA_CHECK(e);
      std::vector<int64_t> shape = x.shape;
      shape.back() = n;
      return q.view(shape);
    }
    (void)cudaGetLastError();  // a shape the kernel does not take: the two ops below
  }
#endif
  return quantize_fixed({fp8_linear(x, w, {})}, {scale})[0];
}

Fp8AttentionScales make_fp8_attention_scales(float q, float k, float v, const c10::Device& device) {
  Fp8AttentionScales s;
  s.q = q;
  s.k = k;
  s.v = v;
  const float values[8] = {q, k, v, 1.f / kE4m3Max, kE4m3Max, 1.f / v, 0.f, 0.f};
  s.device = at::tensor(at::ArrayRef<float>(values, 8), at::TensorOptions().dtype(at::kFloat)).to(device);
  return s;
}

at::Tensor fp8_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   int64_t heads, const Fp8AttentionScales& s) {
  const int64_t b = q.size(0), n = q.size(1), d = q.size(2) / heads;
  auto heads_of = [&](const at::Tensor& x, float scale) {
    return (x.to(at::kFloat) * scale).view({b, -1, heads, d}).transpose(1, 2);
  };
  const at::Tensor qf = heads_of(q, s.q), kf = heads_of(k, s.k), vf = heads_of(v, s.v);
  const at::Tensor p =
      at::softmax(at::matmul(qf, kf.transpose(-1, -2)) / std::sqrt(static_cast<double>(d)), -1);
  const at::Tensor p8 = quantize_fixed_reference(p, 1.f / kE4m3Max).to(at::kFloat) * (1.f / kE4m3Max);
  const at::Tensor o = at::matmul(p8, vf).transpose(1, 2).reshape({b, n, heads * d});
  return quantize_fixed_reference(o, s.v);
}

at::Tensor fp8_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads,
                         const Fp8AttentionScales& s) {
  TORCH_CHECK(q.dim() == 3 && q.sizes() == k.sizes() && q.sizes() == v.sizes() && q.size(2) % heads == 0,
              "fp8_attention: q, k, v must be [B, N, heads·d] alike, got ", q.sizes(), ", ", k.sizes(), ", ",
              v.sizes());
  TORCH_CHECK(q.stride(2) == 1 && q.strides() == k.strides() && q.strides() == v.strides(),
              "fp8_attention: q, k, v must have contiguous rows and the same strides, got ", q.strides(),
              ", ", k.strides(), ", ", v.strides());
  TORCH_CHECK(q.scalar_type() == at::kFloat8_e4m3fn && k.scalar_type() == at::kFloat8_e4m3fn &&
                  v.scalar_type() == at::kFloat8_e4m3fn,
              "fp8_attention: q, k, v must be e4m3");
  // The CPU runs this only in tests (the pipeline refuses FP8 attention there): the reference.
  if (!q.is_cuda()) return fp8_attention_reference(q, k, v, heads, s);
#ifdef SDXLB_WITH_CUDNN_FRONTEND
  std::string why;
  TORCH_CHECK(fp8_attention_supported(q.device(), &why), "fp8_attention: ", why);
  const int64_t b = q.size(0), n = q.size(1), d = q.size(2) / heads;
  cudnnHandle_t handle = at::native::getCudnnHandle();
  const int device = q.device().index();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  TORCH_CHECK(fe::detail::set_stream(handle, stream) == CUDNN_STATUS_SUCCESS,
              "cuDNN FP8 attention: cudnnSetStream failed");
  const std::shared_ptr<Plan> p = plan_for(handle, device, b, n, heads, d, q.stride(0), q.stride(1));
  at::Tensor o = at::empty(q.sizes(), q.options());
  at::Tensor workspace = at::empty({std::max<int64_t>(p->workspace, 1)}, q.options().dtype(at::kByte));
  float* sd = s.device.data_ptr<float>();
  std::unordered_map<std::shared_ptr<fe::graph::Tensor_attributes>, void*> pack = {
      {p->q, q.data_ptr()},   {p->k, k.data_ptr()},   {p->v, v.data_ptr()},   {p->o, o.data_ptr()},
      {p->descale_q, sd + 0}, {p->descale_k, sd + 1}, {p->descale_v, sd + 2}, {p->descale_s, sd + 3},
      {p->scale_s, sd + 4},   {p->scale_o, sd + 5},   {p->amax_s, sd + 6},    {p->amax_o, sd + 7}};
  fe::error_t e = p->graph->execute(handle, pack, workspace.data_ptr());
  TORCH_CHECK(e.is_good(), "cuDNN FP8 attention failed to run: ", e.get_message());
  return o;
#else
  (void)s;
  std::string why;
  fp8_attention_supported(q.device(), &why);
  TORCH_CHECK(false, "fp8_attention: ", why);
#endif
}

}  // namespace sdxlb
