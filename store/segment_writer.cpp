#include "store/segment_writer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "store/durable_file.h"
#include "store/env.h"
#include "store/hdf5.h"
#include "store/item_columns_io.h"
#include "store/png.h"

namespace sdxlb {

/// Format version of segment files; bump on incompatible layout changes.
constexpr int64_t kSegmentFormatVersion = 1;

const char* encoding_name(ImageEncoding encoding) {
  return encoding == ImageEncoding::kPng ? "png" : "raw";
}

StatusOr<ImageEncoding> parse_encoding(const std::string& name) {
  if (name == "raw") return ImageEncoding::kRaw;
  if (name == "png") return ImageEncoding::kPng;
  return invalid_argument("unknown image encoding '" + name + "'; use \"raw\" or \"png\"");
}

struct SegmentWriter::State {
  SegmentOptions options;
  std::string temp_path;
  h5::File file;
  h5::Dataset pixels;  // `images` (raw) or `png`
  ItemColumns columns;
  std::vector<uint8_t> zeros;  // one black image, for failed items (raw)
  Status broken;               // the first write error; the file is then unusable
  int64_t count = 0;           // items added
  bool published = false;
  bool aborted = false;
};

SegmentWriter::SegmentWriter(std::unique_ptr<State> state) : s_(std::move(state)) {}
SegmentWriter::SegmentWriter(SegmentWriter&&) noexcept = default;
SegmentWriter& SegmentWriter::operator=(SegmentWriter&& other) noexcept {
  if (this != &other) {
    abort();
    s_ = std::move(other.s_);
  }
  return *this;
}
SegmentWriter::~SegmentWriter() {
  abort();
}

StatusOr<SegmentWriter> SegmentWriter::create(const SegmentOptions& options) {
  if (options.height <= 0 || options.width <= 0) {
    return invalid_argument("segment " + options.path + ": image size must be positive, got " +
                            std::to_string(options.height) + "x" + std::to_string(options.width));
  }
  if (options.path.size() < 4 || options.path.compare(options.path.size() - 3, 3, ".h5") != 0) {
    return invalid_argument("segment path must end in .h5: " + options.path);
  }
  if (options.png_compression_level < 0 || options.png_compression_level > 9) {
    return invalid_argument("PNG compression level must be 0..9, got " +
                            std::to_string(options.png_compression_level));
  }
  struct stat st {};
  if (::stat(options.path.c_str(), &st) == 0) {
    return failed_precondition("segment " + options.path +
                               " already exists; published segments are never replaced (use a new run id or "
                               "segment number)");
  }
  auto state = std::make_unique<State>();
  state->options = options;
  state->temp_path = options.path + ".tmp";
  SDXLB_ASSIGN_OR_RETURN(state->file, h5::File::create(state->temp_path, /*truncate=*/true));
  const h5::File& f = state->file;
  Status attrs = f.set_string_attr("format", "sdxlb-segment");
  if (attrs.is_ok()) attrs = f.set_int_attr("format_version", kSegmentFormatVersion);
  if (attrs.is_ok()) attrs = f.set_string_attr("encoding", encoding_name(options.encoding));
  if (attrs.is_ok()) attrs = f.set_int_attr("height", options.height);
  if (attrs.is_ok()) attrs = f.set_int_attr("width", options.width);
  if (attrs.is_ok()) attrs = f.set_string_attr("run_id", options.run_id);
  if (attrs.is_ok()) attrs = f.set_int_attr("rank", options.rank);
  if (attrs.is_ok() && !options.job_identity.empty())
    attrs = f.set_string_attr("job_identity", options.job_identity);
  SegmentWriter writer(std::move(state));  // from here on, an early return removes the temporary file
  SDXLB_RETURN_IF_ERROR(attrs);
  State& s = *writer.s_;
  if (options.encoding == ImageEncoding::kRaw) {
    const hsize_t h = static_cast<hsize_t>(options.height), w = static_cast<hsize_t>(options.width);
    h5::DatasetOptions opt;
    opt.chunk = {1, h, w, 3};  // one image per chunk: each add() is one chunk write, readers fetch one image
    opt.checksum = options.checksums;
    SDXLB_ASSIGN_OR_RETURN(s.pixels, s.file.create_dataset("images", H5T_STD_U8LE, {0, h, w, 3}, opt));
  } else {
    h5::DatasetOptions opt;
    opt.chunk = {64};
    SDXLB_ASSIGN_OR_RETURN(s.pixels, h5::create_column<h5::Bytes>(s.file, "png", 0, opt));
  }
  return writer;
}

Status SegmentWriter::add(const ItemRecord& record, const uint8_t* rgb) {
  if (!s_) return failed_precondition("SegmentWriter::add after publish() or abort()");
  State& s = *s_;
  if (!s.broken.is_ok()) return s.broken;
  const SegmentOptions& o = s.options;
  if (record.height != o.height || record.width != o.width) {
    return invalid_argument("item " + std::to_string(record.item_index) + " is " +
                            std::to_string(record.height) + "x" + std::to_string(record.width) +
                            " but segment " + o.path + " holds " + std::to_string(o.height) + "x" +
                            std::to_string(o.width) + " images");
  }
  if (record.ok && rgb == nullptr) {
    return invalid_argument("item " + std::to_string(record.item_index) +
                            " is marked ok but has no pixels (pass nullptr only for failed items)");
  }
  const uint8_t* pixels = record.ok ? rgb : nullptr;
  Status st;
  if (o.encoding == ImageEncoding::kRaw) {
    if (pixels == nullptr) {
      s.zeros.resize(static_cast<size_t>(o.height) * o.width * 3, 0);
      pixels = s.zeros.data();
    }
    st = s.pixels.append_rows(H5T_NATIVE_UINT8, 1, pixels);
  } else {
    std::vector<h5::Bytes> one(1);
    if (pixels != nullptr) {
      auto png = encode_png(pixels, o.height, o.width, o.png_compression_level);
      if (!png.is_ok()) return png.status().with_context("item " + std::to_string(record.item_index));
      one[0] = std::move(png).value();
    }
    st = h5::append_column(s.pixels, one);
  }
  if (!st.is_ok()) {
    s.broken = st.with_context("segment " + o.path);
    return s.broken;
  }
  s.columns.append(record);
  ++s.count;
  return Status::ok();
}

Status SegmentWriter::publish() {
  if (!s_) return failed_precondition("SegmentWriter::publish after publish() or abort()");
  State& s = *s_;
  if (!s.broken.is_ok()) {
    Status st = s.broken;
    abort();
    return st;
  }
  if (s.columns.size() == 0) {
    abort();
    return Status::ok();
  }
  auto fail = [&](const Status& st) {
    abort();
    return st.with_context("publishing segment " + s.options.path);
  };
  Status st = write_item_columns(s.file, s.columns, s.options.checksums);
  if (st.is_ok()) st = s.file.set_int_attr("items", static_cast<int64_t>(s.columns.size()));
  if (st.is_ok()) st = s.pixels.close();
  if (st.is_ok()) st = s.file.flush();
  if (st.is_ok()) st = s.file.close();
  if (!st.is_ok()) return fail(st);
  struct stat info {};
  if (::stat(s.options.path.c_str(), &info) == 0) {
    return fail(failed_precondition(s.options.path + " appeared while this segment was being written; "
                                                     "two writers used the same segment name"));
  }
  st = publish_file(s.temp_path, s.options.path);
  if (!st.is_ok()) return fail(st);
  s.published = true;
  s.columns = ItemColumns();
  return Status::ok();
}

void SegmentWriter::abort() {
  if (!s_ || s_->published || s_->aborted) return;
  State& s = *s_;
  s.aborted = true;
  s.pixels.reset();
  s.file.reset();
  env().unlink(s.temp_path);  // may already be gone; nothing to report
  s.columns = ItemColumns();
  s.broken = failed_precondition("segment " + s.options.path + " was aborted");
}

int64_t SegmentWriter::size() const {
  return s_ ? s_->count : 0;
}

const std::string& SegmentWriter::path() const {
  static const std::string empty;
  return s_ ? s_->options.path : empty;
}

bool SegmentWriter::published() const {
  return s_ && s_->published;
}

}  // namespace sdxlb
