#include "store/item_columns_io.h"

#include <algorithm>
#include <string>
#include <type_traits>

namespace sdxlb {

Status write_item_columns(const h5::Location& loc, const ItemColumns& columns, bool checksums) {
  if (!columns.consistent()) return internal_error("item columns of unequal length for " + loc.where());
  Status st;
  h5::DatasetOptions options;
  options.checksum = checksums;
  columns.for_each([&](const char* name, const auto& column) {
    if (st.is_ok()) st = h5::write_column(loc, name, column, options);
  });
  return st;
}

StatusOr<ItemColumns> read_item_columns(const h5::Location& loc, hsize_t start, hsize_t count) {
  ItemColumns out;
  Status st;
  bool missing = false;  // a column added after the file was written
  out.for_each([&](const char* name, auto& column) {
    if (!st.is_ok()) return;
    using Vec = std::decay_t<decltype(column)>;
    if constexpr (std::is_same_v<Vec, std::vector<std::string>>) {
      if (ItemColumns::added_later(name) && !loc.exists(name)) {
        missing = true;
        column.clear();
        return;
      }
    }
    auto read = h5::read_column<typename Vec::value_type>(loc, name, start, count);
    if (!read.is_ok()) {
      st = read.status();
      return;
    }
    column = std::move(read).value();
  });
  SDXLB_RETURN_IF_ERROR(st);
  if (missing) {
    out.for_each([&](const char* name, auto& column) {
      using Vec = std::decay_t<decltype(column)>;
      if constexpr (std::is_same_v<Vec, std::vector<std::string>>) {
        if (ItemColumns::added_later(name) && column.empty())
          column.assign(out.item_index.size(), ItemColumns::kAddedColumnDefault);
      }
    });
  }
  if (!out.consistent()) {
    return data_loss("the per-item columns of " + loc.where() + " have different lengths (item_index has " +
                     std::to_string(out.size()) + ")");
  }
  return out;
}

StatusOr<int64_t> item_columns_length(const h5::Location& loc) {
  int64_t length = -1;
  std::string first;
  Status st;
  ItemColumns names_only;
  names_only.for_each([&](const char* name, const auto&) {
    if (!st.is_ok()) return;
    if (ItemColumns::added_later(name) && !loc.exists(name)) return;
    auto ds = loc.open_dataset(name);
    if (!ds.is_ok()) {
      st = ds.status();
      return;
    }
    auto dims = ds->dims();
    if (!dims.is_ok()) {
      st = dims.status();
      return;
    }
    if (dims->size() != 1) {
      st = data_loss(ds->where() + " is not a 1-D column");
      return;
    }
    int64_t n = static_cast<int64_t>((*dims)[0]);
    if (length < 0) {
      length = n;
      first = name;
    } else if (n != length) {
      st = data_loss("column " + std::string(name) + " of " + loc.where() + " has " + std::to_string(n) +
                     " elements but " + first + " has " + std::to_string(length));
    }
  });
  SDXLB_RETURN_IF_ERROR(st);
  return length;
}

Status create_item_columns(const h5::Location& loc, hsize_t n) {
  Status st;
  ItemColumns names_only;
  names_only.for_each([&](const char* name, const auto& column) {
    if (!st.is_ok()) return;
    using T = typename std::decay_t<decltype(column)>::value_type;
    h5::DatasetOptions options;
    options.growable = false;
    options.chunk = {std::max<hsize_t>(1, std::min<hsize_t>(n, 65536))};
    if constexpr (std::is_arithmetic_v<T>) options.fill = std::string(name) == "status" ? -1.0 : 0.0;
    auto ds = h5::create_column<T>(loc, name, n, options);
    st = ds.is_ok() ? ds->close() : ds.status();
  });
  return st;
}

Status write_item_column_points(const h5::Location& loc, const std::vector<hsize_t>& rows,
                                const ItemColumns& columns) {
  if (rows.size() != columns.size() || !columns.consistent()) {
    return internal_error("write_item_column_points: " + std::to_string(rows.size()) + " rows for " +
                          std::to_string(columns.size()) + " records");
  }
  Status st;
  columns.for_each([&](const char* name, const auto& column) {
    if (!st.is_ok()) return;
    auto ds = loc.open_dataset(name);
    if (!ds.is_ok()) {
      st = ds.status();
      return;
    }
    st = h5::write_column_points(*ds, rows, column);
    if (st.is_ok()) st = ds->close();
  });
  return st;
}

}  // namespace sdxlb
