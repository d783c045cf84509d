// Tests of the output store: the HDF5 layer, PNG, segment files (publish is atomic), the output folder
// (identity, writability, resume scan, corrupt segments) and index.h5, read back from C++ and from h5py; the
// text-embedding cache.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "store/embedding_cache.h"
#include "store/hdf5.h"
#include "store/item_columns_io.h"
#include "store/output_folder.h"
#include "store/png.h"
#include "store/segment_writer.h"
#include "test_files.h"

namespace sdxlb {
namespace {

namespace fs = std::filesystem;
using ::sdxlb::testing::ScratchDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kH = 8, kW = 12;

// A distinct, checkable image per item.
std::vector<uint8_t> pixels_of(int64_t item, int h = kH, int w = kW) {
  std::vector<uint8_t> p(static_cast<size_t>(h) * w * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c)
        p[(y * w + x) * 3 + c] = static_cast<uint8_t>(item * 31 + y * 7 + x * 3 + c * 11);
    }
  }
  return p;
}

uint64_t pixel_sum(const std::vector<uint8_t>& p) {
  return std::accumulate(p.begin(), p.end(), uint64_t{0});
}

ItemRecord record_of(int64_t item, bool ok = true) {
  ItemRecord r;
  r.item_index = item;
  r.prompt_index = item / 2;
  r.image_k = static_cast<int32_t>(item % 2);
  r.seed = 1000000000000ULL + static_cast<uint64_t>(item);
  r.prompt = "a photo of cat #" + std::to_string(item) + " — ünïcode";
  r.negative_prompt = item % 3 == 0 ? "" : "blurry";
  r.steps = 30;
  r.guidance = 7.5f;
  r.width = kW;
  r.height = kH;
  r.scheduler = "euler";
  r.model_id = "tiny-a@abc123";
  r.rank = 1;
  r.host = "node01";
  r.gpu = "H100";
  r.ms_encode = 1.5f;
  r.ms_denoise = 100.25f + static_cast<float>(item);
  r.ms_decode = 3.0f;
  r.ok = ok;
  r.error = ok ? "" : "CUDA out of memory at item " + std::to_string(item);
  return r;
}

void expect_same_record(const ItemRecord& a, const ItemRecord& b) {
  EXPECT_EQ(a.item_index, b.item_index);
  EXPECT_EQ(a.prompt_index, b.prompt_index);
  EXPECT_EQ(a.image_k, b.image_k);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.prompt, b.prompt);
  EXPECT_EQ(a.negative_prompt, b.negative_prompt);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.guidance, b.guidance);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.scheduler, b.scheduler);
  EXPECT_EQ(a.model_id, b.model_id);
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_EQ(a.host, b.host);
  EXPECT_EQ(a.gpu, b.gpu);
  EXPECT_EQ(a.ms_encode, b.ms_encode);
  EXPECT_EQ(a.ms_denoise, b.ms_denoise);
  EXPECT_EQ(a.ms_decode, b.ms_decode);
  EXPECT_EQ(a.ok, b.ok);
  EXPECT_EQ(a.error, b.error);
}

// Writes and publishes one segment holding `items` (an item listed in `failed` is stored as failed).
void write_segment(const std::string& path, const std::vector<int64_t>& items,
                   const std::vector<int64_t>& failed = {}, ImageEncoding encoding = ImageEncoding::kRaw) {
  SegmentOptions o;
  o.path = path;
  o.encoding = encoding;
  o.height = kH;
  o.width = kW;
  o.run_id = "run1";
  o.rank = 1;
  auto w = SegmentWriter::create(o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  for (int64_t i : items) {
    bool ok = std::find(failed.begin(), failed.end(), i) == failed.end();
    auto px = pixels_of(i);
    ASSERT_TRUE(w->add(record_of(i, ok), ok ? px.data() : nullptr).is_ok());
  }
  Status st = w->publish();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
}

// Writes and publishes one segment of `items` that records the job identity `id`.
void write_owned_segment(const std::string& path, const std::vector<int64_t>& items, const std::string& id) {
  SegmentOptions o;
  o.path = path;
  o.height = kH;
  o.width = kW;
  o.job_identity = id;
  auto w = SegmentWriter::create(o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  for (int64_t i : items) {
    auto px = pixels_of(i);
    ASSERT_TRUE(w->add(record_of(i), px.data()).is_ok());
  }
  ASSERT_TRUE(w->publish().is_ok());
}

const char* kIdA = "aaaa1111";
const char* kIdB = "bbbb2222";
const char* kJobA = R"({"model":"tiny-a","steps":30,"size":[8,12],"prompts":{"file":"p.txt"}})";
const char* kJobB = R"({"model":"tiny-a","steps":40,"size":[8,12],"prompts":{"file":"q.txt"}})";

OutputFolder open_folder(const std::string& path, const char* id = kIdA, const char* job = kJobA,
                         bool overwrite = false) {
  auto f = OutputFolder::create_or_open(path, id, "steps: 30\n", job, overwrite);
  EXPECT_TRUE(f.is_ok()) << f.status().to_string();
  return std::move(f).value();
}

// ---- HDF5 layer ---------------------------------------------------------------------------------------

TEST(StoreHdf5, AttributesAndColumnsRoundTrip) {
  ScratchDir dir;
  const std::string path = dir.file("a.h5");
  {
    auto f = h5::File::create(path, true);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    std::string long_text(200000, 'y');  // larger than an object header: vlen attributes live in the heap
    ASSERT_TRUE(f->set_string_attr("yaml", long_text).is_ok());
    ASSERT_TRUE(f->set_string_attr("yaml", "replaced: true\n").is_ok());
    ASSERT_TRUE(f->set_int_attr("n", -42).is_ok());
    ASSERT_TRUE(f->set_double_attr("x", 0.25).is_ok());
    ASSERT_TRUE(h5::write_column<int64_t>(*f, "i64", {1, -2, 3}).is_ok());
    ASSERT_TRUE(h5::write_column<uint64_t>(*f, "u64", {~0ULL, 0}).is_ok());
    ASSERT_TRUE(h5::write_column<float>(*f, "f32", {0.5f}).is_ok());
    ASSERT_TRUE(h5::write_column<int8_t>(*f, "i8", {-1, 0, 1}).is_ok());
    ASSERT_TRUE(h5::write_column<std::string>(*f, "s", {"", "héllo", std::string(5000, 'z')}).is_ok());
    ASSERT_TRUE(h5::write_column<h5::Bytes>(*f, "b", {{}, {1, 2, 3}}).is_ok());
    auto g = f->create_group("grp");
    ASSERT_TRUE(g.is_ok());
    ASSERT_TRUE(h5::write_column<int32_t>(*g, "col", {}).is_ok());  // empty, growable
    auto ds = g->open_dataset("col");
    ASSERT_TRUE(ds.is_ok());
    ASSERT_TRUE(h5::append_column<int32_t>(*ds, {7, 8}).is_ok());
    ASSERT_TRUE(h5::append_column<int32_t>(*ds, {9}).is_ok());
    ASSERT_TRUE(ds->close().is_ok());
    ASSERT_TRUE(g->close().is_ok());
    ASSERT_TRUE(f->close().is_ok());
  }
  auto f = h5::File::open(path, false);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->string_attr("yaml").value(), "replaced: true\n");
  EXPECT_EQ(f->int_attr("n").value(), -42);
  EXPECT_EQ(f->double_attr("x").value(), 0.25);
  EXPECT_EQ(f->double_attr("n").value(), -42.0);  // converted by HDF5
  EXPECT_EQ(h5::read_column<int64_t>(*f, "i64").value(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(h5::read_column<int64_t>(*f, "i64", 1, 5).value(), (std::vector<int64_t>{-2, 3}));
  EXPECT_EQ(h5::read_column<uint64_t>(*f, "u64").value(), (std::vector<uint64_t>{~0ULL, 0}));
  EXPECT_EQ(h5::read_column<float>(*f, "f32").value(), (std::vector<float>{0.5f}));
  EXPECT_EQ(h5::read_column<int64_t>(*f, "i8").value(), (std::vector<int64_t>{-1, 0, 1}));
  EXPECT_EQ(h5::read_column<std::string>(*f, "s").value(),
            (std::vector<std::string>{"", "héllo", std::string(5000, 'z')}));
  EXPECT_EQ(h5::read_column<h5::Bytes>(*f, "b").value(), (std::vector<h5::Bytes>{{}, {1, 2, 3}}));
  EXPECT_EQ(h5::read_column<int32_t>(*f, "grp/col").value(), (std::vector<int32_t>{7, 8, 9}));
}

TEST(StoreHdf5, ErrorsNameTheFileAndObjectWithoutPrintingTheStack) {
  ScratchDir dir;
  ::testing::internal::CaptureStderr();
  auto missing = h5::File::open(dir.file("nope.h5"), false);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir.file("nope.h5")));

  ::sdxlb::testing::write_bytes(dir.file("garbage.h5"), std::string(4096, 'g'));
  auto garbage = h5::File::open(dir.file("garbage.h5"), false);
  EXPECT_EQ(garbage.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(garbage.status().message(), HasSubstr(dir.file("garbage.h5")));
  EXPECT_THAT(garbage.status().message(), HasSubstr("HDF5: "));  // the library's reason, captured

  auto f = h5::File::create(dir.file("ok.h5"), true);
  ASSERT_TRUE(f.is_ok());
  auto ds = f->open_dataset("images");
  EXPECT_EQ(ds.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(ds.status().message(), HasSubstr("/images"));
  EXPECT_THAT(ds.status().message(), HasSubstr(dir.file("ok.h5")));
  ASSERT_TRUE(h5::write_column<int32_t>(*f, "c", {1}).is_ok());
  Status again = h5::write_column<int32_t>(*f, "c", {1});  // already exists: an HDF5 failure
  EXPECT_FALSE(again.is_ok());
  EXPECT_THAT(again.message(), HasSubstr("cannot create dataset /c in " + dir.file("ok.h5")));
  EXPECT_THAT(again.message(), HasSubstr("HDF5: "));
  auto excl = h5::File::create(dir.file("ok.h5"), /*truncate=*/false);
  EXPECT_EQ(excl.status().code(), StatusCode::kIoError);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.find("HDF5-DIAG"), std::string::npos) << err;
  std::printf("example HDF5 error: %s\n", again.to_string().c_str());
}

// ---- PNG ----------------------------------------------------------------------------------------------

TEST(StorePng, RoundTripIsExact) {
  for (int level : {0, 3, 9}) {
    auto px = pixels_of(5, 17, 23);
    auto bytes = encode_png(px.data(), 17, 23, level);
    ASSERT_TRUE(bytes.is_ok()) << bytes.status().to_string();
    ASSERT_GT(bytes->size(), 8u);
    EXPECT_EQ((*bytes)[1], 'P');
    auto img = decode_png(bytes->data(), bytes->size(), "mem");
    ASSERT_TRUE(img.is_ok()) << img.status().to_string();
    EXPECT_EQ(img->height, 17);
    EXPECT_EQ(img->width, 23);
    EXPECT_EQ(img->pixels, px);
  }
  ScratchDir dir;
  auto px = pixels_of(9);
  ASSERT_TRUE(write_png_file(dir.file("x.png"), px.data(), kH, kW).is_ok());
  auto img = read_png_file(dir.file("x.png"));
  ASSERT_TRUE(img.is_ok());
  EXPECT_EQ(img->pixels, px);
  EXPECT_FALSE(fs::exists(dir.file("x.png.tmp")));
}

TEST(StorePng, BadInputIsAClearError) {
  std::string junk = "not a png at all";
  auto img = decode_png(reinterpret_cast<const uint8_t*>(junk.data()), junk.size(), "item 3");
  EXPECT_EQ(img.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(img.status().message(), HasSubstr("item 3"));
  auto px = pixels_of(1);
  auto bytes = encode_png(px.data(), kH, kW);
  ASSERT_TRUE(bytes.is_ok());
  auto truncated = decode_png(bytes->data(), bytes->size() / 2, "half.png");
  EXPECT_EQ(truncated.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(encode_png(px.data(), 0, kW).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_png(px.data(), kH, kW, 12).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(read_png_file("/nonexistent/x.png").status().code(), StatusCode::kNotFound);
}

// ---- SegmentWriter ------------------------------------------------------------------------------------

TEST(StoreSegmentWriter, RawRoundTrip) {
  ScratchDir dir;
  const std::string path = dir.file("seg-run1-r00001-000000.h5");
  write_segment(path, {4, 2, 7}, {2});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  auto f = h5::File::open(path, false);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->string_attr("format").value(), "sdxlb-segment");
  EXPECT_EQ(f->string_attr("encoding").value(), "raw");
  EXPECT_EQ(f->int_attr("height").value(), kH);
  EXPECT_EQ(f->int_attr("width").value(), kW);
  EXPECT_EQ(f->int_attr("items").value(), 3);
  auto images = f->open_dataset("images");
  ASSERT_TRUE(images.is_ok());
  EXPECT_EQ(images->dims().value(), (std::vector<hsize_t>{3, kH, kW, 3}));
  std::vector<uint8_t> all(3 * kH * kW * 3);
  ASSERT_TRUE(images->read_rows(H5T_NATIVE_UINT8, 0, 3, all.data()).is_ok());
  const size_t n = kH * kW * 3;
  EXPECT_EQ(std::vector<uint8_t>(all.begin(), all.begin() + n), pixels_of(4));
  EXPECT_EQ(std::vector<uint8_t>(all.begin() + n, all.begin() + 2 * n),
            std::vector<uint8_t>(n, 0));  // failed
  EXPECT_EQ(std::vector<uint8_t>(all.begin() + 2 * n, all.end()), pixels_of(7));
  ASSERT_TRUE(images->close().is_ok());
  auto cols = read_item_columns(*f);
  ASSERT_TRUE(cols.is_ok()) << cols.status().to_string();
  ASSERT_EQ(cols->size(), 3u);
  expect_same_record(cols->row(0), record_of(4));
  expect_same_record(cols->row(1), record_of(2, false));
  expect_same_record(cols->row(2), record_of(7));
  EXPECT_EQ(cols->status, (std::vector<int8_t>{1, 0, 1}));
}

TEST(StoreSegmentWriter, PngRoundTrip) {
  ScratchDir dir;
  const std::string path = dir.file("seg-run1-r00001-000000.h5");
  write_segment(path, {0, 1}, {1}, ImageEncoding::kPng);
  auto f = h5::File::open(path, false);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->string_attr("encoding").value(), "png");
  EXPECT_FALSE(f->exists("images"));
  auto png = h5::read_column<h5::Bytes>(*f, "png");
  ASSERT_TRUE(png.is_ok());
  ASSERT_EQ(png->size(), 2u);
  auto img = decode_png((*png)[0].data(), (*png)[0].size(), "png[0]");
  ASSERT_TRUE(img.is_ok());
  EXPECT_EQ(img->pixels, pixels_of(0));
  EXPECT_TRUE((*png)[1].empty());  // failed item
}

TEST(StoreSegmentWriter, GrowsPastManyItems) {
  ScratchDir dir;
  std::vector<int64_t> items(300);
  std::iota(items.begin(), items.end(), 0);
  write_segment(dir.file("seg-run1-r00001-000000.h5"), items);
  auto f = h5::File::open(dir.file("seg-run1-r00001-000000.h5"), false);
  EXPECT_EQ(h5::read_column<int64_t>(*f, "item_index").value(), items);
}

TEST(StoreSegmentWriter, RejectsBadInput) {
  ScratchDir dir;
  SegmentOptions o;
  o.path = dir.file("seg-run1-r00001-000000.h5");
  o.height = kH;
  o.width = kW;
  auto w = SegmentWriter::create(o);
  ASSERT_TRUE(w.is_ok());
  ItemRecord wrong = record_of(0);
  wrong.width = 99;
  auto px = pixels_of(0);
  EXPECT_EQ(w->add(wrong, px.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w->add(record_of(0), nullptr).code(), StatusCode::kInvalidArgument);  // ok item without pixels
  EXPECT_TRUE(w->add(record_of(0), px.data()).is_ok());
  EXPECT_EQ(w->size(), 1);
  ASSERT_TRUE(w->publish().is_ok());
  // A published segment is never replaced.
  auto again = SegmentWriter::create(o);
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  o.height = 0;
  o.path = dir.file("seg-run1-r00001-000001.h5");
  EXPECT_EQ(SegmentWriter::create(o).status().code(), StatusCode::kInvalidArgument);
}

TEST(StoreSegmentWriter, EmptyWriterPublishesNothing) {
  ScratchDir dir;
  SegmentOptions o;
  o.path = dir.file("seg-run1-r00001-000000.h5");
  o.height = kH;
  o.width = kW;
  auto w = SegmentWriter::create(o);
  ASSERT_TRUE(w.is_ok());
  EXPECT_TRUE(fs::exists(o.path + ".tmp"));
  EXPECT_TRUE(w->publish().is_ok());
  EXPECT_FALSE(fs::exists(o.path));
  EXPECT_FALSE(fs::exists(o.path + ".tmp"));
}

// ---- OutputFolder: publish is atomic, resume ----------------------------------------------------------

TEST(StoreOutputFolder, WriterWithoutPublishLeavesNothingTrusted) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  const std::string path = out.segment_path("run1", 1, 0);
  {
    SegmentOptions o;
    o.path = path;
    o.height = kH;
    o.width = kW;
    auto w = SegmentWriter::create(o);
    ASSERT_TRUE(w.is_ok());
    auto px = pixels_of(0);
    ASSERT_TRUE(w->add(record_of(0), px.data()).is_ok());
    EXPECT_TRUE(fs::exists(path + ".tmp"));
    EXPECT_FALSE(fs::exists(path));
  }  // destroyed without publish(): aborts
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  auto scan = out.scan();
  ASSERT_TRUE(scan.is_ok());
  EXPECT_TRUE(scan->items.empty());
  EXPECT_TRUE(scan->segments.empty());
}

TEST(StoreOutputFolder, KilledWriterLeavesOnlyATempFileThatScanRemoves) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  write_segment(out.segment_path("run1", 1, 0), {0, 1});
  const std::string path = out.segment_path("run1", 2, 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child dies mid-segment, like kill -9: no destructor, no publish.
    SegmentOptions o;
    o.path = path;
    o.height = kH;
    o.width = kW;
    auto w = SegmentWriter::create(o);
    auto px = pixels_of(2);
    if (w.is_ok()) (void)w->add(record_of(2), px.data());
    _exit(w.is_ok() ? 0 : 3);
  }
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  ASSERT_TRUE(fs::exists(path + ".tmp"));
  auto scan = out.scan();
  ASSERT_TRUE(scan.is_ok()) << scan.status().to_string();
  EXPECT_EQ(scan->done_items(), (std::vector<int64_t>{0, 1}));
  EXPECT_FALSE(scan->is_done(2));
  ASSERT_EQ(scan->removed_temp.size(), 1u);
  EXPECT_EQ(scan->removed_temp[0], fs::path(path).filename().string() + ".tmp");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(StoreOutputFolder, TruncatedSegmentIsMovedAside) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  write_segment(out.segment_path("run1", 1, 0), {0, 1, 2});
  const std::string bad = out.segment_path("run1", 1, 1);
  write_segment(bad, {3, 4});
  auto size = fs::file_size(bad);
  ASSERT_EQ(::truncate(bad.c_str(), static_cast<off_t>(size / 2)), 0);
  ::sdxlb::testing::write_bytes(out.segment_path("run1", 1, 2), "garbage");
  auto scan = out.scan();
  ASSERT_TRUE(scan.is_ok()) << scan.status().to_string();
  EXPECT_EQ(scan->done_items(), (std::vector<int64_t>{0, 1, 2}));
  ASSERT_EQ(scan->moved_corrupt.size(), 2u);
  EXPECT_THAT(scan->moved_corrupt[0], HasSubstr("seg-run1-r00001-000001.h5"));
  EXPECT_FALSE(fs::exists(bad));
  EXPECT_TRUE(fs::exists(out.segments_dir() + "/corrupt/seg-run1-r00001-000001.h5"));
  EXPECT_TRUE(fs::exists(out.segments_dir() + "/corrupt/seg-run1-r00001-000002.h5"));
  // A second scan is clean.
  auto again = out.scan();
  ASSERT_TRUE(again.is_ok());
  EXPECT_TRUE(again->moved_corrupt.empty());
  EXPECT_EQ(again->segments.size(), 1u);
}

TEST(StoreOutputFolder, ResumeScanReturnsExactlyThePublishedItems) {
  ScratchDir dir;
  const std::string path = dir.file("out");
  {
    OutputFolder out = open_folder(path);
    EXPECT_FALSE(out.resumed());
    write_segment(out.segment_path("run1", 1, 0), {0, 1, 2, 3}, {2});
    write_segment(out.segment_path("run1", 2, 0), {6, 7});
    SegmentOptions o;  // in flight when the "process" stops: destroyed below without publish
    o.path = out.segment_path("run1", 1, 1);
    o.height = kH;
    o.width = kW;
    auto w = SegmentWriter::create(o);
    ASSERT_TRUE(w.is_ok());
    auto px = pixels_of(4);
    ASSERT_TRUE(w->add(record_of(4), px.data()).is_ok());
  }
  OutputFolder out = open_folder(path);
  EXPECT_TRUE(out.resumed());
  auto scan = out.scan();
  ASSERT_TRUE(scan.is_ok());
  EXPECT_EQ(scan->done_items(), (std::vector<int64_t>{0, 1, 3, 6, 7}));
  EXPECT_EQ(scan->ok_count(), 5);
  ASSERT_EQ(scan->failed.size(), 1u);
  EXPECT_EQ(scan->failed[0].item, 2);
  EXPECT_EQ(scan->failed[0].error, "CUDA out of memory at item 2");
  EXPECT_TRUE(scan->duplicates.empty());
  EXPECT_EQ(scan->segments.size(), 2u);
  EXPECT_EQ(scan->encoding, "raw");
  EXPECT_EQ(scan->height, kH);
}

TEST(StoreOutputFolder, RetriesAreNotDuplicatesButDoubleOutputsAre) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  write_segment(out.segment_path("run1", 1, 0), {0, 1, 2}, {1});
  write_segment(out.segment_path("run2", 1, 0), {1, 2});  // 1: retry of a failure; 2: a second OK copy
  auto scan = out.scan();
  ASSERT_TRUE(scan.is_ok());
  EXPECT_EQ(scan->done_items(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(scan->failed.empty());
  ASSERT_EQ(scan->duplicates.size(), 1u);
  EXPECT_THAT(scan->duplicates[0], HasSubstr("item 2"));
  EXPECT_THAT(scan->duplicates[0], HasSubstr("keeping seg-run1-r00001-000000.h5"));
  ASSERT_EQ(scan->items.size(), 3u);
  EXPECT_EQ(scan->items[1].segment, 1);  // the retry in run2
  EXPECT_EQ(scan->items[2].segment, 0);  // the first by name
}

// ---- OutputFolder: identity and writability -----------------------------------------------------------

TEST(StoreOutputFolder, CreatesJobFiles) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  std::ifstream in(dir.file("out/job.json"));
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["identity"], kIdA);
  EXPECT_EQ(j["job"]["steps"], 30);
  std::ifstream yaml(dir.file("out/job.yaml"));
  std::string text((std::istreambuf_iterator<char>(yaml)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "steps: 30\n");
  EXPECT_TRUE(fs::is_directory(out.segments_dir()));
  EXPECT_EQ(out.segment_path("20260509T101500Z", 3, 12),
            dir.file("out/segments/seg-20260509T101500Z-r00003-000012.h5"));
  for (const auto& e : fs::directory_iterator(dir.file("out"))) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
    EXPECT_EQ(e.path().filename().string().find("probe"), std::string::npos) << e.path();
  }
}

TEST(StoreOutputFolder, RefusesAnotherJobWithAClearMessage) {
  ScratchDir dir;
  const std::string path = dir.file("out");
  {
    OutputFolder out = open_folder(path);
    write_segment(out.segment_path("run1", 1, 0), {0});
  }
  auto other = OutputFolder::create_or_open(path, kIdB, "steps: 40\n", kJobB, false);
  ASSERT_FALSE(other.is_ok());
  const Status& st = other.status();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr(path));
  EXPECT_THAT(st.message(), HasSubstr(kIdA));
  EXPECT_THAT(st.message(), HasSubstr(kIdB));
  EXPECT_THAT(st.message(), HasSubstr("steps: 30 -> 40"));
  EXPECT_THAT(st.message(), HasSubstr("prompts.file: \"p.txt\" -> \"q.txt\""));
  EXPECT_THAT(st.message(), Not(HasSubstr("model")));  // equal settings are not listed
  EXPECT_THAT(st.message(), HasSubstr("use a new output folder or pass --overwrite"));
  std::printf("example: %s\n", st.to_string().c_str());
  // Nothing was touched.
  EXPECT_TRUE(fs::exists(path + "/segments/seg-run1-r00001-000000.h5"));

  auto over = OutputFolder::create_or_open(path, kIdB, "steps: 40\n", kJobB, true);
  ASSERT_TRUE(over.is_ok()) << over.status().to_string();
  EXPECT_FALSE(over->resumed());
  EXPECT_FALSE(fs::exists(path + "/segments/seg-run1-r00001-000000.h5"));
  auto scan = over->scan();
  ASSERT_TRUE(scan.is_ok());
  EXPECT_TRUE(scan->items.empty());
  std::ifstream in(path + "/job.json");
  EXPECT_EQ(nlohmann::json::parse(in)["identity"], kIdB);
}

TEST(StoreOutputFolder, RefusesSegmentsWithoutJobFile) {
  ScratchDir dir;
  fs::create_directories(dir.file("out/segments"));
  auto f = OutputFolder::create_or_open(dir.file("out"), kIdA, "", kJobA, false);
  EXPECT_EQ(f.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(f.status().message(), HasSubstr("no job.json"));
  EXPECT_THAT(f.status().message(), HasSubstr("no segment records which job it belongs to"));
  ::sdxlb::testing::write_bytes(dir.file("out/job.json"), "{not json");
  f = OutputFolder::create_or_open(dir.file("out"), kIdA, "", kJobA, false);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(f.status().message(), HasSubstr("--overwrite"));
}

// issue 12 (weak case): a deleted job.json refused 96 intact images. Segments record their job now, so a
// folder whose segments all name this job is resumed and its job.json written again; any doubt still refuses.
TEST(StoreOutputFolder, LostJobFileIsRebuiltWhenEverySegmentNamesThisJob) {
  ScratchDir dir;
  const std::string path = dir.file("out");
  {
    OutputFolder out = open_folder(path);
    write_owned_segment(out.segment_path("run1", 1, 0), {0, 1}, kIdA);
    write_owned_segment(out.segment_path("run1", 2, 0), {2}, kIdA);
  }
  fs::remove(path + "/job.json");
  fs::remove(path + "/job.yaml");
  auto f = OutputFolder::create_or_open(path, kIdA, "steps: 30\n", kJobA, false);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_TRUE(f->resumed());
  std::ifstream in(path + "/job.json");
  EXPECT_EQ(nlohmann::json::parse(in)["identity"], kIdA);
  EXPECT_TRUE(fs::exists(path + "/job.yaml"));
  auto scan = f->scan();
  ASSERT_TRUE(scan.is_ok());
  EXPECT_EQ(scan->done_items(), (std::vector<int64_t>{0, 1, 2}));

  // Another job's folder without job.json: refused, naming the segment and its job.
  fs::remove(path + "/job.json");
  auto other = OutputFolder::create_or_open(path, kIdB, "", kJobB, false);
  EXPECT_EQ(other.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("belongs to another job (identity aaaa1111)"));
  EXPECT_FALSE(fs::exists(path + "/job.json"));

  // One segment that does not say (an older version's) is enough to refuse.
  write_segment(path + "/segments/seg-run0-r00001-000000.h5", {3});
  auto old = OutputFolder::create_or_open(path, kIdA, "", kJobA, false);
  EXPECT_EQ(old.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(old.status().message(), HasSubstr("does not record its job"));
  EXPECT_FALSE(fs::exists(path + "/job.json"));
}

// Found by bench/hostile_corpus.py: a segment of another job (same items and seeds, steps 3 instead of 2)
// copied into the folder was served. A segment that records another job's identity is not.
TEST(StoreOutputFolder, SegmentOfAnotherJobIsNotServed) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));  // job kIdA
  write_owned_segment(out.segment_path("run1", 1, 0), {0, 1}, kIdA);
  write_owned_segment(out.segment_path("run1", 1, 1), {2, 3}, kIdB);
  write_segment(out.segment_path("run1", 1, 2), {4});  // written before segments recorded their job
  auto scan = out.scan();
  ASSERT_TRUE(scan.is_ok()) << scan.status().to_string();
  EXPECT_EQ(scan->done_items(), (std::vector<int64_t>{0, 1, 4}));
  ASSERT_EQ(scan->moved_corrupt.size(), 1u);
  EXPECT_THAT(scan->moved_corrupt[0], HasSubstr("written by another job (identity bbbb2222"));
  EXPECT_TRUE(fs::exists(out.segments_dir() + "/corrupt/seg-run1-r00001-000001.h5"));
}

// `sdxl-batch check`: what create_or_open would find, with nothing written.
TEST(StoreOutputFolder, ReadOnlyOpenJudgesLikeCreateOrOpenAndWritesNothing) {
  ScratchDir dir;
  const std::string path = dir.file("out");
  auto missing = OutputFolder::open_read_only(path, kIdA, kJobA);
  ASSERT_TRUE(missing.is_ok()) << missing.status().to_string();
  EXPECT_FALSE(missing->resumed());
  EXPECT_FALSE(fs::exists(path));
  {
    OutputFolder out = open_folder(path);  // job kIdA
    write_owned_segment(out.segment_path("run1", 1, 0), {0, 1}, kIdA);
    ::sdxlb::testing::write_bytes(out.segment_path("run1", 1, 1) + ".tmp", "in flight");
  }
  auto same = OutputFolder::open_read_only(path, kIdA, kJobA);
  ASSERT_TRUE(same.is_ok()) << same.status().to_string();
  EXPECT_TRUE(same->resumed());
  auto peek = same->peek();
  ASSERT_TRUE(peek.is_ok()) << peek.status().to_string();
  EXPECT_EQ(peek->done_items(), (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(fs::exists(same->segment_path("run1", 1, 1) + ".tmp"));  // peek deletes nothing

  auto other = OutputFolder::open_read_only(path, kIdB, kJobB);
  EXPECT_EQ(other.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("holds another job"));
  EXPECT_THAT(other.status().message(), HasSubstr("--overwrite"));

  // job.json lost: resumed when every segment names this job, refused for another, and not rebuilt here.
  fs::remove(path + "/job.json");
  auto rebuilt = OutputFolder::open_read_only(path, kIdA, kJobA);
  ASSERT_TRUE(rebuilt.is_ok()) << rebuilt.status().to_string();
  EXPECT_TRUE(rebuilt->resumed());
  EXPECT_FALSE(fs::exists(path + "/job.json"));
  EXPECT_EQ(OutputFolder::open_read_only(path, kIdB, kJobB).status().code(), StatusCode::kFailedPrecondition);

  // Not a folder, and a path no one can create (under a regular file, or in /proc).
  ::sdxlb::testing::write_bytes(dir.file("file"), "x");
  EXPECT_EQ(OutputFolder::open_read_only(dir.file("file"), kIdA, kJobA).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(OutputFolder::open_read_only(dir.file("file/out"), kIdA, kJobA).status().code(),
            StatusCode::kIoError);  // as create_or_open: the folder cannot be created
  if (::geteuid() != 0) {           // permission bits matter only for non-root users
    fs::create_directories(dir.file("ro"));
    ::chmod(dir.file("ro").c_str(), 0500);
    auto ro = OutputFolder::open_read_only(dir.file("ro/out"), kIdA, kJobA);
    EXPECT_EQ(ro.status().code(), StatusCode::kIoError);
    EXPECT_THAT(ro.status().message(), HasSubstr("where " + dir.file("ro/out") + " would be created"));
    ::chmod(dir.file("ro").c_str(), 0700);
  }
}

TEST(StoreOutputFolder, UnwritableFolderIsAClearErrorBeforeAnythingIsWritten) {
  ScratchDir dir;
  // Tests may run as root, where permission bits do not stop writes: a path under a regular file cannot be
  // a folder for anyone.
  ::sdxlb::testing::write_bytes(dir.file("file"), "x");
  auto f = OutputFolder::create_or_open(dir.file("file/out"), kIdA, "", kJobA, false);
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(f.status().code(), StatusCode::kIoError);
  EXPECT_THAT(f.status().message(), HasSubstr(dir.file("file/out")));
  EXPECT_THAT(f.status().message(), HasSubstr("fix:"));
  std::printf("example: %s\n", f.status().to_string().c_str());

  auto is_file = OutputFolder::create_or_open(dir.file("file"), kIdA, "", kJobA, false);
  EXPECT_EQ(is_file.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(is_file.status().message(), HasSubstr("is not a folder"));

  auto proc = OutputFolder::create_or_open("/proc/sdxlb-no-such/out", kIdA, "", kJobA, false);
  EXPECT_EQ(proc.status().code(), StatusCode::kIoError);
  EXPECT_THAT(proc.status().message(), HasSubstr("/proc/sdxlb-no-such/out"));

  if (::geteuid() != 0) {  // permission bits matter only for non-root users
    fs::create_directories(dir.file("ro"));
    ::chmod(dir.file("ro").c_str(), 0500);
    auto ro = OutputFolder::create_or_open(dir.file("ro"), kIdA, "", kJobA, false);
    EXPECT_EQ(ro.status().code(), StatusCode::kIoError);
    EXPECT_THAT(ro.status().message(), HasSubstr("not writable"));
    EXPECT_FALSE(fs::exists(dir.file("ro/job.json")));
    ::chmod(dir.file("ro").c_str(), 0700);
  }
}

// ---- index.h5 -----------------------------------------------------------------------------------------

// A job of 10 items: 0-3 and 6 in run1 (5 failed... no: 2 failed), 7-8 in run2 (rank 2) with 8 stored
// before 7, 4-5 and 9 never rendered.
OutputFolder make_job_output(const std::string& path, ImageEncoding encoding = ImageEncoding::kRaw) {
  OutputFolder out = open_folder(path);
  write_segment(out.segment_path("run1", 1, 0), {0, 1, 2, 3, 6}, {2}, encoding);
  write_segment(out.segment_path("run2", 2, 0), {8, 7}, {}, encoding);
  return out;
}

TEST(StoreIndex, ContentsInItemOrder) {
  ScratchDir dir;
  OutputFolder out = make_job_output(dir.file("out"));
  std::map<std::string, std::string> attrs = {{"job_yaml", "steps: 30\n"},
                                              {"tool_version", "0.1.0"},
                                              {"torch_version", "2.11"},
                                              {"format", "not ours"}};
  auto summary = out.write_index(10, attrs);
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  EXPECT_EQ(summary->ok, 6);
  EXPECT_EQ(summary->failed, 1);
  EXPECT_EQ(summary->missing, 3);
  EXPECT_EQ(summary->segments, 2);
  EXPECT_FALSE(fs::exists(out.index_path() + ".tmp"));

  auto f = h5::File::open(out.index_path(), false);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->string_attr("format").value(), "sdxlb-index");  // ours win over the caller's key
  EXPECT_EQ(f->string_attr("job_yaml").value(), "steps: 30\n");
  EXPECT_EQ(f->string_attr("torch_version").value(), "2.11");
  EXPECT_EQ(f->int_attr("total_items").value(), 10);
  EXPECT_EQ(f->int_attr("items_missing").value(), 3);
  EXPECT_EQ(f->string_attr("encoding").value(), "raw");
  EXPECT_EQ(h5::read_column<std::string>(*f, "segments").value(),
            (std::vector<std::string>{"seg-run1-r00001-000000.h5", "seg-run2-r00002-000000.h5"}));
  EXPECT_EQ(h5::read_column<int32_t>(*f, "item_segment").value(),
            (std::vector<int32_t>{0, 0, 0, 0, -1, -1, 0, 1, 1, -1}));
  EXPECT_EQ(h5::read_column<int64_t>(*f, "item_row").value(),
            (std::vector<int64_t>{0, 1, 2, 3, -1, -1, 4, 1, 0, -1}));
  auto cols = read_item_columns(*f);
  ASSERT_TRUE(cols.is_ok()) << cols.status().to_string();
  ASSERT_EQ(cols->size(), 10u);
  EXPECT_EQ(cols->status, (std::vector<int8_t>{1, 1, 0, 1, -1, -1, 1, 1, 1, -1}));
  std::vector<int64_t> iota(10);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(cols->item_index, iota);
  for (int64_t i : {0, 1, 3, 6, 7, 8}) expect_same_record(cols->row(i), record_of(i));
  expect_same_record(cols->row(2), record_of(2, false));
  EXPECT_EQ(cols->prompt[4], "");
  EXPECT_EQ(cols->seed[9], 0u);

  // The virtual dataset reads through to the segments, in item order; missing and failed items are zeros.
  auto images = f->open_dataset("images");
  ASSERT_TRUE(images.is_ok());
  EXPECT_EQ(images->dims().value(), (std::vector<hsize_t>{10, kH, kW, 3}));
  const size_t n = kH * kW * 3;
  std::vector<uint8_t> all(10 * n);
  ASSERT_TRUE(images->read_rows(H5T_NATIVE_UINT8, 0, 10, all.data()).is_ok());
  for (int64_t i = 0; i < 10; ++i) {
    std::vector<uint8_t> got(all.begin() + i * n, all.begin() + (i + 1) * n);
    bool rendered = i == 0 || i == 1 || i == 3 || i == 6 || i == 7 || i == 8;
    EXPECT_EQ(got, rendered ? pixels_of(i) : std::vector<uint8_t>(n, 0)) << "item " << i;
  }
}

TEST(StoreIndex, RefusesItemsOutsideTheJob) {
  ScratchDir dir;
  OutputFolder out = make_job_output(dir.file("out"));
  auto summary = out.write_index(5, {});
  EXPECT_EQ(summary.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(summary.status().message(), HasSubstr("holds item 6 but the job has 5 items"));
  EXPECT_FALSE(fs::exists(out.index_path()));
}

TEST(StoreIndex, EmptyJobFolder) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  auto summary = out.write_index(4, {});
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  EXPECT_EQ(summary->missing, 4);
  auto f = h5::File::open(out.index_path(), false);
  ASSERT_TRUE(f.is_ok());
  EXPECT_FALSE(f->exists("images"));
  EXPECT_EQ(h5::read_column<int8_t>(*f, "status").value(), (std::vector<int8_t>{-1, -1, -1, -1}));
}

// ---- h5py reads it all --------------------------------------------------------------------------------

nlohmann::json read_with_h5py(const std::string& out) {
#ifndef SDXLB_PYTHON
  ADD_FAILURE() << "SDXLB_PYTHON is not defined";
  return {};
#else
  // Run from "/" so the virtual dataset's relative source paths must resolve against index.h5's folder.
  const std::string err = out + ".stderr";
  const std::string cmd = std::string("cd / && '") + SDXLB_PYTHON + "' '" + SDXLB_SOURCE_DIR +
                          "/tests/oracle/read_output.py' '" + out + "' 2>'" + err + "'";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) {
    ADD_FAILURE() << "cannot run " << cmd;
    return {};
  }
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) text.append(buf, n);
  int rc = ::pclose(pipe);
  std::ifstream in(err);
  std::string stderr_text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << cmd << "\nstderr:\n" << stderr_text << "\nstdout:\n" << text.substr(0, 2000);
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) ADD_FAILURE() << "read_output.py printed no JSON:\n" << text << "\n" << stderr_text;
  return j;
#endif
}

void check_h5py_view(const std::string& out_path, bool expect_images) {
  nlohmann::json j = read_with_h5py(out_path);
  ASSERT_TRUE(j.is_object());
  EXPECT_TRUE(j["problems"].empty()) << j["problems"].dump();
  EXPECT_EQ(j["total_items"], 10);
  EXPECT_EQ(j["has_images"], expect_images);
  EXPECT_EQ(j["attrs"]["job_yaml"], "steps: 30\n");
  EXPECT_EQ(j["attrs"]["items_ok"], 6);
  EXPECT_EQ(j["segments"].size(), 2u);
  const auto& items = j["items"];
  ASSERT_EQ(items.size(), 10u);
  for (int64_t i = 0; i < 10; ++i) {
    const auto& it = items[i];
    EXPECT_EQ(it["item_index"], i);
    bool rendered = i == 0 || i == 1 || i == 3 || i == 6 || i == 7 || i == 8;
    int expected_status = rendered ? 1 : (i == 2 ? 0 : -1);
    EXPECT_EQ(it["status"], expected_status) << "item " << i;
    if (expected_status >= 0) {
      ItemRecord r = record_of(i, rendered);
      EXPECT_EQ(it["prompt"], r.prompt);
      EXPECT_EQ(it["negative_prompt"], r.negative_prompt);
      EXPECT_EQ(it["seed"].get<uint64_t>(), r.seed);
      EXPECT_EQ(it["prompt_index"], r.prompt_index);
      EXPECT_EQ(it["image_k"], r.image_k);
      EXPECT_EQ(it["steps"], r.steps);
      EXPECT_FLOAT_EQ(it["guidance"].get<float>(), r.guidance);
      EXPECT_FLOAT_EQ(it["ms_denoise"].get<float>(), r.ms_denoise);
      EXPECT_EQ(it["model_id"], r.model_id);
      EXPECT_EQ(it["host"], r.host);
      EXPECT_EQ(it["error"], r.error);
    } else {
      EXPECT_EQ(it["segment"], -1);
      EXPECT_EQ(it["prompt"], "");
    }
    uint64_t sum = rendered ? pixel_sum(pixels_of(i)) : 0;
    EXPECT_EQ(it["pixel_sum"].get<uint64_t>(), sum) << "item " << i;
  }
}

TEST(StoreH5py, ReadsRawOutputThroughTheIndex) {
  ScratchDir dir;
  OutputFolder out = make_job_output(dir.file("out"));
  ASSERT_TRUE(out.write_index(10, {{"job_yaml", "steps: 30\n"}}).is_ok());
  check_h5py_view(dir.file("out"), true);
  // The folder can be moved as a whole: the virtual dataset's source paths are relative.
  fs::rename(dir.file("out"), dir.file("moved"));
  check_h5py_view(dir.file("moved"), true);
}

TEST(StoreH5py, ReadsPngOutputThroughTheIndex) {
  ScratchDir dir;
  OutputFolder out = make_job_output(dir.file("out"), ImageEncoding::kPng);
  ASSERT_TRUE(out.write_index(10, {{"job_yaml", "steps: 30\n"}}).is_ok());
  check_h5py_view(dir.file("out"), false);
}

// ---- the text-embedding cache -------------------------------------------------------------------------

// Distinct float16 bit patterns per text (finite halves: the exponent field stays below 31).
std::vector<uint16_t> half_values(int64_t texts, int64_t per_text, int seed) {
  std::vector<uint16_t> v(static_cast<size_t>(texts * per_text));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>((i * 37 + seed * 1009) % 0x7800);
  return v;
}

TEST(EmbeddingCache, StoresShardsAndReadsRowsBackInAnyOrder) {
  ScratchDir dir;
  const std::vector<std::string> a = {"a red fox", "", "a blue whale"};
  const std::vector<std::string> b = {"a green frog"};
  const std::vector<uint16_t> ea = half_values(3, 2 * 4, 1), pa = half_values(3, 5, 2);
  const std::vector<uint16_t> eb = half_values(1, 2 * 4, 3), pb = half_values(1, 5, 4);
  {
    auto cache = EmbeddingCache::open(dir.path(), "enc1");
    ASSERT_TRUE(cache.is_ok()) << cache.status().to_string();
    EXPECT_FALSE(cache->contains("a red fox"));
    ASSERT_TRUE(cache->write_shard("r-1", a, {ea.data(), {3, 2, 4}}, {pa.data(), {3, 5}}).is_ok());
    ASSERT_TRUE(cache->write_shard("r-2", b, {eb.data(), {1, 2, 4}}, {pb.data(), {1, 5}}).is_ok());
    // Shapes that do not match the texts are refused, and nothing is written.
    EXPECT_EQ(cache->write_shard("r-3", b, {eb.data(), {2, 2, 4}}, {pb.data(), {1, 5}}).code(),
              StatusCode::kInvalidArgument);
  }
  EXPECT_FALSE(fs::exists(dir.path() + "/enc1/shard-r-3.h5"));
  // Another rank (or a later job) opens the folder and finds both shards.
  auto cache = EmbeddingCache::open(dir.path(), "enc1");
  ASSERT_TRUE(cache.is_ok()) << cache.status().to_string();
  EXPECT_EQ(cache->size(), 4u);
  EXPECT_TRUE(cache->contains(""));
  auto got = cache->read({"a green frog", "a red fox", "a green frog", "a blue whale"});
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ(got->prompt_embeds.shape, (std::vector<int64_t>{4, 2, 4}));
  EXPECT_EQ(got->pooled.shape, (std::vector<int64_t>{4, 5}));
  auto row = [](const std::vector<uint16_t>& v, int64_t r, int64_t n) {
    return std::vector<uint16_t>(v.begin() + r * n, v.begin() + (r + 1) * n);
  };
  const std::vector<std::vector<uint16_t>> want_e = {row(eb, 0, 8), row(ea, 0, 8), row(eb, 0, 8),
                                                     row(ea, 2, 8)};
  const std::vector<std::vector<uint16_t>> want_p = {row(pb, 0, 5), row(pa, 0, 5), row(pb, 0, 5),
                                                     row(pa, 2, 5)};
  for (int64_t r = 0; r < 4; ++r) {
    EXPECT_EQ(row(got->prompt_embeds.values, r, 8), want_e[r]) << r;
    EXPECT_EQ(row(got->pooled.values, r, 5), want_p[r]) << r;
  }
  // Another encoder's folder does not serve these texts; a text never stored is named.
  auto other = EmbeddingCache::open(dir.path(), "enc2");
  ASSERT_TRUE(other.is_ok());
  EXPECT_FALSE(other->contains("a red fox"));
  auto missing = cache->read({"a red fox", "a purple cow"});
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("\"a purple cow\""));
}

TEST(EmbeddingCache, ACorruptShardIsSkippedAndItsTextsAreEncodedAgain) {
  ScratchDir dir;
  const std::vector<uint16_t> e = half_values(1, 8, 5), p = half_values(1, 5, 6);
  {
    auto cache = EmbeddingCache::open(dir.path(), "enc");
    ASSERT_TRUE(cache.is_ok());
    ASSERT_TRUE(cache->write_shard("good", {"kept"}, {e.data(), {1, 2, 4}}, {p.data(), {1, 5}}).is_ok());
    ASSERT_TRUE(cache->write_shard("bad", {"lost"}, {e.data(), {1, 2, 4}}, {p.data(), {1, 5}}).is_ok());
  }
  const std::string bad = dir.path() + "/enc/shard-bad.h5";
  fs::resize_file(bad, fs::file_size(bad) / 2);
  auto cache = EmbeddingCache::open(dir.path(), "enc");
  ASSERT_TRUE(cache.is_ok()) << cache.status().to_string();
  EXPECT_TRUE(cache->contains("kept"));
  EXPECT_FALSE(cache->contains("lost"));
}

TEST(EmbeddingCache, AFolderThatCannotBeMadeIsAnIoErrorNamingIt) {
  ScratchDir dir;
  testing::write_bytes(dir.file("cache"), "a file where the cache folder should be");  // root too
  auto cache = EmbeddingCache::open(dir.file("cache"), "enc");
  ASSERT_FALSE(cache.is_ok());
  EXPECT_EQ(cache.status().code(), StatusCode::kIoError);
  EXPECT_THAT(cache.status().message(), HasSubstr(dir.file("cache") + "/enc"));
  EXPECT_THAT(cache.status().message(), HasSubstr("embedding_cache"));
}

}  // namespace
}  // namespace sdxlb
