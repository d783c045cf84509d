#include "jobs/yaml_fields.h"

#if __has_include(<yaml-cpp/depthguard.h>)
#include <yaml-cpp/depthguard.h>  // YAML::DeepRecursion (yaml-cpp >= 0.7)
#endif

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <sstream>
#include <tuple>
#include <utility>

#include "jobs/text_encoding.h"

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

// The text of 0-based line `line` (without its newline); empty past the end.
std::string_view line_text(std::string_view text, int line) {
  size_t start = 0;
  for (int i = 0; i < line; ++i) {
    start = text.find('\n', start);
    if (start == std::string_view::npos) return {};
    ++start;
  }
  const size_t end = text.find('\n', start);
  return text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
}

bool tab_indented(std::string_view line) {
  for (char c : line) {
    if (c == '\t') return true;
    if (c != ' ') return false;
  }
  return false;
}

YAML::Mark mark_at(std::string_view text, size_t pos) {
  YAML::Mark m;
  pos = std::min(pos, text.size());
  m.pos = static_cast<int>(pos);
  m.line = static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(pos), '\n'));
  const size_t line_start = pos == 0 ? std::string_view::npos : text.rfind('\n', pos - 1);
  m.column = static_cast<int>(line_start == std::string_view::npos ? pos : pos - line_start - 1);
  return m;
}

// Flow brackets nested deeper than this mark where a document that yaml-cpp refused as too deep goes wrong
// (a job file needs 3 levels; yaml-cpp's own limit is a few hundred).
constexpr int kDeepFlowNesting = 64;

// Where flow brackets ([ and {) first nest deeper than `limit`, skipping quoted strings and comments; a null
// mark when they never do. A rough scan (a bracket inside a plain scalar counts), good enough to point at
// the place in a document that yaml-cpp refused as too deep.
YAML::Mark deep_flow_mark(std::string_view text, int limit) {
  int depth = 0;
  char quote = 0;  // the open quote, if any
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quote) {
      if (quote == '"' && c == '\\') {
        ++i;
      } else if (c == quote) {
        quote = 0;
      }
      continue;
    }
    const bool token_start = i == 0 || std::strchr(" \t\r\n[{,", text[i - 1]) != nullptr;
    if (c == '#' && token_start) {
      i = std::min(text.find('\n', i), text.size()) - 1;  // the loop's ++i lands on the newline
    } else if ((c == '"' || c == '\'') && token_start) {
      quote = c;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return mark_at(text, i);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return YAML::Mark::null_mark();
}

bool is_deep_recursion(const YAML::ParserException& e) {
#if __has_include(<yaml-cpp/depthguard.h>)
  return dynamic_cast<const YAML::DeepRecursion*>(&e) != nullptr;
#else
  (void)e;  // yaml-cpp before 0.7 has no depth limit
  return false;
#endif
}

}  // namespace

void add_syntax_problem(ProblemList* problems, const YAML::ParserException& e, std::string_view text) {
  if (is_deep_recursion(e)) {
    const YAML::Mark flow = deep_flow_mark(text, kDeepFlowNesting);
    if (!flow.is_null()) {
      problems->add(
          flow, "",
          "invalid YAML: the nesting is too deep (brackets open more than " +
              std::to_string(kDeepFlowNesting) +
              " levels deep here); a job file nests at most 3 levels: look for repeated or unclosed "
              "[ or {");
    } else {
      // Block nesting: yaml-cpp's mark is where it stopped; its position is right even where its line is not.
      problems->add(e.mark.pos >= 0 ? mark_at(text, static_cast<size_t>(e.mark.pos)) : e.mark, "",
                    "invalid YAML: the nesting is too deep (lists and maps inside one another past the "
                    "parser's limit); a job file nests at most 3 levels: check the indentation");
    }
    return;
  }
  int tab_line = 0;  // 1-based; 0: none
  if (!e.mark.is_null()) {
    if (tab_indented(line_text(text, e.mark.line))) {
      tab_line = e.mark.line + 1;
    } else if (e.mark.line > 0 && tab_indented(line_text(text, e.mark.line - 1))) {
      tab_line = e.mark.line;
    }
  }
  // "guidance:5" is one plain scalar in YAML, so the error shows up on a later line: name the line that
  // has a key with no space after its colon (the error's line or the one or two before it).
  int colon_line = 0;  // 1-based; 0: none
  std::string colon_key;
  for (int back = 0; !e.mark.is_null() && back <= 2 && e.mark.line - back >= 0 && colon_line == 0; ++back) {
    const std::string_view line = line_text(text, e.mark.line - back);
    size_t i = 0;
    while (i < line.size() && (line[i] == ' ' || line[i] == '-')) ++i;
    size_t k = i;
    while (k < line.size() && (std::isalnum(static_cast<unsigned char>(line[k])) || line[k] == '_')) ++k;
    if (k > i && k + 1 < line.size() && line[k] == ':' && line[k + 1] != ' ' && line[k + 1] != '\t' &&
        line[k + 1] != ':' && line[k + 1] != '/') {
      colon_line = e.mark.line - back + 1;
      colon_key = std::string(line.substr(i, k - i));
    }
  }
  if (tab_line > 0) {
    problems->add(
        e.mark, "",
        "invalid YAML: " + e.msg + "; line " + std::to_string(tab_line) +
            " is indented with a tab; YAML allows only spaces for indentation: replace the tab with "
            "spaces");
  } else if (colon_line > 0) {
    problems->add(e.mark, "",
                  "invalid YAML: " + e.msg + "; line " + std::to_string(colon_line) +
                      " has no space after \"" + colon_key + ":\": write \"" + colon_key +
                      ": <value>\" (YAML needs a space after the colon)");
  } else {
    problems->add(
        e.mark, "",
        "invalid YAML: " + e.msg +
            "; fix the syntax (check indentation, a space after each colon, and matching quotes and "
            "brackets)");
  }
}

size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment: Levenshtein plus adjacent transpositions ("stpes" -> "steps" is 1). Three
  // rolling rows (two back, for the transposition): O(|b|) memory.
  const size_t n = a.size(), m = b.size();
  std::vector<size_t> before(m + 1), prev(m + 1), cur(m + 1);
  for (size_t j = 0; j <= m; ++j) prev[j] = j;
  for (size_t i = 1; i <= n; ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[j] = std::min(cur[j], before[j - 2] + 1);
      }
    }
    std::swap(before, prev);
    std::swap(prev, cur);
  }
  return prev[m];
}

// The names other tools give our keys (diffusers' pipeline arguments, A1111 and ComfyUI settings), which
// are not near them by spelling: {theirs, ours}.
constexpr std::pair<const char*, const char*> kKeyAliases[] = {
    {"sampler", "scheduler"},
    {"sampler_name", "scheduler"},
    {"sampling_method", "scheduler"},
    {"cfg", "guidance"},
    {"cfg_scale", "guidance"},
    {"guidance_scale", "guidance"},
    {"num_inference_steps", "steps"},
    {"sampling_steps", "steps"},
    {"num_images_per_prompt", "images_per_prompt"},
    {"output_dir", "output"},
    {"outdir", "output"},
    {"precision", "dtype"},
    {"torch_dtype", "dtype"},
};

// "unknown key ..." with the nearest valid key, or the list of valid keys when none is near.
std::string unknown_key_message(const std::string& name, const std::vector<std::string>& valid) {
  const std::string low = lower(name);
  for (const auto& [theirs, ours] : kKeyAliases) {
    if (low == theirs && std::find(valid.begin(), valid.end(), ours) != valid.end())
      return "unknown key " + quote(name) + "; did you mean " + quote(ours) +
             "? (this job file's name for it)";
  }
  std::string best;
  size_t best_d = SIZE_MAX;
  const size_t near = std::max<size_t>(2, name.size() / 3);
  for (const auto& v : valid) {
    // The distance is at least the difference in length: skip the quadratic work when it cannot be near
    // (a 1 MB key must not take seconds to report).
    const size_t gap = low.size() > v.size() ? low.size() - v.size() : v.size() - low.size();
    size_t d = gap > near ? gap : edit_distance(low, v);
    // A long enough prefix ("negative" for "negative_prompt") is a near miss too.
    if (low.size() >= 4 && v.compare(0, low.size(), low) == 0) d = std::min<size_t>(d, 1);
    if (d < best_d) best_d = d, best = v;
  }
  if (best_d <= near) {
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

std::string ProblemList::location(const YAML::Mark& mark) const {
  const int line = mark.is_null() ? 1 : mark.line + 1;
  const int column = mark.is_null() ? 1 : mark.column + 1;
  return file_ + ":" + std::to_string(line) + ":" + std::to_string(column);
}

void ProblemList::add(const YAML::Mark& mark, const std::string& key, const std::string& message) {
  const int line = mark.is_null() ? 1 : mark.line + 1;
  const int column = mark.is_null() ? 1 : mark.column + 1;
  std::string text = location(mark) + ": ";
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
  // Every string of the job is written to the output's JSON (which needs UTF-8), and a NUL would cut a
  // prompt or a path short.
  if (const TextFault fault = find_text_fault(f.value.Scalar())) {
    p_->add(f.mark(), f.key,
            fault.kind == TextFault::Kind::kNul
                ? "holds a NUL byte (U+0000); remove it (\\0 in a double-quoted YAML string is a NUL byte)"
                : "is not valid UTF-8 text; save the job file as UTF-8");
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
  if (!f.value.IsScalar()) {
    // A map, a list or nothing is not an unknown name: say what kind of value the key takes.
    p_->add(f.mark(), f.key, "expected one of " + list + ", got " + describe_node(f.value));
    return;
  }
  std::string msg = "unknown value " + describe_node(f.value) + "; use one of: " + list;
  const std::string value = lower(f.value.Scalar());
  for (const char* n : names) {
    const size_t len = std::strlen(n);
    const size_t gap = value.size() > len ? value.size() - len : len - value.size();
    if (gap <= 2 && edit_distance(value, n) <= 2) {
      msg += " (did you mean " + quote(n) + "?)";
      break;
    }
  }
  p_->add(f.mark(), f.key, msg);
}

}  // namespace sdxlb
