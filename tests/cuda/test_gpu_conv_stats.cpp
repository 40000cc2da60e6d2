// The CUDA backend's patch statistics (Backend::conv_stats, src/cuda/gpu_patch_stats.cpp)
// against the CPU backend's host twin (PatchAccumulator), fed the same seeded feature
// maps: every geometry of conv_cases.hpp, tiles smaller than an image, one image wide
// and spanning image boundaries, three add calls with their first image indices, output
// statistics (m > 0), from the host (add), from the device (add_device, the producer
// overwriting its buffer right after each call) and both in turn; a result() mid-stream;
// NaN/Inf with the twin's message on both paths, a NaN no window reads, and argument
// errors with the twin's messages. Skips without a device.
//
// Tolerances (relative Frobenius error against the CPU in the same precision; only the
// summation order differs): fp64 1e-12, fp32 1e-5; TF32 (10-bit mantissa products in
// the Gram and the output GEMM) 5e-3. Input maxima are copies of the same values: exact.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "conv_cases.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/backend.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"
#include "gpu_test.hpp"
#include "twin.hpp"

namespace dc = dalr::cuda;
using dalr::ConvGeometry;
using dalr::LayerStats;
using dalr::Matrix;
using dalr::Precision;
using dalr::StatsAccumulator;

namespace {

using dalr::test::announce_seed;

// Input statistics only (m = 0), in T.
template <typename T>
const Matrix<T>* const kNoWeight = nullptr;
template <typename T>
const std::vector<T>* const kNoBias = nullptr;

// Two twins' statistics within tol; the input maxima are copies of the same values on
// both sides, so they must be equal.
template <typename T>
void expect_match(const LayerStats<T>& got, const LayerStats<T>& want, double tol,
                  const std::string& where) {
  dalr::test::twin::expect_stats_close(got, want, tol, where);
  EXPECT_EQ(got.max_x(), want.max_x()) << where << ": max_x";
}

// How feature maps reach the GPU statistics: add() from the host, add_device() from a
// device buffer, or the two in turn (the device for odd batches).
enum class Feed { Host, Device, Mixed };

// Stands in for the forward pass: one device buffer, filled on its own stream, handed to
// add_device and overwritten with NaN (all bits set) on that stream as soon as the call
// returns. An accumulator that read the maps later than the call's place in the stream
// would count NaN, and result() would throw.
template <typename T>
struct Producer {
  explicit Producer(size_t elems) : buf(elems) {}
  void add(StatsAccumulator<T>& acc, const T* x, int64_t cols, int64_t ldx, int64_t first) {
    buf.upload(x, static_cast<size_t>(ldx * cols), stream);
    acc.add_device(buf.data(), cols, ldx, first, stream.get());
    DALR_CUDA_CHECK(cudaMemsetAsync(buf.data(), 0xFF, buf.bytes(), stream));
  }
  dc::Stream stream;
  dc::DeviceBuffer<T> buf;
};

template <typename T>
struct Layer {
  Matrix<T> w;  // m x n
  std::vector<T> b;
};

template <typename T>
Layer<T> make_layer(int64_t m, int64_t n, std::mt19937_64& rng) {
  Layer<T> l{dalr::test::random_matrix<T>(m, n, rng, 1.0 / std::sqrt(double(n))), {}};
  const Matrix<T> b = dalr::test::random_matrix<T>(m, 1, rng, 0.5);
  l.b.assign(b.data.begin(), b.data.end());
  return l;
}

template <typename T>
void run(Precision precision, double tol, Feed feed) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(20250316));
  const auto gpu = dc::make_backend(0, precision);
  const auto cpu =
      dalr::make_cpu_backend(precision == Precision::Tf32 ? Precision::Fp32 : precision);
  for (const ConvGeometry& g : dalr::test::conv_cases()) {
    const int64_t images = 7, m = 6, positions = g.positions();
    const Matrix<T> maps = dalr::test::random_maps<T>(g, images, 4, rng);
    const int64_t ldx = maps.rows;
    const Layer<T> l = make_layer<T>(m, g.patch_size(), rng);
    Producer<T> producer(maps.data.size());
    // Images 0-2, 3, 4-6: three calls, the second a single image.
    const int64_t batches[][2] = {{0, 3}, {3, 1}, {4, 3}};
    for (const int64_t tile : {int64_t{7}, positions, 2 * positions + 3}) {
      SCOPED_TRACE(dalr::test::describe(g) + ", tile " + std::to_string(tile));
      auto want = cpu->conv_stats(g, m, &l.w, &l.b, tile);
      auto got = gpu->conv_stats(g, m, &l.w, &l.b, tile);
      ASSERT_TRUE(got->supports_device_add());
      for (int b = 0; b < 3; ++b) {
        const int64_t first = batches[b][0], cols = batches[b][1];
        const T* x = maps.ptr() + first * ldx;
        want->add(x, cols, ldx, first);
        if (feed == Feed::Device || (feed == Feed::Mixed && b % 2 == 1))
          producer.add(*got, x, cols, ldx, first);
        else
          got->add(x, cols, ldx, first);
        if (b == 1) expect_match(got->result(), want->result(), tol, "after two calls");
      }
      expect_match(got->finish(), want->finish(), tol, "at the end");
      if (::testing::Test::HasFailure()) return;
    }
  }
}

TEST(GpuConvStats, HostMapsMatchCpuFp64) {
  run<double>(Precision::Fp64, 1e-12, Feed::Host);
}
TEST(GpuConvStats, HostMapsMatchCpuFp32) {
  run<float>(Precision::Fp32, 1e-5, Feed::Host);
}
TEST(GpuConvStats, DeviceMapsMatchCpuFp64) {
  run<double>(Precision::Fp64, 1e-12, Feed::Device);
}
TEST(GpuConvStats, DeviceMapsMatchCpuFp32) {
  run<float>(Precision::Fp32, 1e-5, Feed::Device);
}
TEST(GpuConvStats, HostAndDeviceMapsInTurnMatchCpu) {
  run<float>(Precision::Fp32, 1e-5, Feed::Mixed);
}
TEST(GpuConvStats, Tf32MatchesCpuLoosely) {
  run<float>(Precision::Tf32, 5e-3, Feed::Device);
}

// 2 x 5 x 5 maps, 3 x 3 kernel, padding 1: 25 positions, 18 units.
ConvGeometry small() {
  return ConvGeometry{2, 5, 5, 3, 3, 1, 1, 1};
}

// Two images of 0.5 with an Inf at channel 0, row 1, column 2 of image 1: the first
// patch sample that sees it is image 1's position (0, 1) = 26 (the CPU test's case).
std::vector<double> maps_with_inf(const ConvGeometry& g) {
  std::vector<double> maps(static_cast<size_t>(2 * g.map_size()), 0.5);
  maps[static_cast<size_t>(g.map_size() + 7)] = std::numeric_limits<double>::infinity();
  return maps;
}

TEST(GpuConvStats, HostNonFiniteThrowsTheCpuMessageAndCountsNothing) {
  DALR_SKIP_WITHOUT_GPU();
  const ConvGeometry g = small();
  const auto gpu = dc::make_backend(0, Precision::Fp64);
  const auto cpu = dalr::make_cpu_backend(Precision::Fp64);
  const std::vector<double> bad = maps_with_inf(g);
  auto want = cpu->conv_stats(g, 0, kNoWeight<double>, kNoBias<double>, 8);
  auto got = gpu->conv_stats(g, 0, kNoWeight<double>, kNoBias<double>, 8);
  const std::string msg =
      dalr::test::error_message([&] { want->add(bad.data(), 2, g.map_size(), 0); });
  ASSERT_TRUE(dalr::test::contains(msg, "sample 26")) << msg;
  EXPECT_EQ(dalr::test::error_message([&] { got->add(bad.data(), 2, g.map_size(), 0); }), msg);
  // Nothing of the refused batch was counted (image 0 is finite, and came first).
  std::mt19937_64 rng(announce_seed(5));
  const Matrix<double> good = dalr::test::random_maps<double>(g, 3, 0, rng);
  auto fresh = cpu->conv_stats(g, 0, kNoWeight<double>, kNoBias<double>, 8);
  fresh->add(good.ptr(), 3, g.map_size(), 0);
  got->add(good.ptr(), 3, g.map_size(), 0);
  expect_match(got->result(), fresh->result(), 1e-12, "after the refused batch");
}

TEST(GpuConvStats, DeviceNonFiniteIsReportedLaterWithTheCpuMessage) {
  DALR_SKIP_WITHOUT_GPU();
  const ConvGeometry g = small();
  const auto gpu = dc::make_backend(0, Precision::Fp64);
  const auto cpu = dalr::make_cpu_backend(Precision::Fp64);
  const std::vector<double> bad = maps_with_inf(g);
  auto want = cpu->conv_stats(g, 0, kNoWeight<double>, kNoBias<double>, 8);
  const std::string msg =
      dalr::test::error_message([&] { want->add(bad.data(), 2, g.map_size(), 0); });
  auto got = gpu->conv_stats(g, 0, kNoWeight<double>, kNoBias<double>, 8);
  Producer<double> producer(bad.size());
  producer.add(*got, bad.data(), 2, g.map_size(), 0);
  EXPECT_EQ(dalr::test::error_message([&] { got->result(); }), msg);
}

// A 1x1 kernel at stride 2 never reads odd rows: a NaN there is no patch's value, so
// neither twin complains and the statistics agree.
TEST(GpuConvStats, NonFiniteThatNoWindowReadsIsIgnoredAsByTheCpu) {
  DALR_SKIP_WITHOUT_GPU();
  const ConvGeometry g{3, 7, 6, 1, 1, 2, 0, 1};
  std::mt19937_64 rng(announce_seed(6));
  Matrix<double> maps = dalr::test::random_maps<double>(g, 2, 0, rng);
  maps(g.width + 2, 1) = std::numeric_limits<double>::quiet_NaN();  // channel 0, row 1
  const auto gpu = dc::make_backend(0, Precision::Fp64);
  const auto cpu = dalr::make_cpu_backend(Precision::Fp64);
  auto want = cpu->conv_stats(g, 0, kNoWeight<double>, kNoBias<double>, 5);
  want->add(maps.ptr(), 2, g.map_size(), 0);
  for (const Feed feed : {Feed::Host, Feed::Device}) {
    auto got = gpu->conv_stats(g, 0, kNoWeight<double>, kNoBias<double>, 5);
    Producer<double> producer(maps.data.size());
    if (feed == Feed::Host)
      got->add(maps.ptr(), 2, g.map_size(), 0);
    else
      producer.add(*got, maps.ptr(), 2, g.map_size(), 0);
    expect_match(got->result(), want->result(), 1e-12, feed == Feed::Host ? "host" : "device");
  }
}

TEST(GpuConvStats, BadArgumentsGiveTheCpuMessages) {
  DALR_SKIP_WITHOUT_GPU();
  const auto gpu = dc::make_backend(0, Precision::Fp32);
  const auto cpu = dalr::make_cpu_backend(Precision::Fp32);
  auto both = [&](const ConvGeometry& g, int64_t tile, const std::string& word) {
    const std::string want = dalr::test::error_message(
        [&] { cpu->conv_stats(g, 0, kNoWeight<float>, kNoBias<float>, tile); });
    EXPECT_TRUE(dalr::test::contains(want, word)) << want;
    EXPECT_EQ(dalr::test::error_message(
                  [&] { gpu->conv_stats(g, 0, kNoWeight<float>, kNoBias<float>, tile); }),
              want);
  };
  ConvGeometry g = small();
  both(g, 0, "at least one column");
  g.stride = 0;
  both(g, 4, "stride is 0");
  g = small();
  g.dilation = 4;  // spans 9 x 9, the padded input is 7 x 7
  both(g, 4, "dilation 4");

  g = small();
  auto want = cpu->conv_stats(g, 0, kNoWeight<float>, kNoBias<float>, 4);
  auto got = gpu->conv_stats(g, 0, kNoWeight<float>, kNoBias<float>, 4);
  const std::vector<float> maps(static_cast<size_t>(g.map_size()), 1.f);
  const std::string ld =
      dalr::test::error_message([&] { want->add(maps.data(), 1, g.map_size() - 1, 0); });
  ASSERT_TRUE(dalr::test::contains(ld, "leading dimension")) << ld;
  EXPECT_EQ(dalr::test::error_message([&] { got->add(maps.data(), 1, g.map_size() - 1, 0); }), ld);
  // Host memory handed to add_device is refused before any kernel reads it.
  const dc::Stream stream;
  const std::string host = dalr::test::error_message(
      [&] { got->add_device(maps.data(), 1, g.map_size(), 0, stream.get()); });
  EXPECT_TRUE(dalr::test::contains(host, "not memory of CUDA device")) << host;
  EXPECT_EQ(got->result().count(), 0);  // still usable, and empty
}

}  // namespace
