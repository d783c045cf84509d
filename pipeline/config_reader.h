// ConfigReader: typed access to a component's config.json with errors that name the file and key.
//
// Reads are recorded; the first error (missing required key, wrong type) is kept and returned by status(),
// so a config struct can be filled with straight-line code and checked once at the end.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace sdxlb {

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
    try {
      return json_.at(key).get<T>();
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
    if (v.is_number_integer()) return std::vector<int64_t>(n, v.get<int64_t>());
    if (v.is_array() && v.size() == n) {
      std::vector<int64_t> out;
      for (const auto& x : v) {
        if (!x.is_number_integer()) {
          fail(key, "must hold integers");
          return std::vector<int64_t>(n, fallback);
        }
        out.push_back(x.get<int64_t>());
      }
      return out;
    }
    fail(key, "must be an integer or a list of " + std::to_string(n) + " integers");
    return std::vector<int64_t>(n, fallback);
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
