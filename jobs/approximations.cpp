// The approximations' equality, JSON and log line. The JSON is hashed into the job identity: a change to its
// keys or number format changes every identity of a job that uses an approximation.
#include "jobs/approximations.h"

#include <nlohmann/json.hpp>

namespace sdxlb {
namespace {

nlohmann::json json_of(const TokenMerging& t) {
  return {{"ratio", t.ratio},
          {"max_downsample", t.max_downsample},
          {"sx", t.sx},
          {"sy", t.sy},
          {"use_rand", t.use_rand},
          {"merge_attn", t.merge_attn},
          {"merge_crossattn", t.merge_crossattn},
          {"merge_mlp", t.merge_mlp}};
}

nlohmann::json json_of(const TokenDownsampling& t) {
  return {{"factor", t.factor}, {"max_downsample", t.max_downsample}, {"method", todo_method_name(t.method)}};
}

nlohmann::json json_of(const DeepCache& d) {
  return {{"cache_interval", d.cache_interval}, {"cache_branch_id", d.cache_branch_id}};
}

// "key value, key value, ..." from a JSON object (its keys in the order given), numbers as the JSON has them.
std::string settings_text(const nlohmann::json& j, std::initializer_list<const char*> keys) {
  std::string out;
  for (const char* k : keys) {
    const nlohmann::json& v = j.at(k);
    out +=
        (out.empty() ? "" : ", ") + std::string(k) + " " + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

}  // namespace

bool TokenMerging::operator==(const TokenMerging& o) const {
  return ratio == o.ratio && max_downsample == o.max_downsample && sx == o.sx && sy == o.sy &&
         use_rand == o.use_rand && merge_attn == o.merge_attn && merge_crossattn == o.merge_crossattn &&
         merge_mlp == o.merge_mlp;
}

bool TokenDownsampling::operator==(const TokenDownsampling& o) const {
  return factor == o.factor && max_downsample == o.max_downsample && method == o.method;
}

bool DeepCache::operator==(const DeepCache& o) const {
  return cache_interval == o.cache_interval && cache_branch_id == o.cache_branch_id;
}

bool Approximations::operator==(const Approximations& o) const {
  return token_merging == o.token_merging && token_downsampling == o.token_downsampling &&
         deep_cache == o.deep_cache && unet_precision == o.unet_precision &&
         attention_precision == o.attention_precision && convolution_precision == o.convolution_precision;
}

bool Approximations::empty() const {
  return !token_merging && !token_downsampling && !deep_cache && unet_precision == UNetPrecision::kDefault &&
         attention_precision == AttentionPrecision::kDefault &&
         convolution_precision == ConvolutionPrecision::kDefault;
}

std::string Approximations::to_json() const {
  // nlohmann's objects keep their keys sorted, and it prints a double as the shortest text that reads back
  // as the same double.
  nlohmann::json j = nlohmann::json::object();
  if (token_merging) j["token_merging"] = json_of(*token_merging);
  if (token_downsampling) j["token_downsampling"] = json_of(*token_downsampling);
  if (deep_cache) j["deep_cache"] = json_of(*deep_cache);
  if (unet_precision == UNetPrecision::kFp8) j["unet_precision"] = "fp8";
  if (attention_precision == AttentionPrecision::kFp8) j["attention_precision"] = "fp8";
  if (convolution_precision == ConvolutionPrecision::kFp8) j["convolution_precision"] = "fp8";
  return j.dump();
}

std::string Approximations::describe() const {
  if (empty()) return "exact (no approximation)";
  std::string out;
  auto add = [&](const std::string& part) { out += (out.empty() ? "" : "; ") + part; };
  if (token_merging) {
    const nlohmann::json j = json_of(*token_merging);
    add("ToMe ratio " + j.at("ratio").dump() + " (" +
        settings_text(
            j, {"max_downsample", "sx", "sy", "use_rand", "merge_attn", "merge_crossattn", "merge_mlp"}) +
        ")");
  }
  if (token_downsampling) {
    const nlohmann::json j = json_of(*token_downsampling);
    add("ToDo factor " + j.at("factor").dump() + " (" + settings_text(j, {"max_downsample", "method"}) + ")");
  }
  if (deep_cache) {
    const nlohmann::json j = json_of(*deep_cache);
    add("DeepCache interval " + j.at("cache_interval").dump() + " (" + settings_text(j, {"cache_branch_id"}) +
        ")");
  }
  if (unet_precision == UNetPrecision::kFp8)
    add("FP8 UNet (e4m3 transformer linears, per-token and per-channel scales)");
  if (attention_precision == AttentionPrecision::kFp8)
    add("FP8 self-attention (cuDNN, static per-tensor scales)");
  if (convolution_precision == ConvolutionPrecision::kFp8)
    add("FP8 3x3 convolutions (CUTLASS, per-image and per-channel scales)");
  return out;
}

const char* todo_method_name(TokenDownsampling::Method method) {
  switch (method) {
    case TokenDownsampling::Method::kNearest:
      return "nearest";
    case TokenDownsampling::Method::kAverage:
      return "average";
  }
  return "?";
}

}  // namespace sdxlb
