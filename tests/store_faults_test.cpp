// Fault injection into the store through its Env (store/env.h): ENOSPC at every write of a segment in turn
// (a disk that fills up and stays full, and one write that fails once), EIO on every read in turn, a rename
// that fails, and a process that dies between a segment's last write and its rename. Each case must end with
// a clear error, nothing lost (what was published is still served, and writing again completes the job) and
// nothing corrupt served (every item read back has its own pixels).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "faulty_env.h"
#include "store/dataset_reader.h"
#include "store/durable_file.h"
#include "store/env.h"
#include "store/output_folder.h"
#include "store/segment_writer.h"
#include "test_files.h"

namespace sdxlb {
namespace {

namespace fs = std::filesystem;
using ::sdxlb::testing::ScratchDir;
using ::testing::HasSubstr;

constexpr int kH = 16, kW = 24;
constexpr int kTotalItems = 8;

using ::sdxlb::testing::FaultyEnv;

std::vector<uint8_t> pixels_of(int64_t item) {
  std::vector<uint8_t> p(static_cast<size_t>(kH) * kW * 3);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(item * 53 + i * 7 + (i >> 5));
  return p;
}

ItemRecord record_of(int64_t item) {
  ItemRecord r;
  r.item_index = item;
  r.prompt_index = item;
  r.seed = 1000 + static_cast<uint64_t>(item);
  r.prompt = "prompt " + std::to_string(item);
  r.steps = 4;
  r.guidance = 5.0f;
  r.width = kW;
  r.height = kH;
  r.scheduler = "euler";
  r.model_id = "m";
  r.ok = true;
  return r;
}

const char* kJob = R"({"model":"m","steps":4})";

OutputFolder open_folder(const std::string& path) {
  auto f = OutputFolder::create_or_open(path, "abcd", "steps: 4\n", kJob, /*overwrite=*/false);
  EXPECT_TRUE(f.is_ok()) << f.status().to_string();
  return std::move(f).value();
}

SegmentOptions options_for(const std::string& path, ImageEncoding encoding) {
  SegmentOptions o;
  o.path = path;
  o.encoding = encoding;
  o.height = kH;
  o.width = kW;
  o.run_id = "run1";
  o.rank = 1;
  return o;
}

// Writes one segment of `items` and publishes it; returns the first error (OK when it was published).
Status try_write_segment(const std::string& path, const std::vector<int64_t>& items,
                         ImageEncoding encoding = ImageEncoding::kRaw) {
  auto w = SegmentWriter::create(options_for(path, encoding));
  if (!w.is_ok()) return w.status();
  for (int64_t i : items) {
    const auto px = pixels_of(i);
    Status st = w->add(record_of(i), px.data());
    if (!st.is_ok()) return st;  // the writer's destructor removes its temporary file
  }
  return w->publish();
}

std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().extension() == ".tmp") out.push_back(e.path().string());
  }
  return out;
}

// Everything the folder serves is right: index.h5 written from the segments, every OK item read back
// through DatasetReader with its own pixels, and the OK items are exactly `want`.
void expect_serves_exactly(const OutputFolder& out, const std::vector<int64_t>& want) {
  auto scan = out.scan();
  ASSERT_TRUE(scan.is_ok()) << scan.status().to_string();
  EXPECT_EQ(scan->done_items(), want);
  EXPECT_TRUE(scan->moved_corrupt.empty());
  EXPECT_TRUE(scan->duplicates.empty());
  auto index = out.write_index(kTotalItems, {});
  ASSERT_TRUE(index.is_ok()) << index.status().to_string();
  auto reader = DatasetReader::open(out.path());
  ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
  std::vector<int64_t> served;
  for (int64_t i = 0; i < kTotalItems; ++i) {
    if (!reader->ok(i)) continue;
    served.push_back(i);
    auto px = reader->image(i);
    ASSERT_TRUE(px.is_ok()) << px.status().to_string();
    EXPECT_TRUE(*px == pixels_of(i)) << "item " << i << " does not hold its own pixels";
  }
  EXPECT_EQ(served, want);
}

// How many matching writes one segment of `items` makes (a dry run through a counting Env).
int64_t count_writes(const std::vector<int64_t>& items, ImageEncoding encoding) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  FaultyEnv counter(".h5.tmp");
  ScopedEnv scoped(&counter);
  EXPECT_TRUE(try_write_segment(out.segment_path("run1", 1, 1), items, encoding).is_ok());
  return counter.writes;
}

// ENOSPC at the k-th write of a segment, for every k: the run gets a kIoError that says "No space left on
// device" and names the segment; nothing of that segment is left or served; the segment published before it
// is intact; and with space again the same items are written and served.
void enospc_at_every_write(bool disk_stays_full, ImageEncoding encoding) {
  const std::vector<int64_t> first = {0, 1, 2}, second = {3, 4, 5, 6};
  const int64_t n = count_writes(second, encoding);
  ASSERT_GE(n, static_cast<int64_t>(second.size()));
  for (int64_t k = 0; k < n; ++k) {
    SCOPED_TRACE("write " + std::to_string(k) + " of " + std::to_string(n));
    ScratchDir dir;
    OutputFolder out = open_folder(dir.file("out"));
    ASSERT_TRUE(try_write_segment(out.segment_path("run1", 1, 0), first, encoding).is_ok());
    const std::string path = out.segment_path("run1", 1, 1);
    FaultyEnv faults(".h5.tmp");
    (disk_stays_full ? faults.fail_writes_from : faults.fail_write_once) = k;
    Status st;
    {
      ScopedEnv scoped(&faults);
      st = try_write_segment(path, second, encoding);
    }
    ASSERT_FALSE(st.is_ok()) << "a failed write went unnoticed";
    EXPECT_EQ(st.code(), StatusCode::kIoError) << st.to_string();
    EXPECT_THAT(st.message(), HasSubstr("No space left on device"));
    EXPECT_THAT(st.message(), HasSubstr(path));
    EXPECT_FALSE(fs::exists(path));
    EXPECT_TRUE(temp_files(out.path()).empty());
    expect_serves_exactly(out, first);
    // Nothing lost: the items are written again once there is space.
    ASSERT_TRUE(try_write_segment(out.segment_path("run1", 1, 2), second, encoding).is_ok());
    expect_serves_exactly(out, {0, 1, 2, 3, 4, 5, 6});
  }
}

TEST(StoreFaults, EnospcAtEveryWriteOfARawSegment) {
  enospc_at_every_write(/*disk_stays_full=*/true, ImageEncoding::kRaw);
}

TEST(StoreFaults, OneFailedWriteAtEveryWriteOfARawSegment) {
  enospc_at_every_write(/*disk_stays_full=*/false, ImageEncoding::kRaw);
}

TEST(StoreFaults, EnospcAtEveryWriteOfAPngSegment) {
  enospc_at_every_write(/*disk_stays_full=*/true, ImageEncoding::kPng);
}

TEST(StoreFaults, EnospcWritingTheIndexKeepsThePreviousOne) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  ASSERT_TRUE(try_write_segment(out.segment_path("run1", 1, 0), {0, 1}).is_ok());
  ASSERT_TRUE(out.write_index(kTotalItems, {}).is_ok());
  ASSERT_TRUE(try_write_segment(out.segment_path("run1", 1, 1), {2, 3}).is_ok());
  int64_t n = 0;
  {
    FaultyEnv counter("index.h5.tmp");
    ScopedEnv scoped(&counter);
    ASSERT_TRUE(out.write_index(kTotalItems, {}).is_ok());
    n = counter.writes;
  }
  ASSERT_GT(n, 0);
  for (int64_t k = 0; k < n; ++k) {
    SCOPED_TRACE("write " + std::to_string(k));
    // The previous index (items 0..3) is in place; a failed rewrite leaves it as it was.
    FaultyEnv faults("index.h5.tmp");
    faults.fail_writes_from = k;
    StatusOr<IndexSummary> summary = internal_error("not run");
    {
      ScopedEnv scoped(&faults);
      summary = out.write_index(kTotalItems, {});
    }
    ASSERT_FALSE(summary.is_ok());
    EXPECT_EQ(summary.status().code(), StatusCode::kIoError) << summary.status().to_string();
    EXPECT_THAT(summary.status().message(), HasSubstr("No space left on device"));
    EXPECT_FALSE(fs::exists(out.index_path() + ".tmp"));
    auto reader = DatasetReader::open(out.path());
    ASSERT_TRUE(reader.is_ok()) << reader.status().to_string();
    EXPECT_EQ(reader->summary().ok, 4);
  }
}

TEST(StoreFaults, FailedSmallFileWritesKeepTheOldFile) {
  ScratchDir dir;
  const std::string path = dir.file("job.json");
  ASSERT_TRUE(write_file_atomically(path, "old contents").is_ok());
  auto read_all = [&] {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  for (int plan = 0; plan < 3; ++plan) {
    SCOPED_TRACE("plan " + std::to_string(plan));
    FaultyEnv faults("job.json");
    if (plan == 0) faults.fail_writes_from = 0;
    if (plan == 1) faults.fail_fsync = true;
    if (plan == 2) faults.fail_rename = true;
    Status st;
    {
      ScopedEnv scoped(&faults);
      st = write_file_atomically(path, std::string(100000, 'n'));
    }
    EXPECT_EQ(st.code(), StatusCode::kIoError) << st.to_string();
    EXPECT_THAT(st.message(), HasSubstr(path));
    EXPECT_EQ(read_all(), "old contents");
    EXPECT_FALSE(fs::exists(path + ".tmp"));
  }
}

// Found by bench/hostile_corpus.py: `export --contact-sheet /dev/full` (as root) wrote /dev/full.tmp and
// renamed it over the device, exiting 0. A path that holds something other than a regular file is refused.
TEST(StoreFaults, SmallFileWritesNeverReplaceDevicesFifosOrFolders) {
  ScratchDir dir;
  const std::string fifo = dir.file("fifo"), folder = dir.file("folder");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  fs::create_directories(folder);
  for (const std::string& path : {fifo, folder, std::string("/dev/null")}) {
    SCOPED_TRACE(path);
    Status st = write_file_atomically(path, "bytes");
    EXPECT_EQ(st.code(), StatusCode::kIoError) << st.to_string();
    EXPECT_THAT(st.message(), HasSubstr("is not a regular file"));
    EXPECT_FALSE(fs::exists(path + ".tmp"));
  }
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_TRUE(fs::is_directory(folder));
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
}

// EIO at the k-th read of the segments, for every k: the scan stops with a kIoError that names the segment
// and says what to do, moves nothing, and serves nothing; with a disk that reads again, everything is there.
TEST(StoreFaults, EioAtEveryReadOfAScan) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  ASSERT_TRUE(try_write_segment(out.segment_path("run1", 1, 0), {0, 1, 2}).is_ok());
  ASSERT_TRUE(try_write_segment(out.segment_path("run1", 2, 0), {3, 4}).is_ok());
  int64_t n = 0;
  {
    FaultyEnv counter("/segments/seg-");
    ScopedEnv scoped(&counter);
    ASSERT_TRUE(out.scan().is_ok());
    n = counter.reads;
  }
  ASSERT_GT(n, 2);
  for (bool persistent : {true, false}) {
    for (int64_t k = 0; k < n; ++k) {
      SCOPED_TRACE(std::string(persistent ? "failing from read " : "failing once at read ") +
                   std::to_string(k));
      FaultyEnv faults("/segments/seg-");
      (persistent ? faults.fail_reads_from : faults.fail_read_once) = k;
      StatusOr<ScanResult> scan = internal_error("not run");
      {
        ScopedEnv scoped(&faults);
        scan = out.scan();
      }
      ASSERT_FALSE(scan.is_ok()) << "a failed read went unnoticed";
      EXPECT_EQ(scan.status().code(), StatusCode::kIoError) << scan.status().to_string();
      EXPECT_THAT(scan.status().message(), HasSubstr("Input/output error"));
      EXPECT_THAT(scan.status().message(), HasSubstr("check the disk"));
      EXPECT_FALSE(fs::exists(out.segments_dir() + "/corrupt"))
          << "a segment the disk failed to read was moved";
    }
  }
  expect_serves_exactly(out, {0, 1, 2, 3, 4});
}

// EIO while reading an image for export: an error, never other pixels.
TEST(StoreFaults, EioReadingImagesIsAnErrorNotOtherPixels) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  ASSERT_TRUE(try_write_segment(out.segment_path("run1", 1, 0), {0, 1, 2, 3}).is_ok());
  ASSERT_TRUE(out.write_index(kTotalItems, {}).is_ok());
  auto reader = DatasetReader::open(out.path());
  ASSERT_TRUE(reader.is_ok());
  int64_t n = 0;
  {
    FaultyEnv counter("/segments/seg-");
    ScopedEnv scoped(&counter);
    ASSERT_TRUE(reader->image(2).is_ok());
    n = counter.reads;
  }
  ASSERT_GT(n, 0);
  for (int64_t k = 0; k < n; ++k) {
    SCOPED_TRACE("read " + std::to_string(k));
    FaultyEnv faults("/segments/seg-");
    faults.fail_read_once = k;
    StatusOr<std::vector<uint8_t>> px = internal_error("not run");
    {
      ScopedEnv scoped(&faults);
      px = reader->image(2);
    }
    ASSERT_FALSE(px.is_ok());
    EXPECT_EQ(px.status().code(), StatusCode::kIoError) << px.status().to_string();
    EXPECT_THAT(px.status().message(), HasSubstr("Input/output error"));
  }
  auto px = reader->image(2);
  ASSERT_TRUE(px.is_ok());
  EXPECT_TRUE(*px == pixels_of(2));
}

TEST(StoreFaults, AFailedRenameLeavesNoSegmentAndCanBeRetried) {
  for (bool fsync_fails : {false, true}) {
    SCOPED_TRACE(fsync_fails ? "fsync fails" : "rename fails");
    ScratchDir dir;
    OutputFolder out = open_folder(dir.file("out"));
    ASSERT_TRUE(try_write_segment(out.segment_path("run1", 1, 0), {0, 1}).is_ok());
    const std::string path = out.segment_path("run1", 1, 1);
    FaultyEnv faults(".h5.tmp");
    (fsync_fails ? faults.fail_fsync : faults.fail_rename) = true;
    Status st;
    {
      ScopedEnv scoped(&faults);
      st = try_write_segment(path, {2, 3, 4});
    }
    EXPECT_EQ(st.code(), StatusCode::kIoError) << st.to_string();
    EXPECT_THAT(st.message(), HasSubstr(path));
    EXPECT_FALSE(fs::exists(path));
    EXPECT_TRUE(temp_files(out.path()).empty());
    expect_serves_exactly(out, {0, 1});
    ASSERT_TRUE(try_write_segment(path, {2, 3, 4}).is_ok());
    expect_serves_exactly(out, {0, 1, 2, 3, 4});
  }
}

// A process killed after a segment's last write and before its rename leaves a complete temporary file.
// It is never trusted: the next scan removes it and its items are rendered again.
TEST(StoreFaults, ACrashBetweenWriteAndRenameLosesOnlyThatSegment) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  ASSERT_TRUE(try_write_segment(out.segment_path("run1", 1, 0), {0, 1}).is_ok());
  const std::string path = out.segment_path("run1", 1, 1);
  const std::string job_json = out.path() + "/job.json";
  std::string job_before;
  {
    std::ifstream in(job_json);
    std::stringstream ss;
    ss << in.rdbuf();
    job_before = ss.str();
  }
  for (const std::string& what : {std::string("segment"), std::string("job.json")}) {
    SCOPED_TRACE(what);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      FaultyEnv faults(what == "segment" ? ".h5.tmp" : "job.json.tmp");
      faults.crash_in_rename = true;
      ScopedEnv scoped(&faults);
      Status st = what == "segment" ? try_write_segment(path, {2, 3, 4})
                                    : write_file_atomically(job_json, "{\"half\": \"written\"}");
      _exit(st.is_ok() ? 0 : 3);  // not reached: the rename "crashes"
    }
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFEXITED(wstatus));
    ASSERT_EQ(WEXITSTATUS(wstatus), 86) << "the child did not reach the rename";
  }
  EXPECT_TRUE(fs::exists(path + ".tmp"));  // complete, but never renamed
  EXPECT_FALSE(fs::exists(path));
  // The folder still opens as the same job (job.json untouched), and the scan drops the temporary file.
  OutputFolder again = open_folder(out.path());
  EXPECT_TRUE(again.resumed());
  {
    std::ifstream in(job_json);
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_EQ(ss.str(), job_before);
  }
  auto scan = again.scan();
  ASSERT_TRUE(scan.is_ok()) << scan.status().to_string();
  EXPECT_EQ(scan->done_items(), (std::vector<int64_t>{0, 1}));
  ASSERT_EQ(scan->removed_temp.size(), 1u);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  ASSERT_TRUE(try_write_segment(path, {2, 3, 4}).is_ok());
  expect_serves_exactly(again, {0, 1, 2, 3, 4});
}

// The driver writes ordinary HDF5 files: h5py (the users' reader) opens a segment written through it.
TEST(StoreFaults, FilesWrittenThroughTheEnvAreOrdinaryHdf5) {
  ScratchDir dir;
  OutputFolder out = open_folder(dir.file("out"));
  const std::string path = out.segment_path("run1", 1, 0);
  ASSERT_TRUE(try_write_segment(path, {0, 1}).is_ok());
  const std::string cmd = std::string(SDXLB_PYTHON) +
                          " -c \"import h5py,sys; f=h5py.File(sys.argv[1],'r'); "
                          "assert f['images'].shape==(2," +
                          std::to_string(kH) + "," + std::to_string(kW) +
                          ",3); assert f.attrs['items']==2\" " + path;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace
}  // namespace sdxlb
