// The messages between ranks (run/protocol.h) and the fault-injection seam (run/faults.h).
#include "run/protocol.h"

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <thread>

#include "common/exit_codes.h"
#include "run/faults.h"
#include "run/run_context.h"

namespace sdxlb {
namespace {

TEST(StatusCodec, EveryCodeKeepsItsKindAndMessage) {
  for (int c = 0; c <= static_cast<int>(StatusCode::kCancelled); ++c) {
    const Status s(static_cast<StatusCode>(c), "worker said: line one\nline two");
    const Status back = decode_status(encode_status(s));
    EXPECT_EQ(back.code(), s.code()) << c;
    if (!s.is_ok()) {
      EXPECT_EQ(back.message(), s.message());
    }
    EXPECT_EQ(exit_code_for(back), exit_code_for(s));
  }
  // The exit codes a script sees for a worker's errors.
  EXPECT_EQ(exit_code_for(decode_status(encode_status(Status(StatusCode::kResourceExhausted, "oom")))),
            kExitOutOfMemory);
  EXPECT_EQ(exit_code_for(decode_status(encode_status(data_loss("bad weights")))), kExitModelOrIo);
  EXPECT_EQ(exit_code_for(decode_status(encode_status(invalid_argument("bad key")))), kExitBadInput);
  EXPECT_EQ(exit_code_for(decode_status(encode_status(cancelled("stopped")))), kExitStopped);
}

TEST(StatusCodec, MalformedBytesAreAnInternalError) {
  for (const char* bytes : {"", "no newline", "x\nmessage", "12345\nm", "-1\nm"}) {
    const Status s = decode_status(bytes);
    EXPECT_EQ(s.code(), StatusCode::kInternal) << bytes;
  }
  EXPECT_EQ(decode_status("99\nfrom a newer version").code(), StatusCode::kInternal);
}

TEST(Protocol, RequestsCarryTheStoppingFlag) {
  WorkRequest r{{1, 2}, {3}};
  r.stopping = true;
  auto back = decode_request(encode_message(r));
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(back->done, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(back->failed, (std::vector<int64_t>{3}));
  EXPECT_TRUE(back->stopping);
  // A request from before the flag existed reads as not stopping.
  auto old = decode_request(R"({"done": [], "failed": []})");
  ASSERT_TRUE(old.is_ok());
  EXPECT_FALSE(old->stopping);
  EXPECT_FALSE(decode_request("{").is_ok());
}

TEST(Protocol, EncodeProgressAndTheTextList) {
  auto back = decode_encode_progress(encode_message(EncodeProgress{64}));
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(back->texts, 64);
  EXPECT_FALSE(decode_encode_progress("{}").is_ok());
  const std::vector<uint32_t> list = {0, 3, 4, 1000000, UINT32_MAX - 1};
  auto indices = decode_text_indices(encode_text_indices(list));
  ASSERT_TRUE(indices.is_ok());
  EXPECT_EQ(*indices, list);
  auto none = decode_text_indices(encode_text_indices({}));
  ASSERT_TRUE(none.is_ok());
  EXPECT_TRUE(none->empty());
  auto torn = decode_text_indices(encode_text_indices(list).substr(1));
  ASSERT_FALSE(torn.is_ok());
  EXPECT_EQ(torn.status().code(), StatusCode::kInternal);
}

TEST(Faults, ParsesEveryKey) {
  auto f = Faults::parse(
      "kill_rank=2,kill_after=5,hang_rank=1,hang_after=3,nan_items=4:7,oom_batches=2,item_delay_ms=10,"
      "encode_delay_ms=20,encode_hang_rank=3,fail_rank=1,fail_code=model,place_skew=250");
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_TRUE(f->nan_item(4));
  EXPECT_TRUE(f->nan_item(7));
  EXPECT_FALSE(f->nan_item(5));
  EXPECT_EQ(f->oom_batches(), 2);
  EXPECT_EQ(f->item_delay_ms(), 10);
  EXPECT_EQ(f->encode_delay_ms(), 20);
  EXPECT_EQ(f->place_skew(), 0.25);
  EXPECT_EQ(f->startup_error(1).code(), StatusCode::kDataLoss);
  EXPECT_TRUE(f->startup_error(2).is_ok());
  // No faults: every query says so.
  Faults none;
  EXPECT_TRUE(none.startup_error(1).is_ok());
  EXPECT_FALSE(none.nan_item(0));
  EXPECT_EQ(none.place_skew(), 0.0);
  none.maybe_kill(0, 1000);     // returns
  none.maybe_hang(1, 1000);     // returns
  none.maybe_hang_encoding(1);  // returns
  f->maybe_hang_encoding(1);    // returns: another rank
}

TEST(Faults, BadSpecsNameTheProblem) {
  for (const char* spec : {"kill_rnk=1", "kill_rank", "kill_after=x", "nan_items=1:b", "fail_code=disk"}) {
    auto f = Faults::parse(spec);
    ASSERT_FALSE(f.is_ok()) << spec;
    EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(f.status().message().find("SDXLB_FAULT"), std::string::npos);
  }
}

// bench/hostile_corpus.py: a resume started within the same second as the run it resumed got the same run
// id, and its first segment name collided ("already exists"). Run ids carry milliseconds and still sort.
TEST(RunId, MillisecondsSortableAndDistinct) {
  const std::string a = utc_run_id();
  std::this_thread::sleep_for(std::chrono::milliseconds(3));
  const std::string b = utc_run_id();
  ASSERT_EQ(a.size(), 19u) << a;
  EXPECT_EQ(a[8], 'T');
  EXPECT_EQ(a.back(), 'Z');
  for (size_t i = 0; i < 18; ++i) {
    if (i != 8) {
      EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(a[i]))) << a;
    }
  }
  EXPECT_NE(a, b);
  EXPECT_LT(a, b);
}

}  // namespace
}  // namespace sdxlb
