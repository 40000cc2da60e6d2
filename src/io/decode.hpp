#pragma once
// Image decoders (jpeg.cpp, png.cpp). images.cpp is their caller; the tests and fuzz
// targets call them directly. Both refuse an image whose declared size exceeds
// max_image_pixels() before allocating anything for it.
#include <cstdint>
#include <string>
#include <vector>

namespace dalr::io {

// Largest width x height a decoder accepts: the value set by set_max_image_pixels (the
// CLI's --max-image-pixels), else DALR_MAX_IMAGE_PIXELS from the environment when set to a
// positive whole number, else kDefaultMaxImagePixels (2^28: 16384 x 16384,
// 768 MiB as RGB), far above any photograph a CNN is fed yet far below what a 69-byte
// PNG declaring 60000 x 60000 would make us allocate.
constexpr int64_t kDefaultMaxImagePixels = int64_t{1} << 28;
int64_t max_image_pixels();
// Sets the cap for the whole process (call before any image is read); throws dalr::Error
// unless `pixels` > 0.
void set_max_image_pixels(int64_t pixels);

// Throws dalr::Error naming PATH and its declared size when width x height is over the
// cap (or a dimension is not positive).
void check_image_size(const std::string& path, const char* format, uint64_t width, uint64_t height);

void decode_jpeg(const std::string& path, const std::vector<uint8_t>& bytes, int64_t min_short_side,
                 bool want_grey, int64_t* width, int64_t* height, int64_t* channels,
                 std::vector<uint8_t>* pixels);
void decode_png(const std::string& path, const std::vector<uint8_t>& bytes, int64_t* width,
                int64_t* height, int64_t* channels, std::vector<uint8_t>* pixels);

}  // namespace dalr::io
