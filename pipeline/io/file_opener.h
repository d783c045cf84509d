// FileOpener: how the weight loaders get a .safetensors file for a path.
//
// Every loader (diffusers folders and their shards, single-file checkpoints, VAE files, LoRAs) opens its
// files through one FileOpener, so that what the bytes come from is decided in one place: by default the disk
// (SafetensorsFile::open, a memory map), or for the workers of a node the node's first worker reading the
// file and the others receiving its bytes (pipeline/io/weights_broadcast.h). The loaders run unchanged on
// either: a file is the same validated SafetensorsFile whatever its bytes came from.
//
// An empty FileOpener means the disk. A FileOpener is called from the loading thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace sdxlb {

class SafetensorsFile;

/// Returns the validated file at `path`, with SafetensorsFile::open's errors (kNotFound, kIoError, kDataLoss)
/// or the opener's own.
using FileOpener = std::function<StatusOr<std::shared_ptr<const SafetensorsFile>>(const std::string& path)>;

/// Opens `path` through `opener`, or from disk when `opener` is empty.
StatusOr<std::shared_ptr<const SafetensorsFile>> open_weights_file(const FileOpener& opener,
                                                                   const std::string& path);

}  // namespace sdxlb
