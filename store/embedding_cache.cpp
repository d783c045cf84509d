#include "store/embedding_cache.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "common/fingerprint.h"
#include "common/log.h"
#include "store/durable_file.h"
#include "store/hdf5.h"

namespace sdxlb {
namespace {

namespace fs = std::filesystem;

uint64_t text_hash(const std::string& text) {
  return Fingerprint().add(text).value();
}

// IEEE half precision as h5py defines it (HDF5 1.10 has no predefined float16 type).
StatusOr<h5::Datatype> float16_type() {
  SDXLB_ASSIGN_OR_RETURN(auto t, h5::Datatype::copy_of(H5T_IEEE_F32LE));
  h5::begin_call();
  if (H5Tset_fields(t.id(), 15, 10, 5, 0, 10) < 0 || H5Tset_size(t.id(), 2) < 0 ||
      H5Tset_ebias(t.id(), 15) < 0)
    return h5::h5_error(StatusCode::kInternal, "defining the float16 HDF5 type");
  return t;
}

std::vector<hsize_t> dims_of(const std::vector<int64_t>& shape) {
  std::vector<hsize_t> d;
  for (int64_t s : shape) d.push_back(static_cast<hsize_t>(s));
  return d;
}

int64_t product(const std::vector<int64_t>& shape, size_t from) {
  int64_t n = 1;
  for (size_t i = from; i < shape.size(); ++i) n *= shape[i];
  return n;
}

}  // namespace

StatusOr<EmbeddingCache> EmbeddingCache::open(const std::string& dir, const std::string& encoder_id) {
  EmbeddingCache cache;
  cache.folder_ = dir + "/" + encoder_id;
  std::error_code ec;
  fs::create_directories(cache.folder_, ec);
  if (ec)
    return io_error("cannot create the embedding cache folder " + cache.folder_ + ": " + ec.message() +
                    " (set embedding_cache in the job file to a writable folder)");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(cache.folder_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 3 && name.rfind("shard-", 0) == 0 && name.compare(name.size() - 3, 3, ".h5") == 0)
      names.push_back(name);
  }
  if (ec) return io_error("cannot list " + cache.folder_ + ": " + ec.message());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    const std::string path = cache.folder_ + "/" + name;
    auto file = h5::File::open(path, /*writable=*/false);
    StatusOr<std::vector<uint64_t>> hashes = file.is_ok() ? h5::read_column<uint64_t>(*file, "text_hash")
                                                          : StatusOr<std::vector<uint64_t>>(file.status());
    if (!hashes.is_ok()) {
      log_warn("skipping unreadable embedding shard " + path + ": " + hashes.status().message());
      continue;
    }
    const int32_t shard = static_cast<int32_t>(cache.shards_.size());
    cache.shards_.push_back(name);
    for (size_t row = 0; row < hashes->size(); ++row)
      cache.index_.emplace((*hashes)[row], Location{shard, static_cast<int64_t>(row)});
  }
  return cache;
}

bool EmbeddingCache::contains(const std::string& text) const {
  return index_.count(text_hash(text)) != 0;
}

Status EmbeddingCache::write_shard(const std::string& tag, const std::vector<std::string>& texts,
                                   const HalfRowsView& prompt_embeds, const HalfRowsView& pooled) {
  const int64_t n = static_cast<int64_t>(texts.size());
  if (prompt_embeds.shape.size() != 3 || pooled.shape.size() != 2 || prompt_embeds.shape[0] != n ||
      pooled.shape[0] != n || (n > 0 && (prompt_embeds.values == nullptr || pooled.values == nullptr)))
    return invalid_argument("write_shard: " + std::to_string(n) +
                            " texts need embeddings [n, S, D] and [n, P]");
  const std::string name = "shard-" + tag + ".h5";
  const std::string path = folder_ + "/" + name;
  const std::string tmp = path + ".tmp";
  std::vector<uint64_t> hashes;
  for (const auto& t : texts) hashes.push_back(text_hash(t));
  {
    SDXLB_ASSIGN_OR_RETURN(auto file, h5::File::create(tmp, /*truncate=*/true));
    SDXLB_ASSIGN_OR_RETURN(auto f16, float16_type());
    for (auto [dname, rows] : {std::pair<const char*, const HalfRowsView*>{"prompt_embeds", &prompt_embeds},
                               {"pooled", &pooled}}) {
      h5::DatasetOptions opts;
      auto dims = dims_of(rows->shape);
      opts.chunk = dims;
      opts.chunk[0] = 1;  // one text per chunk: lookups read single rows
      SDXLB_ASSIGN_OR_RETURN(auto ds, file.create_dataset(dname, f16.id(), dims, opts));
      SDXLB_RETURN_IF_ERROR(ds.write_rows(f16.id(), 0, dims[0], rows->values));
    }
    SDXLB_RETURN_IF_ERROR(h5::write_column<std::string>(file, "text", texts));
    SDXLB_RETURN_IF_ERROR(h5::write_column<uint64_t>(file, "text_hash", hashes));
    SDXLB_RETURN_IF_ERROR(file.set_string_attr("format", "sdxlb-embeddings"));
    SDXLB_RETURN_IF_ERROR(file.close());
  }
  SDXLB_RETURN_IF_ERROR(publish_file(tmp, path));
  const int32_t shard = static_cast<int32_t>(shards_.size());
  shards_.push_back(name);
  for (int64_t row = 0; row < n; ++row) index_.emplace(hashes[row], Location{shard, row});
  return Status::ok();
}

StatusOr<StoredEmbeddings> EmbeddingCache::read(const std::vector<std::string>& texts) const {
  const int64_t n = static_cast<int64_t>(texts.size());
  std::map<int32_t, std::vector<std::pair<int64_t, int64_t>>> by_shard;  // shard -> (out row, shard row)
  for (int64_t i = 0; i < n; ++i) {
    auto it = index_.find(text_hash(texts[i]));
    if (it == index_.end())
      return not_found("no stored embedding for the prompt \"" + texts[i].substr(0, 80) + "\" in " + folder_ +
                       " (run the encode phase first: sdxl-batch encode <job.yaml>)");
    by_shard[it->second.shard].push_back({i, it->second.row});
  }
  StoredEmbeddings out;
  HalfRows& embeds = out.prompt_embeds;
  HalfRows& pooled = out.pooled;
  SDXLB_ASSIGN_OR_RETURN(auto f16, float16_type());
  for (const auto& [shard, rows] : by_shard) {
    const std::string path = folder_ + "/" + shards_[shard];
    SDXLB_ASSIGN_OR_RETURN(auto file, h5::File::open(path, /*writable=*/false));
    SDXLB_ASSIGN_OR_RETURN(auto eds, file.open_dataset("prompt_embeds"));
    SDXLB_ASSIGN_OR_RETURN(auto pds, file.open_dataset("pooled"));
    SDXLB_ASSIGN_OR_RETURN(auto edims, eds.dims());
    SDXLB_ASSIGN_OR_RETURN(auto pdims, pds.dims());
    if (edims.size() != 3 || pdims.size() != 2) return data_loss(path + ": embeddings of the wrong rank");
    const std::vector<int64_t> eshape = {n, static_cast<int64_t>(edims[1]), static_cast<int64_t>(edims[2])};
    const std::vector<int64_t> pshape = {n, static_cast<int64_t>(pdims[1])};
    if (embeds.shape.empty()) {
      embeds.shape = eshape;
      pooled.shape = pshape;
      embeds.values.resize(static_cast<size_t>(product(eshape, 0)));
      pooled.values.resize(static_cast<size_t>(product(pshape, 0)));
    } else if (embeds.shape != eshape || pooled.shape != pshape) {
      return data_loss(path + ": embedding shape differs from the other shards of " + folder_);
    }
    const int64_t erow = product(eshape, 1), prow = product(pshape, 1);
    for (const auto& [out_row, row] : rows) {
      SDXLB_ASSIGN_OR_RETURN(auto stored, h5::read_column<std::string>(file, "text", row, 1));
      if (stored.size() != 1 || stored[0] != texts[out_row])
        return data_loss(path + ": row " + std::to_string(row) +
                         " holds a different text than its hash says");
      SDXLB_RETURN_IF_ERROR(eds.read_rows(f16.id(), row, 1, embeds.values.data() + out_row * erow));
      SDXLB_RETURN_IF_ERROR(pds.read_rows(f16.id(), row, 1, pooled.values.data() + out_row * prow));
    }
  }
  return out;
}

}  // namespace sdxlb
