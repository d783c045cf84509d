// ConfigReader: typed access to a component's config.json with errors that name the file and key.
//
// Reads are recorded; the first error (missing required key, wrong type, an integer out of its sanity range)
// is kept and returned by status(), so a config struct can be filled with straight-line code and checked once
// at the end.
//
// Sanity ranges: every integer read (alone, in a list, or per level) must lie within +-config_int_limit(key).
// The limits are far above any SDXL-class model and stop a corrupt or hostile config (layers_per_block 1e9,
// vocab_size 1e12) before it asks for terabytes or grows until the process is killed.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace sdxlb {

/// The largest magnitude an integer config value may have (see the file comment). Keys that size a model get
/// their own limits; any other integer key gets 1 << 20.
inline int64_t config_int_limit(const std::string& key) {
  static const std::vector<std::pair<const char*, int64_t>> limits = {
      {"layers_per_block", 64},
      {"transformer_layers_per_block", 64},
      {"num_hidden_layers", 256},
      {"num_decoder_blocks", 64},
      {"attention_head_dim", 1024},
      {"num_attention_heads", 1024},
      {"block_out_channels", 8192},
      {"decoder_block_out_channels", 8192},
      {"hidden_size", 8192},
      {"intermediate_size", 32768},
      {"cross_attention_dim", 8192},
      {"projection_dim", 8192},
      {"time_embedding_dim", 32768},
      {"addition_time_embed_dim", 8192},
      {"projection_class_embeddings_input_dim", 65536},
      {"in_channels", 1024},
      {"out_channels", 1024},
      {"latent_channels", 1024},
      {"norm_num_groups", 1024},
      {"max_position_embeddings", 65536},
      {"vocab_size", int64_t{1} << 20},
  };
  for (const auto& [k, v] : limits)
    if (key == k) return v;
  return int64_t{1} << 20;
}

class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& json, std::string source) : json_(json), source_(std::move(source)) {}

  bool has(const std::string& key) const {
    return json_.is_object() && json_.contains(key) && !json_[key].is_null();
  }

  /// The value of `key`, or `fallback` when absent or null. A present value of the wrong type is an error.
  template <typename T>
  T get(const std::string& key, T fallback) {
    if (!has(key)) return fallback;
    if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, std::vector<int64_t>>) {
      // nlohmann turns a float into an integer with a plain cast: 1.5 would read as 1, and 1e30 is undefined
      // behaviour (found by fuzz/fuzz_model_io). Integer keys take integers, or whole-number floats.
      const nlohmann::json& j = json_.at(key);
      bool whole = whole_or_not_float(j);
      if (j.is_array())
        for (const auto& x : j) whole = whole && whole_or_not_float(x);
      if (!whole) {
        fail(key,
             "must hold integers, not " + j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        return fallback;
      }
    }
    try {
      T v = json_.at(key).get<T>();
      if constexpr (std::is_same_v<T, int64_t>) {
        if (!in_range(key, v)) return fallback;
      } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
        for (int64_t x : v)
          if (!in_range(key, x)) return fallback;
      }
      return v;
    } catch (const std::exception& e) {
      fail(key, "has the wrong type (" + std::string(json_.at(key).type_name()) + ")");
      return fallback;
    }
  }

  /// The value of `key`; absent or wrong type is an error.
  template <typename T>
  T require(const std::string& key) {
    if (!has(key)) {
      fail(key, "is missing");
      return T{};
    }
    return get<T>(key, T{});
  }

  /// An int-or-list key (diffusers allows `attention_head_dim: 8` or `[5, 10, 20]`), expanded to `n` entries.
  std::vector<int64_t> get_per_level(const std::string& key, size_t n, int64_t fallback) {
    if (!has(key)) return std::vector<int64_t>(n, fallback);
    const auto& v = json_.at(key);
    if (v.is_number_integer()) {
      if (!in_range(key, v.get<int64_t>())) return std::vector<int64_t>(n, fallback);
      return std::vector<int64_t>(n, v.get<int64_t>());
    }
    if (v.is_array() && v.size() == n) {
      std::vector<int64_t> out;
      for (const auto& x : v) {
        if (!x.is_number_integer()) {
          fail(key, "must hold integers");
          return std::vector<int64_t>(n, fallback);
        }
        if (!in_range(key, x.get<int64_t>())) return std::vector<int64_t>(n, fallback);
        out.push_back(x.get<int64_t>());
      }
      return out;
    }
    fail(key, "must be an integer or a list of " + std::to_string(n) + " integers");
    return std::vector<int64_t>(n, fallback);
  }

  /// False for a float that is not a whole number within int64's range; true for anything else.
  static bool whole_or_not_float(const nlohmann::json& v) {
    if (!v.is_number_float()) return true;
    const double d = v.get<double>();
    return std::trunc(d) == d && d >= -9.2e18 && d <= 9.2e18;
  }

  /// Whether `v` is within the key's sanity range; records the error when not.
  bool in_range(const std::string& key, int64_t v) {
    const int64_t limit = config_int_limit(key);
    if (v >= -limit && v <= limit) return true;
    fail(key, "is " + std::to_string(v) + ", beyond the limit of " + std::to_string(limit) +
                  " for a model this tool loads (SDXL's values are far below it); the file is corrupt or is "
                  "not an SDXL-family config");
    return false;
  }

  /// Records an error about `key` (only the first one is kept).
  void fail(const std::string& key, const std::string& what) {
    if (status_.is_ok()) status_ = data_loss(source_ + ": key \"" + key + "\" " + what);
  }
  Status status() const { return status_; }
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json& json_;
  std::string source_;
  Status status_;
};

}  // namespace sdxlb
