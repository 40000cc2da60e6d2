// PNG decoding through our libpng wrapper (src/io/png.cpp).
#include <vector>

#include "dalr/error.hpp"
#include "io/decode.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  int64_t w, h, c;
  std::vector<uint8_t> px;
  try {
    dalr::io::decode_png("fuzz.png", bytes, &w, &h, &c, &px);
    if (px.size() != static_cast<size_t>(w * h * c)) __builtin_trap();
  } catch (const dalr::Error&) {
  }
  return 0;
}
