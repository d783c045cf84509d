#include "pipeline/nn/residual_gemm.h"

#include <atomic>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "pipeline/nn/fused_ops.h"

#ifdef SDXLB_WITH_CUDA
#include <dlfcn.h>

#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDAStream.h>
#include <cublasLt.h>
#endif

namespace sdxlb {
namespace {

std::atomic<int64_t> fused_calls{0}, unfused_calls{0};

// The residual as [rows, out] rows of unit stride (a view where it can be, a copy otherwise).
at::Tensor residual_rows(const at::Tensor& residual, int64_t rows, int64_t out) {
  TORCH_CHECK(residual.defined() && residual.numel() == rows * out && residual.size(-1) == out,
              "linear_add: the residual ",
              residual.defined() ? c10::str(residual.sizes()) : std::string("(none)"),
              " does not match the layer's output of ", rows, " rows of ", out);
  at::Tensor r = residual.reshape({rows, out});
  if (r.stride(1) != 1) r = r.contiguous();
  return r;
}

std::vector<int64_t> output_shape(at::IntArrayRef leading, int64_t out) {
  std::vector<int64_t> shape = leading.vec();
  shape.back() = out;
  return shape;
}

#ifdef SDXLB_WITH_CUDA
// cuBLASLt's entry points, from the libcublasLt LibTorch has loaded (so that both use one cuBLASLt and this
// library needs no link-time dependency on it).
struct CublasLt {
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  bool ok = false;
};

const CublasLt& cublaslt() {
  static const CublasLt lt = [] {
    CublasLt l;
    at::cuda::getCurrentCUDABlasLtHandle();
    const std::string name = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) return l;
    auto get = [&](auto& f, const char* symbol) {
      f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(dlsym(h, symbol));
      return f != nullptr;
    };
    l.ok = get(l.desc_create, "cublasLtMatmulDescCreate") &&
           get(l.desc_destroy, "cublasLtMatmulDescDestroy") &&
           get(l.desc_set, "cublasLtMatmulDescSetAttribute") &&
           get(l.layout_create, "cublasLtMatrixLayoutCreate") &&
           get(l.layout_destroy, "cublasLtMatrixLayoutDestroy") &&
           get(l.pref_create, "cublasLtMatmulPreferenceCreate") &&
           get(l.pref_destroy, "cublasLtMatmulPreferenceDestroy") &&
           get(l.pref_set, "cublasLtMatmulPreferenceSetAttribute") &&
           get(l.heuristic, "cublasLtMatmulAlgoGetHeuristic") && get(l.matmul, "cublasLtMatmul");
    return l;
  }();
  return lt;
}

cudaDataType_t cuda_type(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    case at::kFloat8_e4m3fn:
      return CUDA_R_8F_E4M3;
    default:
      return CUDA_R_32F;
  }
}

// One problem for cuBLASLt, in row-major terms: out [rows, n] = x [rows, k] · w [n, k]ᵀ (each scaled per row
// and per channel when the scales are given) + bias [n] + residual [rows, n] (row stride ldr). In cuBLASLt's
// column-major terms that is Dᵀ = W · xᵀ: A = w transposed ("TN", what Hopper's FP8 GEMMs take), B = x.
struct Problem {
  const void* w = nullptr;
  const void* x = nullptr;
  at::ScalarType operand = at::kHalf;
  const float* w_scale = nullptr;  // [n], FP8 only
  const float* x_scale = nullptr;  // [rows], FP8 only
  bool fast_accum = false;
  const void* bias = nullptr;
  const void* residual = nullptr;
  int64_t ldr = 0;
  void* out = nullptr;
  at::ScalarType out_type = at::kHalf;
  int64_t rows = 0, n = 0, k = 0;
};

// Runs the problem; false (nothing launched) when cuBLASLt has no algorithm for it.
bool run(const Problem& p, cudaStream_t stream) {
  const CublasLt& lt = cublaslt();
  if (!lt.ok) return false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  bool launched = false;
  const cudaDataType_t ab = cuda_type(p.operand), cd = cuda_type(p.out_type);
  if (lt.desc_create(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS) {
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    bool ok = lt.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)) == CUBLAS_STATUS_SUCCESS &&
              lt.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)) == CUBLAS_STATUS_SUCCESS;
    if (ok && p.bias != nullptr) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      ok = lt.desc_set(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)) ==
               CUBLAS_STATUS_SUCCESS &&
           lt.desc_set(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias)) ==
               CUBLAS_STATUS_SUCCESS &&
           lt.desc_set(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &cd, sizeof(cd)) == CUBLAS_STATUS_SUCCESS;
    }
    if (ok && p.w_scale != nullptr) {
      const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      const int8_t fast = p.fast_accum ? 1 : 0;
      ok = lt.desc_set(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)) ==
               CUBLAS_STATUS_SUCCESS &&
           lt.desc_set(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)) ==
               CUBLAS_STATUS_SUCCESS &&
           lt.desc_set(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &p.w_scale, sizeof(p.w_scale)) ==
               CUBLAS_STATUS_SUCCESS &&
           lt.desc_set(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &p.x_scale, sizeof(p.x_scale)) ==
               CUBLAS_STATUS_SUCCESS &&
           lt.desc_set(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)) == CUBLAS_STATUS_SUCCESS;
    }
    ok = ok && lt.layout_create(&a, ab, p.k, p.n, p.k) == CUBLAS_STATUS_SUCCESS &&
         lt.layout_create(&b, ab, p.k, p.rows, p.k) == CUBLAS_STATUS_SUCCESS &&
         lt.layout_create(&c, cd, p.n, p.rows, p.ldr) == CUBLAS_STATUS_SUCCESS &&
         lt.layout_create(&d, cd, p.n, p.rows, p.n) == CUBLAS_STATUS_SUCCESS &&
         lt.pref_create(&pref) == CUBLAS_STATUS_SUCCESS;
    const size_t workspace_bytes = at::cuda::getCUDABlasLtWorkspaceSize();
    ok = ok && lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                           sizeof(workspace_bytes)) == CUBLAS_STATUS_SUCCESS;
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
    ok = ok && lt.heuristic(handle, desc, a, b, c, d, pref, 1, &result, &found) == CUBLAS_STATUS_SUCCESS &&
         found > 0;
    if (ok) {
      const float one = 1.f;
      const cublasStatus_t s =
          lt.matmul(handle, desc, &one, p.w, a, p.x, b, &one, p.residual, c, p.out, d, &result.algo,
                    at::cuda::getCUDABlasLtWorkspace(), workspace_bytes, stream);
      TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuBLASLt GEMM with a residual epilogue (", p.rows, " x ", p.n,
                  " x ", p.k, ") failed with status ", static_cast<int>(s));
      launched = true;
    }
  }
  if (pref != nullptr) lt.pref_destroy(pref);
  for (cublasLtMatrixLayout_t l : {a, b, c, d})
    if (l != nullptr) lt.layout_destroy(l);
  if (desc != nullptr) lt.desc_destroy(desc);
  return launched;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// What every fused problem needs: CUDA, 16-byte aligned rows of widths that are multiples of 16 elements.
bool fusable(const at::Tensor& x2, const at::Tensor& r, const at::Tensor& bias, at::ScalarType out) {
  return x2.is_cuda() && r.is_cuda() && (out == at::kHalf || out == at::kBFloat16) &&
         r.scalar_type() == out &&
         (!bias.defined() ||
          (bias.scalar_type() == out && bias.is_contiguous() && aligned16(bias.data_ptr()))) &&
         x2.is_contiguous() && aligned16(x2.data_ptr()) && x2.size(1) % 16 == 0 && r.size(1) % 16 == 0 &&
         r.stride(0) % 8 == 0 && aligned16(r.data_ptr()) && fusion_enabled(Fusion::kResidualGemm);
}
#endif

}  // namespace

at::Tensor linear_add(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                      const at::Tensor& residual) {
  const int64_t in = weight.size(1), out = weight.size(0);
  TORCH_CHECK(x.size(-1) == in, "linear_add: input ", x.sizes(), " does not fit the weight ", weight.sizes());
#ifdef SDXLB_WITH_CUDA
  const int64_t rows = x.numel() / in;
  if (x.is_cuda() && x.scalar_type() == weight.scalar_type() && weight.is_contiguous()) {
    const at::Tensor x2 = x.reshape({rows, in});
    const at::Tensor r = residual_rows(residual, rows, out);
    if (fusable(x2, r, bias, x.scalar_type()) && aligned16(weight.data_ptr())) {
      at::Tensor y = at::empty({rows, out}, x.options());
      Problem p;
      p.w = weight.data_ptr();
      p.x = x2.data_ptr();
      p.operand = x.scalar_type();
      p.bias = bias.defined() ? bias.data_ptr() : nullptr;
      p.residual = r.data_ptr();
      p.ldr = r.stride(0);
      p.out = y.data_ptr();
      p.out_type = x.scalar_type();
      p.rows = rows;
      p.n = out;
      p.k = in;
      if (run(p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream())) {
        ++fused_calls;
        return y.view(output_shape(x.sizes(), out));
      }
    }
  }
#endif
  ++unfused_calls;
  return at::linear(x, weight, bias) + residual.reshape(output_shape(x.sizes(), out));
}

at::Tensor fp8_linear_add(const Fp8Activation& x, const Fp8Weight& w, const at::Tensor& bias,
                          const at::Tensor& residual) {
  const int64_t rows = x.q.size(0), in = x.q.size(1), out = w.q.size(0);
  TORCH_CHECK(w.q.size(1) == in, "fp8_linear_add: input width ", in, " does not match the weight's ",
              w.q.size(1));
#ifdef SDXLB_WITH_CUDA
  if (x.q.is_cuda()) {
    const at::Tensor r = residual_rows(residual, rows, out);
    const at::Tensor ws = w.scale.contiguous(), xs = x.scale.contiguous();
    if (fusable(x.q, r, bias, x.dtype) && w.q.is_contiguous() && aligned16(w.q.data_ptr())) {
      at::Tensor y = at::empty({rows, out}, r.options().dtype(x.dtype));
      Problem p;
      p.w = w.q.data_ptr();
      p.x = x.q.data_ptr();
      p.operand = at::kFloat8_e4m3fn;
      p.w_scale = ws.data_ptr<float>();
      p.x_scale = xs.data_ptr<float>();
      p.fast_accum = w.fast_accum;
      p.bias = bias.defined() ? bias.data_ptr() : nullptr;
      p.residual = r.data_ptr();
      p.ldr = r.stride(0);
      p.out = y.data_ptr();
      p.out_type = x.dtype;
      p.rows = rows;
      p.n = out;
      p.k = in;
      if (run(p, c10::cuda::getCurrentCUDAStream(x.q.device().index()).stream())) {
        ++fused_calls;
        return y.view(output_shape(x.shape, out));
      }
    }
  }
#endif
  ++unfused_calls;
  return fp8_linear(x, w, bias) + residual.reshape(output_shape(x.shape, out));
}

ResidualGemmCounts residual_gemm_counts() {
  return {fused_calls.load(), unfused_calls.load()};
}

}  // namespace sdxlb
