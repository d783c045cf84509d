#include "pipeline/io/safetensors.h"

#include <cstring>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "test_files.h"

namespace sdxlb {
namespace {

using testing::safetensors_bytes;
using testing::ScratchDir;
using testing::write_bytes;

std::string f32_bytes(std::vector<float> v) {
  return std::string(reinterpret_cast<char*>(v.data()), v.size() * 4);
}

Status open_status(const std::string& path) {
  return SafetensorsFile::open(path).status();
}

// Expects a kDataLoss error whose message contains every fragment.
void expect_corrupt(const Status& s, std::vector<std::string> fragments) {
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
  for (const auto& f : fragments) EXPECT_NE(s.message().find(f), std::string::npos) << s.message();
}

TEST(Safetensors, ReadsF32F16BF16ZeroCopy) {
  ScratchDir dir;
  std::string data = f32_bytes({1.f, 2.f, 3.f, 4.f});
  uint16_t h[2] = {0x3c00, 0xc000};  // 1.0, -2.0 in fp16
  uint16_t b[2] = {0x3f80, 0x4040};  // 1.0, 3.0 in bf16
  data += std::string(reinterpret_cast<char*>(h), 4) + std::string(reinterpret_cast<char*>(b), 4);
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("h":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]}})";
  // Pad the header with spaces to a multiple of 8 bytes, as writers do, so the data is aligned.
  header += std::string((8 - header.size() % 8) % 8, ' ');
  write_bytes(dir.file("x.safetensors"), safetensors_bytes(header, data));
  auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  ASSERT_EQ((*f)->tensors().size(), 3u);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  auto a = (*f)->tensor(*(*f)->find("a"));
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a->sizes(), at::IntArrayRef({2, 2}));
  EXPECT_FLOAT_EQ(a->index({1, 1}).item<float>(), 4.f);
  auto hh = (*f)->tensor(*(*f)->find("h"));
  EXPECT_EQ(hh->scalar_type(), at::kHalf);
  EXPECT_FLOAT_EQ(hh->to(at::kFloat)[1].item<float>(), -2.f);
  auto bb = (*f)->tensor(*(*f)->find("b"));
  EXPECT_EQ(bb->scalar_type(), at::kBFloat16);
  EXPECT_FLOAT_EQ(bb->to(at::kFloat)[1].item<float>(), 3.f);
  // Zero-copy: the tensor points into the mapping; writing to it must not change the file (copy-on-write).
  a->fill_(7.f);
  auto again = SafetensorsFile::open(dir.file("x.safetensors"));
  EXPECT_FLOAT_EQ((*again)->tensor(*(*again)->find("a"))->index({0, 0}).item<float>(), 1.f);
  // The tensor outlives the file object.
  at::Tensor keep = *(*again)->tensor(*(*again)->find("a"));
  again = Status(StatusCode::kInternal, "dropped");
  EXPECT_FLOAT_EQ(keep.sum().item<float>(), 10.f);
}

// A file's bytes rebuilt elsewhere (received from another rank, issue 18): the same tensors, header and
// metadata; bad bytes get open()'s errors, and fill's error is returned.
TEST(Safetensors, FromBufferIsTheSameFile) {
  ScratchDir dir;
  const std::string data = f32_bytes({1.f, 2.f, 3.f, 4.f});
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  header += std::string((8 - header.size() % 8) % 8, ' ');
  write_bytes(dir.file("x.safetensors"), safetensors_bytes(header, data));
  auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  const std::string_view bytes = (*f)->file_bytes();
  auto copy = SafetensorsFile::from_buffer("received x.safetensors", bytes.size(), [&](void* out) {
    std::memcpy(out, bytes.data(), bytes.size());
    return Status::ok();
  });
  ASSERT_TRUE(copy.is_ok()) << copy.status().to_string();
  EXPECT_EQ((*copy)->path(), "received x.safetensors");
  EXPECT_EQ((*copy)->header_json(), (*f)->header_json());
  EXPECT_EQ((*copy)->metadata().at("format"), "pt");
  EXPECT_TRUE(at::equal(*(*copy)->tensor(*(*copy)->find("a")), *(*f)->tensor(*(*f)->find("a"))));
  auto corrupt = SafetensorsFile::from_buffer("received y", bytes.size(), [&](void* out) {
    std::memset(out, 0xff, bytes.size());
    return Status::ok();
  });
  ASSERT_FALSE(corrupt.is_ok());
  EXPECT_EQ(corrupt.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(corrupt.status().message().find("received y"), std::string::npos);
  auto failed = SafetensorsFile::from_buffer("received z", bytes.size(),
                                             [](void*) { return io_error("the sender went away"); });
  ASSERT_FALSE(failed.is_ok());
  EXPECT_NE(failed.status().message().find("the sender went away"), std::string::npos);
}

TEST(Safetensors, MissingFile) {
  ScratchDir dir;
  Status s = open_status(dir.file("nope.safetensors"));
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("nope.safetensors"), std::string::npos);
}

TEST(Safetensors, TruncatedBelowHeaderLength) {
  ScratchDir dir;
  write_bytes(dir.file("t.safetensors"), std::string("\x10\x00\x00", 3));
  expect_corrupt(open_status(dir.file("t.safetensors")), {"t.safetensors", "truncated"});
}

TEST(Safetensors, HeaderLengthLargerThanFile) {
  ScratchDir dir;
  write_bytes(dir.file("h.safetensors"), safetensors_bytes("{}", "", 1000));
  expect_corrupt(open_status(dir.file("h.safetensors")), {"header length 1000", "larger than the file"});
}

TEST(Safetensors, HugeHeaderLengthDoesNotOverflow) {
  ScratchDir dir;
  write_bytes(dir.file("h.safetensors"), safetensors_bytes("{}", "", UINT64_MAX - 3));
  expect_corrupt(open_status(dir.file("h.safetensors")), {"larger than the file"});
}

TEST(Safetensors, BadJson) {
  ScratchDir dir;
  write_bytes(dir.file("j.safetensors"), safetensors_bytes(R"({"a": {"dtype": "F32",)", ""));
  expect_corrupt(open_status(dir.file("j.safetensors")), {"not valid JSON"});
}

TEST(Safetensors, UnknownDtype) {
  ScratchDir dir;
  write_bytes(dir.file("d.safetensors"),
              safetensors_bytes(R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1})));
  expect_corrupt(open_status(dir.file("d.safetensors")), {"tensor \"w\"", "unknown dtype \"F12\""});
}

TEST(Safetensors, RangeOutOfBounds) {
  ScratchDir dir;
  write_bytes(
      dir.file("r.safetensors"),
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32_bytes({1, 2})));
  expect_corrupt(open_status(dir.file("r.safetensors")), {"tensor \"w\"", "outside the data area"});
}

TEST(Safetensors, ShapeDoesNotMatchRange) {
  ScratchDir dir;
  write_bytes(
      dir.file("s.safetensors"),
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32_bytes({1, 2})));
  expect_corrupt(open_status(dir.file("s.safetensors")), {"tensor \"w\"", "[3]", "does not match"});
}

TEST(Safetensors, OverlappingRanges) {
  ScratchDir dir;
  write_bytes(dir.file("o.safetensors"),
              safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                f32_bytes({1, 2, 3})));
  expect_corrupt(open_status(dir.file("o.safetensors")), {"\"a\"", "\"b\"", "overlapping"});
}

TEST(Safetensors, HoleAndTrailingBytes) {
  ScratchDir dir;
  write_bytes(
      dir.file("g.safetensors"),
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32_bytes({1, 2})));
  expect_corrupt(open_status(dir.file("g.safetensors")), {"belong to no tensor"});
  write_bytes(
      dir.file("t.safetensors"),
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1, 2})));
  expect_corrupt(open_status(dir.file("t.safetensors")), {"trailing bytes"});
}

TEST(Safetensors, ReversedOffsetsAndBadShape) {
  ScratchDir dir;
  write_bytes(dir.file("a.safetensors"),
              safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", f32_bytes({1})));
  expect_corrupt(open_status(dir.file("a.safetensors")), {"reversed"});
  write_bytes(
      dir.file("b.safetensors"),
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", f32_bytes({1})));
  expect_corrupt(open_status(dir.file("b.safetensors")), {"non-negative"});
  write_bytes(
      dir.file("c.safetensors"),
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})",
                        f32_bytes({1})));
  expect_corrupt(open_status(dir.file("c.safetensors")), {"overflows"});
  write_bytes(dir.file("d.safetensors"), safetensors_bytes(R"([1,2])", ""));
  expect_corrupt(open_status(dir.file("d.safetensors")), {"not a JSON object"});
}

TEST(Safetensors, TruncatedDataOfRealLayout) {
  // A valid file cut short in its data area (an interrupted download).
  ScratchDir dir;
  std::string full = safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                                       f32_bytes({1, 2, 3, 4}));
  write_bytes(dir.file("cut.safetensors"), full.substr(0, full.size() - 5));
  expect_corrupt(open_status(dir.file("cut.safetensors")), {"cut.safetensors", "tensor \"w\""});
}

TEST(Safetensors, MisalignedDataIsCopied) {
  ScratchDir dir;
  // Header length 57 makes the data start at an odd address relative to the page-aligned mapping.
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header += std::string(57 - header.size(), ' ');
  write_bytes(dir.file("m.safetensors"), safetensors_bytes(header, f32_bytes({5, 6})));
  auto f = SafetensorsFile::open(dir.file("m.safetensors"));
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  auto t = (*f)->tensor(*(*f)->find("w"));
  ASSERT_TRUE(t.is_ok());
  EXPECT_FLOAT_EQ((*t)[1].item<float>(), 6.f);
}

}  // namespace
}  // namespace sdxlb
