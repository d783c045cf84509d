// Durable file operations: the building blocks of "trust only complete files".
//
// A file is published by writing it under a temporary name, fsync-ing it, renaming it into place
// (atomic on POSIX file systems) and fsync-ing the folder so the rename itself survives a power loss.
// A reader then sees either the old state or the complete new file, never a partial one.
// All functions are thread-compatible (no shared state); errors name the path and the OS reason.
#pragma once

#include <string>

#include "common/status.h"

namespace sdxlb {

/// fsync(2) of an existing file (opened read-only). kIoError on failure.
Status sync_file(const std::string& path);

/// fsync(2) of a folder, so that entries created or renamed in it are durable. kIoError on failure.
Status sync_dir(const std::string& path);

/// Renames `from` to `to` (replacing `to`), then syncs `to` and its folder. kIoError on failure.
Status publish_file(const std::string& from, const std::string& to);

/// Writes `bytes` to `path` atomically: `path`.tmp, fsync, rename, fsync of the folder. kIoError when `path`
/// exists and is not a regular file (a device, FIFO or folder is never replaced).
Status write_file_atomically(const std::string& path, const std::string& bytes);

/// The folder part of `path` ("." when it has none).
std::string parent_dir(const std::string& path);

}  // namespace sdxlb
