#include "pipeline/io/file_opener.h"

#include "pipeline/io/safetensors.h"

namespace sdxlb {

StatusOr<std::shared_ptr<const SafetensorsFile>> open_weights_file(const FileOpener& opener,
                                                                   const std::string& path) {
  return opener ? opener(path) : SafetensorsFile::open(path);
}

}  // namespace sdxlb
