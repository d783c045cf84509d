// Prompt file readers. Each one streams the file (txt and jsonl line by line, csv in 1 MiB chunks) after a
// first pass that counts lines, so that 10 million prompts load with one allocation per buffer.
#include "jobs/prompt_source.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <memory>
#include <utility>

#include <sys/stat.h>
#include <nlohmann/json.hpp>

namespace sdxlb {
namespace {

constexpr size_t kChunkBytes = size_t{1} << 20;
constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

using FilePtr = std::unique_ptr<FILE, int (*)(FILE*)>;

// Opens `path` for reading, or explains why not.
StatusOr<FilePtr> open_for_read(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return not_found("prompt file \"" + path +
                     "\" does not exist; check prompts_file (relative paths resolve "
                     "against the job file's folder)");
  }
  if (S_ISDIR(st.st_mode)) {
    return invalid_argument("prompt file \"" + path +
                            "\" is a folder; prompts_file must name a .txt, .jsonl or "
                            ".csv file");
  }
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return io_error("cannot open prompt file \"" + path + "\" for reading; check its permissions");
  return FilePtr(f, &std::fclose);
}

struct FileShape {
  uint64_t bytes = 0;
  uint64_t lines = 0;  // newline count, plus one for a last line without a newline
};

// First pass: counts bytes and lines so that the PromptList can be reserved once.
StatusOr<FileShape> measure(const std::string& path) {
  SDXLB_ASSIGN_OR_RETURN(FilePtr f, open_for_read(path));
  std::vector<char> buf(kChunkBytes);
  FileShape shape;
  char last = '\n';
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) {
    shape.bytes += n;
    shape.lines += static_cast<uint64_t>(std::count(buf.data(), buf.data() + n, '\n'));
    last = buf[n - 1];
  }
  if (std::ferror(f.get())) return io_error("error while reading prompt file \"" + path + "\"");
  if (last != '\n') ++shape.lines;
  return shape;
}

// Collects record errors up to a limit and formats them as one Status.
class ErrorList {
 public:
  ErrorList(std::string path, size_t max_errors) : path_(std::move(path)), max_(max_errors) {}
  void add(uint64_t line, uint64_t column, const std::string& message) {
    if (lines_.size() >= max_) {
      ++skipped_;
      return;
    }
    std::string where = path_ + ":" + std::to_string(line);
    if (column > 0) where += ":" + std::to_string(column);
    lines_.push_back(where + ": " + message);
  }
  bool empty() const { return lines_.empty(); }
  Status status() const {
    std::string msg;
    for (const auto& l : lines_) msg += (msg.empty() ? "" : "\n") + l;
    if (skipped_ > 0) msg += "\n" + path_ + ": ... and " + std::to_string(skipped_) + " more bad records";
    return invalid_argument(msg);
  }

 private:
  std::string path_;
  size_t max_;
  std::vector<std::string> lines_;
  uint64_t skipped_ = 0;
};

Status no_prompts(const std::string& path, const std::string& fix) {
  return invalid_argument(path + ": the file has no prompts; " + fix);
}

// Reads lines with std::getline through a large stream buffer; strips a BOM on line 1 and a trailing CR.
class LineReader {
 public:
  explicit LineReader(const std::string& path) : buf_(kChunkBytes) {
    in_.rdbuf()->pubsetbuf(buf_.data(), static_cast<std::streamsize>(buf_.size()));
    in_.open(path, std::ios::binary);
  }
  bool ok() const { return in_.is_open(); }
  bool bad() const { return in_.bad(); }
  bool next(std::string_view* line) {
    if (!std::getline(in_, line_)) return false;
    ++number_;
    std::string_view v(line_);
    if (number_ == 1 && v.substr(0, kUtf8Bom.size()) == kUtf8Bom) v.remove_prefix(kUtf8Bom.size());
    if (!v.empty() && v.back() == '\r') v.remove_suffix(1);
    *line = v;
    return true;
  }
  uint64_t number() const { return number_; }

 private:
  std::vector<char> buf_;
  std::ifstream in_;
  std::string line_;
  uint64_t number_ = 0;
};

Status load_txt(const std::string& path, PromptList* out) {
  LineReader reader(path);
  if (!reader.ok())
    return io_error("cannot open prompt file \"" + path + "\" for reading; check its permissions");
  std::string_view line;
  while (reader.next(&line)) {
    if (is_blank(line)) continue;
    Status st = out->add(line);
    if (!st.is_ok())
      return invalid_argument(path + ":" + std::to_string(reader.number()) + ": " + st.message());
  }
  if (reader.bad()) return io_error("error while reading prompt file \"" + path + "\"");
  if (out->empty()) return no_prompts(path, "write one prompt per line");
  return Status::ok();
}

// "a number", "an array", ... for messages.
const char* json_type_name(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    default:
      return "a number";
  }
}

// nlohmann's what() reads "[json.exception.parse_error.101] parse error at line 1, column 5: <detail>".
std::string json_error_detail(const nlohmann::json::parse_error& e) {
  std::string what = e.what();
  size_t col = what.find(", column ");
  size_t colon = col == std::string::npos ? std::string::npos : what.find(": ", col);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

Status load_jsonl(const std::string& path, const PromptFileOptions& options, PromptList* out) {
  LineReader reader(path);
  if (!reader.ok())
    return io_error("cannot open prompt file \"" + path + "\" for reading; check its permissions");
  ErrorList errors(path, options.max_errors);
  const char* const kExample =
      "e.g. {\"prompt\": \"a red fox in snow\", \"negative_prompt\": \"blurry\", \"seed\": 7}";
  std::string_view line;
  while (reader.next(&line)) {
    if (is_blank(line)) continue;
    const uint64_t n = reader.number();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::parse_error& e) {
      errors.add(n, std::max<uint64_t>(e.byte, 1),
                 "not valid JSON: " + json_error_detail(e) + "; write one JSON object per line, " + kExample);
      continue;
    }
    if (!j.is_object()) {
      errors.add(n, 0,
                 std::string("the line is ") + json_type_name(j) + ", expected a JSON object; " + kExample);
      continue;
    }
    auto p = j.find("prompt");
    if (p == j.end()) {
      errors.add(n, 0, std::string("missing \"prompt\"; every line needs a \"prompt\" string, ") + kExample);
      continue;
    }
    if (!p->is_string()) {
      errors.add(n, 0,
                 std::string("\"prompt\" is ") + json_type_name(*p) + ", expected a string; quote the text");
      continue;
    }
    std::optional<std::string_view> negative;
    auto neg = j.find("negative_prompt");
    if (neg != j.end() && !neg->is_null()) {
      if (!neg->is_string()) {
        errors.add(n, 0,
                   std::string("\"negative_prompt\" is ") + json_type_name(*neg) +
                       ", expected a string or null; quote the text");
        continue;
      }
      negative = neg->get_ref<const std::string&>();
    }
    std::optional<uint64_t> seed;
    auto s = j.find("seed");
    if (s != j.end() && !s->is_null()) {
      if (s->is_number_unsigned()) {
        seed = s->get<uint64_t>();
      } else {
        std::string got = s->is_number_integer() ? std::to_string(s->get<int64_t>())
                          : s->is_number()       ? "a non-integer or too large number " + s->dump()
                                                 : std::string(json_type_name(*s));
        errors.add(
            n, 0,
            "\"seed\" is " + got + "; a seed is an integer from 0 to 18446744073709551615 (or omit it)");
        continue;
      }
    }
    Status st = out->add(p->get_ref<const std::string&>(), negative, seed);
    if (!st.is_ok()) errors.add(n, 0, st.message());
  }
  if (reader.bad()) return io_error("error while reading prompt file \"" + path + "\"");
  if (!errors.empty()) return errors.status();
  if (out->empty()) return no_prompts(path, std::string("write one JSON object per line, ") + kExample);
  return Status::ok();
}

// RFC 4180 reader over 1 MiB chunks. Calls on_record(fields, first_line) for every record that is not a
// blank line; records the first syntax problem of each record in `errors`.
class CsvReader {
 public:
  CsvReader(FILE* f, ErrorList* errors) : f_(f), errors_(errors), buf_(kChunkBytes) {}

  template <typename OnRecord>
  Status run(OnRecord&& on_record) {
    size_t n;
    bool first_chunk = true;
    while ((n = std::fread(buf_.data(), 1, buf_.size(), f_)) > 0) {
      size_t i = 0;
      if (first_chunk && n >= kUtf8Bom.size() && std::string_view(buf_.data(), kUtf8Bom.size()) == kUtf8Bom) {
        i = kUtf8Bom.size();
      }
      first_chunk = false;
      for (; i < n; ++i) step(buf_[i], on_record);
    }
    if (std::ferror(f_)) return io_error("read error");
    if (in_quotes_) {
      errors_->add(
          quote_line_, quote_column_,
          "a quoted field starting here is never closed; add the closing quote (write \"\" for a quote "
          "inside a quoted field)");
      return Status::ok();
    }
    if (!field_.empty() || !fields_.empty() || field_quoted_) end_record(on_record);
    return Status::ok();
  }

 private:
  template <typename OnRecord>
  void step(char c, OnRecord& on_record) {
    if (in_quotes_) {
      if (c == '"') {
        in_quotes_ = false;
        after_quote_ = true;
      } else {
        field_ += c;
      }
    } else if (after_quote_) {
      if (c == '"') {  // "" inside a quoted field is one quote
        field_ += '"';
        in_quotes_ = true;
        after_quote_ = false;
      } else if (c == ',') {
        end_field();
      } else if (c == '\n') {
        end_record(on_record);
      } else if (c != '\r') {
        if (!record_bad_) {
          errors_->add(line_, column_ + 1,
                       std::string("unexpected character '") + c +
                           "' after a closing quote; write \"\" for a quote inside a quoted field");
        }
        record_bad_ = true;
      }
    } else if (c == '"' && field_.empty() && !field_quoted_) {
      in_quotes_ = true;
      field_quoted_ = true;
      quote_line_ = line_;
      quote_column_ = column_ + 1;
    } else if (c == ',') {
      end_field();
    } else if (c == '\n') {
      if (!field_.empty() && field_.back() == '\r') field_.pop_back();
      end_record(on_record);
    } else {
      field_ += c;
    }
    if (c == '\n') {
      ++line_;
      column_ = 0;
    } else {
      ++column_;
    }
  }

  void end_field() {
    fields_.push_back(std::move(field_));
    field_.clear();
    field_quoted_ = false;
    after_quote_ = false;
  }

  template <typename OnRecord>
  void end_record(OnRecord& on_record) {
    const bool blank = fields_.empty() && field_.empty() && !field_quoted_;
    end_field();
    if (!blank && !record_bad_) on_record(fields_, record_line_);
    fields_.clear();
    record_bad_ = false;
    record_line_ = line_ + 1;  // called before the newline is counted
  }

  FILE* f_;
  ErrorList* errors_;
  std::vector<char> buf_;
  std::vector<std::string> fields_;
  std::string field_;
  bool in_quotes_ = false, after_quote_ = false, field_quoted_ = false, record_bad_ = false;
  uint64_t line_ = 1, column_ = 0, record_line_ = 1, quote_line_ = 0, quote_column_ = 0;
};

std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "\"" : ", \"") + n + "\"";
  return s;
}

Status load_csv(const std::string& path, const PromptFileOptions& options, PromptList* out) {
  SDXLB_ASSIGN_OR_RETURN(FilePtr f, open_for_read(path));
  ErrorList errors(path, options.max_errors);
  std::vector<std::string> header;
  bool have_header = false, header_ok = false;
  size_t prompt_col = 0, neg_col = 0;
  const bool want_neg = !options.csv_negative_column.empty();

  auto find_column = [&](const std::string& name, const char* key, size_t* index) {
    size_t found = 0, count = 0;
    for (size_t c = 0; c < header.size(); ++c) {
      if (header[c] == name) found = c, ++count;
    }
    if (count == 1) {
      *index = found;
      return true;
    }
    if (count == 0) {
      errors.add(1, 0,
                 "no column \"" + name + "\" (" + key + ") in the header; the header's columns are " +
                     quoted_list(header) + "; set " + key + " to one of them or fix the header row");
    } else {
      errors.add(1, 0,
                 "the header has " + std::to_string(count) + " columns named \"" + name +
                     "\"; rename them so that " + key + " picks exactly one");
    }
    return false;
  };

  CsvReader reader(f.get(), &errors);
  Status st = reader.run([&](std::vector<std::string>& fields, uint64_t line) {
    if (!have_header) {
      have_header = true;
      for (auto& name : fields) header.emplace_back(trim(name));
      header_ok = find_column(options.csv_prompt_column, "csv_prompt_column", &prompt_col);
      if (want_neg)
        header_ok = find_column(options.csv_negative_column, "csv_negative_column", &neg_col) && header_ok;
      return;
    }
    if (!header_ok) return;
    if (fields.size() != header.size()) {
      errors.add(line, 0,
                 "the row has " + std::to_string(fields.size()) + " fields but the header has " +
                     std::to_string(header.size()) +
                     "; quote fields that contain commas (\"a cat, a dog\") and give every row the "
                     "header's columns");
      return;
    }
    std::optional<std::string_view> negative;
    if (want_neg && !fields[neg_col].empty()) negative = fields[neg_col];
    Status add = out->add(fields[prompt_col], negative);
    if (!add.is_ok()) errors.add(line, 0, add.message());
  });
  if (!st.is_ok()) return io_error("error while reading prompt file \"" + path + "\"");
  if (!errors.empty()) return errors.status();
  if (!have_header)
    return no_prompts(path, "write a header row (e.g. prompt,negative_prompt) and one row per prompt");
  if (out->empty()) return no_prompts(path, "the header row is there; add one row per prompt below it");
  return Status::ok();
}

}  // namespace

const char* prompt_format_name(PromptFormat format) {
  switch (format) {
    case PromptFormat::kTxt:
      return "txt";
    case PromptFormat::kJsonl:
      return "jsonl";
    case PromptFormat::kCsv:
      return "csv";
  }
  return "?";
}

std::optional<PromptFormat> parse_prompt_format(std::string_view name) {
  if (name == "txt") return PromptFormat::kTxt;
  if (name == "jsonl") return PromptFormat::kJsonl;
  if (name == "csv") return PromptFormat::kCsv;
  return std::nullopt;
}

std::optional<PromptFormat> prompt_format_from_extension(std::string_view path) {
  size_t slash = path.find_last_of('/');
  size_t dot = path.find_last_of('.');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) return std::nullopt;
  std::string ext(path.substr(dot + 1));
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == "txt") return PromptFormat::kTxt;
  if (ext == "jsonl" || ext == "ndjson") return PromptFormat::kJsonl;
  if (ext == "csv") return PromptFormat::kCsv;
  return std::nullopt;
}

void PromptList::reserve(size_t prompts, size_t text_bytes) {
  entries_.reserve(prompts);
  text_.reserve(text_bytes);
}

Status PromptList::add(std::string_view prompt, std::optional<std::string_view> negative,
                       std::optional<uint64_t> seed) {
  if (prompt.size() > kMaxTextBytes || (negative && negative->size() > kMaxTextBytes)) {
    return invalid_argument("a prompt is longer than 1 GiB; this is not a prompt, check the file's format");
  }
  Entry e{text_.size(), static_cast<uint32_t>(prompt.size()), 0};
  text_.append(prompt);
  if (negative) {
    text_.append(*negative);
    e.neg_len_flags = kHasNegative | static_cast<uint32_t>(negative->size());
  }
  if (seed) {
    e.neg_len_flags |= kHasSeed;
    if (seeds_.empty()) seeds_.reserve(entries_.capacity());
    seeds_.resize(entries_.size() + 1, 0);
    seeds_.back() = *seed;
  } else if (!seeds_.empty()) {
    seeds_.push_back(0);
  }
  entries_.push_back(e);
  return Status::ok();
}

void PromptList::shrink_to_fit() {
  // A copy of a huge buffer costs time and a transient second copy: shrink only where much is unused.
  if (text_.capacity() > text_.size() + text_.size() / 2 + 4096) text_.shrink_to_fit();
  if (entries_.capacity() > entries_.size() + entries_.size() / 2 + 256) entries_.shrink_to_fit();
  if (seeds_.capacity() > seeds_.size() + seeds_.size() / 2 + 256) seeds_.shrink_to_fit();
}

StatusOr<PromptList> load_prompt_file(const std::string& path, const PromptFileOptions& options) {
  SDXLB_ASSIGN_OR_RETURN(FileShape shape, measure(path));
  if (shape.bytes == 0) {
    return invalid_argument(path + ": the prompt file is empty; add prompts (" +
                            prompt_format_name(options.format) + " format)");
  }
  PromptList list;
  // Text never exceeds the file's size, and there is at most one prompt per line.
  list.reserve(static_cast<size_t>(shape.lines), static_cast<size_t>(shape.bytes));
  Status st;
  switch (options.format) {
    case PromptFormat::kTxt:
      st = load_txt(path, &list);
      break;
    case PromptFormat::kJsonl:
      st = load_jsonl(path, options, &list);
      break;
    case PromptFormat::kCsv:
      st = load_csv(path, options, &list);
      break;
  }
  if (!st.is_ok()) return st;
  list.shrink_to_fit();
  return list;
}

}  // namespace sdxlb
