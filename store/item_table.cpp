#include "store/item_table.h"

#include <cstring>
#include <type_traits>

namespace sdxlb {

void ItemColumns::append(const ItemRecord& r) {
  item_index.push_back(r.item_index);
  prompt_index.push_back(r.prompt_index);
  image_k.push_back(r.image_k);
  seed.push_back(r.seed);
  prompt.push_back(r.prompt);
  negative_prompt.push_back(r.negative_prompt);
  steps.push_back(r.steps);
  guidance.push_back(r.guidance);
  width.push_back(r.width);
  height.push_back(r.height);
  scheduler.push_back(r.scheduler);
  approximations.push_back(r.approximations);
  model_id.push_back(r.model_id);
  rank.push_back(r.rank);
  host.push_back(r.host);
  gpu.push_back(r.gpu);
  ms_encode.push_back(r.ms_encode);
  ms_denoise.push_back(r.ms_denoise);
  ms_decode.push_back(r.ms_decode);
  status.push_back(r.ok ? 1 : 0);
  error.push_back(r.error);
}

ItemRecord ItemColumns::row(size_t i) const {
  ItemRecord r;
  r.item_index = item_index[i];
  r.prompt_index = prompt_index[i];
  r.image_k = image_k[i];
  r.seed = seed[i];
  r.prompt = prompt[i];
  r.negative_prompt = negative_prompt[i];
  r.steps = steps[i];
  r.guidance = guidance[i];
  r.width = width[i];
  r.height = height[i];
  r.scheduler = scheduler[i];
  r.approximations = approximations[i];
  r.model_id = model_id[i];
  r.rank = rank[i];
  r.host = host[i];
  r.gpu = gpu[i];
  r.ms_encode = ms_encode[i];
  r.ms_denoise = ms_denoise[i];
  r.ms_decode = ms_decode[i];
  r.ok = status[i] == 1;
  r.error = error[i];
  return r;
}

ItemColumns ItemColumns::take(const std::vector<size_t>& rows) const {
  ItemColumns out;
  for_each([&](const char* name, const auto& column) {
    // Find the same column in `out` by name: both tables list their columns in the same order.
    out.for_each([&](const char* out_name, auto& out_column) {
      if constexpr (std::is_same_v<std::decay_t<decltype(column)>, std::decay_t<decltype(out_column)>>) {
        if (std::strcmp(name, out_name) == 0) {
          out_column.reserve(rows.size());
          for (size_t r : rows) out_column.push_back(column[r]);
        }
      }
    });
  });
  return out;
}

bool ItemColumns::added_later(const char* name) {
  return std::string(name) == "approximations";
}

bool ItemColumns::consistent() const {
  bool ok = true;
  const size_t n = size();
  for_each([&](const char*, const auto& column) { ok = ok && column.size() == n; });
  return ok;
}

}  // namespace sdxlb
