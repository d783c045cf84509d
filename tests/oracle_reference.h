// Test helpers for oracle tests: the reference tensors a tests/oracle/ref_*.py script saved, and the error
// measure the tolerances are stated in.
#pragma once

#include <algorithm>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "pipeline/io/model_folder.h"
#include "test_files.h"

namespace sdxlb::testing {

/// One reference file: `<fixtures>/<folder>/<name>.safetensors`.
struct ReferenceFile {
  WeightSet file;
  /// A copy of tensor `name` (a failed lookup fails the test and returns an undefined tensor).
  at::Tensor get(const std::string& name) const {
    auto t = file.get(name);
    EXPECT_TRUE(t.is_ok()) << t.status().to_string();
    return t.is_ok() ? t->clone() : at::Tensor();
  }
  /// A string the script stored in the file's metadata.
  std::string meta(const std::string& key) const { return file.files().front()->metadata().at(key); }
};

inline ReferenceFile open_reference(const std::string& folder, const std::string& name) {
  auto w = WeightSet::open_file(fixtures_dir() + "/" + folder + "/" + name + ".safetensors");
  EXPECT_TRUE(w.is_ok()) << w.status().to_string();
  return ReferenceFile{w.is_ok() ? *w : WeightSet()};
}

/// max |a - b| / max |b|: the error relative to the reference's scale (1e30 when the shapes differ).
inline double rel_err(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e30;
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  const double scale = b.to(at::kDouble).abs().max().item<double>();
  return diff / std::max(scale, 1e-30);
}

}  // namespace sdxlb::testing
