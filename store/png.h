// PNG encoding and decoding of 8-bit RGB images (H x W x 3, row-major, no padding) in memory, with libpng.
//
// Stateless and thread-safe: every call uses its own libpng structures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sdxlb {

/// An 8-bit RGB image: pixels[(y * width + x) * 3 + c].
struct RgbImage {
  int height = 0;
  int width = 0;
  std::vector<uint8_t> pixels;
};

/// Encodes `rgb` (height x width x 3) as PNG bytes. `compression_level` is zlib's 0 (none, fastest) to 9
/// (smallest); 1-3 are much faster than the default 6 for a few percent more bytes.
/// Errors: kInvalidArgument (bad size or level), kInternal (libpng failure, with its message).
StatusOr<std::vector<uint8_t>> encode_png(const uint8_t* rgb, int height, int width,
                                          int compression_level = 3);

/// Decodes PNG bytes into 8-bit RGB (gray, palette and 16-bit images are converted; alpha is dropped by
/// compositing on black). `source` names the bytes in error messages. Errors: kDataLoss (not a valid PNG).
StatusOr<RgbImage> decode_png(const uint8_t* data, size_t size, const std::string& source);

/// Encodes `rgb` and writes it to `path` atomically (temporary file, fsync, rename).
Status write_png_file(const std::string& path, const uint8_t* rgb, int height, int width,
                      int compression_level = 3);

/// Reads and decodes the PNG file `path`. Errors: kNotFound, kIoError, kDataLoss.
StatusOr<RgbImage> read_png_file(const std::string& path);

}  // namespace sdxlb
