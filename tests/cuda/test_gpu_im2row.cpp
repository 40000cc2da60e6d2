// The device im2row (kernels/im2row.cuh) against its host twin dalr::im2row: every
// geometry of conv_cases.hpp, tiles of samples that cross image boundaries, a whole
// batch, a single last column, padded leading dimensions on both sides (the maps'
// padding holds NaN, which must never be read; the tile's gap rows are poisoned and
// must stay so). The values are copies, so the comparison is bit for bit. Argument
// errors are checked everywhere; the rest skips without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "conv_cases.hpp"
#include "cuda/device_buffer.hpp"
#include "cuda/gpu_patch_stats.hpp"
#include "dalr/error.hpp"
#include "dalr/patches.hpp"
#include "gpu_test.hpp"

namespace dc = dalr::cuda;

namespace {

using dalr::ConvGeometry;
using dalr::test::announce_seed;

// Samples s0 .. s0 + count - 1 of the batch, as the host twin cuts them, one column at a
// time (column q: image (s0 + q) / positions, position (s0 + q) % positions).
template <typename T>
std::vector<T> host_tile(const ConvGeometry& g, const dalr::Matrix<T>& maps, int64_t s0,
                         int64_t count, int64_t ldd) {
  std::vector<T> out(static_cast<size_t>(ldd * count), std::numeric_limits<T>::quiet_NaN());
  const int64_t positions = g.positions();
  for (int64_t q = 0; q < count; ++q) {
    const int64_t sample = s0 + q;
    dalr::im2row(g, maps.ptr() + (sample / positions) * maps.rows, sample % positions, 1,
                 out.data() + q * ldd, ldd);
  }
  return out;
}

template <typename T>
void check_against_host() {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(31));
  const dc::Stream stream;
  for (const ConvGeometry& g : dalr::test::conv_cases()) {
    SCOPED_TRACE(dalr::test::describe(g));
    const int64_t images = 3, n = g.patch_size(), positions = g.positions();
    const int64_t total = images * positions, ldd = n + 3;
    const dalr::Matrix<T> maps = dalr::test::random_maps<T>(g, images, 5, rng);
    dc::DeviceBuffer<T> dmaps(maps.data.size());
    dmaps.upload(maps.ptr(), maps.data.size(), stream);

    struct Tile {
      int64_t s0, count;
    };
    const std::vector<Tile> tiles = {
        {0, total},  // the whole batch
        {positions - 1, std::min<int64_t>(positions + 2, total - positions + 1)},  // across
        {positions / 2, std::min<int64_t>(2 * positions, total - positions / 2)},
        {total - 1, 1}};  // the last column alone
    for (const Tile t : tiles) {
      SCOPED_TRACE("samples " + std::to_string(t.s0) + " + " + std::to_string(t.count));
      std::vector<T> got(static_cast<size_t>(ldd * t.count), std::numeric_limits<T>::quiet_NaN());
      dc::DeviceBuffer<T> dst(got.size());
      dst.upload(got.data(), got.size(), stream);  // poisoned
      dalr::kernels::launch_im2row<T>(dc::im2row_geometry(g), dmaps.data(), maps.rows, images, t.s0,
                                      t.count, dst.data(), ldd, stream);
      dst.download(got.data(), got.size(), stream);
      stream.synchronize();
      const std::vector<T> want = host_tile(g, maps, t.s0, t.count, ldd);
      size_t bad = 0;
      for (size_t i = 0; i < want.size(); ++i)
        if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0 && ++bad <= 5)
          ADD_FAILURE() << "unit " << i % ldd << " of column " << i / ldd << ": device " << got[i]
                        << ", host " << want[i];
      EXPECT_EQ(bad, 0u);
    }
  }
}

TEST(GpuIm2row, EqualsHostFp32) {
  check_against_host<float>();
}

TEST(GpuIm2row, EqualsHostFp64) {
  check_against_host<double>();
}

// Runs everywhere: every check comes before the launch.
TEST(GpuIm2row, BadArgumentsAreRefused) {
  const ConvGeometry g{3, 7, 5, 3, 3, 1, 1, 1};
  const int64_t map = g.map_size(), n = g.patch_size(), total = 2 * g.positions();
  auto msg = [&](int64_t ldx, int64_t s0, int64_t count, int64_t ldd) {
    return dalr::test::error_message([&] {
      dalr::kernels::launch_im2row<float>(dc::im2row_geometry(g), nullptr, ldx, 2, s0, count,
                                          nullptr, ldd, nullptr);
    });
  };
  EXPECT_NE(msg(map - 1, 0, 1, n).find("ldx " + std::to_string(map - 1)), std::string::npos);
  EXPECT_NE(msg(map, 0, 1, n - 1).find("ldd"), std::string::npos);
  EXPECT_NE(msg(map, total - 2, 3, n).find("of " + std::to_string(total)), std::string::npos);
  EXPECT_NE(msg(map, -1, 1, n).find("samples -1"), std::string::npos);
  EXPECT_NE(msg(map, 0, 1, n).find("null pointer"), std::string::npos);
  EXPECT_EQ(msg(map, total, 0, n), "<no throw>");  // an empty tile at the end is nothing
  dalr::kernels::Im2rowGeometry bad = dc::im2row_geometry(g);
  bad.stride = 0;
  EXPECT_NE(dalr::test::error_message([&] {
              dalr::kernels::launch_im2row<double>(bad, nullptr, map, 1, 0, 1, nullptr, n, nullptr);
            }).find("bad geometry"),
            std::string::npos);
}

}  // namespace
