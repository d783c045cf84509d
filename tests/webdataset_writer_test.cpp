// The WebDataset export (store/webdataset_writer.h) in-process: shard layout and member names, the sample
// JSON, resume and its refusals, and faults injected through the store's Env: ENOSPC at every write of a
// shard in turn, a failed fsync and a failed rename. Each fault must end with an error that names the shard,
// no `.tmp` left, the shards published before it intact, and a rerun that completes the export.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "faulty_env.h"
#include "store/dataset_reader.h"
#include "store/env.h"
#include "store/output_folder.h"
#include "store/segment_writer.h"
#include "store/webdataset_writer.h"
#include "test_files.h"

namespace sdxlb {
namespace {

namespace fs = std::filesystem;
using ::sdxlb::testing::ScratchDir;
using ::testing::HasSubstr;

constexpr int kH = 48, kW = 40;
constexpr int kTotalItems = 9;

using ::sdxlb::testing::FaultyEnv;

std::vector<uint8_t> pixels_of(int64_t item) {
  // Noise-like, so that PNGs are large enough to take several tar blocks (several writes) per shard.
  std::vector<uint8_t> p(static_cast<size_t>(kH) * kW * 3);
  uint32_t x = static_cast<uint32_t>(item) * 2654435761u + 1;
  for (auto& v : p) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<uint8_t>(x >> 24);
  }
  return p;
}

ItemRecord record_of(int64_t item) {
  ItemRecord r;
  r.item_index = item;
  r.prompt_index = item / 3;
  r.image_k = static_cast<int32_t>(item % 3);
  r.seed = 1000 + static_cast<uint64_t>(item);
  r.prompt = "prompt " + std::to_string(item / 3);
  r.negative_prompt = "blurry";
  r.steps = 4;
  r.guidance = 7.3f;
  r.width = kW;
  r.height = kH;
  r.scheduler = R"({"_class_name":"EulerDiscreteScheduler","_sampler":"euler"})";
  r.approximations = R"({"token_merging":{"ratio":0.5}})";
  r.model_id = "m";
  r.rank = 3;
  r.host = "node7";
  r.ok = item != 4;  // item 4 failed: never exported
  if (!r.ok) r.error = "NaN latents";
  return r;
}

// A finished job in <dir>/out: items 0..7 stored (item 4 failed), item 8 never rendered.
std::string make_dataset(const ScratchDir& dir) {
  auto out = OutputFolder::create_or_open(dir.file("out"), "abcd", "steps: 4\n", R"({"steps":4})", false);
  EXPECT_TRUE(out.is_ok()) << out.status().to_string();
  SegmentOptions o;
  o.path = out->segment_path("run1", 1, 0);
  o.encoding = ImageEncoding::kRaw;
  o.height = kH;
  o.width = kW;
  o.run_id = "run1";
  o.rank = 1;
  auto w = SegmentWriter::create(o);
  EXPECT_TRUE(w.is_ok()) << w.status().to_string();
  for (int64_t i = 0; i < kTotalItems - 1; ++i) {
    const auto px = record_of(i).ok ? pixels_of(i) : std::vector<uint8_t>(pixels_of(i).size(), 0);
    EXPECT_TRUE(w->add(record_of(i), px.data()).is_ok());
  }
  EXPECT_TRUE(w->publish().is_ok());
  auto index = out->write_index(kTotalItems, {});
  EXPECT_TRUE(index.is_ok()) << index.status().to_string();
  return out->path();
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

const std::vector<std::string> kAllShards = {"shard-000000.tar", "shard-000001.tar", "shard-000002.tar",
                                             "webdataset.json"};

TEST(WebDatasetWriter, WritesOkItemsInShardsWithTheirMetadata) {
  ScratchDir dir;
  auto reader = DatasetReader::open(make_dataset(dir));
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  WebDatasetOptions options;
  options.shard_size = 3;
  std::vector<std::pair<int64_t, int64_t>> calls;
  auto report = export_webdataset(*reader, dir.file("wds"), options,
                                  [&](int64_t done, int64_t to_do) { calls.emplace_back(done, to_do); });
  ASSERT_TRUE(report.is_ok()) << report.status().to_string();
  EXPECT_EQ(report->samples, 7);
  EXPECT_EQ(report->shards, 3);
  EXPECT_EQ(report->shards_written, 3);
  EXPECT_EQ(report->skipped_failed, 1);
  EXPECT_EQ(report->skipped_missing, 1);
  EXPECT_EQ(calls.size(), 7u);
  EXPECT_EQ(calls.back(), std::make_pair(int64_t{7}, int64_t{7}));
  EXPECT_EQ(names_in(dir.file("wds")), kAllShards);
  auto m0 = read_tar_member_names(dir.file("wds/shard-000000.tar"));
  ASSERT_TRUE(m0.is_ok()) << m0.status().to_string();
  EXPECT_EQ(*m0, (std::vector<std::string>{"00000000.png", "00000000.json", "00000001.png", "00000001.json",
                                           "00000002.png", "00000002.json"}));
  auto m1 = read_tar_member_names(dir.file("wds/shard-000001.tar"));
  ASSERT_TRUE(m1.is_ok());
  EXPECT_EQ(*m1, (std::vector<std::string>{"00000003.png", "00000003.json", "00000005.png", "00000005.json",
                                           "00000006.png", "00000006.json"}));
  auto m2 = read_tar_member_names(dir.file("wds/shard-000002.tar"));
  ASSERT_TRUE(m2.is_ok());
  EXPECT_EQ(*m2, (std::vector<std::string>{"00000007.png", "00000007.json"}));
}

TEST(WebDatasetWriter, SampleJsonHoldsTheSettingsNotThePlacement) {
  auto json = webdataset_sample_json(record_of(5));
  ASSERT_TRUE(json.is_ok()) << json.status().to_string();
  EXPECT_THAT(*json, HasSubstr(R"("guidance":7.3,)"));  // the float's shortest form, not 7.300000190734863
  const auto j = nlohmann::json::parse(*json);
  EXPECT_EQ(j["item_index"], 5);
  EXPECT_EQ(j["prompt_index"], 1);
  EXPECT_EQ(j["image_k"], 2);
  EXPECT_EQ(j["seed"], 1005u);
  EXPECT_EQ(j["prompt"], "prompt 1");
  EXPECT_EQ(j["negative_prompt"], "blurry");
  EXPECT_EQ(j["scheduler"]["_sampler"], "euler");
  EXPECT_EQ(j["approximations"]["token_merging"]["ratio"], 0.5);
  EXPECT_FALSE(j.contains("host"));
  EXPECT_FALSE(j.contains("rank"));
  ItemRecord bad = record_of(2);
  bad.approximations = "{not json";
  auto err = webdataset_sample_json(bad);
  ASSERT_FALSE(err.is_ok());
  EXPECT_EQ(err.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(err.status().message(), HasSubstr("item 2: its approximations column"));
}

TEST(WebDatasetWriter, RefusesABadShardSizeAndAnotherLayout) {
  ScratchDir dir;
  auto reader = DatasetReader::open(make_dataset(dir));
  ASSERT_TRUE(reader.is_ok());
  WebDatasetOptions options;
  options.shard_size = 0;
  auto zero = export_webdataset(*reader, dir.file("wds"), options);
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir.file("wds")));
  options.shard_size = 3;
  ASSERT_TRUE(export_webdataset(*reader, dir.file("wds"), options).is_ok());
  options.shard_size = 2;
  auto other = export_webdataset(*reader, dir.file("wds"), options);
  EXPECT_EQ(other.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("rerun with --shard-size 3"));
  options.shard_size = 3;
  options.limit = 2;
  auto fewer = export_webdataset(*reader, dir.file("wds"), options);
  EXPECT_EQ(fewer.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(fewer.status().message(), HasSubstr("other items"));
  EXPECT_EQ(names_in(dir.file("wds")), kAllShards);
}

// ENOSPC at the k-th write of the second shard, for every k (the disk stays full): kIoError naming the
// shard's .tmp, nothing of it left, the first shard intact; the rerun keeps the first shard and writes the
// rest, byte-identical to an export that never failed.
TEST(WebDatasetWriter, EnospcAtEveryWriteOfAShard) {
  ScratchDir dir;
  auto reader = DatasetReader::open(make_dataset(dir));
  ASSERT_TRUE(reader.is_ok());
  WebDatasetOptions options;
  options.shard_size = 3;
  ASSERT_TRUE(export_webdataset(*reader, dir.file("ref"), options).is_ok());
  int64_t n = 0;
  {
    FaultyEnv counter("shard-000001.tar.tmp");
    ScopedEnv scoped(&counter);
    ASSERT_TRUE(export_webdataset(*reader, dir.file("count"), options).is_ok());
    n = counter.writes;
  }
  ASSERT_GE(n, 3) << "the shard should take several writes";
  for (int64_t k = 0; k < n; ++k) {
    SCOPED_TRACE("write " + std::to_string(k) + " of " + std::to_string(n));
    const std::string out = dir.file("enospc-" + std::to_string(k));
    FaultyEnv faults("shard-000001.tar.tmp");
    faults.fail_writes_from = k;
    StatusOr<WebDatasetReport> failed = Status::ok();
    {
      ScopedEnv scoped(&faults);
      failed = export_webdataset(*reader, out, options);
    }
    ASSERT_FALSE(failed.is_ok()) << "a failed write went unnoticed";
    EXPECT_EQ(failed.status().code(), StatusCode::kIoError);
    EXPECT_THAT(failed.status().message(), HasSubstr("No space left on device"));
    EXPECT_THAT(failed.status().message(), HasSubstr(out + "/shard-000001.tar.tmp"));
    EXPECT_EQ(names_in(out), (std::vector<std::string>{"shard-000000.tar", "webdataset.json"}));
    auto resumed = export_webdataset(*reader, out, options);
    ASSERT_TRUE(resumed.is_ok()) << resumed.status().to_string();
    EXPECT_EQ(resumed->shards_kept, 1);
    EXPECT_EQ(resumed->shards_written, 2);
    for (const auto& name : kAllShards)
      EXPECT_EQ(bytes_of(out + "/" + name), bytes_of(dir.file("ref/" + name))) << name;
  }
}

TEST(WebDatasetWriter, FailedFsyncOrRenamePublishesNothing) {
  ScratchDir dir;
  auto reader = DatasetReader::open(make_dataset(dir));
  ASSERT_TRUE(reader.is_ok());
  WebDatasetOptions options;
  options.shard_size = 3;
  for (const bool rename : {false, true}) {
    SCOPED_TRACE(rename ? "rename" : "fsync");
    const std::string out = dir.file(rename ? "rename" : "fsync");
    FaultyEnv faults("shard-000000.tar.tmp");
    (rename ? faults.fail_rename : faults.fail_fsync) = true;
    StatusOr<WebDatasetReport> failed = Status::ok();
    {
      ScopedEnv scoped(&faults);
      failed = export_webdataset(*reader, out, options);
    }
    ASSERT_FALSE(failed.is_ok());
    EXPECT_EQ(failed.status().code(), StatusCode::kIoError);
    EXPECT_THAT(failed.status().message(), HasSubstr(out + "/shard-000000.tar.tmp"));
    EXPECT_EQ(names_in(out), std::vector<std::string>{"webdataset.json"});
    auto resumed = export_webdataset(*reader, out, options);
    ASSERT_TRUE(resumed.is_ok()) << resumed.status().to_string();
    EXPECT_EQ(names_in(out), kAllShards);
  }
}

TEST(WebDatasetWriter, ShardNames) {
  EXPECT_EQ(webdataset_shard_name(0), "shard-000000.tar");
  EXPECT_EQ(webdataset_shard_name(42), "shard-000042.tar");
  EXPECT_EQ(webdataset_shard_name(1234567), "shard-1234567.tar");
}

}  // namespace
}  // namespace sdxlb
