// Reading and writing ItemColumns as HDF5 datasets: one 1-D dataset per column, named as in
// ItemColumns::for_each, directly under a file or group. Shared by segment files and index.h5.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "store/hdf5.h"
#include "store/item_table.h"

namespace sdxlb {

/// Writes every column as a new growable dataset under `loc` (with Fletcher32 checksums on the numeric
/// columns unless `checksums` is false).
Status write_item_columns(const h5::Location& loc, const ItemColumns& columns, bool checksums = true);

/// Reads every column, or its rows [start, start+count) (count past the end: to the end). kNotFound when a
/// column is missing, kDataLoss when lengths differ or a read fails.
StatusOr<ItemColumns> read_item_columns(const h5::Location& loc, hsize_t start = 0,
                                        hsize_t count = static_cast<hsize_t>(-1));

/// The common length of all columns, checked without reading them (kNotFound / kDataLoss as above).
StatusOr<int64_t> item_columns_length(const h5::Location& loc);

/// Creates every column with `n` elements to be filled by write_item_column_points. Unwritten elements
/// read as 0 / "" except `status`, which reads as -1 ("never rendered").
Status create_item_columns(const h5::Location& loc, hsize_t n);

/// Writes row k of `columns` to element rows[k] of every column created by create_item_columns.
Status write_item_column_points(const h5::Location& loc, const std::vector<hsize_t>& rows,
                                const ItemColumns& columns);

}  // namespace sdxlb
