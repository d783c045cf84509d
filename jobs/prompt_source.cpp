// Prompt file readers. Each one streams the file (txt and jsonl line by line, csv in 1 MiB chunks) after a
// first pass that counts lines, so that 10 million prompts load with one allocation per buffer. Every prompt
// must be well-formed UTF-8 without NUL bytes (jobs/text_encoding.h says why); the first pass also keeps the
// file's first bytes, to recognise a UTF-16 or UTF-32 file before it is read as lines.
#include "jobs/prompt_source.h"

#include "jobs/text_encoding.h"

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

// A read buffer for a file of `file_bytes`: 1 MiB for big files, no more than the file for small ones (a
// job with many small files, or the fuzzer, would otherwise zero 1 MiB per read).
size_t chunk_for(uint64_t file_bytes) {
  return static_cast<size_t>(std::clamp<uint64_t>(file_bytes + 1, 4096, kChunkBytes));
}
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
  if (!S_ISREG(st.st_mode)) {
    // A FIFO would block the open (or hang on read), /dev/zero never ends: only regular files are read.
    const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO (named pipe)"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "not a regular file";
    return invalid_argument("prompt file \"" + path + "\" is " + kind +
                            "; prompts_file must name a regular .txt, .jsonl or .csv file (to stream prompts "
                            "from another program, write them to a file first)");
  }
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return io_error("cannot open prompt file \"" + path + "\" for reading; check its permissions");
  return FilePtr(f, &std::fclose);
}

struct FileShape {
  uint64_t bytes = 0;
  uint64_t lines = 0;  // newline count, plus one for a last line without a newline
  std::string head;    // the first kWideSniffBytes bytes
};

// First pass: counts bytes and lines so that the PromptList can be reserved once.
StatusOr<FileShape> measure(const std::string& path) {
  SDXLB_ASSIGN_OR_RETURN(FilePtr f, open_for_read(path));
  struct stat st {};
  std::vector<char> buf(
      chunk_for(::fstat(fileno(f.get()), &st) == 0 ? static_cast<uint64_t>(st.st_size) : kChunkBytes));
  FileShape shape;
  char last = '\n';
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) {
    if (shape.bytes == 0) shape.head.assign(buf.data(), std::min(n, kWideSniffBytes));
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

// "iconv -f <from> -t UTF-8 p.txt > p.utf8.txt" for ".../p.txt": the converted copy keeps the extension (and
// so the format).
std::string iconv_command(const char* from, const std::string& path) {
  const std::string name = path.substr(path.find_last_of('/') + 1);
  const size_t dot = name.find_last_of('.');
  const std::string copy = dot == std::string::npos || dot == 0
                               ? name + ".utf8"
                               : name.substr(0, dot) + ".utf8" + name.substr(dot);
  return std::string("iconv -f ") + from + " -t UTF-8 " + name + " > " + copy;
}

// What is wrong with a text and how to fix it, e.g. "prompt holds a NUL byte (U+0000); remove it".
// `subject` names the text ("prompt", "negative prompt"; empty for a whole line, whose location says it);
// `nul_note` is added after "U+0000" (how the format writes a NUL).
std::string fault_message(const TextFault& fault, const std::string& path, const std::string& subject,
                          const std::string& nul_note = "") {
  const std::string who = subject.empty() ? "" : subject + " ";
  if (fault.kind == TextFault::Kind::kNul) {
    return (subject.empty() ? "the line " : who) + "holds a NUL byte (U+0000" + nul_note + "); remove it";
  }
  return who + "is not valid UTF-8 text (byte " + hex_byte(fault.byte) +
         "); save the file as UTF-8 (from Windows-1252 or Latin-1: " + iconv_command("WINDOWS-1252", path) +
         ")";
}

// Reads lines with std::getline through a large stream buffer; strips a BOM on line 1 and a trailing CR.
class LineReader {
 public:
  LineReader(const std::string& path, uint64_t file_bytes) : buf_(chunk_for(file_bytes)) {
    in_.rdbuf()->pubsetbuf(buf_.data(), static_cast<std::streamsize>(buf_.size()));
    in_.open(path, std::ios::binary);
  }
  bool ok() const { return in_.is_open(); }
  bool bad() const { return in_.bad(); }
  bool next(std::string_view* line) {
    if (!std::getline(in_, line_)) return false;
    ++number_;
    std::string_view v(line_);
    stripped_ = 0;
    if (number_ == 1 && v.substr(0, kUtf8Bom.size()) == kUtf8Bom) {
      v.remove_prefix(kUtf8Bom.size());
      stripped_ = kUtf8Bom.size();
    }
    if (!v.empty() && v.back() == '\r') v.remove_suffix(1);
    *line = v;
    return true;
  }
  uint64_t number() const { return number_; }
  /// The 1-based byte column in the file's line of byte `offset` of the line next() gave.
  uint64_t column(size_t offset) const { return stripped_ + offset + 1; }

 private:
  std::vector<char> buf_;
  std::ifstream in_;
  std::string line_;
  uint64_t number_ = 0;
  size_t stripped_ = 0;  // bytes removed from the front of the line (a BOM)
};

Status load_txt(const std::string& path, uint64_t file_bytes, PromptList* out) {
  LineReader reader(path, file_bytes);
  if (!reader.ok())
    return io_error("cannot open prompt file \"" + path + "\" for reading; check its permissions");
  std::string_view line;
  while (reader.next(&line)) {
    if (is_blank(line)) continue;
    if (const TextFault fault = find_text_fault(line)) {
      return invalid_argument(
          path + ":" + std::to_string(reader.number()) + ":" + std::to_string(reader.column(fault.offset)) +
          ": " + fault_message(fault, path, fault.kind == TextFault::Kind::kNul ? "prompt" : ""));
    }
    Status st = out->add(line);
    if (!st.is_ok())
      return invalid_argument(path + ":" + std::to_string(reader.number()) + ": " + st.message());
  }
  if (reader.bad()) return io_error("error while reading prompt file \"" + path + "\"");
  if (out->empty()) return no_prompts(path, "write one prompt per line");
  return Status::ok();
}

// nlohmann's what() reads "[json.exception.parse_error.101] parse error at line 1, column 5: <detail>".
std::string json_error_detail(const std::string& what) {
  size_t col = what.find(", column ");
  size_t colon = col == std::string::npos ? std::string::npos : what.find(": ", col);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// Receives one line's JSON events and keeps only the fields a prompt needs. No DOM is built (a DOM per
// line costs several allocations, which dominated loading 10 million lines), and the strings it keeps
// reuse their capacity from line to line.
class PromptLineSax : public nlohmann::json_sax<nlohmann::json> {
 public:
  enum class Kind { kAbsent, kNull, kString, kUnsigned, kNegative, kFloat, kBool, kObject, kArray };
  struct Value {
    Kind kind = Kind::kAbsent;
    std::string text;  // kString: the string; kFloat: the number as written
    uint64_t u = 0;
    int64_t i = 0;
  };

  Value prompt, negative, seed;
  Kind top = Kind::kAbsent;  // the line's top-level value
  std::string error;         // parse error detail, empty when none
  size_t error_byte = 0;

  void reset() {
    prompt.kind = negative.kind = seed.kind = Kind::kAbsent;
    top = Kind::kAbsent;
    depth_ = 0;
    target_ = nullptr;
    error.clear();
  }

  bool null() override { return set(Kind::kNull); }
  bool boolean(bool) override { return set(Kind::kBool); }
  bool number_integer(number_integer_t v) override {
    if (Value* t = set_target(Kind::kNegative)) t->i = v;
    return true;
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (Value* t = set_target(Kind::kUnsigned)) t->u = v;
    return true;
  }
  bool number_float(number_float_t, const string_t& s) override {
    if (Value* t = set_target(Kind::kFloat)) t->text.assign(s);
    return true;
  }
  bool string(string_t& v) override {
    if (Value* t = set_target(Kind::kString)) t->text.assign(v);
    return true;
  }
  bool binary(binary_t&) override { return set(Kind::kString); }
  bool start_object(std::size_t) override { return open(Kind::kObject); }
  bool start_array(std::size_t) override { return open(Kind::kArray); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    if (depth_ == 1 && top == Kind::kObject) {
      target_ = k == "prompt" ? &prompt : k == "negative_prompt" ? &negative : k == "seed" ? &seed : nullptr;
    }
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) override {
    error = json_error_detail(ex.what());
    error_byte = position;
    return false;
  }

 private:
  // Records a value's kind for the field it belongs to (or for the line, at the top level).
  Value* set_target(Kind k) {
    if (depth_ == 0) top = k;
    Value* t = depth_ == 1 ? target_ : nullptr;
    target_ = nullptr;
    if (t) t->kind = k;
    return t;
  }
  bool set(Kind k) {
    set_target(k);
    return true;
  }
  bool open(Kind k) {
    set_target(k);
    ++depth_;
    return true;
  }
  bool close() {
    --depth_;
    return true;
  }
  int depth_ = 0;
  Value* target_ = nullptr;
};

const char* kind_name(PromptLineSax::Kind k) {
  using K = PromptLineSax::Kind;
  switch (k) {
    case K::kNull:
      return "null";
    case K::kString:
      return "a string";
    case K::kBool:
      return "a boolean";
    case K::kObject:
      return "an object";
    case K::kArray:
      return "an array";
    default:
      return "a number";
  }
}

Status load_jsonl(const std::string& path, uint64_t file_bytes, const PromptFileOptions& options,
                  PromptList* out) {
  using K = PromptLineSax::Kind;
  LineReader reader(path, file_bytes);
  if (!reader.ok()) {
    return io_error("cannot open prompt file \"" + path + "\" for reading; check its permissions");
  }
  ErrorList errors(path, options.max_errors);
  const std::string example =
      "e.g. {\"prompt\": \"a red fox in snow\", \"negative_prompt\": \"blurry\", \"seed\": 7}";
  PromptLineSax sax;
  std::string_view line;
  while (reader.next(&line)) {
    if (is_blank(line)) continue;
    const uint64_t n = reader.number();
    // Before JSON parsing: nlohmann's message would quote the bad bytes and give no fix.
    if (const TextFault fault = find_text_fault(line)) {
      errors.add(n, reader.column(fault.offset), fault_message(fault, path, ""));
      continue;
    }
    sax.reset();
    if (!nlohmann::json::sax_parse(line.begin(), line.end(), &sax) || !sax.error.empty()) {
      errors.add(n, std::max<uint64_t>(sax.error_byte, 1),
                 "not valid JSON: " + sax.error + "; write one JSON object per line, " + example);
      continue;
    }
    if (sax.top != K::kObject) {
      errors.add(n, 0,
                 std::string("the line is ") + kind_name(sax.top) + ", expected a JSON object; " + example);
      continue;
    }
    if (sax.prompt.kind == K::kAbsent) {
      errors.add(n, 0, "missing \"prompt\"; every line needs a \"prompt\" string, " + example);
      continue;
    }
    if (sax.prompt.kind != K::kString) {
      errors.add(
          n, 0,
          std::string("\"prompt\" is ") + kind_name(sax.prompt.kind) + ", expected a string; quote the text");
      continue;
    }
    std::optional<std::string_view> negative;
    if (sax.negative.kind == K::kString) {
      negative = sax.negative.text;
    } else if (sax.negative.kind != K::kAbsent && sax.negative.kind != K::kNull) {
      errors.add(n, 0,
                 std::string("\"negative_prompt\" is ") + kind_name(sax.negative.kind) +
                     ", expected a string or null; quote the text");
      continue;
    }
    const char* kInJson = ", written \\u0000 in JSON";
    if (const TextFault fault = find_text_fault(sax.prompt.text)) {
      errors.add(n, 0, fault_message(fault, path, "prompt", kInJson));
      continue;
    }
    if (negative) {
      if (const TextFault fault = find_text_fault(*negative)) {
        errors.add(n, 0, fault_message(fault, path, "negative prompt", kInJson));
        continue;
      }
    }
    std::optional<uint64_t> seed;
    if (sax.seed.kind == K::kUnsigned) {
      seed = sax.seed.u;
    } else if (sax.seed.kind != K::kAbsent && sax.seed.kind != K::kNull) {
      const std::string got = sax.seed.kind == K::kNegative ? std::to_string(sax.seed.i)
                              : sax.seed.kind == K::kFloat
                                  ? "a non-integer or too large number " + sax.seed.text
                                  : std::string(kind_name(sax.seed.kind));
      errors.add(n, 0,
                 "\"seed\" is " + got + "; a seed is an integer from 0 to 18446744073709551615 (or omit it)");
      continue;
    }
    Status st = out->add(sax.prompt.text, negative, seed);
    if (!st.is_ok()) errors.add(n, 0, st.message());
  }
  if (reader.bad()) return io_error("error while reading prompt file \"" + path + "\"");
  if (!errors.empty()) return errors.status();
  if (out->empty()) return no_prompts(path, "write one JSON object per line, " + example);
  return Status::ok();
}

// RFC 4180 reader over 1 MiB chunks. Calls on_record(fields, first_line) for every record that is not a
// blank line; records the first syntax problem of each record in `errors`.
class CsvReader {
 public:
  CsvReader(FILE* f, uint64_t file_bytes, ErrorList* errors)
      : f_(f), errors_(errors), buf_(chunk_for(file_bytes)) {}

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

Status load_csv(const std::string& path, uint64_t file_bytes, const PromptFileOptions& options,
                PromptList* out) {
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

  CsvReader reader(f.get(), file_bytes, &errors);
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
    // A fault's line: the record's first line plus the newlines (inside quoted fields) before it.
    auto check = [&](size_t col, const char* subject) {
      const TextFault fault = find_text_fault(fields[col]);
      if (!fault) return true;
      uint64_t at = line;
      for (size_t c = 0; c < col; ++c)
        at += static_cast<uint64_t>(std::count(fields[c].begin(), fields[c].end(), '\n'));
      at += static_cast<uint64_t>(std::count(fields[col].begin(), fields[col].begin() + fault.offset, '\n'));
      errors.add(at, 0, fault_message(fault, path, subject));
      return false;
    };
    if (!check(prompt_col, "prompt") || (want_neg && !check(neg_col, "negative prompt"))) return;
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
    return invalid_argument(
        "a prompt of " + std::to_string(std::max(prompt.size(), negative ? negative->size() : size_t{0})) +
        " bytes is longer than the limit of " + std::to_string(kMaxTextBytes) +
        " bytes; SDXL's text encoders read only the first 77 tokens (a few hundred characters): "
        "shorten it, or check the file's format (a missing line break?)");
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
  if (const char* encoding = wide_encoding(shape.head)) {
    return invalid_argument(path + ": is " + encoding + " text; save it as UTF-8 (e.g. " +
                            iconv_command(encoding, path) + ") and point prompts_file at the new file");
  }
  PromptList list;
  // Text never exceeds the file's size, and there is at most one prompt per line.
  list.reserve(static_cast<size_t>(shape.lines), static_cast<size_t>(shape.bytes));
  Status st;
  switch (options.format) {
    case PromptFormat::kTxt:
      st = load_txt(path, shape.bytes, &list);
      break;
    case PromptFormat::kJsonl:
      st = load_jsonl(path, shape.bytes, options, &list);
      break;
    case PromptFormat::kCsv:
      st = load_csv(path, shape.bytes, options, &list);
      break;
  }
  if (!st.is_ok()) return st;
  list.shrink_to_fit();
  return list;
}

}  // namespace sdxlb
