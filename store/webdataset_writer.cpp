#include "store/webdataset_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/fingerprint.h"
#include "store/durable_file.h"
#include "store/env.h"

namespace sdxlb {
namespace {

constexpr const char* kManifestName = "webdataset.json";
constexpr const char* kManifestFormat = "sdxlb-webdataset";
constexpr int kManifestVersion = 1;
constexpr const char* kTmpSuffix = ".tmp";

std::string os_reason() {
  return std::strerror(errno);
}

/// Which items the export holds, in order, and the names derived from them.
struct ExportPlan {
  std::vector<int64_t> items;
  int key_digits = 8;
  int64_t shard_size = 1;
  int64_t shards() const { return (static_cast<int64_t>(items.size()) + shard_size - 1) / shard_size; }
  int64_t first(int64_t shard) const { return shard * shard_size; }
  int64_t end(int64_t shard) const {
    return std::min<int64_t>(static_cast<int64_t>(items.size()), first(shard) + shard_size);
  }
  std::string key(int64_t item) const {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%0*lld", key_digits, static_cast<long long>(item));
    return buf;
  }
  /// Identifies the item list, so that a rerun against a changed dataset (or another --limit) is noticed.
  std::string fingerprint(int64_t total_items) const {
    Fingerprint fp;
    fp.add(std::to_string(total_items));
    for (int64_t i : items) fp.add(std::to_string(i));
    return fp.hex();
  }
  std::vector<std::string> member_names(int64_t shard) const {
    std::vector<std::string> names;
    for (int64_t j = first(shard); j < end(shard); ++j) {
      const std::string k = key(items[static_cast<size_t>(j)]);
      names.push_back(k + ".png");
      names.push_back(k + ".json");
    }
    return names;
  }
};

/// The float's shortest decimal form that reads back as the same float, as a double: 7.3f is written as
/// 7.3 rather than 7.300000190734863.
double shortest_decimal(float v) {
  char buf[32];
  for (int precision = 6; precision <= 9; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, static_cast<double>(v));
    if (std::strtof(buf, nullptr) == v) break;
  }
  return std::strtod(buf, nullptr);
}

/// One shard being written under its `.tmp` name through the Env; publish() makes it final. Destroying an
/// unpublished shard removes the temporary file.
class TarShard {
 public:
  static StatusOr<std::unique_ptr<TarShard>> create(const std::string& final_path) {
    std::unique_ptr<TarShard> s(new TarShard(final_path));
    s->fd_ = env().open(s->tmp_, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (s->fd_ < 0)
      return io_error("cannot create " + s->tmp_ + ": " + os_reason() +
                      "; choose a writable export folder (--to) or fix its permissions");
    s->archive_ = archive_write_new();
    if (!s->archive_ || archive_write_set_format_pax_restricted(s->archive_) != ARCHIVE_OK ||
        archive_write_open2(s->archive_, s.get(), nullptr, &TarShard::write_cb, nullptr, nullptr) !=
            ARCHIVE_OK)
      return s->archive_error("cannot start");
    return s;
  }

  ~TarShard() {
    if (archive_) archive_write_free(archive_);  // also closes; errors no longer matter
    if (fd_ >= 0) env().close(fd_);
    if (!published_) env().unlink(tmp_);
  }
  TarShard(const TarShard&) = delete;
  TarShard& operator=(const TarShard&) = delete;

  /// Appends a regular file `name` with `size` bytes.
  Status add(const std::string& name, const void* data, size_t size) {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(entry.get(), name.c_str());
    archive_entry_set_size(entry.get(), static_cast<la_int64_t>(size));
    archive_entry_set_filetype(entry.get(), AE_IFREG);
    archive_entry_set_perm(entry.get(), 0644);
    archive_entry_set_mtime(entry.get(), 0, 0);  // byte-reproducible shards
    if (archive_write_header(archive_, entry.get()) != ARCHIVE_OK)
      return archive_error("cannot add " + name + " to");
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
      const la_ssize_t n = archive_write_data(archive_, p, size);
      if (n <= 0) return archive_error("cannot add " + name + " to");
      p += n;
      size -= static_cast<size_t>(n);
    }
    return Status::ok();
  }

  /// Ends the archive, fsyncs and renames it to its final name (then fsyncs the folder).
  Status publish() {
    if (archive_write_close(archive_) != ARCHIVE_OK) return archive_error("cannot finish");
    archive_write_free(archive_);
    archive_ = nullptr;
    Env& e = env();
    if (e.fsync(fd_) != 0) return io_error("cannot flush " + tmp_ + ": " + os_reason());
    const int rc = e.close(fd_);
    fd_ = -1;
    if (rc != 0) return io_error("cannot close " + tmp_ + ": " + os_reason());
    if (e.rename(tmp_, final_) != 0)
      return io_error("cannot rename " + tmp_ + " to " + final_ + ": " + os_reason());
    published_ = true;
    return sync_dir(parent_dir(final_));
  }

 private:
  explicit TarShard(std::string final_path) : final_(std::move(final_path)), tmp_(final_ + kTmpSuffix) {}

  static la_ssize_t write_cb(struct archive* a, void* self_ptr, const void* buf, size_t n) {
    auto* self = static_cast<TarShard*>(self_ptr);
    if (!write_fully(env(), self->fd_, buf, n, self->offset_)) {
      self->write_errno_ = errno;
      archive_set_error(a, errno, "%s", std::strerror(errno));
      return -1;
    }
    self->offset_ += static_cast<off_t>(n);
    return static_cast<la_ssize_t>(n);
  }

  Status archive_error(const std::string& what) const {
    const char* msg = archive_ ? archive_error_string(archive_) : nullptr;
    const std::string reason = msg ? msg : "libarchive failed";
    if (write_errno_ != 0)
      return io_error(what + " " + tmp_ + ": " + reason +
                      " (free space on the export folder's disk and rerun)");
    return io_error(what + " " + tmp_ + ": " + reason);
  }

  std::string final_, tmp_;
  int fd_ = -1;
  off_t offset_ = 0;
  int write_errno_ = 0;
  struct archive* archive_ = nullptr;
  bool published_ = false;
};

bool is_shard_file(const std::string& name, bool tmp) {
  const std::string tail = tmp ? std::string(".tar") + kTmpSuffix : std::string(".tar");
  return name.rfind("shard-", 0) == 0 && name.size() > tail.size() + 6 &&
         name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
}

/// Names in `dir` (not . and ..). kIoError when it cannot be listed.
StatusOr<std::vector<std::string>> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return io_error("cannot list " + dir + ": " + os_reason());
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

StatusOr<std::string> read_small_file(const std::string& path) {
  Env& e = env();
  const int fd = e.open(path, O_RDONLY, 0);
  if (fd < 0) return io_error("cannot open " + path + ": " + os_reason());
  std::string text;
  char buf[65536];
  for (off_t off = 0;;) {
    const ssize_t n = e.pread(fd, buf, sizeof buf, off);
    if (n < 0) {
      Status st = io_error("cannot read " + path + ": " + os_reason());
      e.close(fd);
      return st;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    off += n;
  }
  e.close(fd);
  return text;
}

nlohmann::ordered_json manifest_of(const ExportPlan& plan, const DatasetSummary& summary) {
  nlohmann::ordered_json m;
  m["format"] = kManifestFormat;
  m["version"] = kManifestVersion;
  m["shard_size"] = plan.shard_size;
  m["samples"] = plan.items.size();
  m["shards"] = plan.shards();
  m["key_digits"] = plan.key_digits;
  m["dataset_items"] = summary.total_items;
  m["items_fingerprint"] = plan.fingerprint(summary.total_items);
  return m;
}

/// Checks an existing manifest against this export's; writes it when there is none.
Status check_or_write_manifest(const std::string& out_dir, const ExportPlan& plan,
                               const DatasetSummary& summary, const std::vector<std::string>& names) {
  const std::string path = out_dir + "/" + kManifestName;
  const nlohmann::ordered_json want = manifest_of(plan, summary);
  const bool have = std::find(names.begin(), names.end(), kManifestName) != names.end();
  if (!have) {
    for (const auto& n : names)
      if (is_shard_file(n, /*tmp=*/false))
        return failed_precondition(out_dir + " holds " + n + " but no " + kManifestName +
                                   ": its shards are not from an sdxl-batch export that this one can resume; "
                                   "export to a new folder, or delete its shard-*.tar files");
    return write_file_atomically(path, want.dump(2) + "\n");
  }
  SDXLB_ASSIGN_OR_RETURN(auto text, read_small_file(path));
  const auto got = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  const auto field = [&](const char* key) -> nlohmann::ordered_json {
    return got.is_object() && got.contains(key) ? got[key] : nlohmann::ordered_json();
  };
  if (got.is_discarded() || field("format") != kManifestFormat || field("version") != kManifestVersion)
    return failed_precondition(path + " is not a manifest of this tool's WebDataset export (version " +
                               std::to_string(kManifestVersion) +
                               "); export to a new folder, or delete the folder's shard-*.tar and " +
                               kManifestName);
  if (field("shard_size") != plan.shard_size) {
    return failed_precondition(out_dir + " holds a WebDataset export with " + field("shard_size").dump() +
                               " samples per shard (" + path + "), but this export asks for --shard-size " +
                               std::to_string(plan.shard_size) + ". Fix: rerun with --shard-size " +
                               field("shard_size").dump() +
                               " to finish it, or export to a new folder (or delete its shard-*.tar and " +
                               kManifestName + " to start over)");
  }
  if (field("samples") != want["samples"] || field("items_fingerprint") != want["items_fingerprint"] ||
      field("key_digits") != want["key_digits"]) {
    return failed_precondition(
        out_dir + " holds an export of other items (" + field("samples").dump() + " samples, " + path +
        "; this export has " + std::to_string(plan.items.size()) +
        "): the dataset changed since it started (a resumed run stored more items) or --limit differs. Fix: "
        "export to a new folder, or delete its shard-*.tar and " +
        kManifestName + " to start over");
  }
  return Status::ok();
}

}  // namespace

std::string webdataset_shard_name(int64_t n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "shard-%06lld.tar", static_cast<long long>(n));
  return buf;
}

StatusOr<std::string> webdataset_sample_json(const ItemRecord& item) {
  // The scheduler and approximations columns hold compact JSON objects; the sample embeds them as objects.
  const auto object_column = [&](const char* name,
                                 const std::string& text) -> StatusOr<nlohmann::ordered_json> {
    auto v = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (v.is_discarded() || !v.is_object())
      return data_loss("item " + std::to_string(item.item_index) + ": its " + name +
                       " column is not a JSON object (\"" + text.substr(0, 80) +
                       "\"); the index is corrupt (rerun the job to rewrite it)");
    return v;
  };
  SDXLB_ASSIGN_OR_RETURN(auto scheduler, object_column("scheduler", item.scheduler));
  SDXLB_ASSIGN_OR_RETURN(auto approximations, object_column("approximations", item.approximations));
  nlohmann::ordered_json j;
  j["item_index"] = item.item_index;
  j["prompt_index"] = item.prompt_index;
  j["image_k"] = item.image_k;
  j["seed"] = item.seed;
  j["prompt"] = item.prompt;
  j["negative_prompt"] = item.negative_prompt;
  j["steps"] = item.steps;
  j["guidance"] = shortest_decimal(item.guidance);
  j["width"] = item.width;
  j["height"] = item.height;
  j["scheduler"] = scheduler;
  j["model_id"] = item.model_id;
  j["approximations"] = approximations;
  // Prompts are user text: invalid UTF-8 is replaced (U+FFFD) rather than failing the export.
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

StatusOr<std::vector<std::string>> read_tar_member_names(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return not_found("cannot open " + path + ": " + os_reason());
  std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  const auto damaged = [&](const std::string& what) {
    const char* msg = archive_error_string(a.get());
    return data_loss(path + ": " + what + " (" + (msg ? msg : "libarchive failed") + ")");
  };
  if (archive_read_open_filename(a.get(), path.c_str(), 65536) != ARCHIVE_OK)
    return damaged("not a tar file");
  std::vector<std::string> names;
  for (;;) {
    archive_entry* entry = nullptr;
    const int rc = archive_read_next_header(a.get(), &entry);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK)
      return damaged("unreadable member header after " + std::to_string(names.size()) + " members");
    names.emplace_back(archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "");
    if (archive_read_data_skip(a.get()) != ARCHIVE_OK) return damaged("truncated member " + names.back());
  }
  return names;
}

StatusOr<WebDatasetReport> export_webdataset(const DatasetReader& dataset, const std::string& out_dir,
                                             const WebDatasetOptions& options,
                                             const WebDatasetProgress& progress) {
  if (options.shard_size < 1)
    return invalid_argument("--shard-size " + std::to_string(options.shard_size) +
                            ": a shard holds at least 1 sample (the default is 1000)");
  if (options.limit < 0) return invalid_argument("--limit " + std::to_string(options.limit) + " is negative");
  const DatasetSummary& summary = dataset.summary();

  WebDatasetReport report;
  ExportPlan plan;
  plan.shard_size = options.shard_size;
  int digits = 1;
  for (int64_t n = std::max<int64_t>(summary.total_items - 1, 0); n >= 10; n /= 10) ++digits;
  plan.key_digits = std::max(8, digits);  // keys sort in item order as text
  for (int64_t i = 0; i < summary.total_items; ++i) {
    if (dataset.ok(i)) {
      if (options.limit == 0 || static_cast<int64_t>(plan.items.size()) < options.limit)
        plan.items.push_back(i);
    }
  }
  report.skipped_failed = summary.failed;
  report.skipped_missing = summary.missing;
  report.samples = static_cast<int64_t>(plan.items.size());
  report.shards = plan.shards();

  struct stat out_stat {};
  if (::stat(out_dir.c_str(), &out_stat) == 0 && !S_ISDIR(out_stat.st_mode))
    return io_error("cannot create the export folder " + out_dir +
                    ": it exists and is not a folder; choose a folder with --to");
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec)
    return io_error("cannot create the export folder " + out_dir + ": " + ec.message() +
                    "; choose a writable folder with --to");
  SDXLB_ASSIGN_OR_RETURN(auto names, list_dir(out_dir));
  SDXLB_RETURN_IF_ERROR(check_or_write_manifest(out_dir, plan, summary, names));

  // What a killed export left half-written is never trusted: its shards are written again.
  for (const auto& n : names) {
    if (is_shard_file(n, /*tmp=*/true) || n == std::string(kManifestName) + kTmpSuffix) {
      const std::string p = out_dir + "/" + n;
      if (env().unlink(p) != 0 && errno != ENOENT)
        return io_error("cannot remove the unfinished " + p + ": " + os_reason() +
                        "; remove it by hand and rerun");
    }
  }

  // A final name means complete (rename after fsync); reading the member list back also catches a shard
  // from another export or one damaged since.
  std::vector<bool> done(static_cast<size_t>(plan.shards()), false);
  int64_t to_do = 0;
  for (int64_t k = 0; k < plan.shards(); ++k) {
    const std::string path = out_dir + "/" + webdataset_shard_name(k);
    const bool exists = std::binary_search(names.begin(), names.end(), webdataset_shard_name(k));
    if (exists) {
      auto members = read_tar_member_names(path);
      if (!members.is_ok())
        return Status(members.status().code(),
                      members.status().message() + "; delete it and rerun the export to write it again");
      const auto want = plan.member_names(k);
      if (*members != want) {
        const std::string first_want = want.empty() ? "" : want.front();
        const std::string first_got = members->empty() ? "nothing" : members->front();
        return data_loss(path + " does not hold the samples this export puts there (" +
                         std::to_string(want.size()) + " members from " + first_want + " expected, found " +
                         std::to_string(members->size()) + " from " + first_got +
                         "); it is damaged or from another export: delete it and rerun the export");
      }
      done[static_cast<size_t>(k)] = true;
      ++report.shards_kept;
    } else {
      to_do += plan.end(k) - plan.first(k);
    }
  }

  int64_t added = 0;
  for (int64_t k = 0; k < plan.shards(); ++k) {
    if (done[static_cast<size_t>(k)]) continue;
    const int64_t first = plan.first(k), end = plan.end(k);
    const int64_t first_item = plan.items[static_cast<size_t>(first)];
    const int64_t last_item = plan.items[static_cast<size_t>(end - 1)];
    SDXLB_ASSIGN_OR_RETURN(auto records, dataset.records(first_item, last_item - first_item + 1));
    SDXLB_ASSIGN_OR_RETURN(auto shard, TarShard::create(out_dir + "/" + webdataset_shard_name(k)));
    for (int64_t j = first; j < end; ++j) {
      const int64_t item = plan.items[static_cast<size_t>(j)];
      const size_t row = static_cast<size_t>(item - first_item);
      if (row >= records.size() || records.item_index[row] != item)
        return data_loss("index.h5 of the dataset: row " + std::to_string(item) + " holds item " +
                         (row < records.size() ? std::to_string(records.item_index[row]) : "none") +
                         "; the index is corrupt (rerun the job to rewrite it)");
      SDXLB_ASSIGN_OR_RETURN(auto json, webdataset_sample_json(records.row(row)));
      auto png = dataset.png(item, options.png_compression_level);
      if (!png.is_ok()) return png.status().with_context("item " + std::to_string(item));
      const std::string key = plan.key(item);
      SDXLB_RETURN_IF_ERROR(shard->add(key + ".png", png->data(), png->size()));
      SDXLB_RETURN_IF_ERROR(shard->add(key + ".json", json.data(), json.size()));
      ++added;
      if (progress) progress(added, to_do);
    }
    SDXLB_RETURN_IF_ERROR(shard->publish());
    ++report.shards_written;
    report.samples_written += end - first;
  }
  return report;
}

}  // namespace sdxlb
