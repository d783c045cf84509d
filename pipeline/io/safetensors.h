// SafetensorsFile: a validated, memory-mapped .safetensors file.
//
// open() maps the file and checks the header before anything trusts it: the header length against the file
// size, the JSON, every dtype, that shape x dtype size equals the byte range, that every range lies inside
// the data area, and that ranges neither overlap nor leave holes. Every failure names the file, the tensor
// and what is wrong.
//
// Tensors returned by tensor() view the mapping without copying (copy-on-write private mapping: writing to
// them never touches the file); each keeps the mapping alive. A SafetensorsFile is immutable after open()
// and safe to share between threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "common/status.h"

namespace sdxlb {

/// One entry of the header.
struct TensorInfo {
  std::string name;
  std::string dtype;  ///< safetensors spelling: "F16", "BF16", "F32", "I64", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< byte offset inside the data area
  uint64_t end = 0;    ///< one past the last byte
  int64_t numel() const;
};

/// Bytes per element of a safetensors dtype name, or 0 when the name is not a safetensors dtype.
size_t safetensors_dtype_size(const std::string& dtype);

class SafetensorsFile {
 public:
  /// Maps and validates `path`. Errors: kNotFound (no file), kIoError (cannot read/map),
  /// kDataLoss (any header or layout problem, naming the tensor).
  static StatusOr<std::shared_ptr<const SafetensorsFile>> open(const std::string& path);
  /// The same validation over `size` bytes that `fill` writes into memory this object owns (e.g. a file's
  /// bytes received from another rank, issue 18). `name` stands for the path in errors and in path(). Errors:
  /// kResourceExhausted when the memory cannot be had, fill's error, and open()'s kDataLoss.
  static StatusOr<std::shared_ptr<const SafetensorsFile>> from_buffer(
      const std::string& name, uint64_t size, const std::function<Status(void* data)>& fill);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  /// All tensors, sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  /// The entry for `name`, or nullptr.
  const TensorInfo* find(const std::string& name) const;
  /// The optional "__metadata__" string map.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Size in bytes of the JSON header (useful as a cheap identity of the weights).
  const std::string& header_json() const { return header_json_; }

  /// Size in bytes of the data area (everything after the header).
  uint64_t data_size() const { return data_size_; }
  /// `n` bytes of the data area from `offset` (clamped to the area), read through the mapping.
  std::string_view data_bytes(uint64_t offset, uint64_t n) const;

  /// The whole file as mapped (header length, header and data area): what from_buffer rebuilds it from.
  std::string_view file_bytes() const;

  /// A CPU tensor over the mapped bytes (zero-copy unless the bytes are misaligned for the dtype, in which
  /// case it is an aligned copy). Errors: kUnimplemented for dtypes LibTorch has no type for.
  StatusOr<at::Tensor> tensor(const TensorInfo& info) const;

 private:
  struct Mapping;
  SafetensorsFile() = default;
  static StatusOr<std::shared_ptr<const SafetensorsFile>> parse(const std::string& path,
                                                                std::shared_ptr<Mapping> mapping);

  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  const uint8_t* data_ = nullptr;  ///< start of the data area inside the mapping
  uint64_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
  std::string header_json_;
};

}  // namespace sdxlb
