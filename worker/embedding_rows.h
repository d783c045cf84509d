// The embedding cache's float16 rows (store/embedding_cache.h, no LibTorch) as tensors, and back.
#pragma once

#include <ATen/core/Tensor.h>

#include "store/embedding_cache.h"

namespace sdxlb {

/// `rows` as a CPU kHalf tensor of its shape, owning the values (moved, not copied).
at::Tensor half_tensor(HalfRows rows);

/// A view of `t` (a CPU kHalf contiguous tensor) for EmbeddingCache::write_shard; valid while `t` lives.
HalfRowsView half_rows_view(const at::Tensor& t);

}  // namespace sdxlb
