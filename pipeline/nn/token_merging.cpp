#include "pipeline/nn/token_merging.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#ifdef SDXLB_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "pipeline/nn/kernels/token_merge_kernel.h"
#endif

namespace sdxlb {
namespace {

// Two's-complement constants for the int64 tensors of the hash (the bits of SplitMix64's constants).
constexpr int64_t as_int64(uint64_t v) {
  return static_cast<int64_t>(v);
}

// x >> s with zeros shifted in (int64 tensors shift arithmetically).
at::Tensor shift_right_logical(const at::Tensor& x, int64_t s) {
  return at::bitwise_and(at::bitwise_right_shift(x, s), as_int64((~uint64_t{0}) >> s));
}

// SplitMix64's finaliser over int64 tensors (multiplication wraps modulo 2^64 on CPU and CUDA alike).
at::Tensor mix64(at::Tensor z) {
  z = at::bitwise_xor(z, shift_right_logical(z, 30)) * as_int64(0xbf58476d1ce4e5b9ULL);
  z = at::bitwise_xor(z, shift_right_logical(z, 27)) * as_int64(0x94d049bb133111ebULL);
  return at::bitwise_xor(z, shift_right_logical(z, 31));
}

// The destination position of each of the hsy × wsx cells, in [0, cells): a hash of (seed, step, ordinal,
// cell) computed where seed and step live (inside the CUDA graph on the GPU).
at::Tensor cell_destinations(const at::Tensor& seed, const at::Tensor& step, int64_t ordinal, int64_t hsy,
                             int64_t wsx, int64_t cells) {
#ifdef SDXLB_WITH_CUDA
  if (seed.is_cuda()) {
    at::Tensor out = at::empty({hsy, wsx, 1}, seed.options().dtype(at::kLong));
    C10_CUDA_CHECK(kernels::launch_cell_hash(seed.data_ptr<int64_t>(), step.data_ptr<int64_t>(), ordinal,
                                             cells, out.data_ptr<int64_t>(), hsy * wsx,
                                             c10::cuda::getCurrentCUDAStream(seed.device().index())));
    return out;
  }
#endif
  at::Tensor key = mix64(seed + as_int64(0x9e3779b97f4a7c15ULL));
  key = mix64(key + step * as_int64(0xd1b54a32d192ed03ULL) + ordinal * as_int64(0x8cb92ba72f3d8dd7ULL));
  at::Tensor z = at::arange(hsy * wsx, seed.options().dtype(at::kLong)) * as_int64(0x9e3779b97f4a7c15ULL);
  z = mix64(z + key);
  return at::remainder(at::bitwise_and(z, INT64_MAX), cells).view({hsy, wsx, 1});
}

#ifdef SDXLB_WITH_CUDA
int dtype_code(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat:
      return 0;
    case at::kHalf:
      return 1;
    case at::kBFloat16:
      return 2;
    default:
      TORCH_CHECK(false, "token merging: unsupported dtype ", x.scalar_type());
  }
}

// x [B, N, C] rows `rows` ([B, M], or [1, M] for every batch row) → [B, M, C], in one kernel; with
// `normalize`, each row divided by its L2 norm (x / x.norm(2, -1, keepdim=True), gathered).
at::Tensor gather_rows(const at::Tensor& x, const at::Tensor& rows, bool normalize = false) {
  const at::Tensor xc = x.contiguous();
  const at::Tensor rc = rows.contiguous();
  const int64_t batch = xc.size(0), m = rc.size(-1);
  at::Tensor out = at::empty({batch, m, xc.size(2)}, xc.options());
  const auto launch = normalize ? kernels::launch_gather_normalize_rows : kernels::launch_gather_rows;
  C10_CUDA_CHECK(launch(dtype_code(xc), xc.data_ptr(), rc.data_ptr<int64_t>(), rc.size(0) == 1 ? 0 : m,
                        out.data_ptr(), batch, xc.size(1), m, xc.size(2),
                        c10::cuda::getCurrentCUDAStream(x.device().index())));
  return out;
}
#endif

}  // namespace

TokenMerge TokenMerge::plan(const at::Tensor& metric, int64_t w, int64_t h, int64_t sx, int64_t sy, int64_t r,
                            const at::Tensor& rand_idx) {
  return plan_with(metric, w, h, sx, sy, r, rand_idx, /*kernels=*/true);
}

TokenMerge TokenMerge::plan_reference(const at::Tensor& metric, int64_t w, int64_t h, int64_t sx, int64_t sy,
                                      int64_t r, const at::Tensor& rand_idx) {
  return plan_with(metric, w, h, sx, sy, r, rand_idx, /*kernels=*/false);
}

TokenMerge TokenMerge::plan_with(const at::Tensor& metric, int64_t w, int64_t h, int64_t sx, int64_t sy,
                                 int64_t r, const at::Tensor& rand_idx, bool kernels) {
  TokenMerge m;
  const int64_t batch = metric.size(0), tokens = metric.size(1), channels = metric.size(2);
  if (r <= 0) return m;
  TORCH_CHECK(h * w == tokens, "token merging: a ", h, "x", w, " grid does not hold ", tokens, " tokens");
  const auto device = metric.device();
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(device);
  const int64_t hsy = h / sy, wsx = w / sx;
  const int64_t num_dst = hsy * wsx;
  at::Tensor a_idx, b_idx;  // [N − num_dst] sources, [num_dst] destinations
  [[maybe_unused]] const bool fused = kernels && metric.is_cuda();
#ifdef SDXLB_WITH_CUDA
  if (fused) {
    // One kernel for the buffer, its scatter and its argsort.
    a_idx = at::empty({tokens - num_dst}, i64);
    b_idx = at::empty({num_dst}, i64);
    const at::Tensor cell = rand_idx.defined() ? rand_idx.contiguous() : at::Tensor();
    C10_CUDA_CHECK(kernels::launch_merge_split(cell.defined() ? cell.data_ptr<int64_t>() : nullptr, h, w, sx,
                                               sy, a_idx.data_ptr<int64_t>(), b_idx.data_ptr<int64_t>(),
                                               c10::cuda::getCurrentCUDAStream(device.index())));
  }
#endif
  if (!a_idx.defined()) {
    // Each sy×sx cell has one destination (-1) and sources (0); an argsort lists destinations first.
    const at::Tensor cell = rand_idx.defined() ? rand_idx : at::zeros({hsy, wsx, 1}, i64);
    at::Tensor buffer = at::zeros({hsy, wsx, sy * sx}, i64);
    buffer.scatter_(2, cell, -at::ones_like(cell));
    buffer = buffer.view({hsy, wsx, sy, sx}).transpose(1, 2).reshape({hsy * sy, wsx * sx});
    if (hsy * sy < h || wsx * sx < w) {
      // The grid does not divide into cells: the rows and columns past the last whole cell are sources.
      at::Tensor full = at::zeros({h, w}, i64);
      full.slice(0, 0, hsy * sy).slice(1, 0, wsx * sx).copy_(buffer);
      buffer = full;
    }
    const at::Tensor order = buffer.reshape({-1}).argsort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
    a_idx = order.slice(0, num_dst);
    b_idx = order.slice(0, 0, num_dst);
  }
  m.a_idx_ = a_idx.view({1, -1, 1});
  m.b_idx_ = b_idx.view({1, -1, 1});
  m.batch_ = batch;
  m.tokens_ = tokens;
  m.num_dst_ = num_dst;
  // Cosine similarity of every source to every destination; each source's best destination; the r best
  // pairs merge.
  at::Tensor a, b;
#ifdef SDXLB_WITH_CUDA
  if (fused) {
    // Gathered and normalised in one kernel per side (the same rows of the same normalisation).
    a = gather_rows(metric, a_idx.view({1, -1}), /*normalize=*/true);
    b = gather_rows(metric, b_idx.view({1, -1}), /*normalize=*/true);
  }
#endif
  if (!a.defined()) {
    const at::Tensor normed = metric / metric.norm(2, /*dim=*/-1, /*keepdim=*/true);
    a = normed.gather(1, m.a_idx_.expand({batch, tokens - num_dst, channels}));
    b = normed.gather(1, m.b_idx_.expand({batch, num_dst, channels}));
  }
  const at::Tensor scores = at::matmul(a, b.transpose(-1, -2));
  r = std::min(a.size(1), r);
  auto [node_max, node_idx] = scores.max(-1);
  m.r_ = r;
#ifdef SDXLB_WITH_CUDA
  if (fused) {
    // The rest of the plan in one kernel where it fits (up to 4096 sources); else the ATen ops below, then
    // the rows kernel.
    const int64_t s = tokens - num_dst;
    const at::Tensor nm = node_max.contiguous(), ni = node_idx.contiguous();
    at::Tensor edge = at::empty({batch, s}, i64), dst = at::empty({batch, r}, i64);
    m.unm_rows_ = at::empty({batch, s - r}, i64);
    m.src_rows_ = at::empty({batch, r}, i64);
    m.dst_rows_ = b_idx;
    m.dst_start_ = at::empty({batch, num_dst}, i64);
    m.dst_count_ = at::empty({batch, num_dst}, i64);
    m.source_row_ = at::empty({batch, tokens}, i64);
    const cudaError_t err = kernels::launch_merge_plan(
        dtype_code(nm), nm.data_ptr(), ni.data_ptr<int64_t>(), a_idx.data_ptr<int64_t>(),
        b_idx.data_ptr<int64_t>(), batch, tokens, num_dst, r, edge.data_ptr<int64_t>(),
        dst.data_ptr<int64_t>(), m.unm_rows_.data_ptr<int64_t>(), m.src_rows_.data_ptr<int64_t>(),
        m.dst_start_.data_ptr<int64_t>(), m.dst_count_.data_ptr<int64_t>(), m.source_row_.data_ptr<int64_t>(),
        c10::cuda::getCurrentCUDAStream(device.index()));
    if (err == cudaSuccess) {
      const at::Tensor edge_idx = edge.unsqueeze(-1);
      m.unm_idx_ = edge_idx.slice(1, r);
      m.src_idx_ = edge_idx.slice(1, 0, r);
      m.dst_idx_ = dst.unsqueeze(-1);
      return m;
    }
    if (err != cudaErrorInvalidValue) C10_CUDA_CHECK(err);
    (void)cudaGetLastError();
  }
#endif
  const at::Tensor edge = node_max.argsort(/*stable=*/true, /*dim=*/-1, /*descending=*/true);
  const at::Tensor edge_idx = edge.unsqueeze(-1);
  m.unm_idx_ = edge_idx.slice(1, r);
  m.src_idx_ = edge_idx.slice(1, 0, r);
  m.dst_idx_ = node_idx.unsqueeze(-1).gather(-2, m.src_idx_);
#ifdef SDXLB_WITH_CUDA
  if (fused) {
    // For the fused kernels: rows of x, built in one kernel from the merged sources sorted (stably) by
    // destination. The destinations are ordinals below num_dst: sorted as the narrowest integers that hold
    // them (a radix sort's passes scale with the key's width).
    const at::ScalarType key_type = num_dst <= INT16_MAX   ? at::kShort
                                    : num_dst <= INT32_MAX ? at::kInt
                                                           : at::kLong;
    const auto [dst_sorted, by_dst] =
        m.dst_idx_.squeeze(-1).to(key_type).sort(/*stable=*/true, /*dim=*/-1, false);
    const at::Tensor e = edge.contiguous(), v = dst_sorted.contiguous(), k = by_dst.contiguous();
    C10_CUDA_CHECK(kernels::launch_merge_plan_rows(
        e.data_ptr<int64_t>(), v.data_ptr(), static_cast<int>(v.element_size()), k.data_ptr<int64_t>(),
        a_idx.data_ptr<int64_t>(), b_idx.data_ptr<int64_t>(), batch, tokens, num_dst, r,
        m.unm_rows_.data_ptr<int64_t>(), m.src_rows_.data_ptr<int64_t>(), m.dst_start_.data_ptr<int64_t>(),
        m.dst_count_.data_ptr<int64_t>(), m.source_row_.data_ptr<int64_t>(),
        c10::cuda::getCurrentCUDAStream(device.index())));
  }
#endif
  return m;
}

at::Tensor TokenMerge::merge(const at::Tensor& x) const {
  if (!active()) return x;
#ifdef SDXLB_WITH_CUDA
  if (x.is_cuda() && unm_rows_.defined()) {
    const int64_t batch = x.size(0), channels = x.size(-1);
    const at::Tensor xc = x.contiguous();
    const int64_t unm_len = unm_rows_.size(1);
    at::Tensor out = at::empty({batch, unm_len + num_dst_, channels}, x.options());
    C10_CUDA_CHECK(kernels::launch_merge_rows_mean(
        dtype_code(xc), xc.data_ptr(), unm_rows_.data_ptr<int64_t>(), dst_rows_.data_ptr<int64_t>(),
        src_rows_.data_ptr<int64_t>(), dst_start_.data_ptr<int64_t>(), dst_count_.data_ptr<int64_t>(),
        out.data_ptr(), batch, tokens_, unm_len, num_dst_, r_, channels,
        c10::cuda::getCurrentCUDAStream(x.device().index())));
    return out;
  }
#endif
  return merge_reference(x);
}

at::Tensor TokenMerge::merge_reference(const at::Tensor& x) const {
  if (!active()) return x;
  const int64_t batch = x.size(0), channels = x.size(-1);
  const at::Tensor src = x.gather(1, a_idx_.expand({batch, tokens_ - num_dst_, channels}));
  at::Tensor dst = x.gather(1, b_idx_.expand({batch, num_dst_, channels}));
  const int64_t t1 = src.size(1);
  const at::Tensor unm = src.gather(-2, unm_idx_.expand({batch, t1 - r_, channels}));
  const at::Tensor merged = src.gather(-2, src_idx_.expand({batch, r_, channels}));
  dst = dst.scatter_reduce(-2, dst_idx_.expand({batch, r_, channels}), merged, "mean");
  return at::cat({unm, dst}, 1);
}

at::Tensor TokenMerge::unmerge(const at::Tensor& x) const {
  if (!active()) return x;
#ifdef SDXLB_WITH_CUDA
  if (x.is_cuda() && source_row_.defined()) return gather_rows(x, source_row_);
#endif
  return unmerge_reference(x);
}

at::Tensor TokenMerge::unmerge_reference(const at::Tensor& x) const {
  if (!active()) return x;
  const int64_t unm_len = unm_idx_.size(1);
  const at::Tensor unm = x.slice(-2, 0, unm_len);
  const at::Tensor dst = x.slice(-2, unm_len);
  const int64_t channels = unm.size(-1);
  const at::Tensor src = dst.gather(-2, dst_idx_.expand({batch_, r_, channels}));
  at::Tensor out = at::zeros({batch_, tokens_, channels}, x.options());
  const at::Tensor a = a_idx_.expand({batch_, a_idx_.size(1), 1});
  out.scatter_(-2, b_idx_.expand({batch_, num_dst_, channels}), dst);
  out.scatter_(-2, a.gather(1, unm_idx_).expand({batch_, unm_len, channels}), unm);
  out.scatter_(-2, a.gather(1, src_idx_).expand({batch_, r_, channels}), src);
  return out;
}

BlockTokens block_tokens(TokenReduction& reduction, const at::Tensor& x) {
  BlockTokens t;
  if (!reduction.active()) return t;
  const int64_t ordinal = reduction.next_block++;
  const int64_t tokens = x.size(1);
  const int64_t original = reduction.height * reduction.width;
  // tomesd: downsample = ceil(sqrt(original_tokens // tokens)); the level's grid is the latent size divided
  // by it, rounded up (as the UNet's stride-2 convolutions round).
  const auto downsample = static_cast<int64_t>(
      std::ceil(std::sqrt(static_cast<double>(original / std::max<int64_t>(tokens, 1)))));
  const int64_t w = (reduction.width + downsample - 1) / downsample;
  const int64_t h = (reduction.height + downsample - 1) / downsample;
  if (const TokenMerging* m = reduction.merging; m && downsample <= m->max_downsample) {
    const auto r = static_cast<int64_t>(static_cast<double>(tokens) * m->ratio);
    at::Tensor rand_idx;
    if (m->use_rand)
      rand_idx =
          cell_destinations(reduction.seed, reduction.step, ordinal, h / m->sy, w / m->sx, m->sx * m->sy);
    t.merge = TokenMerge::plan(x, w, h, m->sx, m->sy, r, rand_idx);
  }
  if (const TokenDownsampling* d = reduction.downsampling; d && downsample <= d->max_downsample) {
    t.downsample = true;
    t.grid_h = h;
    t.grid_w = w;
    t.new_h = static_cast<int64_t>(static_cast<double>(h) / static_cast<double>(d->factor));
    t.new_w = static_cast<int64_t>(static_cast<double>(w) / static_cast<double>(d->factor));
    t.method = d->method;
    t.factor = d->factor;
    if (t.new_h < 1 || t.new_w < 1 || h * w != tokens) t.downsample = false;
  }
  return t;
}

at::Tensor downsample_tokens(const at::Tensor& x, const BlockTokens& block) {
  if (!block.downsample) return x;
  const int64_t batch = x.size(0), channels = x.size(-1);
  at::Tensor grid = x.reshape({batch, block.grid_h, block.grid_w, channels}).permute({0, 3, 1, 2});
  if (block.method == TokenDownsampling::Method::kNearest) {
    grid = at::_upsample_nearest_exact2d(grid, {block.new_h, block.new_w});
  } else {
    grid = at::avg_pool2d(grid, {block.factor, block.factor}, {block.factor, block.factor});
  }
  return grid.permute({0, 2, 3, 1}).reshape({batch, block.new_h * block.new_w, channels});
}

}  // namespace sdxlb
