// Launcher of the short-context attention kernel (pipeline/nn/kernels/short_attention_kernel.cu): attention
// of many queries over a few keys, as the UNet's cross-attention to the 77 tokens of a text context. Raw
// pointers only, so that the .cu file needs no LibTorch headers.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace sdxlb::kernels {

/// The longest key sequence the kernel takes (all keys of a head sit in shared memory at once).
constexpr int64_t kShortAttentionMaxKeys = 96;
/// The one head width it takes.
constexpr int64_t kShortAttentionHeadDim = 64;

/// Element strides of a [batch, heads, tokens, 64] view whose last dimension is contiguous.
struct HeadStrides {
  int64_t batch;
  int64_t head;
  int64_t token;
};

/// o[b, n, h, :] = softmax(q[b, h, n, :] · k[b, h, :, :]ᵀ · scale) v[b, h, :, :], for heads 64 wide and 1 to
/// kShortAttentionMaxKeys keys: the scores and their softmax in float32 (the row's maximum subtracted before
/// exp), the probabilities rounded to the inputs' type for the second product (as flash attention does),
/// float32 accumulation, the output rounded to nearest even. dtype 1 fp16, 2 bf16; o is contiguous
/// [batch, queries, heads, 64]. Each query row is computed on its own, the same way wherever it sits in the
/// batch. cudaErrorInvalidValue, before launching anything, for inputs the kernel does not take (pointers
/// not 16-byte aligned, strides not multiples of 8 elements, too many keys, a scale that is not positive).
cudaError_t launch_short_attention(int dtype, const void* q, HeadStrides q_strides, const void* k,
                                   HeadStrides k_strides, const void* v, HeadStrides v_strides, void* o,
                                   int64_t batch, int64_t heads, int64_t queries, int64_t keys, float scale,
                                   cudaStream_t stream);

/// The same attention with its output in e4m3 for an FP8 GEMM: o[b, n, h, :] (bytes, contiguous
/// [batch, queries, heads, 64]) = e4m3(o · (1 / out_scale[b])), the reciprocal and the product rounded to
/// float32 as kernels/e4m3.cuh does (saturating at ±448), and row_scale[b · queries + n] = out_scale[b] for
/// every row (float32 device arrays of batch and batch · queries values). out_scale[b] must bound the batch
/// item's output, as max |v[b]| / 448 does (each output row is a convex combination of the item's value
/// rows).
cudaError_t launch_short_attention_e4m3(int dtype, const void* q, HeadStrides q_strides, const void* k,
                                        HeadStrides k_strides, const void* v, HeadStrides v_strides, void* o,
                                        const float* out_scale, float* row_scale, int64_t batch,
                                        int64_t heads, int64_t queries, int64_t keys, float scale,
                                        cudaStream_t stream);

}  // namespace sdxlb::kernels
