// Typed reading of YAML maps with located problems: the machinery under JobSpec's parser.
//
// A YamlFieldReader walks a map through a table of key handlers, rejects duplicate keys and unknown keys
// (suggesting the nearest valid one), and offers typed readers that record a problem, with the node's
// line and column, instead of throwing or stopping. ProblemList then reports every problem at once.
//
// Thread-safety: none needed; objects live for one parse.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace sdxlb {

/// Optimal-string-alignment edit distance (insertions, deletions, substitutions, adjacent swaps).
size_t edit_distance(std::string_view a, std::string_view b);

/// "unknown key "x"; did you mean "y"?" or, when no valid key is near, the list of valid keys.
std::string unknown_key_message(const std::string& name, const std::vector<std::string>& valid);

/// One row of an enum's name table: used both to parse and to print.
template <typename E>
struct NamedValue {
  const char* name;
  E value;
};

template <typename E, size_t N>
const char* name_of(const NamedValue<E> (&table)[N], E v) {
  for (const auto& nv : table) {
    if (nv.value == v) return nv.name;
  }
  return "?";
}

/// Every problem of one file, each "<file>:<line>:<column>: [<key>: ]<message>", sorted by position.
class ProblemList {
 public:
  explicit ProblemList(std::string file) : file_(std::move(file)) {}
  /// Records a problem at a YAML mark (a null mark reads as 1:1).
  void add(const YAML::Mark& mark, const std::string& key, const std::string& message);
  /// "<file>:<line>:<column>" of a YAML mark, as add() writes it (a null mark reads as 1:1).
  std::string location(const YAML::Mark& mark) const;
  /// Records lines that already carry their own location (e.g. from a prompt file); they sort last.
  void add_located(const std::string& lines);
  bool any() const { return !items_.empty(); }
  /// kInvalidArgument with one line per problem. Call only when any().
  Status status();

 private:
  struct Item {
    int line, column;
    std::string text;
  };
  std::string file_;
  std::vector<Item> items_;
};

/// Records the syntax error that YAML::Load(text) threw, adding what yaml-cpp's message leaves out: that the
/// line it points at (or the line before) is indented with a tab, or that lists and maps nest too deeply
/// (yaml-cpp says "bad file" and points near the end of the input; the problem points where brackets pass
/// 64 levels).
void add_syntax_problem(ProblemList* problems, const YAML::ParserException& e, std::string_view text);

/// One `key: value` pair of a map.
struct YamlField {
  std::string key;  ///< full path for messages, e.g. "memory.placement" or "prompts[3].seed"
  YAML::Node key_node;
  YAML::Node value;
  /// Where to point for the value: yaml-cpp gives an empty value the mark of the next token, so use the
  /// key's.
  YAML::Mark mark() const { return value.IsNull() ? key_node.Mark() : value.Mark(); }
};

/// How a value is shown in messages: "a list", "a map", "nothing", "\"x\"", "the quoted string \"x\"".
std::string describe_node(const YAML::Node& n);
/// s in double quotes.
std::string quote(std::string_view s);

/// Walks maps and reads typed values, recording problems in a ProblemList.
class YamlFieldReader {
 public:
  using Handler = std::function<void(const YamlField&)>;
  using HandlerTable = std::vector<std::pair<std::string, Handler>>;

  explicit YamlFieldReader(ProblemList* problems) : p_(problems) {}

  /// Calls the handler of every key of `map` in document order; records duplicate, unknown (with the
  /// nearest valid key) and non-scalar keys. `prefix` names the map in messages ("" for the top level).
  /// Returns the handled fields by key name.
  std::map<std::string, YamlField> walk_map(const YAML::Node& map, const std::string& prefix,
                                            const HandlerTable& handlers);

  // Typed readers. A null value keeps the caller's default and returns false without a problem; a bad
  // value records a problem (with `hint` as the fix where given) and returns false.

  /// Any scalar as text.
  bool read_string(const YamlField& f, std::string* out, bool allow_empty = true);
  /// true/false (also yes/no, on/off), unquoted.
  bool read_bool(const YamlField& f, bool* out);
  /// An unquoted integer in [lo, hi].
  bool read_int(const YamlField& f, int64_t lo, int64_t hi, const std::string& hint, int64_t* out);
  /// An unquoted integer in [0, 2^64-1] (seeds).
  bool read_u64(const YamlField& f, uint64_t* out);
  /// An unquoted finite number, > lo (or >= lo when lo_inclusive).
  bool read_number(const YamlField& f, double lo, bool lo_inclusive, const std::string& hint, double* out);
  /// One of the table's names.
  template <typename E, size_t N>
  bool read_enum(const YamlField& f, const NamedValue<E> (&table)[N], E* out) {
    std::vector<const char*> names;
    for (const auto& nv : table) {
      if (f.value.IsScalar() && f.value.Scalar() == nv.name) {
        *out = nv.value;
        return true;
      }
      names.push_back(nv.name);
    }
    if (!f.value.IsNull()) enum_problem(f, names);
    return false;
  }

 protected:
  ProblemList* p_;

 private:
  void enum_problem(const YamlField& f, const std::vector<const char*>& names);
};

}  // namespace sdxlb
