// Prompt files: txt, jsonl and csv readers, their error messages (file:line[:column] and a fix), and a
// one-million-line load to keep the streaming path honest.
#include "jobs/prompt_source.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <string>
#include <utility>

#include "test_files.h"

namespace sdxlb {
namespace {

using testing::ScratchDir;
using testing::write_bytes;

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "missing [" << (part) << "] in:\n" << (msg)

class PromptSourceTest : public ::testing::Test {
 protected:
  StatusOr<PromptList> load(const std::string& name, const std::string& bytes, PromptFileOptions o = {}) {
    write_bytes(dir_.file(name), bytes);
    if (auto f = prompt_format_from_extension(name)) o.format = *f;
    return load_prompt_file(dir_.file(name), o);
  }
  std::string error_of(const std::string& name, const std::string& bytes, PromptFileOptions o = {}) {
    auto list = load(name, bytes, o);
    EXPECT_FALSE(list.is_ok()) << bytes;
    return list.is_ok() ? "" : list.status().message();
  }
  ScratchDir dir_;
};

TEST(PromptFormat, FromExtensionAndName) {
  EXPECT_EQ(prompt_format_from_extension("a/b.TXT"), PromptFormat::kTxt);
  EXPECT_EQ(prompt_format_from_extension("p.jsonl"), PromptFormat::kJsonl);
  EXPECT_EQ(prompt_format_from_extension("p.ndjson"), PromptFormat::kJsonl);
  EXPECT_EQ(prompt_format_from_extension("p.csv"), PromptFormat::kCsv);
  EXPECT_FALSE(prompt_format_from_extension("p.json").has_value());
  EXPECT_FALSE(prompt_format_from_extension("dir.csv/prompts").has_value());
  EXPECT_EQ(parse_prompt_format("jsonl"), PromptFormat::kJsonl);
  EXPECT_FALSE(parse_prompt_format("JSON").has_value());
  EXPECT_STREQ(prompt_format_name(PromptFormat::kCsv), "csv");
}

TEST(PromptList, NegativesAndSparseSeeds) {
  PromptList l;
  ASSERT_TRUE(l.add("a").is_ok());
  ASSERT_TRUE(l.add("b", std::string_view("neg")).is_ok());
  ASSERT_TRUE(l.add("c", std::string_view(""), 7).is_ok());
  ASSERT_TRUE(l.add("d").is_ok());
  ASSERT_EQ(l.size(), 4u);
  EXPECT_EQ(l.prompt(2), "c");
  EXPECT_FALSE(l.has_negative(0));
  EXPECT_EQ(l.negative_or(0, "dflt"), "dflt");
  EXPECT_EQ(l.negative_or(1, "dflt"), "neg");
  EXPECT_TRUE(l.has_negative(2));
  EXPECT_EQ(l.negative_or(2, "dflt"), "");
  EXPECT_FALSE(l.seed(0).has_value());
  EXPECT_FALSE(l.seed(1).has_value());
  EXPECT_EQ(l.seed(2), std::optional<uint64_t>(7));
  EXPECT_FALSE(l.seed(3).has_value());
  EXPECT_TRUE(l.any_seed());
  EXPECT_EQ(l.text_bytes(), 7u);
}

TEST_F(PromptSourceTest, TxtSkipsBlankLinesAndHandlesCrlfAndBom) {
  auto l = load("p.txt",
                "\xEF\xBB\xBF"
                "first prompt\r\n\r\n   \n  second, with comma  \nlast without newline");
  ASSERT_TRUE(l.is_ok()) << l.status().message();
  ASSERT_EQ(l->size(), 3u);
  EXPECT_EQ(l->prompt(0), "first prompt");
  EXPECT_EQ(l->prompt(1), "  second, with comma  ");
  EXPECT_EQ(l->prompt(2), "last without newline");
  EXPECT_FALSE(l->has_negative(0));
  EXPECT_FALSE(l->any_seed());
}

TEST_F(PromptSourceTest, EmptyFilesAreErrors) {
  std::string m = error_of("p.txt", "");
  EXPECT_HAS(m, dir_.file("p.txt") + ": the prompt file is empty; add prompts (txt format)");
  m = error_of("p.txt", "\n  \r\n\n");
  EXPECT_HAS(m, dir_.file("p.txt") + ": the file has no prompts; write one prompt per line");
  m = error_of("p.jsonl", "\n\n");
  EXPECT_HAS(m, "the file has no prompts; write one JSON object per line");
  m = error_of("p.csv", "prompt\r\n");
  EXPECT_HAS(m, "the file has no prompts; the header row is there; add one row per prompt below it");
}

// issue 12, case 9: /dev/zero was read forever and a FIFO blocked the open; both are refused up front.
TEST_F(PromptSourceTest, OnlyRegularFilesAreRead) {
  PromptFileOptions o;
  auto zero = load_prompt_file("/dev/zero", o);
  ASSERT_FALSE(zero.is_ok());
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
  EXPECT_HAS(zero.status().message(), "\"/dev/zero\" is a character device");
  const std::string fifo = dir_.file("prompts.txt");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto pipe = load_prompt_file(fifo, o);  // returns at once: no writer is needed to find out
  ASSERT_FALSE(pipe.is_ok());
  EXPECT_HAS(pipe.status().message(), "is a FIFO (named pipe); prompts_file must name a regular");
}

// issue 12, case 10: a 2 MB single word took 42 s to tokenize, a 20 MB jsonl line more than 120 s. Prompts
// are capped at 64 KiB, with the line and the length in the error.
TEST_F(PromptSourceTest, OverlongPromptsAreRefusedWithTheirLine) {
  const std::string word(2 * 1024 * 1024, 'a');
  std::string m = error_of("p.txt", "fine prompt\n" + word + "\n");
  EXPECT_HAS(m, dir_.file("p.txt") + ":2: a prompt of 2097152 bytes is longer than the limit of 65536 bytes");
  m = error_of("p.jsonl", "{\"prompt\": \"ok\"}\n{\"prompt\": \"" + word + "\"}\n");
  EXPECT_HAS(m, ":2");
  EXPECT_HAS(m, "longer than the limit of 65536 bytes");
  m = error_of("p.csv", "prompt\nok\n" + word + "\n");
  EXPECT_HAS(m, "longer than the limit of 65536 bytes");
  // At the limit is fine.
  auto l = load("q.txt", std::string(PromptList::kMaxTextBytes, 'b') + "\n");
  EXPECT_TRUE(l.is_ok()) << l.status().message();
}

// ASCII text in UTF-16 or UTF-32 (little or big endian), with the byte-order mark first when `bom`.
std::string widen(const std::string& ascii, int width, bool big_endian, bool bom) {
  std::string out;
  auto put = [&](uint32_t cp) {
    for (int k = 0; k < width; ++k) {
      const int shift = 8 * (big_endian ? width - 1 - k : k);
      out += static_cast<char>((cp >> shift) & 0xFF);
    }
  };
  if (bom) put(0xFEFF);
  for (char c : ascii) put(static_cast<unsigned char>(c));
  return out;
}

// issue 12, weak case 1: a prompt file saved as UTF-16 (Windows' "Unicode") or UTF-32 passed validation as
// prompts full of NUL bytes, and every item failed later. Each is refused with the encoding and a command
// that converts it.
TEST_F(PromptSourceTest, Utf16AndUtf32FilesAreRefusedWithAConversionHint) {
  const std::string txt = "a red fox\r\na blue bird\r\n";
  const std::string jsonl = "{\"prompt\": \"a red fox\"}\n";
  const std::string csv = "prompt\na red fox\n";
  struct Case {
    int width;
    bool big_endian, bom;
    const char* name;
  };
  for (const Case& c :
       {Case{2, false, true, "UTF-16"}, Case{2, true, true, "UTF-16"}, Case{2, false, false, "UTF-16LE"},
        Case{2, true, false, "UTF-16BE"}, Case{4, false, true, "UTF-32"}, Case{4, true, true, "UTF-32"},
        Case{4, false, false, "UTF-32LE"}, Case{4, true, false, "UTF-32BE"}}) {
    for (const auto& [file, text] :
         {std::pair<std::string, std::string>{"p.txt", txt}, {"p.jsonl", jsonl}, {"p.csv", csv}}) {
      SCOPED_TRACE(std::string(c.name) + " " + file);
      auto l = load(file, widen(text, c.width, c.big_endian, c.bom));
      ASSERT_FALSE(l.is_ok());
      EXPECT_EQ(l.status().code(), StatusCode::kInvalidArgument);
      const std::string stem = file.substr(0, file.find('.')), ext = file.substr(file.find('.'));
      EXPECT_EQ(l.status().message(), dir_.file(file) + ": is " + c.name +
                                          " text; save it as UTF-8 (e.g. iconv -f " + c.name + " -t UTF-8 " +
                                          file + " > " + stem + ".utf8" + ext +
                                          ") and point prompts_file at the new file");
    }
  }
  // A UTF-8 byte-order mark stays accepted (TxtSkipsBlankLinesAndHandlesCrlfAndBom, CsvQuotingPerRfc4180).
  auto l = load("q.jsonl", "\xEF\xBB\xBF" + jsonl);
  EXPECT_TRUE(l.is_ok()) << l.status().message();
}

// issue 12, weak case 1: a NUL byte (U+0000) in a prompt was accepted; the tokenizer and the output's
// strings cut the text there. Refused in every format, after JSON unescaping for jsonl, with the line.
TEST_F(PromptSourceTest, NulBytesInPromptsAreRefused) {
  using namespace std::string_literals;
  std::string m = error_of("p.txt", "a fox\nbad\0line\n"s);
  EXPECT_HAS(m, dir_.file("p.txt") + ":2:4: prompt holds a NUL byte (U+0000); remove it");
  m = error_of("p.jsonl",
               "{\"prompt\": \"ok\"}\n"
               "{\"prompt\": \"a\\u0000b\"}\n"
               "{\"prompt\": \"c\", \"negative_prompt\": \"\\u0000\"}\n"
               "{\"prompt\": \"raw \0 byte\"}\n"s);
  EXPECT_HAS(
      m, dir_.file("p.jsonl") + ":2: prompt holds a NUL byte (U+0000, written \\u0000 in JSON); remove it");
  EXPECT_HAS(m,
             dir_.file("p.jsonl") + ":3: negative prompt holds a NUL byte (U+0000, written \\u0000 in JSON)");
  EXPECT_HAS(m, dir_.file("p.jsonl") + ":4:17: the line holds a NUL byte (U+0000); remove it");
  PromptFileOptions o;
  o.csv_negative_column = "negative";
  m = error_of("p.csv", "prompt,negative\nok,fine\n\"two\nlines\",x\0y\na\0b,\n"s, o);
  EXPECT_HAS(m, dir_.file("p.csv") + ":4: negative prompt holds a NUL byte (U+0000); remove it");
  EXPECT_HAS(m, dir_.file("p.csv") + ":5: prompt holds a NUL byte (U+0000); remove it");
}

// issue 12, weak case 1: a prompt file in Latin-1 or Windows-1252 (or with broken UTF-8) was accepted, and
// writing its prompts to the output failed every item. Refused with the line, column and byte.
TEST_F(PromptSourceTest, InvalidUtf8IsRefusedWithLineAndColumn) {
  const std::string f = dir_.file("p.txt");
  std::string m = error_of("p.txt", "ok\ncaf\xE9 au lait\n");
  EXPECT_HAS(m, f + ":2:4: is not valid UTF-8 text (byte 0xE9); save the file as UTF-8 (from Windows-1252 or "
                    "Latin-1: iconv -f WINDOWS-1252 -t UTF-8 p.txt > p.utf8.txt)");
  EXPECT_HAS(error_of("p.txt", "\xC0\xAF overlong slash\n"), f + ":1:1: is not valid UTF-8 text (byte 0xC0)");
  EXPECT_HAS(error_of("p.txt", "x\xE0\x80\xAF overlong\n"), f + ":1:2: is not valid UTF-8 text (byte 0xE0)");
  EXPECT_HAS(error_of("p.txt", "sur \xED\xA0\x80 rogate\n"), f + ":1:5: is not valid UTF-8 text (byte 0xED)");
  EXPECT_HAS(error_of("p.txt", "big \xF4\x90\x80\x80\n"), f + ":1:5: is not valid UTF-8 text (byte 0xF4)");
  EXPECT_HAS(error_of("p.txt", "cut \xE2\x82\n"), f + ":1:5: is not valid UTF-8 text (byte 0xE2)");
  EXPECT_HAS(error_of("p.txt", "\xEF\xBB\xBF\xFF\n"), f + ":1:4: is not valid UTF-8 text (byte 0xFF)");
  m = error_of("p.jsonl", "{\"prompt\": \"ok\"}\n{\"prompt\": \"caf\xE9\"}\n");
  EXPECT_HAS(m, dir_.file("p.jsonl") + ":2:16: is not valid UTF-8 text (byte 0xE9); save the file as UTF-8");
  m = error_of("p.csv", "prompt\nok\n\"two\nlines caf\xE9\"\n");
  EXPECT_HAS(m,
             dir_.file("p.csv") + ":4: prompt is not valid UTF-8 text (byte 0xE9); save the file as UTF-8");
  // Well-formed text of 1 to 4 bytes per character is fine.
  auto l = load("q.txt", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\xA6\x8A \xF4\x8F\xBF\xBF\n");
  ASSERT_TRUE(l.is_ok()) << l.status().message();
  EXPECT_EQ(l->prompt(0), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\xA6\x8A \xF4\x8F\xBF\xBF");
}

TEST_F(PromptSourceTest, MissingFileNamesThePath) {
  PromptFileOptions o;
  auto l = load_prompt_file(dir_.file("none/p.txt"), o);
  ASSERT_FALSE(l.is_ok());
  EXPECT_EQ(l.status().code(), StatusCode::kNotFound);
  EXPECT_HAS(l.status().message(), "prompt file \"" + dir_.file("none/p.txt") + "\" does not exist");
}

TEST_F(PromptSourceTest, JsonlGood) {
  auto l =
      load("p.jsonl",
           "{\"prompt\": \"a fox\"}\n"
           "\n"
           "{\"prompt\": \"a bird\", \"negative_prompt\": \"blurry\", \"seed\": 18446744073709551615}\r\n"
           "{\"prompt\": \"a cat\", \"negative_prompt\": null, \"seed\": null, \"id\": 17, \"tags\": [1]}\n"
           "{\"prompt\": \"unicode \\u00e9\\n2 lines\", \"negative_prompt\": \"\", \"seed\": 0}");
  ASSERT_TRUE(l.is_ok()) << l.status().message();
  ASSERT_EQ(l->size(), 4u);
  EXPECT_EQ(l->prompt(1), "a bird");
  EXPECT_EQ(l->negative_or(1, "d"), "blurry");
  EXPECT_EQ(l->seed(1), std::optional<uint64_t>(UINT64_MAX));
  EXPECT_FALSE(l->has_negative(2));
  EXPECT_FALSE(l->seed(2).has_value());
  EXPECT_EQ(l->prompt(3), "unicode \xC3\xA9\n2 lines");
  EXPECT_TRUE(l->has_negative(3));
  EXPECT_EQ(l->negative_or(3, "d"), "");
  EXPECT_EQ(l->seed(3), std::optional<uint64_t>(0));
}

TEST_F(PromptSourceTest, JsonlErrorsNameLineAndAreCollected) {
  const std::string m = error_of("p.jsonl",
                                 "{\"prompt\": \"ok\"}\n"
                                 "{\"prompt\": \"broken\"\n"
                                 "{\"text\": \"x\"}\n"
                                 "{\"prompt\": 5}\n"
                                 "{\"prompt\": \"a\", \"seed\": -1}\n"
                                 "{\"prompt\": \"a\", \"seed\": 1.5}\n"
                                 "[\"prompt\"]\n"
                                 "{\"prompt\": \"a\", \"negative_prompt\": 3}\n");
  const std::string f = dir_.file("p.jsonl");
  EXPECT_HAS(m, f + ":2:20: not valid JSON: ");
  EXPECT_HAS(m, "; write one JSON object per line, e.g. {\"prompt\":");
  EXPECT_HAS(m, f + ":3: missing \"prompt\"; every line needs a \"prompt\" string");
  EXPECT_HAS(m, f + ":4: \"prompt\" is a number, expected a string; quote the text");
  EXPECT_HAS(m, f + ":5: \"seed\" is -1; a seed is an integer from 0 to 18446744073709551615");
  EXPECT_HAS(m, f + ":6: \"seed\" is a non-integer or too large number 1.5; a seed is an integer");
  EXPECT_HAS(m, f + ":7: the line is an array, expected a JSON object");
  EXPECT_HAS(m, f + ":8: \"negative_prompt\" is a number, expected a string or null");
}

TEST_F(PromptSourceTest, ErrorListIsCapped) {
  std::string bad;
  for (int i = 0; i < 30; ++i) bad += "{}\n";
  PromptFileOptions o;
  o.max_errors = 5;
  const std::string m = error_of("p.jsonl", bad, o);
  EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), 5) << m;
  EXPECT_HAS(m, ": ... and 25 more bad records");
}

TEST_F(PromptSourceTest, CsvQuotingPerRfc4180) {
  PromptFileOptions o;
  o.csv_negative_column = "negative";
  auto l = load("p.csv",
                "\xEF\xBB\xBF"
                "id, prompt ,negative\r\n"
                "1,\"a fox, in snow\",\"blurry, dark\"\r\n"
                "2,\"she said \"\"hi\"\"\",\r\n"
                "\r\n"
                "3,\"two\nlines\",x\n"
                "4,plain,\"\"\n"
                "5,last,no newline",
                o);
  ASSERT_TRUE(l.is_ok()) << l.status().message();
  ASSERT_EQ(l->size(), 5u);
  EXPECT_EQ(l->prompt(0), "a fox, in snow");
  EXPECT_EQ(l->negative_or(0, "d"), "blurry, dark");
  EXPECT_EQ(l->prompt(1), "she said \"hi\"");
  EXPECT_EQ(l->negative_or(1, "d"), "d");  // an empty cell means the job's negative_prompt
  EXPECT_EQ(l->prompt(2), "two\nlines");
  EXPECT_EQ(l->negative_or(2, "d"), "x");
  EXPECT_EQ(l->negative_or(3, "d"), "d");
  EXPECT_EQ(l->prompt(4), "last");
  EXPECT_EQ(l->negative_or(4, "d"), "no newline");
}

TEST_F(PromptSourceTest, CsvMissingColumnListsHeader) {
  PromptFileOptions o;
  o.csv_negative_column = "neg";
  const std::string m = error_of("p.csv", "text,negative\na,b\n", o);
  EXPECT_HAS(m, dir_.file("p.csv") +
                    ":1: no column \"prompt\" (csv_prompt_column) in the header; the header's "
                    "columns are \"text\", \"negative\"; set csv_prompt_column to one of them");
  EXPECT_HAS(m, ":1: no column \"neg\" (csv_negative_column)");
}

TEST_F(PromptSourceTest, CsvFieldCountMismatch) {
  const std::string m = error_of("p.csv", "prompt\nok\na cat, a dog\n\"fine, quoted\"\n");
  EXPECT_HAS(m, dir_.file("p.csv") +
                    ":3: the row has 2 fields but the header has 1; quote fields that contain "
                    "commas");
  EXPECT_EQ(m.find(":4:"), std::string::npos) << m;
}

TEST_F(PromptSourceTest, CsvLineNumbersCountEmbeddedNewlines) {
  const std::string m = error_of("p.csv", "prompt,n\n\"a\nb\nc\",x\nbad row\n");
  EXPECT_HAS(m, dir_.file("p.csv") + ":5: the row has 1 fields but the header has 2");
}

TEST_F(PromptSourceTest, CsvUnterminatedQuote) {
  const std::string m = error_of("p.csv", "prompt\nok\n\"never closed\nmore\n");
  EXPECT_HAS(
      m, dir_.file("p.csv") + ":3:1: a quoted field starting here is never closed; add the closing quote");
}

TEST_F(PromptSourceTest, CsvJunkAfterClosingQuote) {
  const std::string m = error_of("p.csv", "prompt\n\"a\"b\n");
  EXPECT_HAS(
      m, dir_.file("p.csv") + ":2:4: unexpected character 'b' after a closing quote; write \"\" for a quote");
}

TEST_F(PromptSourceTest, OneMillionPromptsLoadQuickly) {
  const std::string path = dir_.file("big.txt");
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 1000000; ++i) out << "a photo of object number " << i << " on a table\n";
  }
  PromptFileOptions o;
  const auto t0 = std::chrono::steady_clock::now();
  auto l = load_prompt_file(path, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(l.is_ok()) << l.status().message();
  ASSERT_EQ(l->size(), 1000000u);
  EXPECT_EQ(l->prompt(999999), "a photo of object number 999999 on a table");
  EXPECT_LT(s, 5.0);  // ~0.1 s on a laptop core; a loose bound for loaded CI machines
  std::printf("1M txt prompts loaded in %.3f s, %zu text bytes\n", s, l->text_bytes());
}

}  // namespace
}  // namespace sdxlb
