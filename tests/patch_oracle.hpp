#pragma once
// Brute-force patches of a convolution and a comparison of statistics, shared by the
// patch tests (test_conv_patches.cpp) and the conv compress job's (test_conv_compress.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dalr/conv_geometry.hpp"
#include "dalr/stats.hpp"

namespace dalr::test {

// The value at input (c, y, x) of a zero-padded copy of the image, read from the copy.
struct Padded {
  const ConvGeometry& g;
  std::vector<double> v;
  Padded(const ConvGeometry& g_, const double* image) : g(g_) {
    const int64_t hp = g.height + 2 * g.pad, wp = g.width + 2 * g.pad;
    v.assign(static_cast<size_t>(g.channels * hp * wp), 0.0);
    for (int64_t c = 0; c < g.channels; ++c)
      for (int64_t y = 0; y < g.height; ++y)
        for (int64_t x = 0; x < g.width; ++x)
          v[(c * hp + y + g.pad) * wp + x + g.pad] = image[(c * g.height + y) * g.width + x];
  }
  double at(int64_t c, int64_t yp, int64_t xp) const {  // padded coordinates
    const int64_t hp = g.height + 2 * g.pad, wp = g.width + 2 * g.pad;
    return v[(c * hp + yp) * wp + xp];
  }
};

// Every patch of one image, brute force: column-major n x positions.
inline std::vector<double> patches_of(const ConvGeometry& g, const double* image) {
  const Padded p(g, image);
  const int64_t n = g.patch_size();
  std::vector<double> out(static_cast<size_t>(n * g.positions()));
  for (int64_t oy = 0; oy < g.out_height(); ++oy)
    for (int64_t ox = 0; ox < g.out_width(); ++ox)
      for (int64_t c = 0; c < g.channels; ++c)
        for (int64_t i = 0; i < g.kernel_h; ++i)
          for (int64_t j = 0; j < g.kernel_w; ++j)
            out[(oy * g.out_width() + ox) * n + (c * g.kernel_h + i) * g.kernel_w + j] =
                p.at(c, oy * g.stride + i * g.dilation, ox * g.stride + j * g.dilation);
  return out;
}

template <typename T>
void expect_stats_equal(const LayerStats<T>& a, const LayerStats<T>& b, double tol) {
  ASSERT_EQ(a.count(), b.count());
  ASSERT_EQ(a.n(), b.n());
  const Matrix<T>& ga = a.gram();
  const Matrix<T>& gb = b.gram();
  double scale = 0;
  for (auto v : gb.data) scale = std::max(scale, std::fabs(double(v)));
  for (size_t i = 0; i < ga.data.size(); ++i)
    ASSERT_NEAR(double(ga.data[i]), double(gb.data[i]), tol * scale) << "gram[" << i << "]";
  auto near = [&](const std::vector<double>& x, const std::vector<double>& y, const char* what) {
    ASSERT_EQ(x.size(), y.size()) << what;
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_NEAR(x[i], y[i], tol * (1 + std::fabs(y[i]))) << what << "[" << i << "]";
  };
  near(a.sum_x(), b.sum_x(), "sum_x");
  near(a.max_x(), b.max_x(), "max_x");
  near(a.sum_y(), b.sum_y(), "sum_y");
  near(a.max_y(), b.max_y(), "max_y");
}

}  // namespace dalr::test
