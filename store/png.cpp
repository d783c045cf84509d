#include "store/png.h"

#include <png.h>

#include <unistd.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "store/durable_file.h"

namespace sdxlb {
namespace {

// libpng reports errors by longjmp to the setjmp point in encode_rows(); this struct carries the message
// out. Only trivially destructible objects live between setjmp and the libpng calls (C++ destructors would
// be skipped by longjmp).
struct PngSink {
  std::vector<uint8_t>* out;
  char error[256];
};

void on_error(png_structp png, png_const_charp message) {
  auto* sink = static_cast<PngSink*>(png_get_error_ptr(png));
  std::snprintf(sink->error, sizeof(sink->error), "%s", message ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

void on_write(png_structp png, png_bytep data, png_size_t length) {
  auto* sink = static_cast<PngSink*>(png_get_io_ptr(png));
  sink->out->insert(sink->out->end(), data, data + length);
}

void on_flush(png_structp) {}

// Returns false with sink->error set when libpng failed.
bool encode_rows(png_structp png, png_infop info, PngSink* sink, const uint8_t* rgb, int height, int width,
                 int level) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_write_fn(png, sink, on_write, on_flush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, level);
  // Level 0 is for speed: skip the filter search too.
  if (level == 0) png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
  png_write_info(png, info);
  const size_t stride = static_cast<size_t>(width) * 3;
  for (int y = 0; y < height; ++y)
    png_write_row(png, const_cast<png_bytep>(rgb + stride * static_cast<size_t>(y)));
  png_write_end(png, info);
  return true;
}

}  // namespace

StatusOr<std::vector<uint8_t>> encode_png(const uint8_t* rgb, int height, int width, int compression_level) {
  if (rgb == nullptr || height <= 0 || width <= 0) {
    return invalid_argument("encode_png: need a non-empty image, got " + std::to_string(height) + "x" +
                            std::to_string(width));
  }
  if (compression_level < 0 || compression_level > 9) {
    return invalid_argument("PNG compression level must be 0..9, got " + std::to_string(compression_level));
  }
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(height) * width * 3 / 2 + 1024);
  PngSink sink{&out, {0}};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, on_error, on_warning);
  if (png == nullptr) return internal_error("libpng: cannot create a write struct");
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_write_struct(&png, nullptr);
    return internal_error("libpng: cannot create an info struct");
  }
  bool ok = encode_rows(png, info, &sink, rgb, height, width, compression_level);
  png_destroy_write_struct(&png, &info);
  if (!ok) return internal_error(std::string("libpng failed to encode a PNG: ") + sink.error);
  return out;
}

StatusOr<RgbImage> decode_png(const uint8_t* data, size_t size, const std::string& source) {
  // The simplified API (libpng >= 1.6) does its own setjmp and converts any PNG to the format we ask for.
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (data == nullptr || size == 0) return data_loss(source + " is empty, not a PNG image");
  if (!png_image_begin_read_from_memory(&image, data, size)) {
    std::string why = image.message;
    png_image_free(&image);
    return data_loss(source + " is not a valid PNG image: " + why);
  }
  image.format = PNG_FORMAT_RGB;
  RgbImage out;
  out.height = static_cast<int>(image.height);
  out.width = static_cast<int>(image.width);
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  png_color black{0, 0, 0};
  if (!png_image_finish_read(&image, &black, out.pixels.data(), 0, nullptr)) {
    std::string why = image.message;
    png_image_free(&image);
    return data_loss(source + " is a corrupt PNG image: " + why);
  }
  return out;
}

Status write_png_file(const std::string& path, const uint8_t* rgb, int height, int width,
                      int compression_level) {
  SDXLB_ASSIGN_OR_RETURN(auto bytes, encode_png(rgb, height, width, compression_level));
  return write_file_atomically(path, std::string(bytes.begin(), bytes.end()));
}

StatusOr<RgbImage> read_png_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (::access(path.c_str(), F_OK) != 0) return not_found("no PNG file " + path);
    return io_error("cannot read " + path + ": " + std::strerror(errno));
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return decode_png(bytes.data(), bytes.size(), path);
}

}  // namespace sdxlb
