#include "pipeline/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <limits>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "common/json_depth.h"

namespace sdxlb {
namespace {

// The safetensors header is small JSON; refuse absurd lengths before allocating.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeEntry {
  const char* name;
  size_t size;
  bool has_torch;
  at::ScalarType type;
};

const DtypeEntry kDtypes[] = {
    {"F64", 8, true, at::kDouble},
    {"F32", 4, true, at::kFloat},
    {"F16", 2, true, at::kHalf},
    {"BF16", 2, true, at::kBFloat16},
    {"I64", 8, true, at::kLong},
    {"I32", 4, true, at::kInt},
    {"I16", 2, true, at::kShort},
    {"I8", 1, true, at::kChar},
    {"U8", 1, true, at::kByte},
    {"BOOL", 1, true, at::kBool},
    {"F8_E4M3", 1, true, at::kFloat8_e4m3fn},
    {"F8_E5M2", 1, true, at::kFloat8_e5m2},
    {"U16", 2, false, at::kByte},
    {"U32", 4, false, at::kByte},
    {"U64", 8, false, at::kByte},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && size) munmap(addr, size);
  }
};

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t safetensors_dtype_size(const std::string& dtype) {
  const DtypeEntry* d = find_dtype(dtype);
  return d ? d->size : 0;
}

SafetensorsFile::~SafetensorsFile() = default;

StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  const std::string where = "safetensors file " + path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return not_found(where + " does not exist");
    return io_error("cannot open " + where + ": " + std::strerror(err));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error(where + " is not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return data_loss(where + " is truncated: " + std::to_string(file_size) +
                     " bytes, smaller than the 8-byte header length (re-download or re-save the file)");
  }
  auto mapping = std::make_shared<Mapping>();
  // Private, writable mapping: copy-on-write, so a caller writing into a returned tensor never touches the
  // file.
  mapping->addr = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);
  if (mapping->addr == MAP_FAILED) {
    mapping->addr = nullptr;
    return io_error("cannot memory-map " + where + ": " + std::strerror(map_err));
  }
  mapping->size = file_size;
  return parse(path, std::move(mapping));
}

StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::from_buffer(
    const std::string& name, uint64_t size, const std::function<Status(void* data)>& fill) {
  const std::string where = "safetensors file " + name;
  if (size < 8)
    return data_loss(where + " is truncated: " + std::to_string(size) +
                     " bytes, smaller than the 8-byte header length");
  auto mapping = std::make_shared<Mapping>();
  // Anonymous memory, released as a file mapping is (munmap).
  mapping->addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping->addr == MAP_FAILED) {
    const int err = errno;
    mapping->addr = nullptr;
    return Status(StatusCode::kResourceExhausted, "cannot allocate " + std::to_string(size) + " bytes for " +
                                                      where + ": " + std::strerror(err));
  }
  mapping->size = size;
  SDXLB_RETURN_IF_ERROR(fill(mapping->addr));
  return parse(name, std::move(mapping));
}

std::string_view SafetensorsFile::file_bytes() const {
  return {static_cast<const char*>(mapping_->addr), mapping_->size};
}

StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::parse(const std::string& path,
                                                                        std::shared_ptr<Mapping> mapping) {
  const std::string where = "safetensors file " + path;
  const uint64_t file_size = mapping->size;
  const auto* bytes = static_cast<const uint8_t*>(mapping->addr);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian u64
  if (header_len > file_size - 8) {
    return data_loss(where + ": header length " + std::to_string(header_len) + " is larger than the file (" +
                     std::to_string(file_size) + " bytes); the file is truncated or not a safetensors file");
  }
  if (header_len > kMaxHeaderBytes) {
    return data_loss(where + ": header length " + std::to_string(header_len) + " exceeds the 100 MiB limit");
  }

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->header_json_.assign(reinterpret_cast<const char*>(bytes + 8), header_len);
  file->data_ = bytes + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;
  file->data_size_ = data_size;

  nlohmann::json header;
  if (const size_t depth = json_nesting_depth(file->header_json_); depth > kMaxJsonDepth) {
    return data_loss(where + ": the header is JSON nested " + std::to_string(depth) +
                     " levels deep (the limit is " + std::to_string(kMaxJsonDepth) +
                     "); the file is corrupt");
  }
  try {
    header = nlohmann::json::parse(file->header_json_);
  } catch (const nlohmann::json::parse_error& e) {
    return data_loss(where + ": the header is not valid JSON (byte " + std::to_string(e.byte) +
                     " of the header); the file is corrupt");
  } catch (const nlohmann::json::exception& e) {  // out_of_range 406: a number past double's range (1e400)
    return data_loss(where + ": the header is not valid JSON (" + e.what() + "); the file is corrupt");
  }
  if (!header.is_object()) return data_loss(where + ": the header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return data_loss(where + ": __metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          return data_loss(where + ": __metadata__ value \"" + m.key() + "\" is not a string");
        file->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = where + ", tensor \"" + name + "\"";
    if (!entry.is_object()) return data_loss(tw + ": entry is not an object");
    if (!entry.contains("dtype") || !entry["dtype"].is_string())
      return data_loss(tw + ": missing or non-string \"dtype\"");
    if (!entry.contains("shape") || !entry["shape"].is_array())
      return data_loss(tw + ": missing or non-array \"shape\"");
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      return data_loss(tw + ": \"data_offsets\" must be an array of two integers");
    TensorInfo info;
    info.name = name;
    info.dtype = entry["dtype"].get<std::string>();
    const DtypeEntry* dt = find_dtype(info.dtype);
    if (!dt) return data_loss(tw + ": unknown dtype \"" + info.dtype + "\"");
    // Element count with overflow checks: a hostile shape must not wrap around.
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) return data_loss(tw + ": shape entries must be non-negative integers");
      uint64_t v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v))
        return data_loss(tw + ": shape overflows");
      numel *= v;
      info.shape.push_back(static_cast<int64_t>(v));
    }
    const auto& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      return data_loss(tw + ": data_offsets must be non-negative integers");
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    if (info.begin > info.end)
      return data_loss(tw + ": data_offsets [" + std::to_string(info.begin) + ", " +
                       std::to_string(info.end) + "] are reversed");
    if (info.end > data_size)
      return data_loss(tw + ": byte range [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                       ") lies outside the data area of " + std::to_string(data_size) +
                       " bytes; the file is truncated or corrupt");
    if (numel > std::numeric_limits<uint64_t>::max() / dt->size || numel * dt->size != info.end - info.begin)
      return data_loss(tw + ": shape " + shape_str(info.shape) + " x " + info.dtype + " (" +
                       std::to_string(dt->size) + " bytes) does not match its byte range of " +
                       std::to_string(info.end - info.begin) + " bytes");
    file->tensors_.push_back(std::move(info));
  }

  // Ranges must tile the data area exactly: no overlaps, no holes (as the safetensors format requires).
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : file->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (size_t i = 0; i < by_offset.size(); ++i) {
    const TensorInfo* t = by_offset[i];
    if (t->begin < cursor)
      return data_loss(where + ": tensors \"" + by_offset[i - 1]->name + "\" and \"" + t->name +
                       "\" have overlapping byte ranges; the file is corrupt");
    if (t->begin > cursor)
      return data_loss(where + ": bytes [" + std::to_string(cursor) + ", " + std::to_string(t->begin) +
                       ") before tensor \"" + t->name + "\" belong to no tensor; the file is corrupt");
    cursor = t->end;
  }
  if (cursor != data_size)
    return data_loss(where + ": the data area has " + std::to_string(data_size - cursor) +
                     " trailing bytes that belong to no tensor; the file is corrupt");

  std::sort(file->tensors_.begin(), file->tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  for (size_t i = 0; i < file->tensors_.size(); ++i) file->by_name_[file->tensors_[i].name] = i;
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

StatusOr<at::Tensor> SafetensorsFile::tensor(const TensorInfo& info) const {
  const DtypeEntry* dt = find_dtype(info.dtype);
  if (!dt || !dt->has_torch)
    return unimplemented("safetensors file " + path_ + ", tensor \"" + info.name + "\": dtype " + info.dtype +
                         " has no LibTorch equivalent");
  auto* ptr = const_cast<uint8_t*>(data_ + info.begin);
  auto options = at::TensorOptions().dtype(dt->type).device(at::kCPU);
  if (reinterpret_cast<uintptr_t>(ptr) % dt->size != 0) {
    // Misaligned for its element type: copy into an aligned tensor rather than read unaligned memory.
    at::Tensor out = at::empty(info.shape, options);
    // An empty tensor has no storage (data_ptr() is null), and memcpy's pointers must not be null even for 0.
    if (info.end > info.begin) std::memcpy(out.data_ptr(), ptr, info.end - info.begin);
    return out;
  }
  std::shared_ptr<Mapping> keep = mapping_;
  return at::from_blob(
      ptr, info.shape, [keep](void*) mutable { keep.reset(); }, options);
}

std::string_view SafetensorsFile::data_bytes(uint64_t offset, uint64_t n) const {
  if (!data_ || offset >= data_size_) return {};
  n = std::min(n, data_size_ - offset);
  return std::string_view(reinterpret_cast<const char*>(data_ + offset), static_cast<size_t>(n));
}

}  // namespace sdxlb
