// JPEG decoding with libjpeg-turbo. libjpeg reports errors through error_exit, whose
// default calls exit(); ours longjmps back here and the message becomes a dalr::Error.
// Declared in images.cpp (the only caller).
#include <algorithm>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

// jpeglib.h needs size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>

#include "dalr/error.hpp"
#include "io/decode.hpp"

namespace dalr::io {

namespace {

struct ErrorManager {
  jpeg_error_mgr pub;  // first, so a j_common_ptr's err can be cast back
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings that mean the image data is missing or damaged (libjpeg would fill the rest
// with grey and carry on) are errors here; harmless ones (extraneous bytes before a
// marker, as in some ImageNet files) are ignored, as PIL does.
void on_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;  // trace messages
  const int code = cinfo->err->msg_code;
  if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE ||
      code == JWRN_MUST_RESYNC || code == JWRN_NOT_SEQUENTIAL)
    on_error(cinfo);
}

// Largest DCT reduction (1/8, 1/4 or 1/2) whose output keeps the shorter side >= target.
// libjpeg-turbo has SIMD code for these; the other M/8 scalings run its plain C IDCTs
// (12x12 for subsampled chroma at 6/8) and measured slower than a full decode.
unsigned dct_scale_num(int64_t width, int64_t height, int64_t min_short_side) {
  if (min_short_side <= 0) return 8;
  const int64_t short_side = std::min(width, height);
  for (unsigned m : {1u, 2u, 4u})
    if ((short_side * m + 7) / 8 >= min_short_side) return m;  // libjpeg rounds up
  return 8;
}

}  // namespace

// Decodes `bytes` (the content of `path`) to 8-bit interleaved pixels, 1 channel
// (greyscale JPEG, or want_grey: libjpeg's Y, the ITU-R 601 luma) or 3 (RGB). When
// min_short_side > 0 the DCT scaling shrinks the image as far as it can while the
// shorter side stays >= min_short_side. CMYK/YCCK JPEGs are converted (Adobe's
// inverted CMYK, as PIL reads it).
// Why scale in the IDCT: a 4x reduction costs a quarter of the IDCT work and memory.
void decode_jpeg(const std::string& path, const std::vector<uint8_t>& bytes, int64_t min_short_side,
                 bool want_grey, int64_t* width, int64_t* height, int64_t* channels,
                 std::vector<uint8_t>* pixels) {
  const int64_t cap = max_image_pixels();  // may throw: before any decoder exists
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  std::vector<uint8_t> cmyk;  // constructed before setjmp: longjmp skips no destructor
  // Only C calls and already-constructed objects between here and any longjmp.
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(path + ": corrupt or truncated JPEG (" + err.message + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  {
    const uint64_t dw = cinfo.image_width, dh = cinfo.image_height;
    uint64_t n;
    // The declared size, not the scaled output: a progressive JPEG buffers all of it.
    if (__builtin_mul_overflow(dw, dh, &n) || n > static_cast<uint64_t>(cap)) {
      jpeg_destroy_decompress(&cinfo);  // no longjmp from here on
      check_image_size(path, "JPEG", dw, dh);
    }
  }
  const bool is_cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  if (is_cmyk)
    cinfo.out_color_space = JCS_CMYK;
  else if (want_grey || cinfo.jpeg_color_space == JCS_GRAYSCALE)
    cinfo.out_color_space = JCS_GRAYSCALE;
  else
    cinfo.out_color_space = JCS_RGB;
  cinfo.scale_num = dct_scale_num(cinfo.image_width, cinfo.image_height, min_short_side);
  cinfo.scale_denom = 8;
  cinfo.dct_method = JDCT_ISLOW;
  jpeg_start_decompress(&cinfo);
  const size_t w = cinfo.output_width, h = cinfo.output_height;
  const size_t comps = static_cast<size_t>(cinfo.output_components);
  std::vector<uint8_t>& dst = is_cmyk ? cmyk : *pixels;
  dst.resize(w * h * comps);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = dst.data() + size_t{cinfo.output_scanline} * w * comps;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);

  *width = static_cast<int64_t>(w);
  *height = static_cast<int64_t>(h);
  *channels = is_cmyk ? 3 : static_cast<int64_t>(comps);
  if (is_cmyk) {
    // Adobe writes inverted CMYK: the stored values are 255 - ink, so R = C * K / 255.
    pixels->resize(w * h * 3);
    for (size_t i = 0; i < w * h; ++i) {
      const unsigned k = cmyk[4 * i + 3];
      for (size_t c = 0; c < 3; ++c)
        (*pixels)[3 * i + c] = static_cast<uint8_t>((cmyk[4 * i + c] * k + 127) / 255);
    }
  }
}

}  // namespace dalr::io
