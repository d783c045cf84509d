// What the store's checksums cost (issue 12): writes ITEMS images of SIZE x SIZE into segments of PER
// items (as workers do: add each image, publish with fsync and rename), then measures the resume scan
// (OutputFolder::scan, what a restarted job does first), index.h5, and reading every image back
// (DatasetReader::image, which verifies the checksums) - once with Fletcher32 checksums (the product's
// setting) and once without. Reads are timed with a warm and, where /proc/sys/vm/drop_caches is writable
// (root), a cold page cache. Prints one JSON object.
//
//   store_bench DIR [ITEMS=256] [SIZE=1024] [PER=32]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/dataset_reader.h"
#include "store/output_folder.h"
#include "store/segment_writer.h"

namespace {

using Clock = std::chrono::steady_clock;
using sdxlb::Status;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

[[noreturn]] void die(const Status& st, const char* what) {
  std::fprintf(stderr, "store_bench: %s: %s\n", what, st.to_string().c_str());
  std::exit(1);
}

bool drop_caches() {
  std::fflush(nullptr);
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  if (!f) return false;
  f << "3\n";
  return static_cast<bool>(f.flush());
}

nlohmann::json run(const std::string& dir, bool checksums, int items, int size, int per) {
  std::filesystem::remove_all(dir);
  auto folder = sdxlb::OutputFolder::create_or_open(dir, "bench", "bench: true\n", "{}", false);
  if (!folder.is_ok()) die(folder.status(), "output folder");
  // Image-like bytes (a gradient with noise): Fletcher32 does the same work on any bytes.
  std::vector<uint8_t> px(static_cast<size_t>(size) * size * 3);
  uint32_t x = 12345;
  for (size_t i = 0; i < px.size(); ++i) {
    x = x * 1664525u + 1013904223u;
    px[i] = static_cast<uint8_t>((i / 3) % 251 + (x >> 28));
  }
  sdxlb::ItemRecord r;
  r.height = r.width = size;
  r.steps = 30;
  r.guidance = 5;
  r.scheduler = "euler";
  r.ok = true;

  double add_s = 0, publish_s = 0;
  for (int seg = 0; seg * per < items; ++seg) {
    sdxlb::SegmentOptions o;
    o.path = folder->segment_path("bench", 1, seg);
    o.height = o.width = size;
    o.run_id = "bench";
    o.checksums = checksums;
    auto w = sdxlb::SegmentWriter::create(o);
    if (!w.is_ok()) die(w.status(), "segment");
    for (int i = seg * per; i < std::min(items, (seg + 1) * per); ++i) {
      r.item_index = i;
      r.prompt = "benchmark prompt number " + std::to_string(i);
      const auto t = Clock::now();
      Status st = w->add(r, px.data());
      add_s += since(t);
      if (!st.is_ok()) die(st, "add");
    }
    const auto t = Clock::now();
    Status st = w->publish();
    publish_s += since(t);
    if (!st.is_ok()) die(st, "publish");
  }

  nlohmann::json out;
  out["checksums"] = checksums;
  out["write_ms_per_image"] = 1e3 * (add_s + publish_s) / items;
  out["add_ms_per_image"] = 1e3 * add_s / items;
  out["publish_ms_per_segment"] = 1e3 * publish_s / ((items + per - 1) / per);
  for (const bool cold : {false, true}) {
    if (cold && !drop_caches()) {
      out["cold"] = "not measured (cannot write /proc/sys/vm/drop_caches)";
      break;
    }
    const std::string key = cold ? "cold" : "warm";
    auto t = Clock::now();
    auto scan = folder->scan();
    const double scan_s = since(t);
    if (!scan.is_ok()) die(scan.status(), "scan");
    t = Clock::now();
    auto index = folder->write_index(items, {});
    const double index_s = since(t);
    if (!index.is_ok()) die(index.status(), "index");
    if (cold) drop_caches();
    auto reader = sdxlb::DatasetReader::open(dir);
    if (!reader.is_ok()) die(reader.status(), "reader");
    t = Clock::now();
    for (int i = 0; i < items; ++i) {
      auto img = reader->image(i);
      if (!img.is_ok()) die(img.status(), "read");
    }
    const double read_s = since(t);
    out[key] = {{"scan_ms", 1e3 * scan_s},
                {"scan_items", scan->ok_count()},
                {"index_ms", 1e3 * index_s},
                {"read_ms_per_image", 1e3 * read_s / items}};
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: store_bench DIR [ITEMS=256] [SIZE=1024] [PER=32]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int items = argc > 2 ? std::atoi(argv[2]) : 256;
  const int size = argc > 3 ? std::atoi(argv[3]) : 1024;
  const int per = argc > 4 ? std::atoi(argv[4]) : 32;
  if (items <= 0 || size <= 0 || size % 8 != 0 || per <= 0) {
    std::fprintf(stderr, "store_bench: ITEMS and PER must be positive, SIZE a positive multiple of 8\n");
    return 2;
  }
  nlohmann::json result;
  result["items"] = items;
  result["size"] = size;
  result["per_segment"] = per;
  result["image_mb"] = size * size * 3 / 1e6;
  // Alternate the order so that neither mode always runs on a warmer machine.
  result["with_checksums"] = run(dir + "/with", true, items, size, per);
  result["without_checksums"] = run(dir + "/without", false, items, size, per);
  result["with_checksums_again"] = run(dir + "/with", true, items, size, per);
  std::filesystem::remove_all(dir);
  std::printf("%s\n", result.dump(2).c_str());
  return 0;
}
