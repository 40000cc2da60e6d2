// GpuStats<T> against its CPU twin LayerStats<T> (the oracle), fed the same seeded
// batches: odd sizes, uneven batches (1 and max_batch included), padded leading
// dimensions, more batches than staging slots, merge of saved statistics, NaN/Inf and
// argument errors; from the host (add), from the device (add_device, with the
// producer overwriting its buffer right after each call), and both in turn. Tests that
// need a device skip without one; argument checks, the NaN/Inf key and the no-device
// error run everywhere.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"
#include "dalr/stats.hpp"
#include "gpu_test.hpp"
#include "non_finite.cuh"
#include "oracle.hpp"
#include "test_util.hpp"
#include "twin.hpp"

namespace dc = dalr::cuda;
using dalr::LayerStats;
using dalr::Matrix;

namespace {

using dalr::test::announce_seed;
using dalr::test::contains;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Tolerances, all relative. gram: relative Frobenius error against the CPU Gram in the
// same precision (only the summation order differs, except under TF32, which rounds
// the inputs of the products to a 10-bit mantissa). sum_x: relative to sum_j |x_ij|
// (both sides widen the same values to double; only the order differs). out: the
// output sums and maxima come from a GEMM, so they are compared relative to
// sum_j (sum_k |w_ik x_kj| + |b_i|) and max_j of the same: the scale of its rounding.
// Input maxima are compared exactly.
struct Tol {
  double gram, sum_x, out;
};
constexpr Tol kFp64{1e-12, 1e-12, 1e-12};
constexpr Tol kFp32{1e-5, 1e-5, 1e-5};
constexpr Tol kTf32{5e-3, 1e-5, 5e-3};  // TF32 affects only the cuBLAS products

template <typename T>
struct Layer {
  Matrix<T> w;  // m x n
  std::vector<T> b;
  const Matrix<T>* wp() const { return w.rows > 0 ? &w : nullptr; }
  const std::vector<T>* bp() const { return w.rows > 0 ? &b : nullptr; }
};

template <typename T>
Layer<T> make_layer(int64_t n, int64_t m, std::mt19937_64& rng) {
  Layer<T> l{dalr::test::random_matrix<T>(m, n, rng, 1.0 / std::sqrt(double(n))), {}};
  const Matrix<T> b = dalr::test::random_matrix<T>(m, 1, rng);
  l.b.assign(b.data.begin(), b.data.end());
  return l;
}

// A batch of post-ReLU-like activations (many exact zeros, never all zero), n x cols
// with leading dimension n + pad; padding rows hold NaN, which must never be read.
template <typename T>
Matrix<T> make_batch(int64_t n, int64_t pad, int64_t cols, std::mt19937_64& rng) {
  std::normal_distribution<double> nd(0.3, 1.0);
  Matrix<T> x(n + pad, cols);
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < n + pad; ++i)
      x(i, j) =
          i < n ? static_cast<T>(std::max(0.0, nd(rng))) : std::numeric_limits<T>::quiet_NaN();
  return x;
}

// The error scales of the tolerances above, accumulated over every sample added.
template <typename T>
struct Scales {
  std::vector<double> x_sum, y_sum, y_max;
  Scales(int64_t n, int64_t m) : x_sum(n, 0.0), y_sum(m, 0.0), y_max(m, 0.0) {}
  void add(const Matrix<T>& x, int64_t n, const Layer<T>& l) {
    const int64_t m = l.w.rows;
    for (int64_t j = 0; j < x.cols; ++j) {
      for (int64_t i = 0; i < n; ++i) x_sum[i] += std::abs(double(x(i, j)));
      for (int64_t i = 0; i < m; ++i) {
        double s = std::abs(double(l.b[i]));
        for (int64_t k = 0; k < n; ++k) s += std::abs(double(l.w(i, k)) * double(x(k, j)));
        y_sum[i] += s;
        y_max[i] = std::max(y_max[i], s);
      }
    }
  }
};

template <typename T>
void expect_match(const LayerStats<T>& g, const LayerStats<T>& c, const Scales<T>& sc, Tol tol,
                  const std::string& where) {
  SCOPED_TRACE(where);
  ASSERT_EQ(g.n(), c.n());
  ASSERT_EQ(g.m(), c.m());
  EXPECT_EQ(g.count(), c.count());
  const double err = dalr::test::twin::gram_error(g, c);
  EXPECT_LE(err, tol.gram) << "gram: relative Frobenius error";
  int bad = 0;
  auto report = [&](bool ok, const char* what, int64_t i, double gv, double cv, double allowed) {
    if (ok || ++bad > 5) return;
    ADD_FAILURE() << what << "[" << i << "]: gpu " << gv << " cpu " << cv << " (|diff| "
                  << std::abs(gv - cv) << ", allowed " << allowed << ")";
  };
  for (int64_t i = 0; i < c.n(); ++i) {
    const double allowed = tol.sum_x * sc.x_sum[i];
    report(std::abs(g.sum_x()[i] - c.sum_x()[i]) <= allowed, "sum_x", i, g.sum_x()[i], c.sum_x()[i],
           allowed);
    report(g.max_x()[i] == c.max_x()[i], "max_x (exact)", i, g.max_x()[i], c.max_x()[i], 0.0);
  }
  for (int64_t i = 0; i < c.m(); ++i) {
    const double allowed_sum = tol.out * sc.y_sum[i], allowed_max = tol.out * sc.y_max[i];
    report(std::abs(g.sum_y()[i] - c.sum_y()[i]) <= allowed_sum, "sum_y", i, g.sum_y()[i],
           c.sum_y()[i], allowed_sum);
    // Both -inf before any sample; otherwise compare with the GEMM's tolerance.
    const bool max_ok =
        g.max_y()[i] == c.max_y()[i] || std::abs(g.max_y()[i] - c.max_y()[i]) <= allowed_max;
    report(max_ok, "max_y", i, g.max_y()[i], c.max_y()[i], allowed_max);
  }
}

// One stream of batches through both twins.
struct Case {
  int64_t n, m, max_batch, pad;  // ldx = n + pad
  std::vector<int64_t> batches;
};

std::string describe(const Case& k) {
  std::string s = "n=" + std::to_string(k.n) + " m=" + std::to_string(k.m) +
                  " max_batch=" + std::to_string(k.max_batch) +
                  " ldx=" + std::to_string(k.n + k.pad) + " batches";
  for (int64_t b : k.batches) s += " " + std::to_string(b);
  return s;
}

std::vector<Case> cases() {
  std::vector<int64_t> long_stream;  // 40 batches of 1..8: the slots wrap 20 times
  for (int k = 0; k < 40; ++k) long_stream.push_back((k * 5) % 8 + 1);
  return {
      {1, 0, 4, 0, {1, 4, 3, 1, 4, 2}},
      {1, 5, 3, 2, {3, 1, 3, 2, 3}},
      {37, 5, 16, 0, {16, 1, 7, 16, 3, 11, 16}},
      {37, 129, 9, 5, {9, 2, 9, 5, 1, 9}},
      {301, 0, 50, 0, {50, 49, 1, 50, 13}},
      {301, 129, 64, 0, {64, 1, 33, 64, 17, 64, 5}},
      {37, 5, 8, 3, long_stream},
  };
}

// How batches reach the GPU statistics: add() from the host; add_device() from a
// device buffer; or the two in turn (host for even batches).
enum class Feed { Host, Device, Mixed };

// Stands in for the forward pass on the device path: one device buffer, filled on its
// own stream, handed to add_device and overwritten with NaN (all bits set) on the same
// stream as soon as the call returns, as the forward pass reuses its buffers. An
// accumulator that read the block later than the call's place in the stream would see
// NaN, and result() would throw.
template <typename T>
struct Producer {
  explicit Producer(size_t elems) : buf(elems) {}
  void add(dc::GpuStats<T>& gpu, const Matrix<T>& x, int64_t ldx, int64_t first) {
    buf.upload(x.ptr(), x.data.size(), stream);
    gpu.add_device(buf.data(), x.cols, ldx, first, stream.get());
    DALR_CUDA_CHECK(cudaMemsetAsync(buf.data(), 0xFF, buf.bytes(), stream));
  }
  dc::Stream stream;
  dc::DeviceBuffer<T> buf;
};

template <typename T>
void run_case(const Case& k, dc::Math math, Tol tol, std::mt19937_64& rng, Feed feed) {
  SCOPED_TRACE(describe(k));
  const int64_t n = k.n, ldx = k.n + k.pad;
  const Layer<T> l = make_layer<T>(n, k.m, rng);
  dc::GpuStats<T> gpu(n, k.m, l.wp(), l.bp(), k.max_batch, math);
  Producer<T> producer(static_cast<size_t>(ldx * k.max_batch));
  LayerStats<T> cpu(n, k.m);
  Scales<T> sc(n, k.m);
  int64_t first = 0;
  for (size_t b = 0; b < k.batches.size(); ++b) {
    const int64_t cols = k.batches[b];
    Matrix<T> x = make_batch<T>(n, k.pad, cols, rng);
    if (feed == Feed::Device || (feed == Feed::Mixed && b % 2 == 1))
      producer.add(gpu, x, ldx, first);
    else
      gpu.add(x.ptr(), cols, ldx, first);
    cpu.add(x.ptr(), cols, ldx, l.wp(), k.m > 0 ? l.b.data() : nullptr, first);
    sc.add(x, n, l);
    // The caller may reuse its buffer as soon as add() returns.
    std::fill(x.data.begin(), x.data.end(), std::numeric_limits<T>::quiet_NaN());
    first += cols;
    if (b == k.batches.size() / 2)  // result() mid-stream must not disturb what follows
      expect_match(gpu.result(), cpu, sc, tol, "after batch " + std::to_string(b));
  }
  expect_match(gpu.result(), cpu, sc, tol, "at the end");
}

template <typename T>
void run_table(dc::Math math, Tol tol, Feed feed = Feed::Host) {
  const uint64_t seed = announce_seed(20240612);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Case& k : cases()) {
    run_case<T>(k, math, tol, rng, feed);
    if (::testing::Test::HasFailure()) return;
  }
}

// ---------------------------------------------------------------- runs everywhere

TEST(GpuStatsArgs, BadArgumentsThrowBeforeTouchingTheDevice) {
  std::mt19937_64 rng(1);
  const Layer<float> l = make_layer<float>(7, 3, rng);
  auto make = [&](int64_t n, int64_t m, const Matrix<float>* w, const std::vector<float>* b,
                  int64_t batch) {
    return dalr::test::error_message([&] { dc::GpuStats<float> s(n, m, w, b, batch); });
  };
  EXPECT_TRUE(contains(make(0, 0, nullptr, nullptr, 4), "positive input width"));
  EXPECT_TRUE(contains(make(7, -1, nullptr, nullptr, 4), "positive input width"));
  EXPECT_TRUE(contains(make(7, 0, nullptr, nullptr, 0), "positive batch size"));
  std::string m = make(7, 3, nullptr, &l.b, 4);
  EXPECT_TRUE(contains(m, "weight (m x n) and bias") && contains(m, "no weight")) << m;
  m = make(7, 3, &l.w, nullptr, 4);
  EXPECT_TRUE(contains(m, "no bias")) << m;
  m = make(8, 3, &l.w, &l.b, 4);  // W is 3 x 7, not 3 x 8
  EXPECT_TRUE(contains(m, "expected 3 x 8") && contains(m, "got 3 x 7")) << m;
  const std::vector<float> short_b(2, 0.f);
  EXPECT_TRUE(contains(make(7, 3, &l.w, &short_b, 4), "got 3 x 7 and 2"));
  m = make(int64_t(1) << 32, 0, nullptr, nullptr, 4);
  EXPECT_TRUE(contains(m, "cuBLAS dimension limit")) << m;
}

TEST(GpuStatsArgs, MissingDeviceThrowsError) {
  EXPECT_THROW(dc::GpuStats<double>(5, 0, nullptr, nullptr, 4, dc::Math::Exact, 99), dalr::Error);
  EXPECT_THROW(dc::GpuStats<double>(5, 0, nullptr, nullptr, 4, dc::Math::Exact, -1), dalr::Error);
}

// The device path's NaN/Inf word: keys sort as check_finite scans (sample, then unit)
// and decode to what was encoded, up to the largest sample add_device accepts.
TEST(NonFiniteKey, OrdersLikeCheckFiniteAndDecodes) {
  namespace k = dalr::kernels;
  const int64_t n = 37;
  EXPECT_LT(k::non_finite_key(5, 36, n, false), k::non_finite_key(6, 0, n, true));
  EXPECT_LT(k::non_finite_key(5, 3, n, false), k::non_finite_key(5, 4, n, true));
  EXPECT_LT(k::non_finite_key(0, 0, n, true), k::non_finite_key(0, 0, n, false));
  const int64_t last = static_cast<int64_t>((k::kAllFinite - 1) / 2 / uint64_t(n)) - 1;
  struct Case {
    int64_t sample, unit;
    bool is_nan;
  };
  for (const Case c : {Case{0, 0, true}, Case{0, 0, false}, Case{102, 20, true}, Case{7, 36, false},
                       Case{last, n - 1, false}, Case{last, n - 1, true}}) {
    const unsigned long long key = k::non_finite_key(c.sample, c.unit, n, c.is_nan);
    EXPECT_LT(key, k::kAllFinite);
    const k::NonFinite d = k::decode_non_finite(key, n);
    EXPECT_EQ(d.sample, c.sample);
    EXPECT_EQ(d.unit, c.unit);
    EXPECT_EQ(d.is_nan, c.is_nan);
  }
}

TEST(GpuStatsNoDevice, ConstructionThrowsErrorNotCrash) {
  if (dc::available()) GTEST_SKIP() << "a CUDA device exists";
  const std::string m = dalr::test::error_message(
      [] { dc::GpuStats<float> s(37, 0, nullptr, nullptr, 8, dc::Math::Exact, 0); });
  EXPECT_TRUE(contains(m, "CUDA device 0 does not exist")) << m;
}

// ---------------------------------------------------------------- needs a GPU

TEST(GpuStats, DoubleMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  run_table<double>(dc::Math::Exact, kFp64);
}

TEST(GpuStats, FloatMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  run_table<float>(dc::Math::Exact, kFp32);
}

TEST(GpuStats, Tf32MatchesCpuLoosely) {
  DALR_SKIP_WITHOUT_GPU();
  run_table<float>(dc::Math::Tf32, kTf32);
}

TEST(GpuStats, DeviceBatchesMatchCpu) {
  DALR_SKIP_WITHOUT_GPU();
  run_table<double>(dc::Math::Exact, kFp64, Feed::Device);
  run_table<float>(dc::Math::Exact, kFp32, Feed::Device);
}

TEST(GpuStats, HostAndDeviceBatchesInTurnMatchCpu) {
  DALR_SKIP_WITHOUT_GPU();
  run_table<float>(dc::Math::Exact, kFp32, Feed::Mixed);
}

TEST(GpuStats, FreshResultIsEmpty) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(3);
  const Layer<float> l = make_layer<float>(37, 5, rng);
  dc::GpuStats<float> gpu(37, 5, &l.w, &l.b, 8);
  const LayerStats<float> r = gpu.result();
  EXPECT_EQ(r.count(), 0);
  for (float v : r.gram().data) ASSERT_EQ(v, 0.f);
  for (double v : r.sum_x()) ASSERT_EQ(v, 0.0);
  for (double v : r.max_x()) ASSERT_EQ(v, -kInf);
  ASSERT_EQ(r.sum_y().size(), 5u);
  for (double v : r.sum_y()) ASSERT_EQ(v, 0.0);
  for (double v : r.max_y()) ASSERT_EQ(v, -kInf);
}

// GPU: merge(e1), add B1, merge(e2), add B2, where e1 and e2 are CPU statistics of
// batches A1, A2. CPU: A1, A2, B1, B2 added to one LayerStats. max_batch < n, so the
// Gram upload of a merge is split into several column chunks (the last one partial).
template <typename T>
void run_merge(int64_t n, int64_t m, int64_t max_batch, Tol tol, std::mt19937_64& rng) {
  SCOPED_TRACE("n=" + std::to_string(n) + " m=" + std::to_string(m) +
               " max_batch=" + std::to_string(max_batch));
  const Layer<T> l = make_layer<T>(n, m, rng);
  const T* bp = m > 0 ? l.b.data() : nullptr;
  LayerStats<T> cpu(n, m), e1(n, m), e2(n, m);
  Scales<T> sc(n, m);
  dc::GpuStats<T> gpu(n, m, l.wp(), l.bp(), max_batch);
  int64_t first = 0;
  auto feed = [&](LayerStats<T>* earlier, int64_t cols) {
    const Matrix<T> x = make_batch<T>(n, 0, cols, rng);
    if (earlier)
      earlier->add(x.ptr(), cols, n, l.wp(), bp, first);
    else
      gpu.add(x.ptr(), cols, n, first);
    cpu.add(x.ptr(), cols, n, l.wp(), bp, first);
    sc.add(x, n, l);
    first += cols;
  };
  feed(&e1, max_batch);
  feed(&e1, 3);
  feed(&e2, 1);
  feed(&e2, max_batch);
  gpu.merge(e1);
  feed(nullptr, max_batch);
  feed(nullptr, 2);
  gpu.merge(e2);
  feed(nullptr, 5);
  feed(nullptr, max_batch);
  expect_match(gpu.result(), cpu, sc, tol, "after merges");
}

TEST(GpuStats, MergeMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  const uint64_t seed = announce_seed(77);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  run_merge<double>(37, 5, 9, kFp64, rng);
  run_merge<double>(301, 129, 64, kFp64, rng);
  run_merge<float>(37, 0, 9, kFp32, rng);
  run_merge<float>(301, 129, 64, kFp32, rng);
  run_merge<float>(1, 5, 5, kFp32, rng);
}

TEST(GpuStats, MergeRejectsOtherShapes) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(5);
  const Layer<double> l = make_layer<double>(37, 5, rng);
  dc::GpuStats<double> gpu(37, 5, &l.w, &l.b, 8);
  std::string m = dalr::test::error_message([&] { gpu.merge(LayerStats<double>(38, 5)); });
  EXPECT_TRUE(contains(m, "different shapes (n 37 vs 38, m 5 vs 5)")) << m;
  m = dalr::test::error_message([&] { gpu.merge(LayerStats<double>(37, 0)); });
  EXPECT_TRUE(contains(m, "different shapes (n 37 vs 37, m 5 vs 0)")) << m;
  EXPECT_EQ(gpu.result().count(), 0);
}

// A batch with NaN or Inf throws the CPU twin's message (sample and unit named) and
// changes nothing: batches before and after still give the CPU statistics.
template <typename T>
void run_non_finite(std::mt19937_64& rng) {
  const int64_t n = 37, m = 5, pad = 2, ldx = n + pad;
  const Layer<T> l = make_layer<T>(n, m, rng);
  dc::GpuStats<T> gpu(n, m, &l.w, &l.b, 8);
  LayerStats<T> cpu(n, m);
  Scales<T> sc(n, m);
  auto both = [&](const Matrix<T>& x, int64_t first) {
    const std::string g = dalr::test::error_message([&] { gpu.add(x.ptr(), x.cols, ldx, first); });
    const std::string c =
        dalr::test::error_message([&] { cpu.add(x.ptr(), x.cols, ldx, &l.w, l.b.data(), first); });
    EXPECT_EQ(g, c);
    if (g == "<no throw>") sc.add(x, n, l);
    return g;
  };
  EXPECT_EQ(both(make_batch<T>(n, pad, 8, rng), 0), "<no throw>");
  Matrix<T> bad = make_batch<T>(n, pad, 6, rng);
  bad(3, 2) = std::numeric_limits<T>::quiet_NaN();
  std::string msg = both(bad, 100);
  EXPECT_TRUE(contains(msg, "sample 102, unit 3 is NaN")) << msg;
  bad = make_batch<T>(n, pad, 1, rng);
  bad(n - 1, 0) = -std::numeric_limits<T>::infinity();
  msg = both(bad, 7);
  EXPECT_TRUE(contains(msg, "sample 7, unit 36 is Inf")) << msg;
  for (int k = 0; k < 3; ++k)
    EXPECT_EQ(both(make_batch<T>(n, pad, 8 - k, rng), 200 + 8 * k), "<no throw>");
  expect_match(gpu.result(), cpu, sc, sizeof(T) == 8 ? kFp64 : kFp32, "after rejected batches");
}

TEST(GpuStats, NonFiniteThrowsNamingSampleAndUnit) {
  DALR_SKIP_WITHOUT_GPU();
  const uint64_t seed = announce_seed(11);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  run_non_finite<float>(rng);
  run_non_finite<double>(rng);
}

// add_device cannot reject a NaN/Inf batch before it is counted: the first bad value (in
// check_finite's order, so the CPU's message) is reported by a later add_device once
// the GPU has caught up with that batch's slot, and by every result() after.
template <typename T>
void run_device_non_finite(std::mt19937_64& rng) {
  const int64_t n = 37, m = 5, pad = 2, ldx = n + pad;
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
  const Layer<T> l = make_layer<T>(n, m, rng);
  dc::GpuStats<T> gpu(n, m, &l.w, &l.b, 8);
  LayerStats<T> cpu(n, m);
  Producer<T> producer(static_cast<size_t>(ldx * 8));
  Matrix<T> bad = make_batch<T>(n, pad, 6, rng);
  bad(30, 2) = -inf;
  bad(20, 2) = nan;  // the first in check_finite's order
  bad(3, 4) = inf;
  const std::string want =
      dalr::test::error_message([&] { cpu.add(bad.ptr(), bad.cols, ldx, &l.w, l.b.data(), 100); });
  EXPECT_TRUE(contains(want, "sample 102, unit 20 is NaN")) << want;
  auto feed = [&](const Matrix<T>& x, int64_t first) {
    return dalr::test::error_message([&] { producer.add(gpu, x, ldx, first); });
  };
  EXPECT_EQ(feed(make_batch<T>(n, pad, 8, rng), 0), "<no throw>");  // slot 0
  EXPECT_EQ(feed(bad, 100), "<no throw>");                          // slot 1: not seen yet
  // A later bad sample, queued too, must not replace the first. Slot 0's word was copied
  // before the bad batch was checked: no throw, whether the GPU has caught up or not.
  Matrix<T> later = make_batch<T>(n, pad, 3, rng);
  later(0, 0) = nan;
  EXPECT_EQ(feed(later, 300), "<no throw>");
  DALR_CUDA_CHECK(cudaDeviceSynchronize());
  // Slot 1's word, now complete, holds the bad batch.
  EXPECT_EQ(feed(make_batch<T>(n, pad, 8, rng), 400), want);
  EXPECT_EQ(dalr::test::error_message([&] { gpu.result(); }), want);
  EXPECT_EQ(dalr::test::error_message([&] { gpu.result(); }), want);

  // Inf alone, found by result().
  dc::GpuStats<T> gpu2(n, 0, nullptr, nullptr, 8);
  Matrix<T> one = make_batch<T>(n, pad, 1, rng);
  one(n - 1, 0) = -inf;
  producer.add(gpu2, one, ldx, 7);
  const std::string msg = dalr::test::error_message([&] { gpu2.result(); });
  EXPECT_EQ(msg, dalr::test::error_message(
                     [&] { LayerStats<T>(n, 0).add(one.ptr(), 1, ldx, nullptr, nullptr, 7); }));
  EXPECT_TRUE(contains(msg, "sample 7, unit 36 is Inf")) << msg;
}

TEST(GpuStats, DeviceNonFiniteIsReportedLaterWithTheCpuMessage) {
  DALR_SKIP_WITHOUT_GPU();
  const uint64_t seed = announce_seed(17);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  run_device_non_finite<float>(rng);
  run_device_non_finite<double>(rng);
}

TEST(GpuStats, DeviceBatchRejectsBadArguments) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(19);
  const int64_t n = 37;
  dc::GpuStats<float> gpu(n, 0, nullptr, nullptr, 8);
  Producer<float> producer(static_cast<size_t>(n * 9));
  const Matrix<float> x = make_batch<float>(n, 0, 9, rng);
  producer.buf.upload(x.ptr(), x.data.size(), producer.stream);
  producer.stream.synchronize();
  float* dx = producer.buf.data();
  void* s = producer.stream.get();
  auto add = [&](const float* p, int64_t cols, int64_t ldx, int64_t first) {
    return dalr::test::error_message([&] { gpu.add_device(p, cols, ldx, first, s); });
  };
  std::string m = add(x.ptr(), 8, n, 0);  // host memory
  EXPECT_TRUE(contains(m, "not memory of CUDA device 0")) << m;
  m = add(dx, 9, n, 0);
  EXPECT_TRUE(contains(m, "batch of 9 samples exceeds the GPU batch size 8")) << m;
  m = add(dx, 8, n - 1, 0);
  EXPECT_TRUE(contains(m, "leading dimension smaller than the width")) << m;
  m = add(nullptr, 8, n, 0);
  EXPECT_TRUE(contains(m, "no data (null pointer)")) << m;
  m = add(dx, 8, n, -1);
  EXPECT_TRUE(contains(m, "first sample index -1 out of range")) << m;
  EXPECT_EQ(add(dx, 0, n, 0), "<no throw>");  // empty batch: nothing happens
  EXPECT_EQ(gpu.result().count(), 0);
  EXPECT_EQ(add(dx, 8, n, 0), "<no throw>");  // the object is still usable
  LayerStats<float> cpu(n, 0);
  cpu.add(x.ptr(), 8, n, nullptr, nullptr, 0);
  Scales<float> sc(n, 0);
  Matrix<float> used(n, 8);
  std::copy(x.data.begin(), x.data.begin() + n * 8, used.data.begin());
  sc.add(used, n, make_layer<float>(n, 0, rng));
  expect_match(gpu.result(), cpu, sc, kFp32, "after rejected device batches");
}

TEST(GpuStats, RejectsBadBatches) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(13);
  const int64_t n = 37;
  dc::GpuStats<float> gpu(n, 0, nullptr, nullptr, 8);
  LayerStats<float> cpu(n, 0);
  Scales<float> sc(n, 0);
  const Layer<float> none = make_layer<float>(n, 0, rng);
  const Matrix<float> x = make_batch<float>(n, 0, 9, rng);
  std::string m = dalr::test::error_message([&] { gpu.add(x.ptr(), 9, n, 0); });
  EXPECT_TRUE(contains(m, "batch of 9 samples exceeds the GPU batch size 8")) << m;
  m = dalr::test::error_message([&] { gpu.add(x.ptr(), 8, n - 1, 0); });
  EXPECT_EQ(m, dalr::test::error_message([&] { cpu.add(x.ptr(), 8, n - 1, nullptr, nullptr, 0); }));
  EXPECT_TRUE(contains(m, "leading dimension smaller than the width")) << m;
  gpu.add(x.ptr(), 0, n, 0);  // empty batch: nothing happens, as on the CPU
  EXPECT_EQ(gpu.result().count(), 0);
  gpu.add(x.ptr(), 8, n, 0);  // the object is still usable
  cpu.add(x.ptr(), 8, n, nullptr, nullptr, 0);
  Matrix<float> used(n, 8);
  std::copy(x.data.begin(), x.data.begin() + n * 8, used.data.begin());
  sc.add(used, n, none);
  expect_match(gpu.result(), cpu, sc, kFp32, "after rejected batches");
}

TEST(GpuStats, NamesTheMemoryItNeeds) {
  DALR_SKIP_WITHOUT_GPU();
  // C alone would be 2^40 floats (4 TiB): more than any device has.
  const std::string m = dalr::test::error_message(
      [] { dc::GpuStats<float> s(int64_t(1) << 20, 0, nullptr, nullptr, 1); });
  EXPECT_TRUE(contains(m, "not enough GPU memory for GPU statistics")) << m;
  EXPECT_TRUE(contains(m, "needs ") && contains(m, " bytes")) << m;
}

}  // namespace
