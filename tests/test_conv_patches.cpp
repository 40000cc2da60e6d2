// Conv layers as linear maps on patches: im2row against a padded-image brute force, the
// weight seen as c_out x (c_in kh kw) times the patches against a direct convolution, and
// the patch statistics against LayerStats of the explicit patch matrix.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "dalr/backend.hpp"
#include "dalr/patches.hpp"
#include "patch_oracle.hpp"
#include "test_util.hpp"

namespace dalr {
namespace {

using test::expect_stats_equal;
using test::patches_of;

struct Case {
  int64_t c, h, w, kh, kw, stride, pad, dilation;
};
// Odd sizes, stride 2, padding, dilation, non-square kernels, 1x1 and a kernel as
// large as the padded input.
const Case kCases[] = {{3, 7, 5, 3, 3, 1, 1, 1}, {2, 9, 11, 3, 3, 2, 1, 1},
                       {5, 8, 7, 3, 2, 1, 2, 2}, {4, 6, 6, 1, 1, 1, 0, 1},
                       {1, 5, 5, 5, 5, 1, 0, 1}, {3, 10, 9, 2, 3, 3, 0, 2},
                       {2, 4, 3, 3, 3, 2, 1, 1}};

const Matrix<double>* const kNoWeight = nullptr;
const std::vector<double>* const kNoBias = nullptr;

ConvGeometry geometry(const Case& k) {
  ConvGeometry g;
  g.channels = k.c;
  g.height = k.h;
  g.width = k.w;
  g.kernel_h = k.kh;
  g.kernel_w = k.kw;
  g.stride = k.stride;
  g.pad = k.pad;
  g.dilation = k.dilation;
  return g;
}

TEST(ConvPatches, Im2rowEqualsBruteForceOnAnyTile) {
  const uint64_t seed = test::test_seed(11);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Case& k : kCases) {
    const ConvGeometry g = geometry(k);
    g.check();
    const auto image = test::random_matrix<double>(g.map_size(), 1, rng);
    const std::vector<double> want = patches_of(g, image.ptr());
    const int64_t n = g.patch_size(), ld = n + 3;
    // A tile in the middle, with a leading dimension past n: the gap stays poisoned.
    const int64_t pos0 = g.positions() / 3, count = g.positions() - pos0;
    std::vector<double> got(static_cast<size_t>(ld * count), std::nan(""));
    im2row(g, image.ptr(), pos0, count, got.data(), ld);
    for (int64_t q = 0; q < count; ++q) {
      for (int64_t r = 0; r < n; ++r)
        ASSERT_EQ(got[q * ld + r], want[(pos0 + q) * n + r]) << "position " << pos0 + q;
      for (int64_t r = n; r < ld; ++r) ASSERT_TRUE(std::isnan(got[q * ld + r]));
    }
  }
}

// y[o][oy][ox] = sum_c,i,j W[o][c][i][j] x[c][oy s - pad + i d][ox s - pad + j d]: the
// weight as stored (row-major c_out x c_in x kh x kw) times im2row's patches.
TEST(ConvPatches, WeightTimesPatchesIsTheConvolution) {
  const uint64_t seed = test::test_seed(12);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Case& k : kCases) {
    const ConvGeometry g = geometry(k);
    const int64_t m = 3, n = g.patch_size(), P = g.positions();
    const auto image = test::random_matrix<double>(g.map_size(), 1, rng);
    const auto weight = test::random_matrix<double>(m * n, 1, rng);  // row-major m x n
    std::vector<double> cols(static_cast<size_t>(n * P));
    im2row(g, image.ptr(), 0, P, cols.data(), n);
    for (int64_t o = 0; o < m; ++o)
      for (int64_t oy = 0; oy < g.out_height(); ++oy)
        for (int64_t ox = 0; ox < g.out_width(); ++ox) {
          double direct = 0;  // straight from the unpadded image
          for (int64_t c = 0; c < g.channels; ++c)
            for (int64_t i = 0; i < g.kernel_h; ++i)
              for (int64_t j = 0; j < g.kernel_w; ++j) {
                const int64_t y = oy * g.stride - g.pad + i * g.dilation;
                const int64_t x = ox * g.stride - g.pad + j * g.dilation;
                if (y < 0 || y >= g.height || x < 0 || x >= g.width) continue;
                direct += weight.data[((o * g.channels + c) * g.kernel_h + i) * g.kernel_w + j] *
                          image.data[(c * g.height + y) * g.width + x];
              }
          const int64_t q = oy * g.out_width() + ox;
          double via = 0;
          for (int64_t r = 0; r < n; ++r) via += weight.data[o * n + r] * cols[q * n + r];
          ASSERT_NEAR(via, direct, 1e-12 * (1 + std::fabs(direct)));
        }
  }
}

// The streamed statistics (several add() calls, tiles that split images, the backend's
// own gathering accumulator inside) against LayerStats::add on the explicit patches.
TEST(ConvPatches, StatisticsEqualThoseOfTheExplicitPatches) {
  const uint64_t seed = test::test_seed(13);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto backend = make_cpu_backend(Precision::Fp64);
  for (const Case& k : kCases) {
    const ConvGeometry g = geometry(k);
    const int64_t n = g.patch_size(), m = 4, images = 5, P = g.positions();
    const auto maps = test::random_matrix<double>(g.map_size(), images, rng);
    const auto w = test::random_matrix<double>(m, n, rng);
    std::vector<double> b(static_cast<size_t>(m));
    for (auto& v : b) v = std::normal_distribution<double>(0, 1)(rng);

    LayerStats<double> want(n, m);
    for (int64_t i = 0; i < images; ++i) {
      const auto cols = patches_of(g, maps.ptr() + i * g.map_size());
      want.add(cols.data(), P, n, &w, b.data(), i * P);
    }
    for (int64_t tile : {int64_t{1}, int64_t{7}, P, 4 * P}) {
      auto acc = backend->conv_stats(g, m, &w, &b, tile);
      acc->add(maps.ptr(), 2, g.map_size(), 0);  // images 0, 1
      acc->add(maps.ptr() + 2 * g.map_size(), images - 2, g.map_size(), 2);
      expect_stats_equal(acc->finish(), want, 1e-12);
    }
  }
}

TEST(ConvPatches, NonFiniteInputNamesThePatchSample) {
  ConvGeometry g = geometry({2, 5, 5, 3, 3, 1, 1, 1});
  auto backend = make_cpu_backend(Precision::Fp64);
  std::vector<double> maps(static_cast<size_t>(2 * g.map_size()), 0.5);
  maps[static_cast<size_t>(g.map_size() + 7)] = std::numeric_limits<double>::infinity();
  auto acc = backend->conv_stats(g, 0, kNoWeight, kNoBias, 64);
  const std::string msg = test::error_message([&] { acc->add(maps.data(), 2, g.map_size(), 0); });
  // Channel 0, row 1, column 2 of image 1 is under several windows; the first sample
  // that sees it is image 1's position (0, 1) = 25 + 1.
  EXPECT_NE(msg.find("26"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Inf"), std::string::npos) << msg;
}

TEST(ConvPatches, BadGeometryIsRefusedByName) {
  ConvGeometry g = geometry({3, 4, 4, 3, 3, 1, 0, 3});
  EXPECT_NE(test::error_message([&] { g.check(); }).find("dilation 3"), std::string::npos);
  g = geometry({3, 4, 4, 3, 3, 0, 0, 1});
  EXPECT_NE(test::error_message([&] { g.check(); }).find("stride is 0"), std::string::npos);
  g = geometry({3, 4, 4, 3, 3, 1, -1, 1});
  EXPECT_NE(test::error_message([&] { g.check(); }).find("padding is -1"), std::string::npos);
  auto backend = make_cpu_backend(Precision::Fp64);
  g = geometry({3, 4, 4, 3, 3, 1, 1, 1});
  auto acc = backend->conv_stats(g, 0, kNoWeight, kNoBias, 8);
  std::vector<double> maps(static_cast<size_t>(g.map_size()), 1.0);
  EXPECT_NE(test::error_message([&] {
              acc->add(maps.data(), 1, g.map_size() - 1, 0);
            }).find("leading dimension"),
            std::string::npos);
}

}  // namespace
}  // namespace dalr
