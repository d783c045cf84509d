// EmbeddingCache: text embeddings computed once and stored as HDF5 shards, keyed by the text encoders'
// identity and the text.
//
//   <cache>/<text_encoder_id>/shard-<tag>.h5
//     prompt_embeds  float16 [n, 77, D]   (the two encoders' penultimate states, concatenated)
//     pooled         float16 [n, P]       (text_encoder_2's projected pooled output)
//     text           vlen utf-8 [n]
//     text_hash      uint64 [n]           (Fingerprint of the text)
//
// Shards are published atomically (temporary name, fsync, rename), so a killed encode phase leaves only
// complete shards; a later job with overlapping prompts reuses them. open() scans the complete shards of
// one encoder identity; write_shard() adds one. Lookups verify the stored text, so a hash collision is an
// error, never a wrong embedding. Embeddings cross this interface as float16 bits (no LibTorch here: the
// worker wraps them in tensors). Not thread-safe; each rank opens its own.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace sdxlb {

/// Rows of float16 values (IEEE half bits), row-major, with their shape [n, ...].
struct HalfRows {
  std::vector<int64_t> shape;
  std::vector<uint16_t> values;
};

/// The same in the caller's memory, for writing.
struct HalfRowsView {
  const uint16_t* values = nullptr;
  std::vector<int64_t> shape;
};

struct StoredEmbeddings {
  HalfRows prompt_embeds;  ///< [n, S, D]
  HalfRows pooled;         ///< [n, P]
};

class EmbeddingCache {
 public:
  /// Opens (creating the folder if needed) the shards of `encoder_id` under `dir`. Errors: kIoError for an
  /// unwritable folder; a corrupt shard is skipped with a warning (its texts are encoded again).
  static StatusOr<EmbeddingCache> open(const std::string& dir, const std::string& encoder_id);

  /// Whether `text` has a stored embedding.
  bool contains(const std::string& text) const;
  /// Stores `texts` with their embeddings ([n, S, D] and [n, P]) in a new shard named by `tag` (unique per
  /// writer, e.g. "<run>-r<rank>-<n>"). Errors: kInvalidArgument for shapes that do not match the texts;
  /// the filesystem's.
  Status write_shard(const std::string& tag, const std::vector<std::string>& texts,
                     const HalfRowsView& prompt_embeds, const HalfRowsView& pooled);
  /// Embeddings of `texts` (in order; repeats allowed). Errors: kNotFound naming the first text without an
  /// embedding; kDataLoss for a shard that cannot be read or whose row holds another text.
  StatusOr<StoredEmbeddings> read(const std::vector<std::string>& texts) const;

  /// Number of stored texts.
  size_t size() const { return index_.size(); }
  const std::string& folder() const { return folder_; }

 private:
  struct Location {
    int32_t shard;
    int64_t row;
  };
  std::string folder_;
  std::vector<std::string> shards_;  // file names
  std::unordered_map<uint64_t, Location> index_;
};

}  // namespace sdxlb
