// One handler per setting, as job_spec.cpp reads its other maps; the messages use the dotted key
// ("deep_cache.cache_interval") and end with a fix.
#include "jobs/approximation_fields.h"

#include <cstdint>
#include <tuple>

namespace sdxlb {
namespace {

constexpr NamedValue<TokenDownsampling::Method> kTodoMethods[] = {
    {"nearest", TokenDownsampling::Method::kNearest}, {"average", TokenDownsampling::Method::kAverage}};

}  // namespace

bool ApproximationFieldReader::expect_map(const YamlField& f, const char* example) {
  if (f.value.IsMap()) return true;
  p_->add(f.mark(), f.key,
          "expected a map of settings, got " + describe_node(f.value) + "; write " + f.key +
              ": {} for the defaults, or e.g. " + f.key + ": " + example +
              ", or remove the key to render "
              "without it");
  return false;
}

void ApproximationFieldReader::read_max_downsample(const YamlField& f, int64_t* out) {
  const char* hint =
      "use 1, 2, 4 or 8: it applies in the blocks whose latent is downsampled at most this much (2, the "
      "default, is SDXL's 64x64-token level at 1024x1024; 4 adds the deepest level; 1 changes nothing on "
      "SDXL, whose full-resolution level has no attention)";
  int64_t v = 0;
  if (!read_int(f, INT64_MIN, INT64_MAX, hint, &v)) return;
  if (v != 1 && v != 2 && v != 4 && v != 8) {
    p_->add(f.mark(), f.key, std::to_string(v) + " is not 1, 2, 4 or 8; " + hint);
    return;
  }
  *out = v;
}

void ApproximationFieldReader::read_token_merging(const YamlField& f) {
  if (!expect_map(f, "{ratio: 0.5}")) return;
  TokenMerging& t = out_->token_merging.emplace();
  const std::string stride_hint =
      "use an integer >= 1 (e.g. 2: one destination token per 2 tokens in this direction)";
  walk_map(f.value, f.key,
           {{"ratio",
             [&](const YamlField& g) {
               const char* hint =
                   "use a number >= 0 and < 1, the fraction of tokens merged (e.g. 0.5; tomesd recommends at "
                   "most 0.5)";
               double v = 0;
               if (!read_number(g, 0, true, hint, &v)) return;
               if (v >= 1) {
                 p_->add(g.mark(), g.key, g.value.Scalar() + " is out of range; " + hint);
                 return;
               }
               t.ratio = v;
             }},
            {"max_downsample", [&](const YamlField& g) { read_max_downsample(g, &t.max_downsample); }},
            {"sx", [&](const YamlField& g) { read_int(g, 1, INT64_MAX, stride_hint, &t.sx); }},
            {"sy", [&](const YamlField& g) { read_int(g, 1, INT64_MAX, stride_hint, &t.sy); }},
            {"use_rand", [&](const YamlField& g) { read_bool(g, &t.use_rand); }},
            {"merge_attn", [&](const YamlField& g) { read_bool(g, &t.merge_attn); }},
            {"merge_crossattn", [&](const YamlField& g) { read_bool(g, &t.merge_crossattn); }},
            {"merge_mlp", [&](const YamlField& g) { read_bool(g, &t.merge_mlp); }}});
}

void ApproximationFieldReader::read_token_downsampling(const YamlField& f) {
  if (!expect_map(f, "{factor: 2}")) return;
  TokenDownsampling& t = out_->token_downsampling.emplace();
  walk_map(f.value, f.key,
           {{"factor",
             [&](const YamlField& g) {
               const char* hint =
                   "use 2 (keys and values from a grid halved in each direction: 4x fewer) or 4 (16x fewer)";
               int64_t v = 0;
               if (!read_int(g, INT64_MIN, INT64_MAX, hint, &v)) return;
               if (v != 2 && v != 4) {
                 p_->add(g.mark(), g.key, std::to_string(v) + " is not 2 or 4; " + hint);
                 return;
               }
               t.factor = v;
             }},
            {"max_downsample", [&](const YamlField& g) { read_max_downsample(g, &t.max_downsample); }},
            {"method", [&](const YamlField& g) { read_enum(g, kTodoMethods, &t.method); }}});
}

void ApproximationFieldReader::read_deep_cache(const YamlField& f) {
  if (!expect_map(f, "{cache_interval: 3}")) return;
  DeepCache& d = out_->deep_cache.emplace();
  bool id_set = false;
  const auto fields = walk_map(
      f.value, f.key,
      {{"cache_interval",
        [&](const YamlField& g) {
          read_int(
              g, 1, INT64_MAX,
              "use an integer >= 1: a full UNet step every cache_interval steps, cached deep features on "
              "the others (e.g. 3; 1 makes every step full)",
              &d.cache_interval);
        }},
       {"cache_branch_id", [&](const YamlField& g) {
          id_set = read_int(g, 0, INT64_MAX,
                            "use an integer >= 0, DeepCache's skip branch: 0 (the default) is the shallowest "
                            "and fastest; the largest the model allows is checked when it loads",
                            &d.cache_branch_id);
        }}});
  d.where = p_->location(id_set ? fields.at("cache_branch_id").mark() : f.key_node.Mark());
}

void ApproximationFieldReader::read_unet_precision(const YamlField& f) {
  static constexpr NamedValue<UNetPrecision> kPrecisions[] = {{"fp16", UNetPrecision::kDefault},
                                                              {"fp8", UNetPrecision::kFp8}};
  read_enum(f, kPrecisions, &out_->unet_precision);
}

void ApproximationFieldReader::read_attention_precision(const YamlField& f) {
  static constexpr NamedValue<AttentionPrecision> kPrecisions[] = {{"fp16", AttentionPrecision::kDefault},
                                                                   {"fp8", AttentionPrecision::kFp8}};
  read_enum(f, kPrecisions, &out_->attention_precision);
}

void ApproximationFieldReader::read_convolution_precision(const YamlField& f) {
  static constexpr NamedValue<ConvolutionPrecision> kPrecisions[] = {{"fp16", ConvolutionPrecision::kDefault},
                                                                     {"fp8", ConvolutionPrecision::kFp8}};
  read_enum(f, kPrecisions, &out_->convolution_precision);
}

void ApproximationFieldReader::check_combination(const std::map<std::string, YamlField>& fields) {
  if (const auto a = fields.find("attention_precision");
      a != fields.end() && out_->attention_precision == AttentionPrecision::kFp8 &&
      out_->unet_precision != UNetPrecision::kFp8)
    p_->add(a->second.mark(), a->second.key,
            "fp8 needs unet_precision: fp8 (the FP8 attention takes its query, keys and values from the FP8 "
            "projections and hands its output to an FP8 one); add unet_precision: fp8, or remove "
            "attention_precision");
  if (const auto c = fields.find("convolution_precision");
      c != fields.end() && out_->convolution_precision == ConvolutionPrecision::kFp8 &&
      out_->unet_precision != UNetPrecision::kFp8)
    p_->add(c->second.mark(), c->second.key,
            "fp8 needs unet_precision: fp8 (the FP8 convolutions are a further step of the FP8 UNet); add "
            "unet_precision: fp8, or remove convolution_precision");
  const auto merging = fields.find("token_merging"), downsampling = fields.find("token_downsampling");
  if (merging == fields.end() || downsampling == fields.end()) return;
  const YAML::Mark a = merging->second.key_node.Mark(), b = downsampling->second.key_node.Mark();
  const bool merging_first = std::tie(a.line, a.column) < std::tie(b.line, b.column);
  const YamlField& later = merging_first ? downsampling->second : merging->second;
  const YamlField& earlier = merging_first ? merging->second : downsampling->second;
  p_->add(later.key_node.Mark(), later.key,
          "cannot be combined with " + earlier.key + " (line " +
              std::to_string(earlier.key_node.Mark().line + 1) +
              "): both change self-attention; choose one, token_merging or token_downsampling, and remove "
              "the other (either combines with deep_cache)");
}

}  // namespace sdxlb
