#include "store/output_folder.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "store/durable_file.h"
#include "store/env.h"
#include "store/hdf5.h"
#include "store/index_writer.h"
#include "store/item_columns_io.h"
#include "store/segment_writer.h"

namespace sdxlb {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* kFixWritable =
    "fix: choose an output folder you can write to (the job file's output key), or fix the permissions";

// Checks, before the job writes anything, that `path` is a folder we can create files in; creates it (and
// its parents) when missing.
Status ensure_writable_folder(const std::string& path) {
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (fs::exists(status)) {
    if (!fs::is_directory(status)) {
      return failed_precondition("the output path " + path + " exists and is not a folder; " + kFixWritable);
    }
  } else {
    fs::create_directories(path, ec);
    if (ec)
      return io_error("cannot create the output folder " + path + ": " + ec.message() + "; " + kFixWritable);
  }
  // Permission bits do not tell the whole story (root, read-only mounts, ACLs, quotas): try it.
  const std::string probe = path + "/.sdxlb-write-probe-" + std::to_string(::getpid());
  Env& e = env();
  int fd = e.open(probe, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    return io_error("the output folder " + path + " is not writable (" + std::strerror(errno) + "); " +
                    kFixWritable);
  }
  bool wrote = write_fully(e, fd, "x", 1, 0);
  int write_errno = errno;
  e.close(fd);
  e.unlink(probe);
  if (!wrote) {
    return io_error("cannot write to the output folder " + path + " (" + std::strerror(write_errno) +
                    "); free some space or " + kFixWritable);
  }
  return Status::ok();
}

struct JobFile {
  std::string identity;
  json job;
};

StatusOr<JobFile> read_job_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return io_error("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("identity") || !j["identity"].is_string()) {
    return data_loss(path +
                     " is not a job file written by sdxl-batch (no \"identity\"); fix: use a new output "
                     "folder, or pass --overwrite to start this one over");
  }
  return JobFile{j["identity"].get<std::string>(), j.value("job", json::object())};
}

Status write_job_files(const std::string& json_path, const std::string& yaml_path, const JobFile& job,
                       const std::string& yaml_text) {
  json file = {{"format", "sdxlb-job"}, {"identity", job.identity}, {"job", job.job}};
  SDXLB_RETURN_IF_ERROR(write_file_atomically(json_path, file.dump(2) + "\n"));
  return write_file_atomically(yaml_path, yaml_text);
}

// Whether every complete segment in `dir` records `identity` as its job: "" when they all do (and there is
// at least one), else why not ("segment X belongs to job Y", ...). Unreadable segments are left to scan(),
// which moves them aside.
StatusOr<std::string> check_segments_belong(const std::string& dir, const std::string& identity) {
  std::error_code ec;
  int matching = 0;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!it->is_regular_file(ec) || name.rfind("seg-", 0) != 0 || name.size() < 4 ||
        name.compare(name.size() - 3, 3, ".h5") != 0)
      continue;
    auto f = h5::File::open(it->path().string(), /*writable=*/false);
    if (!f.is_ok() && f.status().code() == StatusCode::kIoError) return f.status();
    if (!f.is_ok()) continue;
    if (!f->has_attr("job_identity")) {
      return "segment " + name + " does not record its job (written by an older sdxl-batch)";
    }
    auto id = f->string_attr("job_identity");
    if (!id.is_ok()) continue;
    if (*id != identity) return "segment " + name + " belongs to another job (identity " + *id + ")";
    ++matching;
  }
  if (ec && ec != std::errc::no_such_file_or_directory)
    return io_error("cannot list " + dir + ": " + ec.message());
  if (matching == 0) return std::string("no segment records which job it belongs to");
  return std::string();
}

void flatten(const json& j, const std::string& prefix, std::map<std::string, std::string>* out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  } else if (j.is_array() && !j.empty()) {
    for (size_t i = 0; i < j.size(); ++i) flatten(j[i], prefix + "[" + std::to_string(i) + "]", out);
  } else {
    (*out)[prefix.empty() ? "(job)" : prefix] = j.dump();
  }
}

std::string shorten(const std::string& s) {
  return s.size() <= 60 ? s : s.substr(0, 57) + "...";
}

// "steps: 30 -> 40; prompts[2]: "a" -> (absent)", at most 8 keys.
std::string describe_differences(const json& before, const json& after) {
  std::map<std::string, std::string> a, b;
  flatten(before, "", &a);
  flatten(after, "", &b);
  std::vector<std::string> lines;
  auto ia = a.begin();
  auto ib = b.begin();
  while (ia != a.end() || ib != b.end()) {
    if (ib == b.end() || (ia != a.end() && ia->first < ib->first)) {
      lines.push_back(ia->first + ": " + shorten(ia->second) + " -> (absent)");
      ++ia;
    } else if (ia == a.end() || ib->first < ia->first) {
      lines.push_back(ib->first + ": (absent) -> " + shorten(ib->second));
      ++ib;
    } else {
      if (ia->second != ib->second) {
        lines.push_back(ia->first + ": " + shorten(ia->second) + " -> " + shorten(ib->second));
      }
      ++ia;
      ++ib;
    }
  }
  std::string text;
  for (size_t i = 0; i < lines.size() && i < 8; ++i) text += (i ? "; " : "") + lines[i];
  if (lines.size() > 8) text += "; and " + std::to_string(lines.size() - 8) + " more";
  return text;
}

Status remove_path(const std::string& path) {
  const std::string failed = remove_tree(path);
  if (!failed.empty()) return io_error("cannot delete " + failed);
  return Status::ok();
}

// What scan() needs from one complete segment.
struct SegmentSummary {
  std::string encoding;
  int height = 0;
  int width = 0;
  std::vector<int64_t> item_index;
  std::vector<int8_t> status;
  std::vector<std::string> error;
  std::vector<uint64_t> seed;
  std::string job_identity;  // "" for segments written before it was recorded
};

StatusOr<SegmentSummary> read_segment_summary(const std::string& path) {
  SDXLB_ASSIGN_OR_RETURN(auto f, h5::File::open(path, /*writable=*/false));
  SegmentSummary s;
  SDXLB_ASSIGN_OR_RETURN(auto format, f.string_attr("format"));
  if (format != "sdxlb-segment") return data_loss(path + " is not a segment file (format '" + format + "')");
  SDXLB_ASSIGN_OR_RETURN(s.encoding, f.string_attr("encoding"));
  SDXLB_ASSIGN_OR_RETURN(auto encoding, parse_encoding(s.encoding));
  SDXLB_ASSIGN_OR_RETURN(auto height, f.int_attr("height"));
  SDXLB_ASSIGN_OR_RETURN(auto width, f.int_attr("width"));
  s.height = static_cast<int>(height);
  s.width = static_cast<int>(width);
  // `items` is written last by publish(): a file without it was never completed.
  SDXLB_ASSIGN_OR_RETURN(auto items, f.int_attr("items"));
  SDXLB_ASSIGN_OR_RETURN(auto n, item_columns_length(f));
  if (n != items) {
    return data_loss(path + " says it holds " + std::to_string(items) + " items but its columns have " +
                     std::to_string(n));
  }
  const bool raw = encoding == ImageEncoding::kRaw;
  SDXLB_ASSIGN_OR_RETURN(auto pixels, f.open_dataset(raw ? "images" : "png"));
  SDXLB_ASSIGN_OR_RETURN(auto dims, pixels.dims());
  std::vector<hsize_t> want = {static_cast<hsize_t>(n)};
  if (raw) want = {static_cast<hsize_t>(n), static_cast<hsize_t>(height), static_cast<hsize_t>(width), 3};
  if (dims != want) return data_loss(pixels.where() + " does not match its " + std::to_string(n) + " items");
  SDXLB_RETURN_IF_ERROR(pixels.close());
  SDXLB_ASSIGN_OR_RETURN(s.item_index, h5::read_column<int64_t>(f, "item_index"));
  SDXLB_ASSIGN_OR_RETURN(s.status, h5::read_column<int8_t>(f, "status"));
  SDXLB_ASSIGN_OR_RETURN(s.error, h5::read_column<std::string>(f, "error"));
  SDXLB_ASSIGN_OR_RETURN(s.seed, h5::read_column<uint64_t>(f, "seed"));
  if (f.has_attr("job_identity")) {
    SDXLB_ASSIGN_OR_RETURN(s.job_identity, f.string_attr("job_identity"));
  }
  SDXLB_RETURN_IF_ERROR(f.close());
  return s;
}

// The first row of `s` that the job's check refuses, as a reason ("" when every row is the job's).
std::string check_rows(const SegmentSummary& s, const ItemCheck& check) {
  if (!check) return "";
  for (size_t row = 0; row < s.item_index.size(); ++row) {
    std::string why = check(s.item_index[row], s.seed[row]);
    if (!why.empty()) return "row " + std::to_string(row) + ": " + why;
  }
  return "";
}

// Moves a segment that cannot be trusted to segments/corrupt/, so that its items are rendered again and the
// file stays available for inspection.
Status move_aside(const std::string& dir, const std::string& name) {
  const std::string corrupt = dir + "/corrupt";
  std::error_code ec;
  fs::create_directories(corrupt, ec);
  if (ec) return io_error("cannot create " + corrupt + ": " + ec.message());
  std::string target = corrupt + "/" + name;
  for (int k = 1; fs::exists(target, ec); ++k) target = corrupt + "/" + name + "." + std::to_string(k);
  if (env().rename(dir + "/" + name, target) != 0) {
    return io_error("cannot move " + dir + "/" + name + " to " + target + ": " + std::strerror(errno));
  }
  return sync_dir(dir);
}

// What the folder at `path` holds for the job `identity` (canonical JSON `job`), judged without writing.
enum class Holds {
  kNothing,           // no job files and no data: a new job starts there
  kThisJob,           // job.json names this job
  kThisJobsSegments,  // no job.json, and every segment names this job
};

StatusOr<Holds> judge_folder(const std::string& path, const std::string& identity, const json& job) {
  const std::string job_json_path = path + "/job.json";
  std::error_code ec;
  if (fs::exists(job_json_path, ec)) {
    SDXLB_ASSIGN_OR_RETURN(JobFile existing, read_job_file(job_json_path));
    if (existing.identity != identity) {
      std::string diff = describe_differences(existing.job, job);
      return failed_precondition(
          "the output folder " + path + " holds another job (identity " + existing.identity + " in " +
          job_json_path + "; this job is " + identity + ")" +
          (diff.empty() ? std::string(". The job's settings are the same, so the model "
                                      "changed (its weights, configs or tiny VAE)")
                        : ". Settings that differ: " + diff) +
          ". Fix: use a new output folder or pass --overwrite (deletes its images)");
    }
    return Holds::kThisJob;
  }
  if (!fs::exists(path + "/segments", ec) && !fs::exists(path + "/index.h5", ec)) return Holds::kNothing;
  // job.json was lost (deleted by hand, or a copy without it). The segments say which job they belong
  // to: when every one of them names this job, the folder is this job's.
  SDXLB_ASSIGN_OR_RETURN(std::string refusal, check_segments_belong(path + "/segments", identity));
  if (!refusal.empty()) {
    return failed_precondition("the output folder " + path +
                               " holds segments/ or index.h5 but no job.json, " + "and " + refusal +
                               ", so it cannot be resumed safely. Fix: use a new output folder or pass "
                               "--overwrite (deletes its images)");
  }
  return Holds::kThisJobsSegments;
}

StatusOr<json> parse_canonical_job(const std::string& path, const std::string& job_canonical_json) {
  json job = job_canonical_json.empty()
                 ? json::object()
                 : json::parse(job_canonical_json, nullptr, /*allow_exceptions=*/false);
  if (job.is_discarded())
    return invalid_argument("the canonical job JSON for " + path + " is not valid JSON");
  return job;
}

}  // namespace

// ---- ScanResult ---------------------------------------------------------------------------------------

std::vector<int64_t> ScanResult::done_items() const {
  std::vector<int64_t> out;
  for (const auto& e : items) {
    if (e.ok) out.push_back(e.item);
  }
  return out;
}

bool ScanResult::is_done(int64_t item) const {
  auto it = std::lower_bound(items.begin(), items.end(), item,
                             [](const ItemEntry& e, int64_t value) { return e.item < value; });
  return it != items.end() && it->item == item && it->ok;
}

int64_t ScanResult::ok_count() const {
  return std::count_if(items.begin(), items.end(), [](const ItemEntry& e) { return e.ok; });
}

// ---- OutputFolder -------------------------------------------------------------------------------------

StatusOr<OutputFolder> OutputFolder::create_or_open(const std::string& path,
                                                    const std::string& job_identity_hex,
                                                    const std::string& job_yaml_text,
                                                    const std::string& job_canonical_json, bool overwrite) {
  if (path.empty()) return invalid_argument("the output folder path is empty; set the job's output path");
  SDXLB_RETURN_IF_ERROR(ensure_writable_folder(path));
  SDXLB_ASSIGN_OR_RETURN(const json job, parse_canonical_job(path, job_canonical_json));

  OutputFolder folder(path);
  folder.job_identity_ = job_identity_hex;
  const std::string job_json_path = path + "/job.json", job_yaml_path = path + "/job.yaml";
  std::error_code ec;
  const bool has_job = fs::exists(job_json_path, ec);
  const bool has_data = fs::exists(folder.segments_dir(), ec) || fs::exists(folder.index_path(), ec);

  if (overwrite && (has_job || has_data)) {
    spdlog::warn("--overwrite: deleting the segments, index and job files of {}", path);
    for (const std::string& p : {folder.segments_dir(), folder.index_path(), folder.index_path() + ".tmp",
                                 job_json_path, job_yaml_path}) {
      SDXLB_RETURN_IF_ERROR(remove_path(p));
    }
    SDXLB_RETURN_IF_ERROR(sync_dir(path));
  } else {
    SDXLB_ASSIGN_OR_RETURN(const Holds holds, judge_folder(path, job_identity_hex, job));
    if (holds == Holds::kThisJob) {
      folder.resumed_ = true;
      if (!fs::exists(job_yaml_path, ec))
        SDXLB_RETURN_IF_ERROR(write_file_atomically(job_yaml_path, job_yaml_text));
    } else if (holds == Holds::kThisJobsSegments) {
      spdlog::warn(
          "{} had no job.json; every segment in it belongs to this job, so it is resumed and job.json "
          "is written again",
          path);
      SDXLB_RETURN_IF_ERROR(
          write_job_files(job_json_path, job_yaml_path, JobFile{job_identity_hex, job}, job_yaml_text));
      folder.resumed_ = true;
    }
  }

  if (!folder.resumed_) {
    SDXLB_RETURN_IF_ERROR(
        write_job_files(job_json_path, job_yaml_path, JobFile{job_identity_hex, job}, job_yaml_text));
  }
  fs::create_directories(folder.segments_dir(), ec);
  if (ec)
    return io_error("cannot create " + folder.segments_dir() + ": " + ec.message() + "; " + kFixWritable);
  return folder;
}

StatusOr<OutputFolder> OutputFolder::open_read_only(const std::string& path,
                                                    const std::string& job_identity_hex,
                                                    const std::string& job_canonical_json) {
  if (path.empty()) return invalid_argument("the output folder path is empty; set the job's output path");
  SDXLB_ASSIGN_OR_RETURN(const json job, parse_canonical_job(path, job_canonical_json));
  // The folder, or for a missing one the nearest folder above it that exists, must be writable. Asked of
  // the permission bits and the mount (access(2)), as nothing may be written here.
  std::error_code ec;
  fs::path probe = fs::absolute(path, ec);
  while (!fs::exists(probe, ec) && probe.has_parent_path() && probe.parent_path() != probe)
    probe = probe.parent_path();
  const bool missing = probe != fs::absolute(path, ec);
  if (fs::exists(probe, ec) && !fs::is_directory(probe, ec)) {
    if (missing)  // what create_or_open meets when it creates the folder
      return io_error("cannot create the output folder " + path + ": " + probe.string() + " is a file; " +
                      kFixWritable);
    return failed_precondition("the output path " + path + " exists and is not a folder; " + kFixWritable);
  }
  if (::access(probe.c_str(), W_OK | X_OK) != 0) {
    const std::string what = !missing
                                 ? "the output folder " + path
                                 : "the folder " + probe.string() + ", where " + path + " would be created,";
    return io_error(what + " is not writable (" + std::strerror(errno) + "); " + kFixWritable);
  }
  OutputFolder folder(path);
  folder.job_identity_ = job_identity_hex;
  if (fs::is_directory(path, ec)) {
    SDXLB_ASSIGN_OR_RETURN(const Holds holds, judge_folder(path, job_identity_hex, job));
    folder.resumed_ = holds != Holds::kNothing;
  }
  return folder;
}

std::string segment_file_path(const std::string& output_dir, const std::string& run_id, int rank, int64_t n) {
  char suffix[48];
  std::snprintf(suffix, sizeof(suffix), "-r%05d-%06lld.h5", rank, static_cast<long long>(n));
  return output_dir + "/segments/seg-" + run_id + suffix;
}

std::string OutputFolder::segment_path(const std::string& run_id, int rank, int64_t n) const {
  return segment_file_path(path_, run_id, rank, n);
}

StatusOr<ScanResult> OutputFolder::scan() const {
  return scan_segments(/*clean=*/true);
}

StatusOr<IndexSummary> OutputFolder::write_index(int64_t total_items,
                                                 const std::map<std::string, std::string>& attributes) const {
  SDXLB_ASSIGN_OR_RETURN(auto scan, scan_segments(/*clean=*/false));
  return write_index_file(path_, scan, total_items, attributes);
}

StatusOr<ScanResult> OutputFolder::scan_segments(bool clean) const {
  ScanResult result;
  const std::string dir = segments_dir();
  std::error_code ec;
  if (!fs::exists(dir, ec)) return result;

  std::vector<std::string> names;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string name = it->path().filename().string();
    if (ends_with(name, ".tmp")) {
      if (!clean) continue;
      // In-flight work of a process that was killed (scan runs only while no writer is active).
      if (env().unlink(it->path().string()) != 0 && errno != ENOENT) {
        return io_error("cannot delete the stale temporary segment " + it->path().string() + ": " +
                        std::strerror(errno));
      }
      spdlog::info("removed the unfinished segment {} (work in flight when a run stopped)", name);
      result.removed_temp.push_back(name);
    } else if (name.rfind("seg-", 0) == 0 && ends_with(name, ".h5")) {
      names.push_back(name);
    }
  }
  if (ec) return io_error("cannot list " + dir + ": " + ec.message());
  std::sort(names.begin(), names.end());

  struct Record {
    int64_t item;
    int32_t segment;
    int64_t row;
    bool ok;
    std::string error;
  };
  std::vector<Record> records;
  for (const std::string& name : names) {
    auto summary = read_segment_summary(dir + "/" + name);
    if (summary.is_ok()) {
      // A segment whose rows contradict the job (an item index that does not match its seed) is not
      // served, whatever its checksums say: it is treated like an unreadable one.
      std::string why = check_rows(*summary, item_check_);
      if (why.empty() && !job_identity_.empty() && !summary->job_identity.empty() &&
          summary->job_identity != job_identity_) {
        why = "it was written by another job (identity " + summary->job_identity + "; this folder's job is " +
              job_identity_ + ")";
      }
      if (!why.empty()) summary = data_loss(name + " does not belong to this job: " + why);
    }
    if (!summary.is_ok() && summary.status().code() == StatusCode::kIoError) {
      // The storage could not read it (EIO): the file may be fine, so it is neither trusted nor moved.
      return io_error("cannot read the segment " + dir + "/" + name + ": " + summary.status().message() +
                      ". Fix: check the disk or file system and run again; to render its items again "
                      "instead, move the file to " +
                      dir + "/corrupt/");
    }
    if (!summary.is_ok()) {
      if (clean) {
        SDXLB_RETURN_IF_ERROR(move_aside(dir, name));
        spdlog::warn("moved the unreadable segment {} to {}/corrupt/; its items will be rendered again: {}",
                     name, dir, summary.status().message());
        result.moved_corrupt.push_back(name + ": " + summary.status().message());
      } else {
        spdlog::warn("skipping the unreadable segment {}: {}", name, summary.status().message());
      }
      continue;
    }
    SegmentSummary& s = summary.value();
    if (result.segments.empty()) {
      result.encoding = s.encoding;
      result.height = s.height;
      result.width = s.width;
    } else if (s.encoding != result.encoding || s.height != result.height || s.width != result.width) {
      return failed_precondition(
          "segments in " + dir + " disagree: " + result.segments.front() + " holds " + result.encoding + " " +
          std::to_string(result.height) + "x" + std::to_string(result.width) + " images but " + name +
          " holds " + s.encoding + " " + std::to_string(s.height) + "x" + std::to_string(s.width) +
          "; one output folder holds one job. Fix: move the odd segment away, or start "
          "over with --overwrite");
    }
    const auto segment = static_cast<int32_t>(result.segments.size());
    result.segments.push_back(name);
    result.segment_items.push_back(static_cast<int64_t>(s.item_index.size()));
    for (size_t row = 0; row < s.item_index.size(); ++row) {
      const bool ok = s.status[row] == 1;
      records.push_back(Record{s.item_index[row], segment, static_cast<int64_t>(row), ok,
                               ok ? std::string() : std::move(s.error[row])});
    }
  }

  // Records of one item are adjacent after a stable sort, in (segment name, row) order.
  std::stable_sort(records.begin(), records.end(),
                   [](const Record& a, const Record& b) { return a.item < b.item; });
  for (size_t begin = 0; begin < records.size();) {
    size_t end = begin;
    while (end < records.size() && records[end].item == records[begin].item) ++end;
    size_t keep = begin;
    std::vector<size_t> ok_records;
    for (size_t k = begin; k < end; ++k) {
      if (records[k].ok) ok_records.push_back(k);
    }
    if (!ok_records.empty()) keep = ok_records.front();
    if (ok_records.size() > 1) {
      std::string where;
      for (size_t k : ok_records) {
        where += (where.empty() ? "" : ", ") + result.segments[records[k].segment] + " row " +
                 std::to_string(records[k].row);
      }
      result.duplicates.push_back("item " + std::to_string(records[begin].item) + " is stored " +
                                  std::to_string(ok_records.size()) + " times (" + where + "); keeping " +
                                  result.segments[records[keep].segment]);
    }
    const Record& r = records[keep];
    result.items.push_back(ItemEntry{r.item, r.segment, r.row, r.ok});
    if (!r.ok) result.failed.push_back(FailedItem{r.item, r.error});
    begin = end;
  }
  for (const std::string& d : result.duplicates) spdlog::error("duplicate output in {}: {}", dir, d);
  return result;
}

}  // namespace sdxlb
