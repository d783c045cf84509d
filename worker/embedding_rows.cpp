#include "worker/embedding_rows.h"

#include <memory>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace sdxlb {

at::Tensor half_tensor(HalfRows rows) {
  auto* values = new std::vector<uint16_t>(std::move(rows.values));
  return at::from_blob(
      values->data(), rows.shape, [values](void*) { delete values; }, at::TensorOptions().dtype(at::kHalf));
}

HalfRowsView half_rows_view(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kHalf && t.is_contiguous(),
              "half_rows_view: a contiguous float16 CPU tensor is needed");
  return HalfRowsView{reinterpret_cast<const uint16_t*>(t.data_ptr()), t.sizes().vec()};
}

}  // namespace sdxlb
