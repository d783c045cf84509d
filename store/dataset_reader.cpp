#include "store/dataset_reader.h"

#include <sys/stat.h>

#include "store/hdf5.h"
#include "store/item_columns_io.h"
#include "store/png.h"

namespace sdxlb {

StatusOr<DatasetReader> DatasetReader::open(const std::string& output_dir) {
  DatasetReader r;
  r.dir_ = output_dir;
  const std::string path = output_dir + "/index.h5";
  auto file = h5::File::open(path, /*writable=*/false);
  if (!file.is_ok()) {
    struct stat st {};
    if (file.status().code() == StatusCode::kNotFound &&
        ::stat((output_dir + "/segments").c_str(), &st) != 0 &&
        ::stat((output_dir + "/job.json").c_str(), &st) != 0)
      return not_found(
          output_dir +
          " is not an sdxl-batch output folder (it has no index.h5, job.json or segments/); give "
          "the folder that a job file's `output:` names");
    if (file.status().code() == StatusCode::kNotFound)
      return not_found(path +
                       " does not exist yet: the job has not finished once (run `sdxl-batch run` on its job "
                       "file; a resumed run writes it at the end)");
    return file.status();
  }
  DatasetSummary& s = r.summary_;
  SDXLB_ASSIGN_OR_RETURN(s.total_items, file->int_attr("total_items"));
  SDXLB_ASSIGN_OR_RETURN(s.encoding, file->string_attr("encoding"));
  SDXLB_ASSIGN_OR_RETURN(auto h, file->int_attr("height"));
  SDXLB_ASSIGN_OR_RETURN(auto w, file->int_attr("width"));
  s.height = static_cast<int>(h);
  s.width = static_cast<int>(w);
  s.job_yaml = file->string_attr("job_yaml").is_ok() ? *file->string_attr("job_yaml") : "";
  s.start_time = file->string_attr("start_time").is_ok() ? *file->string_attr("start_time") : "";
  s.end_time = file->string_attr("end_time").is_ok() ? *file->string_attr("end_time") : "";
  SDXLB_ASSIGN_OR_RETURN(r.segments_, h5::read_column<std::string>(*file, "segments"));
  SDXLB_ASSIGN_OR_RETURN(r.item_segment_, h5::read_column<int32_t>(*file, "item_segment"));
  SDXLB_ASSIGN_OR_RETURN(r.item_row_, h5::read_column<int64_t>(*file, "item_row"));
  SDXLB_ASSIGN_OR_RETURN(r.status_, h5::read_column<int8_t>(*file, "status"));
  SDXLB_ASSIGN_OR_RETURN(r.prompts_, h5::read_column<std::string>(*file, "prompt"));
  SDXLB_ASSIGN_OR_RETURN(auto errors, h5::read_column<std::string>(*file, "error"));
  if (r.status_.size() != static_cast<size_t>(s.total_items) || r.item_row_.size() != r.status_.size() ||
      r.item_segment_.size() != r.status_.size() || r.prompts_.size() != r.status_.size())
    return data_loss(
        path +
        ": the item columns do not have total_items entries; the index is corrupt (rerun the job "
        "to rewrite it)");
  for (int64_t i = 0; i < s.total_items; ++i) {
    const int8_t st = r.status_[static_cast<size_t>(i)];
    if (st == 1)
      ++s.ok;
    else if (st == 0) {
      ++s.failed;
      s.failed_items.emplace_back(i, errors[static_cast<size_t>(i)]);
    } else {
      ++s.missing;
      s.missing_items.push_back(i);
    }
  }
  return r;
}

StatusOr<std::vector<uint8_t>> DatasetReader::image(int64_t item) const {
  if (item < 0 || item >= summary_.total_items || !ok(item))
    return not_found("item " + std::to_string(item) + " has no stored image");
  const size_t i = static_cast<size_t>(item);
  const std::string path = dir_ + "/segments/" + segments_.at(static_cast<size_t>(item_segment_[i]));
  SDXLB_ASSIGN_OR_RETURN(auto file, h5::File::open(path, /*writable=*/false));
  const hsize_t row = static_cast<hsize_t>(item_row_[i]);
  if (summary_.encoding == "png") {
    SDXLB_ASSIGN_OR_RETURN(auto bytes, h5::read_column<h5::Bytes>(file, "png", row, 1));
    if (bytes.size() != 1) return data_loss(path + ": no PNG bytes at row " + std::to_string(row));
    SDXLB_ASSIGN_OR_RETURN(auto img, decode_png(bytes[0].data(), bytes[0].size(), path));
    return std::move(img.pixels);
  }
  SDXLB_ASSIGN_OR_RETURN(auto ds, file.open_dataset("images"));
  std::vector<uint8_t> rgb(static_cast<size_t>(summary_.height) * summary_.width * 3);
  SDXLB_RETURN_IF_ERROR(ds.read_rows(H5T_NATIVE_UINT8, row, 1, rgb.data()));
  return rgb;
}

StatusOr<std::vector<uint8_t>> DatasetReader::png(int64_t item, int compression_level) const {
  if (item < 0 || item >= summary_.total_items || !ok(item))
    return not_found("item " + std::to_string(item) + " has no stored image");
  if (summary_.encoding != "png") {
    SDXLB_ASSIGN_OR_RETURN(auto rgb, image(item));
    return encode_png(rgb.data(), summary_.height, summary_.width, compression_level);
  }
  const size_t i = static_cast<size_t>(item);
  const std::string path = dir_ + "/segments/" + segments_.at(static_cast<size_t>(item_segment_[i]));
  SDXLB_ASSIGN_OR_RETURN(auto file, h5::File::open(path, /*writable=*/false));
  const hsize_t row = static_cast<hsize_t>(item_row_[i]);
  SDXLB_ASSIGN_OR_RETURN(auto bytes, h5::read_column<h5::Bytes>(file, "png", row, 1));
  if (bytes.size() != 1 || bytes[0].empty())
    return data_loss(path + ": no PNG bytes at row " + std::to_string(row));
  return std::move(bytes[0]);
}

StatusOr<ItemColumns> DatasetReader::records(int64_t first, int64_t count) const {
  if (first < 0 || count < 0 || first > summary_.total_items)
    return internal_error("DatasetReader::records(" + std::to_string(first) + ", " + std::to_string(count) +
                          ") outside the " + std::to_string(summary_.total_items) + " items");
  const std::string path = dir_ + "/index.h5";
  SDXLB_ASSIGN_OR_RETURN(auto file, h5::File::open(path, /*writable=*/false));
  auto columns = read_item_columns(file, static_cast<hsize_t>(first), static_cast<hsize_t>(count));
  if (!columns.is_ok()) return columns.status().with_context(path);
  return columns;
}

}  // namespace sdxlb
