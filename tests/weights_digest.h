// Test helper: a digest of every tensor of a model source (names, dtypes, shapes and the bytes of each
// tensor as the loaders see them), and of its identity, to compare two ways of loading the same model.
#pragma once

#include <string>

#include <ATen/ATen.h>

#include "common/fingerprint.h"
#include "common/status.h"
#include "pipeline/io/model_source.h"

namespace sdxlb::testing {

/// "<component> <digest>" lines for every component of `source` that it has, then its identity.
inline StatusOr<std::string> weights_digest(const ModelSource& source) {
  std::string out;
  for (const char* c : SingleFileCheckpoint::kComponents) {
    if (!source.has_component(c)) continue;
    SDXLB_ASSIGN_OR_RETURN(auto weights, source.weights(c, ""));
    Fingerprint fp;
    for (const auto& name : weights.names()) {
      SDXLB_ASSIGN_OR_RETURN(at::Tensor t, weights.get(name));
      const at::Tensor flat = t.contiguous();
      fp.add(name).add(at::toString(flat.scalar_type()));
      for (int64_t d : flat.sizes()) fp.add(std::to_string(d));
      fp.add(std::string_view(static_cast<const char*>(flat.data_ptr()), flat.nbytes()));
    }
    Fingerprint id;
    SDXLB_RETURN_IF_ERROR(source.add_identity(id, c, ""));
    out += std::string(c) + " " + std::to_string(weights.names().size()) + " tensors " + fp.hex() +
           " identity " + id.hex() + "\n";
  }
  return out;
}

}  // namespace sdxlb::testing
