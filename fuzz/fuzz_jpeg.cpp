// JPEG decoding through our libjpeg-turbo wrapper (src/io/jpeg.cpp). The first byte
// picks the options: DCT scaling target and greyscale output.
#include <vector>

#include "dalr/error.hpp"
#include "io/decode.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int64_t min_side = (data[0] & 0x7f) * 4;  // 0: no scaling
  const bool grey = data[0] & 0x80;
  std::vector<uint8_t> bytes(data + 1, data + size);
  int64_t w, h, c;
  std::vector<uint8_t> px;
  try {
    dalr::io::decode_jpeg("fuzz.jpg", bytes, min_side, grey, &w, &h, &c, &px);
    if (px.size() != static_cast<size_t>(w * h * c)) __builtin_trap();
  } catch (const dalr::Error&) {
  }
  return 0;
}
