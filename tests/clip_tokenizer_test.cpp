// ClipTokenizer against transformers' CLIPTokenizer (tests/oracle/ref_tokenizer.py writes the cases), plus
// the error paths of loading a tokenizer folder.
#include "pipeline/text/clip_tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

namespace sdxlb {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string fixtures_dir() {
  const char* env = std::getenv("SDXLB_FIXTURES_DIR");
  return env && *env ? env : SDXLB_FIXTURES_DIR;
}

std::string tokenizer_dir(const std::string& sub) {
  return fixtures_dir() + "/models/tiny-a/" + sub;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return json();
  return json::parse(in);
}

std::string show_ids(const std::vector<int32_t>& ids) {
  std::ostringstream ss;
  for (size_t i = 0; i < ids.size(); ++i) ss << (i ? " " : "") << ids[i];
  return ss.str();
}

ClipTokenizer load_or_die(const std::string& folder) {
  auto tok = ClipTokenizer::load(folder);
  if (!tok.is_ok()) {
    ADD_FAILURE() << tok.status().to_string();
    std::abort();
  }
  return std::move(tok).value();
}

TEST(ClipTokenizerOracle, MatchesTransformersOnAllCases) {
  const std::string path = fixtures_dir() + "/tokenizer/cases.json";
  const json doc = read_json(path);
  ASSERT_TRUE(doc.is_object()) << "missing " << path << "; run tests/oracle/make_fixtures.py";
  const json& cases = doc["cases"];
  ASSERT_GE(cases.size(), 500u);
  ASSERT_TRUE(doc["folders"].contains("tokenizer") && doc["folders"].contains("tokenizer_2"));
  size_t total_mismatches = 0, total_compared = 0;
  for (auto& [name, rel] : doc["folders"].items()) {
    const auto t0 = std::chrono::steady_clock::now();
    ClipTokenizer tok = load_or_die(fixtures_dir() + "/" + rel.get<std::string>());
    const double load_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    size_t mismatches = 0;
    const auto t1 = std::chrono::steady_clock::now();
    for (const json& c : cases) {
      const std::string text = c["text"].get<std::string>();
      const std::vector<int32_t> want = c["ids"][name].get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok.encode(text);
      if (got == want) continue;
      if (++mismatches <= 5) {
        ADD_FAILURE() << name << ": mismatch on " << json(text).dump()
                      << "\n  transformers: " << show_ids(want) << "\n  ours:         " << show_ids(got);
      }
    }
    const double enc_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
    std::printf("[ oracle ] %-12s %zu cases, %zu mismatches (load %.1f ms, encode all %.1f ms)\n",
                name.c_str(), cases.size(), mismatches, load_ms, enc_ms);
    total_mismatches += mismatches;
    total_compared += cases.size();
  }
  std::printf("[ oracle ] total: %zu encodings compared, %zu mismatches\n", total_compared, total_mismatches);
  EXPECT_EQ(total_mismatches, 0u);
}

TEST(ClipTokenizerOracle, SdxlSpecialIds) {
  ClipTokenizer t1 = load_or_die(tokenizer_dir("tokenizer"));
  ClipTokenizer t2 = load_or_die(tokenizer_dir("tokenizer_2"));
  EXPECT_EQ(t1.vocab_size(), 49408u);
  for (const ClipTokenizer* t : {&t1, &t2}) {
    EXPECT_EQ(t->bos_id(), 49406);
    EXPECT_EQ(t->eos_id(), 49407);
    EXPECT_EQ(t->max_length(), 77);
  }
  EXPECT_EQ(t1.pad_id(), 49407);
  EXPECT_EQ(t2.pad_id(), 0);
  // "!" is tokenizer_2's pad token, hence an added token split out of the text; tokenizer 1 merges "!!".
  EXPECT_EQ(t1.tokenize("cat!!"), (std::vector<int32_t>{2368, 748}));
  EXPECT_EQ(t2.tokenize("cat!!"), (std::vector<int32_t>{2368, 0, 0}));
  // No HTML unescaping in transformers 5.
  EXPECT_EQ(t1.tokenize("&amp;"), (std::vector<int32_t>{261, 6259, 282}));
  const std::vector<int32_t> empty = t2.encode("");
  ASSERT_EQ(empty.size(), 77u);
  EXPECT_EQ(empty[0], 49406);
  EXPECT_EQ(empty[1], 49407);
  EXPECT_EQ(empty[2], 0);
}

TEST(ClipTokenizerOracle, TruncatesToMaxLength) {
  ClipTokenizer tok = load_or_die(tokenizer_dir("tokenizer"));
  std::string text;
  for (int i = 0; i < 200; ++i) text += "cat ";
  const std::vector<int32_t> ids = tok.encode(text);
  ASSERT_EQ(ids.size(), 77u);
  EXPECT_EQ(ids.front(), 49406);
  EXPECT_EQ(ids.back(), 49407);
  EXPECT_EQ(ids[75], ids[1]);
}

TEST(ClipTokenizerOracle, InvalidUtf8IsReplacedNotFatal) {
  ClipTokenizer tok = load_or_die(tokenizer_dir("tokenizer"));
  const std::vector<int32_t> bad = tok.encode(std::string("a\xff\xc3 b\xed\xa0\x80"));
  const std::vector<int32_t> replaced =
      tok.encode("a\xEF\xBF\xBD\xEF\xBF\xBD b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(bad, replaced);
}

TEST(ClipTokenizerOracle, ConcurrentEncodeMatchesSerial) {
  ClipTokenizer tok = load_or_die(tokenizer_dir("tokenizer_2"));
  const json doc = read_json(fixtures_dir() + "/tokenizer/cases.json");
  ASSERT_TRUE(doc.is_object());
  std::vector<std::string> texts;
  for (const json& c : doc["cases"]) texts.push_back(c["text"].get<std::string>());
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(tok.encode(t));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = k; i < texts.size() * 2; i += 4) {
        if (tok.encode(texts[i % texts.size()]) != serial[i % texts.size()]) ++bad[k];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int k = 0; k < 4; ++k) EXPECT_EQ(bad[k], 0) << "thread " << k;
}

// ---- Error paths, on a scratch copy of tokenizer_2 ----

class ClipTokenizerErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sdxlb_clip_tokenizer_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
      fs::copy_file(tokenizer_dir("tokenizer_2") + "/" + f, dir_ / f);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }
  std::string read(const std::string& name) {
    std::ifstream in(dir_ / name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  Status load_status() { return ClipTokenizer::load(dir_.string()).status(); }

  fs::path dir_;
};

TEST_F(ClipTokenizerErrors, ScratchCopyLoads) {
  EXPECT_TRUE(load_status().is_ok()) << load_status().to_string();
}

TEST_F(ClipTokenizerErrors, MissingVocab) {
  fs::remove(dir_ / "vocab.json");
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("vocab.json"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, MissingMerges) {
  fs::remove(dir_ / "merges.txt");
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("merges.txt"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, BrokenVocabJson) {
  write("vocab.json", "{\"a\": 1,\n \"b\": }");
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("vocab.json"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("line 2"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, VocabNotAnObject) {
  write("vocab.json", "[1, 2, 3]");
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("vocab.json"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, VocabIdNotAnInteger) {
  write("vocab.json", "{\"a\": \"one\"}");
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("\"a\""), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, MergesLineWithThreeTokens) {
  std::string merges = read("merges.txt");
  // Line 1 is "#version: 0.2"; break line 4.
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) pos = merges.find('\n', pos) + 1;
  merges.insert(merges.find('\n', pos), " extra");
  write("merges.txt", merges);
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("merges.txt line 4"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, MergesBlankLine) {
  write("merges.txt", "#version: 0.2\ni n\n\nt h\n");
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("merges.txt line 3"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, MergesTokenNotInVocab) {
  write("merges.txt", "#version: 0.2\ni n\nzzqqxx y\n");
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("merges.txt line 3"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("zzqqxx"), std::string::npos) << st.message();
}

// issue 12, case 8: a merges.txt of random bytes aborted with an uncaught nlohmann type_error 316 (the error
// message quoted the line through json::dump, which throws on invalid UTF-8).
TEST_F(ClipTokenizerErrors, MergesOfRandomBytesIsAnErrorNotACrash) {
  write("merges.txt", std::string("#version: 0.2\ni n\n\xff\xfe\x80 \xc3\x28\n", 25));
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("merges.txt line 3"), std::string::npos) << st.message();
  write("merges.txt", std::string("#version: 0.2\n\xff\xfe\x80\n", 18));
  EXPECT_EQ(load_status().code(), StatusCode::kDataLoss);
}

TEST_F(ClipTokenizerErrors, BrokenTokenizerConfig) {
  write("tokenizer_config.json", "{\"pad_token\": \"!\",");
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("tokenizer_config.json"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, UnboundedModelMaxLength) {
  json cfg = read_json((dir_ / "tokenizer_config.json").string());
  cfg["model_max_length"] = 1e30;
  write("tokenizer_config.json", cfg.dump());
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("model_max_length"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, UnsupportedAddedTokenOptions) {
  json cfg = read_json((dir_ / "tokenizer_config.json").string());
  cfg["added_tokens_decoder"] = {{"0", {{"content", "!"}, {"lstrip", true}, {"special", true}}}};
  write("tokenizer_config.json", cfg.dump());
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("lstrip"), std::string::npos) << st.message();
}

// Found by fuzz_tokenizer_files (on the GPU machine's cores): an empty special token ended as an internal
// error ("special token  was not registered"); it is a bad tokenizer folder, named as such.
TEST_F(ClipTokenizerErrors, EmptySpecialTokenIsABadConfigNotAnInternalError) {
  for (const char* file : {"tokenizer_config.json", "special_tokens_map.json"}) {
    json cfg = read_json((dir_ / file).string());
    cfg["pad_token"] = "";
    write(file, cfg.dump());
  }
  const Status st = load_status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("the pad token is empty"), std::string::npos) << st.message();
}

TEST_F(ClipTokenizerErrors, ConfigFilesAreOptional) {
  fs::remove(dir_ / "tokenizer_config.json");
  fs::remove(dir_ / "special_tokens_map.json");
  auto tok = ClipTokenizer::load(dir_.string());
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  // CLIPTokenizer's defaults: pad with <|endoftext|>, length 77.
  EXPECT_EQ(tok->pad_id(), 49407);
  EXPECT_EQ(tok->max_length(), 77);
}

}  // namespace
}  // namespace sdxlb
