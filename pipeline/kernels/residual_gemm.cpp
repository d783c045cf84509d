#include "pipeline/kernels/residual_gemm.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

namespace sdxlb::kernels {
namespace {

// Largest power of two (up to 256) that divides the address: cuBLASLt picks kernels for the alignment the
// preference promises.
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// Owns the cuBLASLt descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  ~Descriptors() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

using AlgoKey = std::tuple<int64_t, int64_t, int64_t, bool, bool, size_t, uint32_t, uint32_t, uint32_t>;

#define SDXLB_LT(call)                            \
  do {                                            \
    const cublasStatus_t st_ = (call);            \
    if (st_ != CUBLAS_STATUS_SUCCESS) return st_; \
  } while (0)

}  // namespace

cublasStatus_t residual_gemm(cublasLtHandle_t handle, const ResidualGemmArgs& g, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream) {
  if (g.m <= 0 || g.n <= 0) return CUBLAS_STATUS_SUCCESS;
  const cudaDataType_t type = g.bf16 ? CUDA_R_16BF : CUDA_R_16F;
  // Column-major view of the row-major product: out^T [n, m] = W [n, k] * x^T [k, m] + residual^T.
  Descriptors d;
  SDXLB_LT(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  SDXLB_LT(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  SDXLB_LT(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (g.bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    SDXLB_LT(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    SDXLB_LT(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
  }
  SDXLB_LT(
      cublasLtMatrixLayoutCreate(&d.a, type, static_cast<uint64_t>(g.k), static_cast<uint64_t>(g.n), g.k));
  SDXLB_LT(
      cublasLtMatrixLayoutCreate(&d.b, type, static_cast<uint64_t>(g.k), static_cast<uint64_t>(g.m), g.k));
  SDXLB_LT(
      cublasLtMatrixLayoutCreate(&d.c, type, static_cast<uint64_t>(g.n), static_cast<uint64_t>(g.m), g.n));

  const uint32_t align_a = alignment(g.weight), align_b = alignment(g.x);
  const uint32_t align_c = std::min(alignment(g.residual), alignment(g.out));
  const AlgoKey key{g.m, g.n, g.k, g.bf16, g.bias != nullptr, workspace_bytes, align_a, align_b, align_c};
  static std::mutex mu;
  static std::map<AlgoKey, cublasLtMatmulAlgo_t> algos;
  cublasLtMatmulAlgo_t algo;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = algos.find(key);
    if (it == algos.end()) {
      cublasLtMatmulPreference_t pref = nullptr;
      SDXLB_LT(cublasLtMatmulPreferenceCreate(&pref));
      const uint64_t ws = workspace_bytes;
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                               &ws, sizeof(ws));
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                  sizeof(align_a));
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                  sizeof(align_b));
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                  sizeof(align_c));
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                  sizeof(align_c));
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(handle, d.op, d.a, d.b, d.c, d.c, pref, 1, &result, &found);
      cublasLtMatmulPreferenceDestroy(pref);
      if (st != CUBLAS_STATUS_SUCCESS) return st;
      if (found == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
      it = algos.emplace(key, result.algo).first;
    }
    algo = it->second;
  }
  const float alpha = 1.f, beta = 1.f;
  return cublasLtMatmul(handle, d.op, &alpha, g.weight, d.a, g.x, d.b, &beta, g.residual, d.c, g.out, d.c,
                        &algo, workspace, workspace_bytes, stream);
}

}  // namespace sdxlb::kernels
