#include "store/hdf5.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <type_traits>

#include "store/env.h"
#include "store/h5_env_driver.h"

namespace sdxlb::h5 {
namespace {

// HDF5's exit handler closes every file still in its table. A file whose H5Fclose failed (ENOSPC while
// flushing) stays there half-closed, and HDF5 1.10 then crashes closing it again at exit (H5F__close_cb; a
// full disk ended with a segfault, issue 12). Every file here is closed by its owner, so the handler has
// nothing to do: it is switched off before the library initialises.
const bool kNoHdf5ExitHandler = [] {
  H5dont_atexit();
  return true;
}();

// The last HDF5 error stack of this thread, flattened to one line by capture_errors().
thread_local std::string t_last_error;
thread_local bool t_handler_installed = false;

struct WalkState {
  std::vector<std::string> lines;
};

herr_t walk_error(unsigned /*n*/, const H5E_error2_t* err, void* data) {
  auto* state = static_cast<WalkState*>(data);
  std::string line = err->desc ? err->desc : "";
  if (line.empty()) {
    char minor[256] = {0};
    if (H5Eget_msg(err->min_num, nullptr, minor, sizeof(minor)) > 0) line = minor;
  }
  if (!line.empty() && (state->lines.empty() || state->lines.back() != line)) state->lines.push_back(line);
  return 0;
}

// Installed with H5Eset_auto2: called by HDF5 when an API call fails, in place of the default handler that
// prints the whole stack to stderr. The outermost line says what failed, the innermost why (for example
// "errno = 13, error message = 'Permission denied'"), so the message keeps those two.
herr_t capture_errors(hid_t estack, void* /*client*/) {
  WalkState state;
  H5Ewalk2(estack, H5E_WALK_DOWNWARD, walk_error, &state);
  if (state.lines.empty()) {
    t_last_error = "unknown HDF5 error";
  } else if (state.lines.size() == 1) {
    t_last_error = state.lines.front();
  } else {
    t_last_error = state.lines.front() + ": " + state.lines.back();
  }
  return 0;
}

std::string join_path(const std::string& parent, const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  if (parent.empty() || parent == "/") return "/" + name;
  return parent + "/" + name;
}

void reclaim(hid_t type, hsize_t count, void* buf) {
  hid_t space = H5Screate_simple(1, &count, nullptr);
  if (space < 0) return;
#if H5_VERSION_GE(1, 12, 0)
  H5Treclaim(type, space, H5P_DEFAULT, buf);
#else
  H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf);
#endif
  H5Sclose(space);
}

StatusOr<std::vector<hsize_t>> space_dims(hid_t space, const std::string& where) {
  int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) return h5_error(StatusCode::kDataLoss, "cannot read the shape of " + where);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0) {
    return h5_error(StatusCode::kDataLoss, "cannot read the shape of " + where);
  }
  return dims;
}

// Selects rows [start, start+count) of dimension 0 of `space` (all of the other dimensions).
Status select_rows_of(hid_t space, const std::vector<hsize_t>& dims, hsize_t start, hsize_t count,
                      const std::string& where) {
  if (dims.empty()) return internal_error("row selection on a scalar dataspace of " + where);
  if (start + count > dims[0]) {
    return internal_error("rows [" + std::to_string(start) + ", " + std::to_string(start + count) +
                          ") are out of range of " + where + " (" + std::to_string(dims[0]) + " rows)");
  }
  std::vector<hsize_t> offset(dims.size(), 0), extent = dims;
  offset[0] = start;
  extent[0] = count;
  if (H5Sselect_hyperslab(space, H5S_SELECT_SET, offset.data(), nullptr, extent.data(), nullptr) < 0) {
    return h5_error(StatusCode::kInternal, "cannot select rows of " + where);
  }
  return Status::ok();
}

// Calls fn(memory type, buffer) with `values` laid out the way H5Dwrite wants them.
template <class T, class Fn>
Status with_write_buffer(const std::vector<T>& values, Fn&& fn) {
  if constexpr (std::is_same_v<T, std::string>) {
    SDXLB_ASSIGN_OR_RETURN(Datatype type, Datatype::vlen_string());
    std::vector<const char*> ptrs;
    ptrs.reserve(values.size());
    for (const auto& s : values) ptrs.push_back(s.c_str());
    return fn(type.id(), static_cast<const void*>(ptrs.data()));
  } else if constexpr (std::is_same_v<T, Bytes>) {
    SDXLB_ASSIGN_OR_RETURN(Datatype type, Datatype::vlen_bytes());
    std::vector<hvl_t> vls;
    vls.reserve(values.size());
    for (const auto& b : values) vls.push_back(hvl_t{b.size(), const_cast<uint8_t*>(b.data())});
    return fn(type.id(), static_cast<const void*>(vls.data()));
  } else {
    return fn(memory_type<T>(), static_cast<const void*>(values.data()));
  }
}

template <class T>
Status read_rows_into(const Dataset& ds, hsize_t start, hsize_t count, std::vector<T>* out) {
  if constexpr (std::is_same_v<T, std::string>) {
    SDXLB_ASSIGN_OR_RETURN(Datatype type, Datatype::vlen_string());
    std::vector<char*> ptrs(count, nullptr);
    SDXLB_RETURN_IF_ERROR(ds.read_rows(type.id(), start, count, ptrs.data()));
    out->resize(count);
    for (hsize_t i = 0; i < count; ++i) (*out)[i] = ptrs[i] ? ptrs[i] : "";
    reclaim(type.id(), count, ptrs.data());
  } else if constexpr (std::is_same_v<T, Bytes>) {
    SDXLB_ASSIGN_OR_RETURN(Datatype type, Datatype::vlen_bytes());
    std::vector<hvl_t> vls(count, hvl_t{0, nullptr});
    SDXLB_RETURN_IF_ERROR(ds.read_rows(type.id(), start, count, vls.data()));
    out->resize(count);
    for (hsize_t i = 0; i < count; ++i) {
      const auto* p = static_cast<const uint8_t*>(vls[i].p);
      (*out)[i].assign(p, p + vls[i].len);
    }
    reclaim(type.id(), count, vls.data());
  } else {
    out->resize(count);
    SDXLB_RETURN_IF_ERROR(ds.read_rows(memory_type<T>(), start, count, out->data()));
  }
  return Status::ok();
}

}  // namespace

bool library_threadsafe() {
  hbool_t safe = false;
  return H5is_library_threadsafe(&safe) >= 0 && safe;
}

void begin_call() {
  if (!t_handler_installed) {
    H5Eset_auto2(H5E_DEFAULT, capture_errors, nullptr);
    t_handler_installed = true;
  }
  t_last_error.clear();
  clear_os_error();
}

Status h5_error(StatusCode code, const std::string& what) {
  std::string message = what;
  // The storage failed (EIO, ENOSPC): an I/O error, not bytes that are wrong.
  if (last_os_error() != 0 && code == StatusCode::kDataLoss) code = StatusCode::kIoError;
  clear_os_error();
  if (!t_last_error.empty()) message += " (HDF5: " + t_last_error + ")";
  t_last_error.clear();
  return Status(code, message);
}

// ---- Handle -------------------------------------------------------------------------------------------

Handle::Handle(Handle&& other) noexcept
    : id_(other.id_), close_(other.close_), file_(std::move(other.file_)), object_(std::move(other.object_)) {
  other.id_ = H5I_INVALID_HID;
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    close_ = other.close_;
    file_ = std::move(other.file_);
    object_ = std::move(other.object_);
    other.id_ = H5I_INVALID_HID;
  }
  return *this;
}

std::string Handle::where() const {
  if (object_.empty() || object_ == "/") return file_;
  return file_ + ":" + object_;
}

Status Handle::close() {
  if (!valid()) return Status::ok();
  begin_call();
  herr_t rc = close_ ? close_(id_) : 0;
  id_ = H5I_INVALID_HID;
  if (rc < 0) return h5_error(StatusCode::kIoError, "cannot close " + where());
  return Status::ok();
}

void Handle::reset() {
  if (!valid()) return;
  begin_call();
  if (close_) close_(id_);
  id_ = H5I_INVALID_HID;
}

// ---- Dataspace, Datatype, PropList --------------------------------------------------------------------

StatusOr<Dataspace> Dataspace::simple(const std::vector<hsize_t>& dims, const std::vector<hsize_t>& maxdims) {
  begin_call();
  if (!maxdims.empty() && maxdims.size() != dims.size())
    return internal_error("dataspace maxdims rank mismatch");
  hid_t id = H5Screate_simple(static_cast<int>(dims.size()), dims.data(),
                              maxdims.empty() ? nullptr : maxdims.data());
  if (id < 0) return h5_error(StatusCode::kInternal, "cannot create a dataspace");
  return Dataspace(id, H5Sclose, "");
}

StatusOr<Dataspace> Dataspace::scalar() {
  begin_call();
  hid_t id = H5Screate(H5S_SCALAR);
  if (id < 0) return h5_error(StatusCode::kInternal, "cannot create a scalar dataspace");
  return Dataspace(id, H5Sclose, "");
}

StatusOr<std::vector<hsize_t>> Dataspace::dims() const {
  begin_call();
  return space_dims(id_, "a dataspace");
}

Status Dataspace::select_rows(hsize_t start, hsize_t count) {
  SDXLB_ASSIGN_OR_RETURN(auto d, dims());
  return select_rows_of(id_, d, start, count, "a dataspace");
}

StatusOr<Datatype> Datatype::vlen_string() {
  begin_call();
  hid_t id = H5Tcopy(H5T_C_S1);
  if (id < 0 || H5Tset_size(id, H5T_VARIABLE) < 0 || H5Tset_cset(id, H5T_CSET_UTF8) < 0) {
    if (id >= 0) H5Tclose(id);
    return h5_error(StatusCode::kInternal, "cannot create a variable-length string type");
  }
  return Datatype(id, H5Tclose, "");
}

StatusOr<Datatype> Datatype::vlen_bytes() {
  begin_call();
  hid_t id = H5Tvlen_create(H5T_NATIVE_UINT8);
  if (id < 0) return h5_error(StatusCode::kInternal, "cannot create a variable-length bytes type");
  return Datatype(id, H5Tclose, "");
}

StatusOr<Datatype> Datatype::copy_of(hid_t type) {
  begin_call();
  hid_t id = H5Tcopy(type);
  if (id < 0) return h5_error(StatusCode::kInternal, "cannot copy a datatype");
  return Datatype(id, H5Tclose, "");
}

StatusOr<PropList> PropList::create(hid_t cls) {
  begin_call();
  hid_t id = H5Pcreate(cls);
  if (id < 0) return h5_error(StatusCode::kInternal, "cannot create a property list");
  return PropList(id, H5Pclose, "");
}

Status PropList::add_virtual_mapping(const Dataspace& virtual_space, const std::string& source_file,
                                     const std::string& source_dataset, const Dataspace& source_space) {
  begin_call();
  if (H5Pset_virtual(id_, virtual_space.id(), source_file.c_str(), source_dataset.c_str(),
                     source_space.id()) < 0) {
    return h5_error(StatusCode::kInternal,
                    "cannot map virtual dataset rows to " + source_file + ":" + source_dataset);
  }
  return Status::ok();
}

// ---- Dataset ------------------------------------------------------------------------------------------

StatusOr<std::vector<hsize_t>> Dataset::dims() const {
  begin_call();
  hid_t space = H5Dget_space(id_);
  if (space < 0) return h5_error(StatusCode::kDataLoss, "cannot read the shape of " + where());
  Dataspace owned(space, H5Sclose, "");
  return space_dims(space, where());
}

Status Dataset::set_extent(const std::vector<hsize_t>& dims) {
  begin_call();
  if (H5Dset_extent(id_, dims.data()) < 0) return h5_error(StatusCode::kIoError, "cannot resize " + where());
  return Status::ok();
}

namespace {

// The file and memory dataspaces for rows [start, start+count) of dataset `id` (shared by reads and writes).
struct RowSpaces {
  Dataspace file;
  Dataspace memory;
};

StatusOr<RowSpaces> row_spaces(hid_t id, hsize_t start, hsize_t count, StatusCode code,
                               const std::string& where) {
  begin_call();
  hid_t fspace = H5Dget_space(id);
  if (fspace < 0) return h5_error(code, "cannot get the dataspace of " + where);
  RowSpaces spaces{Dataspace(fspace, H5Sclose, ""), Dataspace()};
  SDXLB_ASSIGN_OR_RETURN(auto dims, space_dims(fspace, where));
  SDXLB_RETURN_IF_ERROR(select_rows_of(fspace, dims, start, count, where));
  std::vector<hsize_t> mdims = dims;
  mdims[0] = count;
  SDXLB_ASSIGN_OR_RETURN(spaces.memory, Dataspace::simple(mdims));
  return spaces;
}

std::string rows_text(hsize_t start, hsize_t count) {
  return std::to_string(start) + ".." + std::to_string(start + count - 1);
}

}  // namespace

Status Dataset::write_rows(hid_t mem_type, hsize_t start, hsize_t count, const void* buf) {
  if (count == 0) return Status::ok();
  SDXLB_ASSIGN_OR_RETURN(auto spaces, row_spaces(id_, start, count, StatusCode::kIoError, where()));
  if (H5Dwrite(id_, mem_type, spaces.memory.id(), spaces.file.id(), H5P_DEFAULT, buf) < 0)
    return h5_error(StatusCode::kIoError, "cannot write rows " + rows_text(start, count) + " of " + where());
  return Status::ok();
}

Status Dataset::read_rows(hid_t mem_type, hsize_t start, hsize_t count, void* buf) const {
  if (count == 0) return Status::ok();
  SDXLB_ASSIGN_OR_RETURN(auto spaces, row_spaces(id_, start, count, StatusCode::kDataLoss, where()));
  if (H5Dread(id_, mem_type, spaces.memory.id(), spaces.file.id(), H5P_DEFAULT, buf) < 0)
    return h5_error(StatusCode::kDataLoss, "cannot read rows " + rows_text(start, count) + " of " + where());
  return Status::ok();
}

Status Dataset::append_rows(hid_t mem_type, hsize_t count, const void* buf) {
  SDXLB_ASSIGN_OR_RETURN(auto d, dims());
  if (d.empty()) return internal_error("cannot append to the scalar dataset " + where());
  hsize_t start = d[0];
  d[0] += count;
  SDXLB_RETURN_IF_ERROR(set_extent(d));
  return write_rows(mem_type, start, count, buf);
}

Status Dataset::write_points(hid_t mem_type, const std::vector<hsize_t>& rows, const void* buf) {
  if (rows.empty()) return Status::ok();
  begin_call();
  hid_t fspace = H5Dget_space(id_);
  if (fspace < 0) return h5_error(StatusCode::kIoError, "cannot get the dataspace of " + where());
  Dataspace file_space(fspace, H5Sclose, "");
  SDXLB_ASSIGN_OR_RETURN(auto dims, space_dims(fspace, where()));
  if (dims.size() != 1) return internal_error("point writes need a 1-D dataset: " + where());
  for (hsize_t r : rows) {
    if (r >= dims[0]) {
      return internal_error("row " + std::to_string(r) + " is out of range of " + where() + " (" +
                            std::to_string(dims[0]) + " rows)");
    }
  }
  if (H5Sselect_elements(fspace, H5S_SELECT_SET, rows.size(), rows.data()) < 0) {
    return h5_error(StatusCode::kInternal, "cannot select elements of " + where());
  }
  SDXLB_ASSIGN_OR_RETURN(auto mem_space, Dataspace::simple({static_cast<hsize_t>(rows.size())}));
  if (H5Dwrite(id_, mem_type, mem_space.id(), fspace, H5P_DEFAULT, buf) < 0) {
    return h5_error(StatusCode::kIoError,
                    "cannot write " + std::to_string(rows.size()) + " elements of " + where());
  }
  return Status::ok();
}

// ---- Location -----------------------------------------------------------------------------------------

std::string Location::child(const std::string& name) const {
  return join_path(object_, name);
}

bool Location::exists(const std::string& name) const {
  begin_call();
  return H5Lexists(id_, name.c_str(), H5P_DEFAULT) > 0;
}

StatusOr<Group> Location::create_group(const std::string& name) const {
  begin_call();
  hid_t id = H5Gcreate2(id_, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) return h5_error(StatusCode::kIoError, "cannot create group " + child(name) + " in " + file_);
  return Group(id, H5Gclose, file_, child(name));
}

StatusOr<Group> Location::open_group(const std::string& name) const {
  begin_call();
  const htri_t found = H5Lexists(id_, name.c_str(), H5P_DEFAULT);
  // A lookup that fails (unreadable metadata, a disk error) is an error, not "absent".
  if (found < 0) return h5_error(StatusCode::kDataLoss, "cannot look up " + child(name) + " in " + file_);
  if (found == 0) return not_found("no group " + child(name) + " in " + file_);
  hid_t id = H5Gopen2(id_, name.c_str(), H5P_DEFAULT);
  if (id < 0) return h5_error(StatusCode::kDataLoss, "cannot open group " + child(name) + " in " + file_);
  return Group(id, H5Gclose, file_, child(name));
}

StatusOr<Dataset> Location::create_dataset(const std::string& name, hid_t type,
                                           const std::vector<hsize_t>& dims,
                                           const DatasetOptions& options) const {
  begin_call();
  std::vector<hsize_t> maxdims = dims;
  if (options.growable && !maxdims.empty()) maxdims[0] = H5S_UNLIMITED;
  SDXLB_ASSIGN_OR_RETURN(auto space, Dataspace::simple(dims, maxdims));
  SDXLB_ASSIGN_OR_RETURN(auto dcpl, PropList::create(H5P_DATASET_CREATE));
  std::vector<hsize_t> chunk = options.chunk;
  if (chunk.empty() && options.growable && !dims.empty()) {
    // About 1 MiB per chunk along the first dimension: small enough for HDF5's default chunk cache.
    size_t row_bytes = H5Tget_size(type);
    for (size_t i = 1; i < dims.size(); ++i) row_bytes *= dims[i];
    hsize_t rows = std::max<hsize_t>(1, (1u << 20) / std::max<size_t>(1, row_bytes));
    if (dims[0] > 0) rows = std::min(rows, dims[0]);
    chunk = dims;
    chunk[0] = rows;
  }
  if (!chunk.empty() && H5Pset_chunk(dcpl.id(), static_cast<int>(chunk.size()), chunk.data()) < 0) {
    return h5_error(StatusCode::kInternal, "cannot set the chunk shape of " + child(name) + " in " + file_);
  }
  // (HDF5 cannot filter variable-length data: text and PNG columns go without; PNG carries its own CRCs.)
  const bool variable = H5Tdetect_class(type, H5T_VLEN) > 0 || H5Tis_variable_str(type) > 0;
  if (!chunk.empty() && options.checksum && !variable && H5Pset_fletcher32(dcpl.id()) < 0) {
    return h5_error(StatusCode::kInternal, "cannot add a checksum to " + child(name) + " in " + file_);
  }
  if (options.fill) {
    double fill = *options.fill;
    if (H5Pset_fill_value(dcpl.id(), H5T_NATIVE_DOUBLE, &fill) < 0) {
      return h5_error(StatusCode::kInternal, "cannot set the fill value of " + child(name) + " in " + file_);
    }
  }
  return create_dataset(name, type, space, dcpl);
}

StatusOr<Dataset> Location::create_dataset(const std::string& name, hid_t type, const Dataspace& space,
                                           const PropList& dcpl) const {
  begin_call();
  hid_t id = H5Dcreate2(id_, name.c_str(), type, space.id(), H5P_DEFAULT, dcpl.id(), H5P_DEFAULT);
  if (id < 0) return h5_error(StatusCode::kIoError, "cannot create dataset " + child(name) + " in " + file_);
  return Dataset(id, H5Dclose, file_, child(name));
}

StatusOr<Dataset> Location::open_dataset(const std::string& name) const {
  begin_call();
  const htri_t found = H5Lexists(id_, name.c_str(), H5P_DEFAULT);
  if (found < 0) return h5_error(StatusCode::kDataLoss, "cannot look up " + child(name) + " in " + file_);
  if (found == 0) return not_found("no dataset " + child(name) + " in " + file_);
  hid_t id = H5Dopen2(id_, name.c_str(), H5P_DEFAULT);
  if (id < 0) return h5_error(StatusCode::kDataLoss, "cannot open dataset " + child(name) + " in " + file_);
  return Dataset(id, H5Dclose, file_, child(name));
}

bool Location::has_attr(const std::string& name) const {
  begin_call();
  return H5Aexists(id_, name.c_str()) > 0;
}

namespace {

Status write_scalar_attr(const Location& loc, const std::string& name, hid_t file_type, hid_t mem_type,
                         const void* value) {
  if (loc.has_attr(name)) {
    if (H5Adelete(loc.id(), name.c_str()) < 0) {
      return h5_error(StatusCode::kIoError, "cannot replace attribute '" + name + "' of " + loc.where());
    }
  }
  SDXLB_ASSIGN_OR_RETURN(auto space, Dataspace::scalar());
  begin_call();
  hid_t id = H5Acreate2(loc.id(), name.c_str(), file_type, space.id(), H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0)
    return h5_error(StatusCode::kIoError, "cannot create attribute '" + name + "' of " + loc.where());
  Handle attr(id, H5Aclose, loc.file());
  if (H5Awrite(id, mem_type, value) < 0) {
    return h5_error(StatusCode::kIoError, "cannot write attribute '" + name + "' of " + loc.where());
  }
  return attr.close();
}

StatusOr<Handle> open_attr(const Location& loc, const std::string& name) {
  begin_call();
  const htri_t found = H5Aexists(loc.id(), name.c_str());
  if (found < 0)
    return h5_error(StatusCode::kDataLoss, "cannot look up attribute '" + name + "' of " + loc.where());
  if (found == 0) return not_found("no attribute '" + name + "' on " + loc.where());
  hid_t id = H5Aopen(loc.id(), name.c_str(), H5P_DEFAULT);
  if (id < 0)
    return h5_error(StatusCode::kDataLoss, "cannot open attribute '" + name + "' of " + loc.where());
  return Handle(id, H5Aclose, loc.file());
}

}  // namespace

Status Location::set_string_attr(const std::string& name, const std::string& value) const {
  SDXLB_ASSIGN_OR_RETURN(auto type, Datatype::vlen_string());
  const char* p = value.c_str();
  return write_scalar_attr(*this, name, type.id(), type.id(), &p);
}

Status Location::set_int_attr(const std::string& name, int64_t value) const {
  return write_scalar_attr(*this, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

Status Location::set_double_attr(const std::string& name, double value) const {
  return write_scalar_attr(*this, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

StatusOr<std::string> Location::string_attr(const std::string& name) const {
  SDXLB_ASSIGN_OR_RETURN(auto attr, open_attr(*this, name));
  const std::string what = "attribute '" + name + "' of " + where();
  hid_t ftype = H5Aget_type(attr.id());
  if (ftype < 0) return h5_error(StatusCode::kDataLoss, "cannot read the type of " + what);
  Datatype file_type(ftype, H5Tclose, "");
  if (H5Tget_class(ftype) != H5T_STRING) return data_loss(what + " is not a string");
  if (H5Tis_variable_str(ftype) > 0) {
    SDXLB_ASSIGN_OR_RETURN(auto mem_type, Datatype::vlen_string());
    char* p = nullptr;
    if (H5Aread(attr.id(), mem_type.id(), &p) < 0)
      return h5_error(StatusCode::kDataLoss, "cannot read " + what);
    std::string value = p ? p : "";
    if (p) H5free_memory(p);
    return value;
  }
  size_t size = H5Tget_size(ftype);
  std::string value(size, '\0');
  if (size > 0 && H5Aread(attr.id(), ftype, value.data()) < 0) {
    return h5_error(StatusCode::kDataLoss, "cannot read " + what);
  }
  value.resize(std::strlen(value.c_str()));  // fixed-length strings are NUL- or space-padded
  while (!value.empty() && value.back() == ' ') value.pop_back();
  return value;
}

StatusOr<int64_t> Location::int_attr(const std::string& name) const {
  SDXLB_ASSIGN_OR_RETURN(auto attr, open_attr(*this, name));
  int64_t value = 0;
  if (H5Aread(attr.id(), H5T_NATIVE_INT64, &value) < 0) {
    return h5_error(StatusCode::kDataLoss,
                    "cannot read attribute '" + name + "' of " + where() + " as an integer");
  }
  return value;
}

StatusOr<double> Location::double_attr(const std::string& name) const {
  SDXLB_ASSIGN_OR_RETURN(auto attr, open_attr(*this, name));
  double value = 0;
  if (H5Aread(attr.id(), H5T_NATIVE_DOUBLE, &value) < 0) {
    return h5_error(StatusCode::kDataLoss,
                    "cannot read attribute '" + name + "' of " + where() + " as a number");
  }
  return value;
}

// ---- File ---------------------------------------------------------------------------------------------

namespace {

StatusOr<PropList> file_access_list() {
  SDXLB_ASSIGN_OR_RETURN(auto fapl, PropList::create(H5P_FILE_ACCESS));
  // SEMI: H5Fclose fails while objects are open, instead of returning success and closing the file later
  // (after we have renamed it into place).
  if (H5Pset_fclose_degree(fapl.id(), H5F_CLOSE_SEMI) < 0) {
    return h5_error(StatusCode::kInternal, "cannot set the file close degree");
  }
  // Every byte goes through the Env (store/env.h), so that tests can fail any read or write.
  const hid_t driver = env_driver_id();
  if (driver < 0 || H5Pset_driver(fapl.id(), driver, nullptr) < 0) {
    return h5_error(StatusCode::kInternal, "cannot select the sdxlb_env file driver");
  }
  return fapl;
}

}  // namespace

StatusOr<File> File::create(const std::string& path, bool truncate) {
  SDXLB_ASSIGN_OR_RETURN(auto fapl, file_access_list());
  begin_call();
  struct stat before {};
  const bool existed = ::stat(path.c_str(), &before) == 0;
  hid_t id = H5Fcreate(path.c_str(), truncate ? H5F_ACC_TRUNC : H5F_ACC_EXCL, H5P_DEFAULT, fapl.id());
  if (id < 0) {
    Status st = h5_error(StatusCode::kIoError, "cannot create the HDF5 file " + path);
    // A failed create (ENOSPC writing the superblock) leaves nothing behind; an existing file that EXCL
    // refused is not ours to remove.
    if (truncate || !existed) env().unlink(path);
    return st;
  }
  return File(id, H5Fclose, path, "/");
}

StatusOr<File> File::open(const std::string& path, bool writable) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return not_found("no file " + path);
    return io_error("cannot stat " + path + ": " + std::strerror(errno));
  }
  if (::access(path.c_str(), writable ? (R_OK | W_OK) : R_OK) != 0) {
    return io_error("cannot open " + path + (writable ? " for writing" : " for reading") + ": " +
                    std::strerror(errno) + "; fix its permissions");
  }
  SDXLB_ASSIGN_OR_RETURN(auto fapl, file_access_list());
  begin_call();
  hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.id());
  if (id < 0) {
    return h5_error(StatusCode::kDataLoss, path + " is not a readable HDF5 file (corrupt or truncated?)");
  }
  return File(id, H5Fclose, path, "/");
}

Status File::flush() const {
  begin_call();
  if (H5Fflush(id_, H5F_SCOPE_GLOBAL) < 0) return h5_error(StatusCode::kIoError, "cannot flush " + file_);
  return Status::ok();
}

// ---- columns ------------------------------------------------------------------------------------------

template <class T>
hid_t memory_type() {
  if constexpr (std::is_same_v<T, int8_t>) return H5T_NATIVE_INT8;
  if constexpr (std::is_same_v<T, uint8_t>) return H5T_NATIVE_UINT8;
  if constexpr (std::is_same_v<T, int32_t>) return H5T_NATIVE_INT32;
  if constexpr (std::is_same_v<T, int64_t>) return H5T_NATIVE_INT64;
  if constexpr (std::is_same_v<T, uint64_t>) return H5T_NATIVE_UINT64;
  if constexpr (std::is_same_v<T, float>) return H5T_NATIVE_FLOAT;
  if constexpr (std::is_same_v<T, double>) return H5T_NATIVE_DOUBLE;
  return H5I_INVALID_HID;
}

template <class T>
StatusOr<Datatype> column_file_type() {
  if constexpr (std::is_same_v<T, std::string>) return Datatype::vlen_string();
  if constexpr (std::is_same_v<T, Bytes>) return Datatype::vlen_bytes();
  if constexpr (std::is_same_v<T, int8_t>) return Datatype::copy_of(H5T_STD_I8LE);
  if constexpr (std::is_same_v<T, uint8_t>) return Datatype::copy_of(H5T_STD_U8LE);
  if constexpr (std::is_same_v<T, int32_t>) return Datatype::copy_of(H5T_STD_I32LE);
  if constexpr (std::is_same_v<T, int64_t>) return Datatype::copy_of(H5T_STD_I64LE);
  if constexpr (std::is_same_v<T, uint64_t>) return Datatype::copy_of(H5T_STD_U64LE);
  if constexpr (std::is_same_v<T, float>) return Datatype::copy_of(H5T_IEEE_F32LE);
  if constexpr (std::is_same_v<T, double>) return Datatype::copy_of(H5T_IEEE_F64LE);
  return internal_error("unsupported column type");
}

template <class T>
StatusOr<Dataset> create_column(const Location& loc, const std::string& name, hsize_t n,
                                const DatasetOptions& options) {
  SDXLB_ASSIGN_OR_RETURN(auto type, column_file_type<T>());
  return loc.create_dataset(name, type.id(), {n}, options);
}

template <class T>
Status write_column(const Location& loc, const std::string& name, const std::vector<T>& values,
                    const DatasetOptions& options) {
  SDXLB_ASSIGN_OR_RETURN(auto ds, create_column<T>(loc, name, values.size(), options));
  SDXLB_RETURN_IF_ERROR(with_write_buffer(values, [&](hid_t mem_type, const void* buf) {
    return ds.write_rows(mem_type, 0, values.size(), buf);
  }));
  return ds.close();
}

template <class T>
StatusOr<std::vector<T>> read_column(const Location& loc, const std::string& name, hsize_t start,
                                     hsize_t count) {
  SDXLB_ASSIGN_OR_RETURN(auto ds, loc.open_dataset(name));
  SDXLB_ASSIGN_OR_RETURN(auto dims, ds.dims());
  if (dims.size() != 1) {
    return data_loss(ds.where() + " has " + std::to_string(dims.size()) +
                     " dimensions; expected a 1-D column");
  }
  if (start > dims[0]) start = dims[0];
  count = std::min(count, dims[0] - start);
  std::vector<T> out;
  SDXLB_RETURN_IF_ERROR(read_rows_into(ds, start, count, &out));
  return out;
}

template <class T>
Status write_column_points(Dataset& ds, const std::vector<hsize_t>& rows, const std::vector<T>& values) {
  if (rows.size() != values.size())
    return internal_error("write_column_points: rows and values differ in length");
  return with_write_buffer(
      values, [&](hid_t mem_type, const void* buf) { return ds.write_points(mem_type, rows, buf); });
}

template <class T>
Status append_column(Dataset& ds, const std::vector<T>& values) {
  return with_write_buffer(
      values, [&](hid_t mem_type, const void* buf) { return ds.append_rows(mem_type, values.size(), buf); });
}

#define SDXLB_H5_COLUMN(T)                                                                                 \
  template StatusOr<Datatype> column_file_type<T>();                                                       \
  template StatusOr<Dataset> create_column<T>(const Location&, const std::string&, hsize_t,                \
                                              const DatasetOptions&);                                      \
  template Status write_column<T>(const Location&, const std::string&, const std::vector<T>&,              \
                                  const DatasetOptions&);                                                  \
  template StatusOr<std::vector<T>> read_column<T>(const Location&, const std::string&, hsize_t, hsize_t); \
  template Status write_column_points<T>(Dataset&, const std::vector<hsize_t>&, const std::vector<T>&);    \
  template Status append_column<T>(Dataset&, const std::vector<T>&);
#define SDXLB_H5_NUMERIC(T) \
  SDXLB_H5_COLUMN(T)        \
  template hid_t memory_type<T>();

SDXLB_H5_NUMERIC(int8_t)
SDXLB_H5_NUMERIC(uint8_t)
SDXLB_H5_NUMERIC(int32_t)
SDXLB_H5_NUMERIC(int64_t)
SDXLB_H5_NUMERIC(uint64_t)
SDXLB_H5_NUMERIC(float)
SDXLB_H5_NUMERIC(double)
SDXLB_H5_COLUMN(std::string)
SDXLB_H5_COLUMN(Bytes)
#undef SDXLB_H5_NUMERIC
#undef SDXLB_H5_COLUMN

}  // namespace sdxlb::h5
