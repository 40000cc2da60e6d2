// PNG decoding with libpng. libpng reports errors by longjmp to png_jmpbuf; the message
// is kept and becomes a dalr::Error. Declared in images.cpp (the only caller).
#include <png.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dalr/error.hpp"
#include "io/decode.hpp"

namespace dalr::io {

namespace {

struct PngState {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char message[256];
};

void on_error(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  std::strncpy(st->message, msg ? msg : "unknown error", sizeof(st->message) - 1);
  st->message[sizeof(st->message) - 1] = '\0';
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // e.g. a bad ancillary chunk: skipped

void read_bytes(png_structp png, png_bytep out, png_size_t n) {
  auto* st = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > st->size - st->pos) png_error(png, "file ends early (truncated)");
  std::memcpy(out, st->data + st->pos, n);
  st->pos += n;
}

}  // namespace

// Decodes `bytes` (the content of `path`) to 8-bit interleaved grey (1 channel) or RGB
// (3). Palettes are expanded, 16-bit samples scaled to 8, alpha dropped (as PIL's
// convert("RGB") does), low bit depths widened.
void decode_png(const std::string& path, const std::vector<uint8_t>& bytes, int64_t* width,
                int64_t* height, int64_t* channels, std::vector<uint8_t>* pixels) {
  const int64_t cap = max_image_pixels();  // may throw: before any decoder exists
  PngState st{bytes.data(), bytes.size(), 0, {0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, on_error, on_warning);
  if (!png) throw Error(path + ": cannot allocate a PNG decoder");
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows;  // constructed before setjmp: longjmp skips no destructor
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error(path + ": cannot allocate a PNG decoder");
  }
  // Only C calls and already-constructed objects between here and any longjmp.
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(path + ": corrupt or truncated PNG (" + st.message + ")");
  }
  png_set_read_fn(png, &st, read_bytes);
  // libpng's own limit (1M x 1M) would let 60000 x 60000 through, to a 3.6 GB buffer.
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_read_info(png, info);
  {
    const uint64_t dw = png_get_image_width(png, info), dh = png_get_image_height(png, info);
    uint64_t n;
    if (__builtin_mul_overflow(dw, dh, &n) || n > static_cast<uint64_t>(cap)) {
      png_destroy_read_struct(&png, &info, nullptr);  // no longjmp from here on
      check_image_size(path, "PNG", dw, dh);          // throws, naming the size
    }
  }
  png_set_expand(png);  // palette -> RGB, grey < 8 bits -> 8, tRNS -> alpha
  png_set_scale_16(png);
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  const size_t comps = png_get_channels(png, info);
  if (comps != 1 && comps != 3) png_error(png, "unexpected channel count after transforms");
  pixels->resize(w * h * comps);
  rows.resize(h);
  for (size_t y = 0; y < h; ++y) rows[y] = pixels->data() + y * w * comps;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  *width = static_cast<int64_t>(w);
  *height = static_cast<int64_t>(h);
  *channels = static_cast<int64_t>(comps);
}

}  // namespace dalr::io
