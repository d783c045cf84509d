// ItemRecord (the metadata of one rendered image) and ItemColumns (many records stored column-wise, the
// way segment files and index.h5 hold them: one 1-D dataset per field, all of equal length).
//
// The column names and types are the file format; for_each() is the one place that lists them.
// Value types, no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sdxlb {

/// What a worker knows about one item when it stores its image.
struct ItemRecord {
  int64_t item_index = 0;    ///< position in the job's item list (0..N-1)
  int64_t prompt_index = 0;  ///< which prompt
  int32_t image_k = 0;       ///< which image of that prompt (0..images_per_prompt-1)
  uint64_t seed = 0;
  std::string prompt;
  std::string negative_prompt;
  int32_t steps = 0;
  float guidance = 0.0f;
  int32_t width = 0;
  int32_t height = 0;
  std::string scheduler;
  /// The opt-in approximations as JSON (jobs/approximations.h's to_json(): "{}" for the exact computation).
  std::string approximations = "{}";
  std::string model_id;
  int32_t rank = 0;
  std::string host;
  std::string gpu;
  float ms_encode = 0.0f;
  float ms_denoise = 0.0f;
  float ms_decode = 0.0f;
  bool ok = true;     ///< false: rendering failed, `error` says why, the image is all zeros / empty
  std::string error;  ///< empty when ok
};

/// Records stored column-wise. Every vector has size() elements.
struct ItemColumns {
  std::vector<int64_t> item_index;
  std::vector<int64_t> prompt_index;
  std::vector<int32_t> image_k;
  std::vector<uint64_t> seed;
  std::vector<std::string> prompt;
  std::vector<std::string> negative_prompt;
  std::vector<int32_t> steps;
  std::vector<float> guidance;
  std::vector<int32_t> width;
  std::vector<int32_t> height;
  std::vector<std::string> scheduler;
  std::vector<std::string> approximations;
  std::vector<std::string> model_id;
  std::vector<int32_t> rank;
  std::vector<std::string> host;
  std::vector<std::string> gpu;
  std::vector<float> ms_encode;
  std::vector<float> ms_denoise;
  std::vector<float> ms_decode;
  std::vector<int8_t> status;  ///< 1 ok, 0 failed (index.h5 adds -1: never rendered)
  std::vector<std::string> error;

  /// Calls f(name, vector) for every column, in file order.
  template <class F>
  void for_each(F&& f) {
    for_each_impl(*this, f);
  }
  template <class F>
  void for_each(F&& f) const {
    for_each_impl(*this, f);
  }

  size_t size() const { return item_index.size(); }
  void append(const ItemRecord& r);
  ItemRecord row(size_t i) const;
  /// The rows `rows` (in that order) as a new table.
  ItemColumns take(const std::vector<size_t>& rows) const;
  /// Whether `name` is a column that segments written before it existed lack (readers fill it with
  /// kAddedColumnDefault): "approximations".
  static bool added_later(const char* name);
  static constexpr const char* kAddedColumnDefault = "{}";
  /// Whether all columns have size() elements.
  bool consistent() const;

 private:
  template <class Self, class F>
  static void for_each_impl(Self& s, F& f) {
    f("item_index", s.item_index);
    f("prompt_index", s.prompt_index);
    f("image_k", s.image_k);
    f("seed", s.seed);
    f("prompt", s.prompt);
    f("negative_prompt", s.negative_prompt);
    f("steps", s.steps);
    f("guidance", s.guidance);
    f("width", s.width);
    f("height", s.height);
    f("scheduler", s.scheduler);
    f("approximations", s.approximations);
    f("model_id", s.model_id);
    f("rank", s.rank);
    f("host", s.host);
    f("gpu", s.gpu);
    f("ms_encode", s.ms_encode);
    f("ms_denoise", s.ms_denoise);
    f("ms_decode", s.ms_decode);
    f("status", s.status);
    f("error", s.error);
  }
};

}  // namespace sdxlb
