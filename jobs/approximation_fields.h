// The job file's approximation keys (token_merging, token_downsampling, deep_cache, unet_precision) read
// into an Approximations, with located problems: the part of JobSpec's parser for issue #14's and #17's
// speed-ups.
//
// Each key is a map of settings, every one optional (`{}`: all defaults); a value that is not a map, an
// unknown setting, a value out of its range and token_merging together with token_downsampling are problems,
// each at its line and column with a fix. The ranges are those stated in jobs/approximations.h.
//
// Thread-safety: none needed; a reader lives for one parse.
#pragma once

#include <map>
#include <string>

#include "jobs/approximations.h"
#include "jobs/yaml_fields.h"

namespace sdxlb {

/// Reads the approximation keys of one job file into `*out`, recording problems in `*problems`.
class ApproximationFieldReader : public YamlFieldReader {
 public:
  /// `problems` and `out` must outlive the reader.
  ApproximationFieldReader(ProblemList* problems, Approximations* out)
      : YamlFieldReader(problems), out_(out) {}

  /// Handlers of the top-level keys of the same names. Each sets its technique in `*out` (with the defaults
  /// for what the map leaves out), also when it records a problem: the job is then refused anyway.
  void read_token_merging(const YamlField& f);
  void read_token_downsampling(const YamlField& f);
  /// Also fills DeepCache::where (from the problem list's file name).
  void read_deep_cache(const YamlField& f);
  /// unet_precision: fp16 (the default) or fp8.
  void read_unet_precision(const YamlField& f);
  /// attention_precision: fp16 (the default) or fp8.
  void read_attention_precision(const YamlField& f);
  /// convolution_precision: fp16 (the default) or fp8.
  void read_convolution_precision(const YamlField& f);

  /// After the top-level map is walked (`fields`: its keys seen): records a problem when the job sets both
  /// token_merging and token_downsampling, at the later of the two, and when it sets attention_precision:
  /// fp8 or convolution_precision: fp8 without unet_precision: fp8, at that key.
  void check_combination(const std::map<std::string, YamlField>& fields);

 private:
  // False (with a problem recorded) when f's value is not a map.
  bool expect_map(const YamlField& f, const char* example);
  void read_max_downsample(const YamlField& f, int64_t* out);

  Approximations* out_;
};

}  // namespace sdxlb
