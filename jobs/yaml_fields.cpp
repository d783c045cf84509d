#include "jobs/yaml_fields.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <sstream>
#include <tuple>

namespace sdxlb {
namespace {

bool is_plain(const YAML::Node& n) {
  return n.IsScalar() && n.Tag() != "!";
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool parse_int_text(const std::string& s, int64_t* out) {
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (b != e && *b == '+') ++b;
  auto r = std::from_chars(b, e, *out);
  return r.ec == std::errc() && r.ptr == e && b != e;
}

bool parse_double_text(const std::string& s, double* out) {
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (b != e && *b == '+') ++b;
  auto r = std::from_chars(b, e, *out);
  return r.ec == std::errc() && r.ptr == e && b != e;
}

// Whether s is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): the text
// that nlohmann::json can write, as JobSpec::to_canonical_json does with every string of the job.
bool is_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07u;
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    i += len;
  }
  return true;
}

}  // namespace

size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment: Levenshtein plus adjacent transpositions ("stpes" -> "steps" is 1).
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

// "unknown key ..." with the nearest valid key, or the list of valid keys when none is near.
std::string unknown_key_message(const std::string& name, const std::vector<std::string>& valid) {
  const std::string low = lower(name);
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& v : valid) {
    size_t d = edit_distance(low, v);
    // A long enough prefix ("negative" for "negative_prompt") is a near miss too.
    if (low.size() >= 4 && v.compare(0, low.size(), low) == 0) d = std::min<size_t>(d, 1);
    if (d < best_d) best_d = d, best = v;
  }
  if (best_d <= std::max<size_t>(2, name.size() / 3)) {
    return "unknown key " + quote(name) + "; did you mean " + quote(best) + "?";
  }
  std::string list;
  for (const auto& v : valid) list += (list.empty() ? "" : ", ") + v;
  return "unknown key " + quote(name) + "; valid keys are: " + list;
}

std::string quote(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

std::string describe_node(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return n.Tag() == "!" ? "the quoted string \"" + n.Scalar() + "\"" : "\"" + n.Scalar() + "\"";
    default:
      return "an undefined value";
  }
}

void ProblemList::add(const YAML::Mark& mark, const std::string& key, const std::string& message) {
  const int line = mark.is_null() ? 1 : mark.line + 1;
  const int column = mark.is_null() ? 1 : mark.column + 1;
  std::string text = file_ + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
  if (!key.empty()) text += key + ": ";
  items_.push_back({line, column, text + message});
}

void ProblemList::add_located(const std::string& lines) {
  std::istringstream in(lines);
  std::string l;
  while (std::getline(in, l)) items_.push_back({INT32_MAX, 0, l});
}

Status ProblemList::status() {
  std::stable_sort(items_.begin(), items_.end(), [](const Item& a, const Item& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  std::string msg;
  for (const auto& it : items_) msg += (msg.empty() ? "" : "\n") + it.text;
  return invalid_argument(msg);
}

std::map<std::string, YamlField> YamlFieldReader::walk_map(const YAML::Node& map, const std::string& prefix,
                                                           const HandlerTable& handlers) {
  std::map<std::string, YamlField> seen;
  std::vector<std::string> names;
  for (const auto& h : handlers) names.push_back(h.first);
  for (auto it = map.begin(); it != map.end(); ++it) {
    YamlField f{"", it->first, it->second};
    if (!it->first.IsScalar()) {
      p_->add(it->first.Mark(), prefix, "a key must be a plain name, not " + describe_node(it->first));
      continue;
    }
    const std::string name = it->first.Scalar();
    f.key = prefix.empty() ? name : prefix + "." + name;
    auto prev = seen.find(name);
    if (prev != seen.end()) {
      p_->add(it->first.Mark(), "",
              "duplicate key " + quote(f.key) + " (first set at line " +
                  std::to_string(prev->second.key_node.Mark().line + 1) + "); keep only one");
      continue;
    }
    auto h = std::find_if(handlers.begin(), handlers.end(), [&](const auto& x) { return x.first == name; });
    if (h == handlers.end()) {
      p_->add(it->first.Mark(), "",
              unknown_key_message(name, names) + (prefix.empty() ? "" : " (in " + prefix + ")"));
      continue;
    }
    seen.emplace(name, f);
    h->second(f);
  }
  return seen;
}

bool YamlFieldReader::read_string(const YamlField& f, std::string* out, bool allow_empty) {
  if (f.value.IsNull()) return false;
  if (!f.value.IsScalar()) {
    p_->add(f.mark(), f.key,
            "expected a string, got " + describe_node(f.value) + "; write " + f.key + ": \"text\"");
    return false;
  }
  if (!allow_empty && f.value.Scalar().empty()) {
    p_->add(f.mark(), f.key, "must not be empty; give a value or remove the key");
    return false;
  }
  if (!is_utf8(f.value.Scalar())) {
    p_->add(f.mark(), f.key, "is not valid UTF-8 text; save the job file as UTF-8");
    return false;
  }
  *out = f.value.Scalar();
  return true;
}

bool YamlFieldReader::read_bool(const YamlField& f, bool* out) {
  if (f.value.IsNull()) return false;
  bool v = false;
  if (!is_plain(f.value) || !YAML::convert<bool>::decode(f.value, v)) {
    p_->add(f.mark(), f.key,
            "expected true or false, got " + describe_node(f.value) + "; write " + f.key + ": true");
    return false;
  }
  *out = v;
  return true;
}

bool YamlFieldReader::read_int(const YamlField& f, int64_t lo, int64_t hi, const std::string& hint,
                               int64_t* out) {
  if (f.value.IsNull()) return false;
  int64_t v = 0;
  double d = 0;
  if (!is_plain(f.value) || !parse_int_text(f.value.Scalar(), &v)) {
    std::string why = "expected an integer, got " + describe_node(f.value);
    if (f.value.IsScalar() && f.value.Tag() == "!") {
      why += "; remove the quotes";
    } else if (f.value.IsScalar() && parse_double_text(f.value.Scalar(), &d)) {
      why += " (not a whole number or too large)";
    }
    p_->add(f.mark(), f.key, why + "; " + hint);
    return false;
  }
  if (v < lo || v > hi) {
    p_->add(f.mark(), f.key, std::to_string(v) + " is out of range; " + hint);
    return false;
  }
  *out = v;
  return true;
}

bool YamlFieldReader::read_u64(const YamlField& f, uint64_t* out) {
  if (f.value.IsNull()) return false;
  const std::string& s = f.value.IsScalar() ? f.value.Scalar() : std::string();
  const std::string hint = "a seed is an integer from 0 to 18446744073709551615";
  uint64_t v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (!is_plain(f.value) || s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size()) {
    std::string why = "expected an integer, got " + describe_node(f.value);
    if (!s.empty() && s[0] == '-') why = s + " is negative";
    if (r.ec == std::errc::result_out_of_range) why = s + " is too large";
    p_->add(f.mark(), f.key, why + "; " + hint + " (random seeds are not supported: a job must reproduce)");
    return false;
  }
  *out = v;
  return true;
}

bool YamlFieldReader::read_number(const YamlField& f, double lo, bool lo_inclusive, const std::string& hint,
                                  double* out) {
  if (f.value.IsNull()) return false;
  double v = 0;
  if (!is_plain(f.value) || !parse_double_text(f.value.Scalar(), &v) || !std::isfinite(v)) {
    p_->add(f.mark(), f.key, "expected a number, got " + describe_node(f.value) + "; " + hint);
    return false;
  }
  if (lo_inclusive ? v < lo : v <= lo) {
    p_->add(f.mark(), f.key, f.value.Scalar() + " is out of range; " + hint);
    return false;
  }
  *out = v;
  return true;
}

void YamlFieldReader::enum_problem(const YamlField& f, const std::vector<const char*>& names) {
  std::string list;
  for (const char* n : names) list += (list.empty() ? "" : " | ") + std::string(n);
  std::string msg = "unknown value " + describe_node(f.value) + "; use one of: " + list;
  if (f.value.IsScalar()) {
    for (const char* n : names) {
      if (edit_distance(lower(f.value.Scalar()), n) <= 2) {
        msg += " (did you mean " + quote(n) + "?)";
        break;
      }
    }
  }
  p_->add(f.mark(), f.key, msg);
}

}  // namespace sdxlb
