#pragma once
// Conv geometries and feature maps for the GPU patch tests (im2row, patch statistics):
// odd sizes, strides 2 and 3, padding, dilation, non-square kernels, 1x1, a kernel as
// large as the padded input, pixels no window reads, and many channels.
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "dalr/conv_geometry.hpp"
#include "dalr/matrix.hpp"

namespace dalr::test {

// Channels, height, width, kernel height and width, stride, padding, dilation.
inline const std::vector<ConvGeometry>& conv_cases() {
  static const std::vector<ConvGeometry> cases = {
      {3, 7, 5, 3, 3, 1, 1, 1},  {2, 9, 11, 3, 3, 2, 1, 1}, {5, 8, 7, 3, 2, 1, 2, 2},
      {4, 6, 6, 1, 1, 1, 0, 1},  {1, 5, 5, 5, 5, 1, 0, 1},  {3, 10, 9, 2, 3, 3, 0, 2},
      {2, 4, 3, 3, 3, 2, 1, 1},  {3, 7, 6, 1, 1, 2, 0, 1},  // 1x1, stride 2: rows 1, 3, 5 unread
      {37, 6, 5, 3, 3, 1, 1, 1},  // 333 units: several thread blocks per column
  };
  return cases;
}

inline std::string describe(const ConvGeometry& g) {
  return std::to_string(g.channels) + "x" + std::to_string(g.height) + "x" +
         std::to_string(g.width) + " kernel " + std::to_string(g.kernel_h) + "x" +
         std::to_string(g.kernel_w) + " stride " + std::to_string(g.stride) + " pad " +
         std::to_string(g.pad) + " dilation " + std::to_string(g.dilation);
}

// `images` feature maps, one per column with leading dimension map_size + pad: post-ReLU
// like (many exact zeros, never all zero); the padding rows hold NaN, which no reader
// may touch.
template <typename T>
Matrix<T> random_maps(const ConvGeometry& g, int64_t images, int64_t pad, std::mt19937_64& rng) {
  std::normal_distribution<double> nd(0.3, 1.0);
  const int64_t map = g.map_size();
  Matrix<T> x(map + pad, images);
  for (int64_t j = 0; j < images; ++j)
    for (int64_t i = 0; i < map + pad; ++i)
      x(i, j) =
          i < map ? static_cast<T>(std::max(0.0, nd(rng))) : std::numeric_limits<T>::quiet_NaN();
  return x;
}

}  // namespace dalr::test
