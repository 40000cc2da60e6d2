// GPU row statistics against the CPU twin. Tests that need a device skip when there is
// none; the geometry test runs everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/row_stats.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device.hpp"
#include "cuda/device_buffer.hpp"
#include "gpu_test.hpp"
#include "row_stats.cuh"
#include "test_util.hpp"
#include "twin.hpp"

namespace dc = dalr::cuda;
namespace dk = dalr::kernels;

namespace {

using dalr::test::contains;

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------- runs everywhere

static_assert(dk::kRowStatsThreads <= 1024, "block too large");

// Walks every (block, thread) of the launch exactly as the kernel does.
TEST(RowStatsGeometry, CoversEveryElementOnce) {
  for (int64_t n : {1, 31, 257, 1025}) {
    for (int64_t c : {1, 3, 17}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " c=" + std::to_string(c));
      std::vector<int> hits(static_cast<size_t>(n * c), 0);
      for (int64_t b = 0; b < dk::row_stats_blocks(n); ++b) {
        for (int ty = 0; ty < dk::kRowStatsLanes; ++ty) {
          for (int tx = 0; tx < dk::kRowStatsRows; ++tx) {
            const dk::RowStatsSlice sl = dk::row_stats_slice(b, tx, ty);
            // Coalescing: neighbouring threads read neighbouring rows of one column.
            const dk::RowStatsSlice first = dk::row_stats_slice(b, 0, ty);
            ASSERT_EQ(sl.row, first.row + tx);
            ASSERT_EQ(sl.col_begin, first.col_begin);
            ASSERT_GT(sl.col_step, 0);
            if (sl.row >= n) continue;  // idle, as in the kernel
            for (int64_t j = sl.col_begin; j < c; j += sl.col_step) {
              ASSERT_GE(j, 0);
              ++hits[static_cast<size_t>(sl.row + j * n)];
            }
          }
        }
      }
      int64_t wrong = 0;
      for (int h : hits) wrong += h != 1;
      EXPECT_EQ(wrong, 0) << "elements not covered exactly once";
    }
  }
}

// ---------------------------------------------------------------- needs a GPU

struct Case {
  int64_t n, c, pad;  // ldx = n + pad
  bool bias, relu;
};

std::string describe(const Case& k) {
  return "n=" + std::to_string(k.n) + " c=" + std::to_string(k.c) +
         " ldx=" + std::to_string(k.n + k.pad) + (k.bias ? " bias" : "") + (k.relu ? " relu" : "");
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int64_t n : {1, 37, 1001})
    for (int64_t c : {1, 5, 130})
      for (int64_t pad : {0, 3})
        for (int flags = 0; flags < 4; ++flags)
          out.push_back({n, c, pad, bool(flags & 1), bool(flags & 2)});
  return out;
}

// Two batches through both twins into the same accumulators, then compare. max must
// match exactly (same double values, order-free); sum may differ only by summation
// order, so its error is bounded relative to sum |v|: tol * sum|v|.
template <typename T>
void compare_with_cpu(const Case& k, std::mt19937_64& rng, double tol) {
  const int64_t n = k.n, c = k.c, ldx = k.n + k.pad;
  const double guard = 7777.0;  // one element past n in each output: must stay untouched
  std::vector<double> sum(n, 0.0), max(n, -kInf), scale(n, 0.0);
  std::vector<double> init_sum(sum), init_max(max);
  init_sum.push_back(guard);
  init_max.push_back(guard);

  dc::Stream stream;
  dc::DeviceBuffer<double> d_sum(n + 1), d_max(n + 1);
  d_sum.upload(init_sum.data(), n + 1, stream);
  d_max.upload(init_max.data(), n + 1, stream);
  const dalr::Matrix<T> bias = dalr::test::random_matrix<T>(n, 1, rng);
  dc::DeviceBuffer<T> d_bias(n);
  d_bias.upload(bias.ptr(), n, stream);

  for (int batch = 0; batch < 2; ++batch) {
    dalr::Matrix<T> x = dalr::test::random_matrix<T>(ldx, c, rng);
    for (int64_t j = 0; j < c; ++j)  // padding rows must never be read
      for (int64_t i = n; i < ldx; ++i) x(i, j) = std::numeric_limits<T>::quiet_NaN();
    dc::DeviceBuffer<T> d_x(x.data.size());
    d_x.upload(x.ptr(), x.data.size(), stream);

    const T* b = k.bias ? bias.ptr() : nullptr;
    dalr::cpu::row_sum_max(x.ptr(), n, c, ldx, b, k.relu, sum.data(), max.data());
    dk::launch_row_sum_max(d_x.data(), n, c, ldx, k.bias ? d_bias.data() : nullptr, k.relu,
                           d_sum.data(), d_max.data(), stream);
    for (int64_t j = 0; j < c; ++j)
      for (int64_t i = 0; i < n; ++i) {
        double v = double(x(i, j)) + (b ? double(b[i]) : 0.0);
        scale[i] += std::abs(k.relu && v < 0 ? 0.0 : v);
      }
    stream.synchronize();
  }

  std::vector<double> g_sum(n + 1), g_max(n + 1);
  d_sum.download(g_sum.data(), n + 1, stream);
  d_max.download(g_max.data(), n + 1, stream);
  stream.synchronize();
  dalr::test::twin::expect_all(
      static_cast<size_t>(n),
      [&](size_t i) { return g_max[i] == max[i] && std::abs(g_sum[i] - sum[i]) <= tol * scale[i]; },
      [&](size_t i) {
        std::ostringstream os;
        os << "row: max gpu " << g_max[i] << " cpu " << max[i] << "; sum gpu " << g_sum[i]
           << " cpu " << sum[i] << " (error " << std::abs(g_sum[i] - sum[i]) << ", allowed "
           << tol * scale[i] << ")";
        return os.str();
      });
  EXPECT_EQ(g_sum[n], guard) << "write past the end of sum";
  EXPECT_EQ(g_max[n], guard) << "write past the end of max";
}

template <typename T>
void run_table(double tol) {
  const uint64_t seed = dalr::test::test_seed(20240611);
  std::cout << "[ seed     ] " << seed << " (set DALR_TEST_SEED to change)\n";
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Case& k : cases()) {
    SCOPED_TRACE(describe(k));
    compare_with_cpu<T>(k, rng, tol);
    if (::testing::Test::HasFailure()) return;
  }
}

// Inputs are widened to double on both sides, so only summation order differs;
// the tolerances are the project's per-precision bounds, relative to sum |v|.
TEST(RowStatsGpu, DoubleMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  run_table<double>(1e-12);
}

TEST(RowStatsGpu, FloatMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  run_table<float>(1e-6);
}

}  // namespace
