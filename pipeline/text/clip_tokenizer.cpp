#include "pipeline/text/clip_tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <queue>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "pipeline/text/unicode_text.h"

namespace sdxlb {
namespace {

using json = nlohmann::json;

constexpr size_t kCacheCapacity = 1 << 16;   // distinct words; past this, results are computed, not stored
constexpr size_t kMaxCachedWordBytes = 128;  // longer words are rare and would bloat the cache

// ---- Files ----

StatusOr<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot open (" + std::strerror(errno) + ")");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return io_error(path + ": read failed");
  return ss.str();
}

bool file_exists(const std::string& path) {
  return std::ifstream(path).good();
}

StatusOr<json> parse_json_text(const std::string& text, const std::string& path) {
  if (const size_t depth = json_nesting_depth(text); depth > kMaxJsonDepth) {
    return data_loss(path + ": JSON nested " + std::to_string(depth) + " levels deep (the limit is " +
                     std::to_string(kMaxJsonDepth) + "); restore the file from the model's release");
  }
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    const size_t at = std::min<size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
    const size_t line = 1 + std::count(text.begin(), text.begin() + at, '\n');
    const size_t nl = text.rfind('\n', at == 0 ? 0 : at - 1);
    const size_t col = (nl == std::string::npos || at == 0) ? at + 1 : at - nl;
    return data_loss(path + ": invalid JSON at line " + std::to_string(line) + ", column " +
                     std::to_string(col) + " (" + e.what() + "); restore the file from the model's release");
  } catch (const json::exception& e) {  // out_of_range 406: a number past double's range (1e400)
    return data_loss(path + ": invalid JSON (" + e.what() + "); restore the file from the model's release");
  }
}

// An optional config file: a missing file is an empty object.
StatusOr<json> read_optional_json(const std::string& path) {
  if (!file_exists(path)) return json::object();
  SDXLB_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  SDXLB_ASSIGN_OR_RETURN(json j, parse_json_text(text, path));
  if (!j.is_object()) return data_loss(path + ": expected a JSON object at the top level");
  return j;
}

// ---- vocab.json and merges.txt ----

// vocab.json streamed into the map (a SAX pass): building the JSON tree first costs several times more for
// 49408 entries.
class VocabReader : public json::json_sax_t {
 public:
  explicit VocabReader(std::unordered_map<std::string, int32_t>* vocab) : vocab_(vocab) {}

  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (v > static_cast<number_unsigned_t>(INT32_MAX)) return bad_value(std::to_string(v));
    return add(static_cast<int32_t>(v));
  }
  bool number_integer(number_integer_t v) override {
    if (v < 0 || v > INT32_MAX) return bad_value(std::to_string(v));
    return add(static_cast<int32_t>(v));
  }
  bool start_object(std::size_t) override {
    if (depth_++ == 0) return true;
    return bad_value("an object");
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool null() override { return bad_value("null"); }
  bool boolean(bool) override { return bad_value("a boolean"); }
  bool number_float(number_float_t v, const string_t&) override { return bad_value(std::to_string(v)); }
  bool string(string_t& v) override {
    return bad_value(json(v).dump(-1, ' ', false, json::error_handler_t::replace));
  }
  bool binary(binary_t&) override { return bad_value("binary data"); }
  bool start_array(std::size_t) override { return bad_value("an array"); }
  bool end_array() override { return false; }
  bool parse_error(std::size_t, const std::string&, const json::exception& e) override {
    error_ = e.what();
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool add(int32_t id) {
    if (depth_ != 1) return bad_value(std::to_string(id));
    vocab_->insert_or_assign(std::move(key_), id);  // a repeated key: the last wins, as in serde_json
    return true;
  }
  bool bad_value(const std::string& what) {
    if (error_.empty()) {
      error_ = depth_ == 0 ? "expected a JSON object mapping each token to its id"
                           : "token " + json(key_).dump(-1, ' ', false, json::error_handler_t::replace) +
                                 " has " + what + " as its id; ids are non-negative integers";
    }
    return false;
  }

  std::unordered_map<std::string, int32_t>* vocab_;
  std::string key_;
  std::string error_;
  int depth_ = 0;
};

// read_text_file with the hint a user needs when a tokenizer file is missing.
StatusOr<std::string> read_tokenizer_file(const std::string& path) {
  auto text = read_text_file(path);
  if (text.status().code() == StatusCode::kNotFound)
    return not_found(path +
                     ": not found; a CLIP tokenizer folder holds vocab.json and merges.txt (SDXL's "
                     "tokenizer/ and tokenizer_2/)");
  return text;
}

StatusOr<std::unordered_map<std::string, int32_t>> load_vocab(const std::string& path) {
  SDXLB_ASSIGN_OR_RETURN(auto text, read_tokenizer_file(path));
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(1 << 16);
  VocabReader reader(&vocab);
  if (!json::sax_parse(text, &reader) || !reader.error().empty()) {
    if (reader.error().empty() || reader.error().rfind("[json.exception.parse_error", 0) == 0) {
      // A syntax error: re-parse for the message with line and column.
      auto parsed = parse_json_text(text, path);
      if (!parsed.is_ok()) return parsed.status();
    }
    return data_loss(path + ": " + reader.error() + "; restore the file from the model's release");
  }
  if (vocab.empty()) return data_loss(path + ": holds no tokens; restore the file from the model's release");
  return vocab;
}

}  // namespace

struct ClipTokenizer::Cache {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

// merges.txt as the `tokenizers` BPE reader takes it: lines split on '\n' (a trailing "\r" dropped), lines
// starting with "#version" skipped, every other line exactly two tokens separated by one space. Rank is the
// position among the merge lines; a repeated pair keeps the later rank, as a Rust HashMap collect does.
template <typename Merge>
Status load_merges(const std::string& path, const std::unordered_map<std::string, int32_t>& vocab,
                   std::unordered_map<uint64_t, Merge>* merges) {
  SDXLB_ASSIGN_OR_RETURN(auto text, read_tokenizer_file(path));
  const std::string& s = text;
  merges->reserve(s.size() / 8);
  uint32_t rank = 0;
  size_t line_no = 0;
  for (size_t start = 0; start < s.size();) {
    size_t end = s.find('\n', start);
    if (end == std::string::npos) end = s.size();
    std::string_view line(s.data() + start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, 8) == "#version") continue;
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos) {
      return data_loss(path + " line " + std::to_string(line_no) +
                       ": expected two tokens separated by one space, got " +
                       json(std::string(line)).dump(-1, ' ', false, json::error_handler_t::replace) +
                       "; restore the file from the model's release");
    }
    std::string token(line.substr(0, sp));
    int32_t ids[3];
    for (int k = 0; k < 3; ++k) {
      if (k == 1) token.assign(line.substr(sp + 1));
      if (k == 2) token.assign(line.substr(0, sp)).append(line.substr(sp + 1));
      auto it = vocab.find(token);
      if (it == vocab.end()) {
        return data_loss(
            path + " line " + std::to_string(line_no) + ": token " +
            json(token).dump(-1, ' ', false, json::error_handler_t::replace) +
            (k == 2 ? " (the merge result)" : "") +
            " is not in vocab.json; vocab.json and merges.txt must come from the same tokenizer");
      }
      ids[k] = it->second;
    }
    (*merges)[pair_key(ids[0], ids[1])] = Merge{rank++, ids[2]};
  }
  if (merges->empty())
    return data_loss(path + ": holds no merges; restore the file from the model's release");
  return Status::ok();
}

// GPT-2's reversible byte -> printable code point map that byte-level BPE vocabularies are written in.
std::string byte_symbol(int b) {
  static const std::vector<char32_t> table = [] {
    std::vector<char32_t> t(256, 0);
    std::vector<bool> printable(256, false);
    for (int c = '!'; c <= '~'; ++c) printable[c] = true;
    for (int c = 0xA1; c <= 0xAC; ++c) printable[c] = true;
    for (int c = 0xAE; c <= 0xFF; ++c) printable[c] = true;
    int n = 0;
    for (int c = 0; c < 256; ++c) t[c] = printable[c] ? char32_t(c) : char32_t(256 + n++);
    return t;
  }();
  std::string out;
  unicode::append_utf8(table[b], &out);
  return out;
}

// ---- Special tokens, resolved as transformers 5 + tokenizers do ----

// A special token value as transformers holds it before handing it to the Rust library: a plain string, or
// an AddedToken whose `normalized` may be unset (then it means !special at the time it is added).
struct TokenSpec {
  bool is_string = true;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, special = false;
  std::optional<bool> normalized;

  bool resolved_normalized() const { return normalized.value_or(!special); }
  // Python equality: str == str by content; AddedToken == AddedToken on every field; mixed never.
  bool same_as(const TokenSpec& o) const {
    if (is_string != o.is_string || content != o.content) return false;
    return is_string || (single_word == o.single_word && lstrip == o.lstrip && rstrip == o.rstrip &&
                         special == o.special && resolved_normalized() == o.resolved_normalized());
  }
};

StatusOr<bool> bool_field(const json& obj, const char* key, bool fallback, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return invalid_argument(where + ": \"" + key + "\" must be true or false");
  return it->get<bool>();
}

// Reads an AddedToken object: {"content": ..., "normalized": ..., "special": ...}.
StatusOr<TokenSpec> token_from_object(const json& obj, bool default_special, const std::string& where) {
  TokenSpec t;
  t.is_string = false;
  auto content = obj.find("content");
  if (content == obj.end() || !content->is_string()) {
    return invalid_argument(where + ": an added token needs a string \"content\"");
  }
  t.content = content->get<std::string>();
  SDXLB_ASSIGN_OR_RETURN(t.single_word, bool_field(obj, "single_word", false, where));
  SDXLB_ASSIGN_OR_RETURN(t.lstrip, bool_field(obj, "lstrip", false, where));
  SDXLB_ASSIGN_OR_RETURN(t.rstrip, bool_field(obj, "rstrip", false, where));
  SDXLB_ASSIGN_OR_RETURN(t.special, bool_field(obj, "special", default_special, where));
  if (obj.contains("normalized") && !obj["normalized"].is_null()) {
    SDXLB_ASSIGN_OR_RETURN(bool n, bool_field(obj, "normalized", false, where));
    t.normalized = n;
  }
  return t;
}

enum class Source { kTokenizerConfig, kSpecialTokensMap };

// One special-token value: a string, or an object. tokenizer_config.json objects must be tagged
// "__type": "AddedToken" (transformers rejects untagged ones); special_tokens_map.json objects are read as
// special tokens.
StatusOr<std::optional<TokenSpec>> token_value(const json& v, Source source, const std::string& where) {
  if (v.is_null()) return std::optional<TokenSpec>();
  if (v.is_string()) {
    TokenSpec t;
    t.content = v.get<std::string>();
    return std::optional<TokenSpec>(t);
  }
  if (v.is_object()) {
    if (source == Source::kTokenizerConfig && v.value("__type", json()) != "AddedToken") {
      return invalid_argument(where +
                              ": an object here needs \"__type\": \"AddedToken\" (transformers rejects it "
                              "otherwise); write the token as a plain string");
    }
    if (source == Source::kSpecialTokensMap) {
      json copy = v;
      copy.erase("special");
      SDXLB_ASSIGN_OR_RETURN(TokenSpec t, token_from_object(copy, true, where));
      return std::optional<TokenSpec>(t);
    }
    SDXLB_ASSIGN_OR_RETURN(TokenSpec t, token_from_object(v, false, where));
    return std::optional<TokenSpec>(t);
  }
  return invalid_argument(where + ": expected a string, an AddedToken object or null, got " +
                          v.dump(-1, ' ', false, json::error_handler_t::replace));
}

constexpr const char* kNamedTokenKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                           "pad_token", "cls_token", "mask_token"};

struct SpecialTokens {
  std::optional<TokenSpec> named[7];  // in kNamedTokenKeys order
  std::vector<TokenSpec> to_add;      // in the order transformers adds them to the backend
  int max_length = 77;
};

std::optional<TokenSpec> clip_default(const std::string& key) {
  // CLIPTokenizer.__init__ defaults, used when the config does not name the token at all.
  TokenSpec t;
  if (key == "bos_token") t.content = "<|startoftext|>";
  if (key == "eos_token" || key == "unk_token" || key == "pad_token") t.content = "<|endoftext|>";
  if (t.content.empty()) return std::nullopt;
  return t;
}

StatusOr<SpecialTokens> resolve_special_tokens(const std::string& folder) {
  const std::string cfg_path = folder + "/tokenizer_config.json";
  const std::string map_path = folder + "/special_tokens_map.json";
  SDXLB_ASSIGN_OR_RETURN(json cfg, read_optional_json(cfg_path));
  SpecialTokens out;

  for (int k = 0; k < 7; ++k) {
    const std::string key = kNamedTokenKeys[k];
    if (!cfg.contains(key)) {
      out.named[k] = clip_default(key);
      continue;
    }
    SDXLB_ASSIGN_OR_RETURN(out.named[k],
                           token_value(cfg[key], Source::kTokenizerConfig, cfg_path + " \"" + key + "\""));
  }
  std::vector<TokenSpec> extra;
  auto read_extra = [&](const json& list, Source source, const std::string& where) -> Status {
    if (list.is_null()) return Status::ok();
    if (!list.is_array()) return invalid_argument(where + ": expected a list of tokens");
    extra.clear();
    for (const json& v : list) {
      SDXLB_ASSIGN_OR_RETURN(std::optional<TokenSpec> t, token_value(v, source, where));
      if (t) extra.push_back(*t);
    }
    return Status::ok();
  };
  const char* extra_key =
      cfg.contains("extra_special_tokens") ? "extra_special_tokens" : "additional_special_tokens";
  if (cfg.contains(extra_key)) {
    SDXLB_RETURN_IF_ERROR(
        read_extra(cfg[extra_key], Source::kTokenizerConfig, cfg_path + " \"" + extra_key + "\""));
  }

  // added_tokens_decoder (written by newer transformers) replaces special_tokens_map.json entirely.
  std::vector<TokenSpec> decoder;
  if (cfg.contains("added_tokens_decoder") && !cfg["added_tokens_decoder"].is_null()) {
    const json& atd = cfg["added_tokens_decoder"];
    if (!atd.is_object()) return invalid_argument(cfg_path + ": \"added_tokens_decoder\" must be an object");
    std::vector<std::pair<long long, TokenSpec>> by_id;
    for (auto& [id, v] : atd.items()) {
      const std::string where = cfg_path + " added_tokens_decoder \"" + id + "\"";
      char* end = nullptr;
      const long long n = std::strtoll(id.c_str(), &end, 10);
      if (id.empty() || *end != '\0' || !v.is_object()) {
        return invalid_argument(where + ": expected an integer id mapping to an AddedToken object");
      }
      SDXLB_ASSIGN_OR_RETURN(TokenSpec t, token_from_object(v, false, where));
      by_id.emplace_back(n, t);
    }
    std::sort(by_id.begin(), by_id.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [id, t] : by_id) decoder.push_back(t);
  } else if (file_exists(map_path)) {
    SDXLB_ASSIGN_OR_RETURN(json stm, read_optional_json(map_path));
    for (int k = 0; k < 7; ++k) {
      if (stm.contains(kNamedTokenKeys[k])) {
        SDXLB_ASSIGN_OR_RETURN(out.named[k], token_value(stm[kNamedTokenKeys[k]], Source::kSpecialTokensMap,
                                                         map_path + " \"" + kNamedTokenKeys[k] + "\""));
      }
    }
    for (const char* key : {"additional_special_tokens", "extra_special_tokens"}) {
      if (stm.contains(key)) {
        SDXLB_RETURN_IF_ERROR(read_extra(stm[key], Source::kSpecialTokensMap, map_path + " \"" + key + "\""));
      }
    }
  }

  // TokenizersBackend.__init__: the decoder's tokens (by id), then each named token and each extra token
  // that is neither among the decoder's contents nor already queued.
  std::vector<TokenSpec>& add = out.to_add;
  add = decoder;
  auto in_decoder = [&](const TokenSpec& t) {
    return std::any_of(decoder.begin(), decoder.end(),
                       [&](const TokenSpec& d) { return d.content == t.content; });
  };
  for (int k = 0; k < 7; ++k) {
    // A named token that the decoder lists is that decoder entry (same content).
    if (!out.named[k]) continue;
    for (const TokenSpec& d : decoder) {
      if (d.content == out.named[k]->content) out.named[k] = d;
    }
  }
  auto queue = [&](const TokenSpec& t) {
    if (in_decoder(t)) return;
    if (std::any_of(add.begin(), add.end(), [&](const TokenSpec& q) { return q.same_as(t); })) return;
    add.push_back(t);
  };
  for (const auto& t : out.named) {
    if (t) queue(*t);
  }
  for (const TokenSpec& t : extra) queue(t);
  // Strings become special AddedTokens; AddedTokens named as special tokens get special=True.
  for (TokenSpec& t : add) {
    bool named = false;
    for (const auto& n : out.named) named = named || (n && n->content == t.content);
    if (t.is_string) t.special = true;
    if (named) t.special = true;
    if (t.single_word || t.lstrip || t.rstrip) {
      return invalid_argument(cfg_path + ": added token " +
                              json(t.content).dump(-1, ' ', false, json::error_handler_t::replace) +
                              " uses single_word/lstrip/rstrip, which this tokenizer does not implement "
                              "(SDXL never does); set them to false");
    }
  }

  if (cfg.contains("model_max_length") && !cfg["model_max_length"].is_null()) {
    const json& m = cfg["model_max_length"];
    const double v = m.is_number() ? m.get<double>() : -1;
    if (!m.is_number() || v != std::floor(v) || v < 3 || v > 1e6) {
      return invalid_argument(cfg_path + ": \"model_max_length\" is " +
                              m.dump(-1, ' ', false, json::error_handler_t::replace) +
                              "; a CLIP text encoder needs a fixed length such as 77");
    }
    out.max_length = static_cast<int>(v);
  }
  return out;
}

// ---- Encoding ----

// NFC, then every run of \s to one " ", then lowercase: the normalizer sequence of CLIPTokenizer.
std::u32string normalize(const std::u32string& text) {
  const std::u32string composed = unicode::nfc(text);
  std::u32string out;
  out.reserve(composed.size());
  for (size_t i = 0; i < composed.size();) {
    if (unicode::is_space(composed[i])) {
      out.push_back(U' ');
      while (i < composed.size() && unicode::is_space(composed[i])) ++i;
      continue;
    }
    unicode::append_lowercase(composed[i++], &out);
  }
  return out;
}

// Splits `text` on the added tokens `matchers` (leftmost-longest, like the Aho-Corasick automaton of
// `tokenizers`): a matched token appends its id to `ids`; each stretch between matches goes to `on_gap`.
template <typename OnGap>
void split_on_added(const std::u32string& text, const std::vector<std::u32string>& matchers,
                    const std::vector<int32_t>& match_ids, std::vector<int32_t>* ids, OnGap&& on_gap) {
  size_t gap_start = 0;
  for (size_t i = 0; i < text.size();) {
    size_t best = matchers.size(), best_len = 0;
    for (size_t m = 0; m < matchers.size(); ++m) {
      const std::u32string& p = matchers[m];
      if (p.size() > best_len && text.compare(i, p.size(), p) == 0) best = m, best_len = p.size();
    }
    if (best == matchers.size()) {
      ++i;
      continue;
    }
    if (gap_start < i) on_gap(text.substr(gap_start, i - gap_start));
    ids->push_back(match_ids[best]);
    i += best_len;
    gap_start = i;
  }
  if (gap_start < text.size()) on_gap(text.substr(gap_start));
}

bool starts_with(const std::u32string& s, size_t pos, std::u32string_view lit) {
  return s.compare(pos, lit.size(), lit.data(), lit.size()) == 0;
}

// Length of a contraction ('s 't 're 've 'm 'll 'd) at `pos`, or 0. Both regexes list them in this order.
size_t contraction_at(const std::u32string& s, size_t pos) {
  if (s[pos] != U'\'') return 0;
  for (std::u32string_view c : {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"}) {
    if (starts_with(s, pos, c)) return c.size();
  }
  return 0;
}

// Length of the run starting at `pos` for the classes shared by both regexes: \p{L}+, \p{N} (one code point
// when `single_number`, else \p{N}+), or [^\s\p{L}\p{N}]+. 0 for whitespace.
size_t class_run_at(const std::u32string& s, size_t pos, bool single_number) {
  size_t end = pos;
  if (unicode::is_letter(s[pos])) {
    while (end < s.size() && unicode::is_letter(s[end])) ++end;
  } else if (unicode::is_number(s[pos])) {
    ++end;
    while (!single_number && end < s.size() && unicode::is_number(s[end])) ++end;
  } else if (!unicode::is_space(s[pos])) {
    while (end < s.size() && !unicode::is_space(s[end]) && !unicode::is_letter(s[end]) &&
           !unicode::is_number(s[end])) {
      ++end;
    }
  }
  return end - pos;
}

// The ByteLevel pre-tokenizer's GPT-2 regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// applied to one CLIP-regex match, which never holds whitespace, so the " ?" and \s branches never fire.
template <typename OnWord>
void split_gpt2(const std::u32string& s, OnWord&& on_word) {
  for (size_t pos = 0; pos < s.size();) {
    size_t len = contraction_at(s, pos);
    if (len == 0) len = class_run_at(s, pos, /*single_number=*/false);
    if (len == 0) {  // whitespace: unreachable for CLIP-regex matches; kept whole so nothing is lost
      len = 1;
      while (pos + len < s.size() && unicode::is_space(s[pos + len])) ++len;
    }
    on_word(s.substr(pos, len));
    pos += len;
  }
}

}  // namespace

ClipTokenizer::ClipTokenizer() : cache_(std::make_unique<Cache>()) {}
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;
ClipTokenizer::~ClipTokenizer() = default;

StatusOr<ClipTokenizer> ClipTokenizer::load(const std::string& folder) {
  ClipTokenizer tok;
  tok.folder_ = folder;
  SDXLB_ASSIGN_OR_RETURN(tok.vocab_, load_vocab(folder + "/vocab.json"));
  SDXLB_RETURN_IF_ERROR(load_merges(folder + "/merges.txt", tok.vocab_, &tok.merges_));
  SDXLB_ASSIGN_OR_RETURN(SpecialTokens special, resolve_special_tokens(folder));
  tok.max_length_ = special.max_length;

  // The BPE model maps a byte without a vocab entry to the unknown token.
  const std::optional<TokenSpec>& unk = special.named[2];
  auto unk_it = unk ? tok.vocab_.find(unk->content) : tok.vocab_.end();
  for (int b = 0; b < 256; ++b) {
    const std::string sym = byte_symbol(b);
    for (auto [suffix, ids] :
         {std::pair<const char*, int32_t*>{"", tok.byte_ids_}, {"</w>", tok.byte_end_ids_}}) {
      auto it = tok.vocab_.find(sym + suffix);
      if (it == tok.vocab_.end()) it = unk_it;
      if (it == tok.vocab_.end()) {
        return data_loss(folder + "/vocab.json: has no entry for the byte symbol " +
                         json(sym + suffix).dump(-1, ' ', false, json::error_handler_t::replace) +
                         " and no unknown token to fall back on; this is not a byte-level BPE vocabulary");
      }
      ids[b] = it->second;
    }
  }

  // The Rust AddedVocabulary: a token takes its vocab id, or the next id past the vocab; for a content
  // added twice, the later flags win.
  int32_t max_vocab_id = 0;
  for (const auto& [t, id] : tok.vocab_) max_vocab_id = std::max(max_vocab_id, id);
  int32_t next_id = std::max<int32_t>(static_cast<int32_t>(tok.vocab_.size()), max_vocab_id + 1);
  for (const TokenSpec& t : special.to_add) {
    if (t.content.empty()) continue;
    auto same = std::find_if(tok.added_.begin(), tok.added_.end(),
                             [&](const ClipAddedToken& a) { return a.content == t.content; });
    if (same != tok.added_.end()) {
      same->normalized = t.resolved_normalized();
      same->special = t.special;
      continue;
    }
    auto v = tok.vocab_.find(t.content);
    tok.added_.push_back(
        {t.content, v != tok.vocab_.end() ? v->second : next_id++, t.resolved_normalized(), t.special});
  }
  for (const ClipAddedToken& a : tok.added_) {
    if (!a.normalized) {
      tok.raw_matchers_.push_back(unicode::decode_utf8(a.content));
      tok.raw_ids_.push_back(a.id);
    }
  }
  for (const ClipAddedToken& a : tok.added_) {
    if (a.normalized) {
      std::u32string n = normalize(unicode::decode_utf8(a.content));
      if (n.empty()) continue;
      tok.norm_matchers_.push_back(n);
      tok.norm_ids_.push_back(a.id);
    }
  }

  auto id_of = [&](int k, const char* what) -> StatusOr<int32_t> {
    const std::optional<TokenSpec>& t = special.named[k];
    if (!t) {
      return invalid_argument(folder + "/tokenizer_config.json: no " + what +
                              " token is set; SDXL's tokenizers set bos, eos and pad tokens");
    }
    // An empty token is never added (it would match nowhere), so it has no id to give.
    if (t->content.empty()) {
      return invalid_argument(folder + "/tokenizer_config.json: the " + what +
                              " token is empty; SDXL's tokenizers use \"<|startoftext|>\", "
                              "\"<|endoftext|>\" and \"<|endoftext|>\" or \"!\"");
    }
    for (const ClipAddedToken& a : tok.added_) {
      if (a.content == t->content) return a.id;
    }
    return internal_error("special token " + t->content + " was not registered");
  };
  SDXLB_ASSIGN_OR_RETURN(tok.bos_id_, id_of(0, "bos"));
  SDXLB_ASSIGN_OR_RETURN(tok.eos_id_, id_of(1, "eos"));
  SDXLB_ASSIGN_OR_RETURN(tok.pad_id_, id_of(4, "pad"));
  return tok;
}

void ClipTokenizer::encode_piece(const std::u32string& text, std::vector<int32_t>* ids) const {
  // The CLIP Split regex, matches kept and the rest (whitespace) dropped:
  //   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
  // Alternatives are tried in order at each position, as the backtracking engine does.
  auto on_word = [&](const std::u32string& word) {
    std::string bytes;
    for (char32_t c : word) unicode::append_utf8(c, &bytes);
    encode_word(bytes, ids);
  };
  for (size_t pos = 0; pos < text.size();) {
    size_t len = 0;
    for (std::u32string_view lit :
         {std::u32string_view(U"<|startoftext|>"), std::u32string_view(U"<|endoftext|>")}) {
      if (len == 0 && starts_with(text, pos, lit)) len = lit.size();
    }
    if (len == 0) len = contraction_at(text, pos);
    if (len == 0) len = class_run_at(text, pos, /*single_number=*/true);
    if (len == 0) {
      ++pos;
      continue;
    }
    split_gpt2(text.substr(pos, len), on_word);
    pos += len;
  }
}

void ClipTokenizer::encode_word(const std::string& bytes, std::vector<int32_t>* ids) const {
  const bool cacheable = bytes.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    auto it = cache_->words.find(bytes);
    if (it != cache_->words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word = bpe(bytes);
  ids->insert(ids->end(), word.begin(), word.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->words.size() < kCacheCapacity) cache_->words.emplace(bytes, std::move(word));
  }
}

// Word::merge_all of `tokenizers`: a heap of candidate pairs ordered by (rank, position); a popped pair
// that no longer exists (a neighbour merged first) is skipped; each merge queues the new pairs it forms.
std::vector<int32_t> ClipTokenizer::bpe(const std::string& bytes) const {
  struct Symbol {
    int32_t id;
    int prev, next, len;
  };
  struct Candidate {
    uint32_t rank;
    int pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const int n = static_cast<int>(bytes.size());
  std::vector<Symbol> sym(n);
  for (int i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    sym[i] = {i + 1 == n ? byte_end_ids_[b] : byte_ids_[b], i - 1, i + 1 == n ? -1 : i + 1, 1};
  }
  std::priority_queue<Candidate> queue;
  auto push_pair = [&](int left) {
    auto it = merges_.find(pair_key(sym[left].id, sym[sym[left].next].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = sym[top.pos];
    if (left.len == 0 || left.next == -1) continue;
    const int right_pos = left.next;
    auto it = merges_.find(pair_key(left.id, sym[right_pos].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    left.len += sym[right_pos].len;
    left.next = sym[right_pos].next;
    sym[right_pos].len = 0;
    if (left.next != -1) sym[left.next].prev = top.pos;
    if (left.prev != -1) push_pair(left.prev);
    if (left.next != -1) push_pair(top.pos);
  }
  std::vector<int32_t> out;
  for (const Symbol& s : sym) {
    if (s.len != 0) out.push_back(s.id);
  }
  return out;
}

std::vector<int32_t> ClipTokenizer::tokenize(const std::string& text) const {
  std::vector<int32_t> ids;
  split_on_added(unicode::decode_utf8(text), raw_matchers_, raw_ids_, &ids, [&](const std::u32string& raw) {
    split_on_added(normalize(raw), norm_matchers_, norm_ids_, &ids,
                   [&](const std::u32string& piece) { encode_piece(piece, &ids); });
  });
  return ids;
}

std::vector<int32_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> tokens = tokenize(text);
  // Truncation keeps room for the two special tokens that the post-processor adds.
  const size_t room = static_cast<size_t>(max_length_) - 2;
  if (tokens.size() > room) tokens.resize(room);
  std::vector<int32_t> ids;
  ids.reserve(max_length_);
  ids.push_back(bos_id_);
  ids.insert(ids.end(), tokens.begin(), tokens.end());
  ids.push_back(eos_id_);
  ids.resize(max_length_, pad_id_);
  return ids;
}

}  // namespace sdxlb
