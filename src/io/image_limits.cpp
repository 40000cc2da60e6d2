#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <string>

#include "dalr/error.hpp"
#include "io/decode.hpp"

namespace dalr::io {

namespace {
std::atomic<int64_t> g_cap{0};  // 0: not set
}  // namespace

void set_max_image_pixels(int64_t pixels) {
  if (pixels <= 0)
    throw Error("--max-image-pixels must be a positive whole number of pixels (got " +
                std::to_string(pixels) + ")");
  g_cap = pixels;
}

int64_t max_image_pixels() {
  if (const int64_t set = g_cap.load(); set > 0) return set;
  const char* env = std::getenv("DALR_MAX_IMAGE_PIXELS");
  if (!env || !*env) return kDefaultMaxImagePixels;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  if (errno != 0 || *end != '\0' || v <= 0)
    throw Error(std::string("DALR_MAX_IMAGE_PIXELS='") + env +
                "' is not a positive whole number of pixels");
  return static_cast<int64_t>(v);
}

void check_image_size(const std::string& path, const char* format, uint64_t width,
                      uint64_t height) {
  const std::string size = std::to_string(width) + " x " + std::to_string(height);
  if (width == 0 || height == 0)
    throw Error(path + ": " + format + " declares an empty image (" + size + " pixels)");
  const uint64_t cap = static_cast<uint64_t>(max_image_pixels());
  uint64_t pixels;
  if (__builtin_mul_overflow(width, height, &pixels) || pixels > cap)
    throw Error(path + ": " + format + " declares " + size + " pixels, more than the " +
                std::to_string(cap) +
                " this run decodes (--max-image-pixels N, or DALR_MAX_IMAGE_PIXELS, allows larger "
                "images)");
}

}  // namespace dalr::io
