// out = x W^T + bias + residual in one cuBLASLt matrix product: the bias and the residual add are the
// product's epilogue, so neither costs a pass over memory of its own. Raw pointers only (no LibTorch);
// pipeline/fused_ops.cpp wraps it for tensors.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

struct ResidualGemmArgs {
  const void* x = nullptr;         ///< [m, k], row-major
  const void* weight = nullptr;    ///< [n, k], row-major (torch.nn.Linear's layout)
  const void* bias = nullptr;      ///< [n], or null
  const void* residual = nullptr;  ///< [m, n], row-major
  void* out = nullptr;             ///< [m, n], row-major; may not alias x or weight
  int64_t m = 0, n = 0, k = 0;
  bool bf16 = false;  ///< all of them bfloat16 (else float16)
};

/// Runs the product on `stream` with float32 accumulation, using `workspace` (may be null with size 0).
/// The algorithm is cuBLASLt's first heuristic choice for the shape and pointer alignments, remembered per
/// shape, so that equal shapes always run the same kernel. Returns the cuBLAS status.
cublasStatus_t residual_gemm(cublasLtHandle_t handle, const ResidualGemmArgs& args, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream);

}  // namespace sdxlb::kernels
