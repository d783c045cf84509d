// Test helper: every prompt encoded alone, as the render phase reads them from the encode phase's shards, so
// that a batch-invariance test compares denoising only (a batched CPU text encoder need not give the same
// bits as one prompt at a time).
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "pipeline/sdxl_pipeline.h"

namespace sdxlb::testing {

struct PerImageEmbeddings {
  std::vector<TextEmbeddings> positive, negative;  ///< one entry per prompt
};

/// Encodes each prompt and its negative alone (a failure fails the test and leaves the lists short).
inline PerImageEmbeddings encode_each(SdxlPipeline& pipe, const std::vector<std::string>& prompts,
                                      const std::vector<std::string>& negatives) {
  PerImageEmbeddings out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto p = pipe.encode({prompts[i]});
    EXPECT_TRUE(p.is_ok()) << p.status().to_string();
    if (!p.is_ok()) break;
    auto n = pipe.negative_for(negatives[i], *p);
    EXPECT_TRUE(n.is_ok()) << n.status().to_string();
    if (!n.is_ok()) break;
    out.positive.push_back(*p);
    out.negative.push_back(*n);
  }
  return out;
}

/// The embeddings of several prompts as one batch, in order.
inline TextEmbeddings concat(const std::vector<TextEmbeddings>& v) {
  std::vector<at::Tensor> e, p;
  for (const auto& t : v) e.push_back(t.prompt_embeds), p.push_back(t.pooled);
  return TextEmbeddings{at::cat(e, 0), at::cat(p, 0)};
}

}  // namespace sdxlb::testing
