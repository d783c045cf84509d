// A thin typed layer over the HDF5 C API: move-only RAII handles, and helpers for attributes, 1-D columns
// (numbers, variable-length UTF-8 strings, variable-length bytes) and chunked, growable datasets.
//
// Every failure becomes a Status that names the file and the object ("<file>:<object>") and carries the
// HDF5 library's own explanation, captured by an error handler this layer installs (per thread) in place of
// the default one that prints the HDF5 error stack to stderr.
//
// Thread-safety: handles are values owned by one thread at a time. The HDF5 library serializes its calls
// internally when built thread-safe (Debian's serial build is); even so, keep one file to one thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <hdf5.h>

#include "common/status.h"

namespace sdxlb::h5 {

/// Whether the HDF5 library in use serializes its calls (built thread-safe), so that two threads may each
/// use their own files at the same time.
bool library_threadsafe();

/// Installs this layer's error handler on the calling thread (idempotent) and forgets the last captured
/// message. Every helper here calls it; call it yourself before raw H5* calls that you report with h5_error.
void begin_call();

/// A Status of `code` whose message is "<what> (HDF5: <the captured message>)"; the capture is cleared.
Status h5_error(StatusCode code, const std::string& what);

/// Owns one HDF5 identifier and releases it with the close function of its kind. Move-only.
class Handle {
 public:
  using CloseFn = herr_t (*)(hid_t);
  Handle() = default;
  /// Takes ownership of `id`. `file` and `object` (an HDF5 path, empty for files, types and spaces) are only
  /// used in error messages.
  Handle(hid_t id, CloseFn close, std::string file, std::string object = "")
      : id_(id), close_(close), file_(std::move(file)), object_(std::move(object)) {}
  Handle(Handle&& other) noexcept;
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }

  hid_t id() const { return id_; }
  bool valid() const { return id_ >= 0; }
  /// The file name this object lives in.
  const std::string& file() const { return file_; }
  /// The object's HDF5 path ("/" for a file's root group, "" for types and spaces).
  const std::string& object() const { return object_; }
  /// "<file>:<object>" or the file alone, for error messages.
  std::string where() const;
  /// Closes now and reports a failure (closing a file flushes it, so write errors can surface here).
  Status close();
  /// Closes now, ignoring errors (the destructor does this).
  void reset();

 protected:
  hid_t id_ = H5I_INVALID_HID;
  CloseFn close_ = nullptr;
  std::string file_;
  std::string object_;
};

/// A dataspace (shape and selection).
class Dataspace : public Handle {
 public:
  using Handle::Handle;
  Dataspace() = default;
  /// A simple dataspace; `maxdims` empty means fixed size; H5S_UNLIMITED marks growable dimensions.
  static StatusOr<Dataspace> simple(const std::vector<hsize_t>& dims,
                                    const std::vector<hsize_t>& maxdims = {});
  static StatusOr<Dataspace> scalar();
  StatusOr<std::vector<hsize_t>> dims() const;
  /// Selects rows [start, start+count) along the first dimension and everything along the others.
  Status select_rows(hsize_t start, hsize_t count);
};

/// A datatype that this handle owns (copies of predefined types, vlen types).
class Datatype : public Handle {
 public:
  using Handle::Handle;
  Datatype() = default;
  /// Variable-length UTF-8 string (h5py reads it as bytes, or str through .asstr()).
  static StatusOr<Datatype> vlen_string();
  /// Variable-length sequence of uint8 (h5py reads each element as a numpy uint8 array).
  static StatusOr<Datatype> vlen_bytes();
  /// A copy of a predefined type such as H5T_STD_I64LE.
  static StatusOr<Datatype> copy_of(hid_t type);
};

/// A property list (file access, dataset creation, ...).
class PropList : public Handle {
 public:
  using Handle::Handle;
  PropList() = default;
  /// A new list of class `cls` (e.g. H5P_DATASET_CREATE).
  static StatusOr<PropList> create(hid_t cls);
  /// Adds one virtual-dataset mapping to a dataset-creation list: the selection of `virtual_space` is read
  /// from the selection of `source_space` in dataset `source_dataset` of file `source_file` (a path
  /// relative to the virtual dataset's file is resolved against that file's folder).
  Status add_virtual_mapping(const Dataspace& virtual_space, const std::string& source_file,
                             const std::string& source_dataset, const Dataspace& source_space);
};

/// Options of a new dataset.
struct DatasetOptions {
  /// Chunk shape; empty picks rows of about 1 MiB along the first dimension.
  std::vector<hsize_t> chunk;
  /// First dimension unlimited, so set_extent/append_rows can grow it (forces chunking). When false, the
  /// dataset is contiguous unless `chunk` is given.
  bool growable = true;
  /// Fill value for elements never written (numeric datasets only), converted to the dataset's type.
  std::optional<double> fill;
  /// A Fletcher32 checksum per chunk (chunked, fixed-size types only: HDF5 cannot filter variable-length
  /// data): HDF5 verifies it on every read, so a flipped byte on disk is a read error naming the dataset,
  /// never a silently wrong value.
  bool checksum = true;
};

/// A dataset.
class Dataset : public Handle {
 public:
  using Handle::Handle;
  Dataset() = default;
  StatusOr<std::vector<hsize_t>> dims() const;
  /// Resizes a chunked dataset (only up to its max dims).
  Status set_extent(const std::vector<hsize_t>& dims);
  /// Writes rows [start, start+count) of the first dimension from `buf` (count x rest-of-shape, `mem_type`).
  Status write_rows(hid_t mem_type, hsize_t start, hsize_t count, const void* buf);
  /// Reads rows [start, start+count) into `buf`.
  Status read_rows(hid_t mem_type, hsize_t start, hsize_t count, void* buf) const;
  /// Grows the first dimension by `count` and writes those rows.
  Status append_rows(hid_t mem_type, hsize_t count, const void* buf);
  /// For a 1-D dataset: writes buf[k] to element rows[k] (rows need not be sorted or contiguous).
  Status write_points(hid_t mem_type, const std::vector<hsize_t>& rows, const void* buf);
};

class Group;

/// A file or a group: something that holds links and attributes.
class Location : public Handle {
 public:
  using Handle::Handle;
  Location() = default;

  /// Whether a link `name` exists here (false too when a parent group of a path is missing).
  bool exists(const std::string& name) const;
  StatusOr<Group> create_group(const std::string& name) const;
  StatusOr<Group> open_group(const std::string& name) const;

  /// A new dataset of file type `type` and shape `dims`.
  StatusOr<Dataset> create_dataset(const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                                   const DatasetOptions& options = {}) const;
  /// A new dataset from an explicit dataspace and creation property list (e.g. a virtual dataset).
  StatusOr<Dataset> create_dataset(const std::string& name, hid_t type, const Dataspace& space,
                                   const PropList& dcpl) const;
  /// Opens an existing dataset. Errors: kNotFound when there is no such link, kDataLoss when it is
  /// unreadable.
  StatusOr<Dataset> open_dataset(const std::string& name) const;

  bool has_attr(const std::string& name) const;
  /// Creates or replaces a scalar attribute (strings as variable-length UTF-8).
  Status set_string_attr(const std::string& name, const std::string& value) const;
  Status set_int_attr(const std::string& name, int64_t value) const;
  Status set_double_attr(const std::string& name, double value) const;
  /// Reads a scalar attribute (strings: fixed or variable length; numbers converted). kNotFound if absent.
  StatusOr<std::string> string_attr(const std::string& name) const;
  StatusOr<int64_t> int_attr(const std::string& name) const;
  StatusOr<double> double_attr(const std::string& name) const;

 protected:
  /// The HDF5 path of child `name`.
  std::string child(const std::string& name) const;
};

class Group : public Location {
 public:
  using Location::Location;
  Group() = default;
};

class File : public Location {
 public:
  using Location::Location;
  File() = default;
  /// Creates `path` (replacing an existing file when `truncate`, else failing if it exists). Closing the file
  /// with objects still open fails instead of silently leaving it open (H5F_CLOSE_SEMI).
  static StatusOr<File> create(const std::string& path, bool truncate);
  /// Opens `path`. Errors: kNotFound (no file), kIoError (no permission), kDataLoss (not HDF5 or truncated).
  static StatusOr<File> open(const std::string& path, bool writable);
  /// Flushes HDF5's buffers to the OS (not to the disk: fsync the file after close for that).
  Status flush() const;
};

// ---- typed 1-D columns --------------------------------------------------------------------------------
// T is one of int8_t, uint8_t, int32_t, int64_t, uint64_t, float, double (stored little-endian),
// std::string (variable-length UTF-8) or Bytes (variable-length uint8).

using Bytes = std::vector<uint8_t>;

/// Native memory type of a numeric T (H5T_NATIVE_...).
template <class T>
hid_t memory_type();

/// The file type a column of T is stored with (a new handle; vlen types for std::string and Bytes).
template <class T>
StatusOr<Datatype> column_file_type();

/// Creates a 1-D column dataset `name` of `n` elements of T, to fill later (write_column_points).
template <class T>
StatusOr<Dataset> create_column(const Location& loc, const std::string& name, hsize_t n,
                                const DatasetOptions& options = {});

/// Writes `values` as a new 1-D dataset `name`.
template <class T>
Status write_column(const Location& loc, const std::string& name, const std::vector<T>& values,
                    const DatasetOptions& options = {});

/// Reads elements [start, start+count) of the 1-D dataset `name` (count past the end: to the end). Numbers
/// are converted to T by HDF5 (e.g. an int32 column read as int64).
template <class T>
StatusOr<std::vector<T>> read_column(const Location& loc, const std::string& name, hsize_t start = 0,
                                     hsize_t count = static_cast<hsize_t>(-1));

/// Writes values[k] to element rows[k] of an existing 1-D dataset (rows.size() == values.size()).
template <class T>
Status write_column_points(Dataset& ds, const std::vector<hsize_t>& rows, const std::vector<T>& values);

/// Appends `values` to the end of an existing growable 1-D dataset.
template <class T>
Status append_column(Dataset& ds, const std::vector<T>& values);

}  // namespace sdxlb::h5
