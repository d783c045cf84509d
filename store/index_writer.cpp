#include "store/index_writer.h"

#include <unistd.h>

#include <numeric>
#include <vector>

#include "store/durable_file.h"
#include "store/env.h"
#include "store/hdf5.h"
#include "store/item_columns_io.h"

namespace sdxlb {
namespace {

constexpr int64_t kIndexFormatVersion = 1;

// For each segment, the positions in scan.items of the entries that live in it (in item order).
std::vector<std::vector<size_t>> entries_by_segment(const ScanResult& scan) {
  std::vector<std::vector<size_t>> by_segment(scan.segments.size());
  for (size_t k = 0; k < scan.items.size(); ++k) by_segment[scan.items[k].segment].push_back(k);
  return by_segment;
}

Status write_attributes(const h5::File& f, const ScanResult& scan, int64_t total_items,
                        const std::map<std::string, std::string>& attributes, const IndexSummary& summary) {
  for (const auto& [key, value] : attributes) SDXLB_RETURN_IF_ERROR(f.set_string_attr(key, value));
  // Ours last, so a caller's key of the same name cannot make the file lie about itself.
  SDXLB_RETURN_IF_ERROR(f.set_string_attr("format", "sdxlb-index"));
  SDXLB_RETURN_IF_ERROR(f.set_int_attr("format_version", kIndexFormatVersion));
  SDXLB_RETURN_IF_ERROR(f.set_int_attr("total_items", total_items));
  SDXLB_RETURN_IF_ERROR(f.set_int_attr("items_ok", summary.ok));
  SDXLB_RETURN_IF_ERROR(f.set_int_attr("items_failed", summary.failed));
  SDXLB_RETURN_IF_ERROR(f.set_int_attr("items_missing", summary.missing));
  SDXLB_RETURN_IF_ERROR(f.set_int_attr("duplicates", summary.duplicates));
  SDXLB_RETURN_IF_ERROR(f.set_string_attr("encoding", scan.encoding));
  SDXLB_RETURN_IF_ERROR(f.set_int_attr("height", scan.height));
  return f.set_int_attr("width", scan.width);
}

// Copies each segment's records of the entries that count into the index columns, at their item positions.
Status gather_columns(const h5::File& f, const std::string& out_dir, const ScanResult& scan,
                      int64_t total_items, const std::vector<std::vector<size_t>>& by_segment) {
  SDXLB_RETURN_IF_ERROR(create_item_columns(f, static_cast<hsize_t>(total_items)));
  {
    // item_index is known for every item, rendered or not.
    std::vector<int64_t> all(static_cast<size_t>(total_items));
    std::iota(all.begin(), all.end(), int64_t{0});
    SDXLB_ASSIGN_OR_RETURN(auto ds, f.open_dataset("item_index"));
    SDXLB_RETURN_IF_ERROR(ds.write_rows(H5T_NATIVE_INT64, 0, all.size(), all.data()));
    SDXLB_RETURN_IF_ERROR(ds.close());
  }
  for (size_t s = 0; s < scan.segments.size(); ++s) {
    if (by_segment[s].empty()) continue;
    const std::string path = out_dir + "/segments/" + scan.segments[s];
    SDXLB_ASSIGN_OR_RETURN(auto seg, h5::File::open(path, /*writable=*/false));
    SDXLB_ASSIGN_OR_RETURN(auto columns, read_item_columns(seg));
    std::vector<size_t> rows;
    std::vector<hsize_t> items;
    for (size_t k : by_segment[s]) {
      const ItemEntry& e = scan.items[k];
      if (e.row < 0 || static_cast<size_t>(e.row) >= columns.size() || columns.item_index[e.row] != e.item) {
        return data_loss(path + " changed since it was scanned (row " + std::to_string(e.row) +
                         " should hold item " + std::to_string(e.item) + "); run again to rescan");
      }
      rows.push_back(static_cast<size_t>(e.row));
      items.push_back(static_cast<hsize_t>(e.item));
    }
    SDXLB_RETURN_IF_ERROR(write_item_column_points(f, items, columns.take(rows)));
    SDXLB_RETURN_IF_ERROR(seg.close());
  }
  return Status::ok();
}

// The virtual `images` dataset: one mapping per run of consecutive items stored in consecutive rows of one
// segment (workers get batches of consecutive items, so runs are long and mappings few).
Status write_virtual_images(const h5::File& f, const ScanResult& scan, int64_t total_items,
                            const std::vector<std::vector<size_t>>& by_segment) {
  const hsize_t n = static_cast<hsize_t>(total_items), h = static_cast<hsize_t>(scan.height),
                w = static_cast<hsize_t>(scan.width);
  SDXLB_ASSIGN_OR_RETURN(auto dcpl, h5::PropList::create(H5P_DATASET_CREATE));
  h5::begin_call();
  uint8_t zero = 0;
  if (H5Pset_fill_value(dcpl.id(), H5T_NATIVE_UINT8, &zero) < 0) {
    return h5::h5_error(StatusCode::kInternal, "cannot set the fill value of the virtual images dataset");
  }
  SDXLB_ASSIGN_OR_RETURN(auto virtual_space, h5::Dataspace::simple({n, h, w, 3}));
  for (size_t s = 0; s < scan.segments.size(); ++s) {
    const auto& entries = by_segment[s];
    if (entries.empty()) continue;
    SDXLB_ASSIGN_OR_RETURN(auto source_space,
                           h5::Dataspace::simple({static_cast<hsize_t>(scan.segment_items[s]), h, w, 3}));
    const std::string source = "segments/" + scan.segments[s];
    size_t k = 0;
    while (k < entries.size()) {
      const ItemEntry& first = scan.items[entries[k]];
      hsize_t len = 1;
      while (k + len < entries.size()) {
        const ItemEntry& next = scan.items[entries[k + len]];
        if (next.item != first.item + static_cast<int64_t>(len) ||
            next.row != first.row + static_cast<int64_t>(len)) {
          break;
        }
        ++len;
      }
      SDXLB_RETURN_IF_ERROR(virtual_space.select_rows(static_cast<hsize_t>(first.item), len));
      SDXLB_RETURN_IF_ERROR(source_space.select_rows(static_cast<hsize_t>(first.row), len));
      SDXLB_RETURN_IF_ERROR(dcpl.add_virtual_mapping(virtual_space, source, "/images", source_space));
      k += len;
    }
  }
  SDXLB_ASSIGN_OR_RETURN(auto space, h5::Dataspace::simple({n, h, w, 3}));
  SDXLB_ASSIGN_OR_RETURN(auto ds, f.create_dataset("images", H5T_STD_U8LE, space, dcpl));
  return ds.close();
}

Status write_contents(const h5::File& f, const std::string& out_dir, const ScanResult& scan,
                      int64_t total_items, const std::map<std::string, std::string>& attributes,
                      const IndexSummary& summary) {
  SDXLB_RETURN_IF_ERROR(write_attributes(f, scan, total_items, attributes, summary));
  SDXLB_RETURN_IF_ERROR(h5::write_column(f, "segments", scan.segments));
  std::vector<int32_t> item_segment(static_cast<size_t>(total_items), -1);
  std::vector<int64_t> item_row(static_cast<size_t>(total_items), -1);
  for (const ItemEntry& e : scan.items) {
    item_segment[e.item] = e.segment;
    item_row[e.item] = e.row;
  }
  SDXLB_RETURN_IF_ERROR(h5::write_column(f, "item_segment", item_segment));
  SDXLB_RETURN_IF_ERROR(h5::write_column(f, "item_row", item_row));
  const auto by_segment = entries_by_segment(scan);
  SDXLB_RETURN_IF_ERROR(gather_columns(f, out_dir, scan, total_items, by_segment));
  if (scan.encoding == "raw" && total_items > 0 && !scan.segments.empty()) {
    SDXLB_RETURN_IF_ERROR(write_virtual_images(f, scan, total_items, by_segment));
  }
  return Status::ok();
}

}  // namespace

StatusOr<IndexSummary> write_index_file(const std::string& out_dir, const ScanResult& scan,
                                        int64_t total_items,
                                        const std::map<std::string, std::string>& attributes) {
  if (total_items < 0)
    return invalid_argument("write_index: negative item count " + std::to_string(total_items));
  IndexSummary summary;
  summary.path = out_dir + "/index.h5";
  summary.total_items = total_items;
  summary.segments = static_cast<int64_t>(scan.segments.size());
  summary.duplicates = static_cast<int64_t>(scan.duplicates.size());
  for (const ItemEntry& e : scan.items) {
    if (e.item < 0 || e.item >= total_items) {
      return failed_precondition(
          "segment " + out_dir + "/segments/" + scan.segments[e.segment] + " holds item " +
          std::to_string(e.item) + " but the job has " + std::to_string(total_items) +
          " items; the folder holds segments of another job. Fix: use a new output folder "
          "or pass --overwrite");
    }
    (e.ok ? summary.ok : summary.failed) += 1;
  }
  summary.missing = total_items - summary.ok - summary.failed;

  const std::string tmp = summary.path + ".tmp";
  SDXLB_ASSIGN_OR_RETURN(auto f, h5::File::create(tmp, /*truncate=*/true));
  Status st = write_contents(f, out_dir, scan, total_items, attributes, summary);
  if (st.is_ok()) st = f.close();
  if (st.is_ok()) st = publish_file(tmp, summary.path);
  if (!st.is_ok()) {
    f.reset();
    env().unlink(tmp);
    return st.with_context("writing " + summary.path);
  }
  return summary;
}

}  // namespace sdxlb
