// Streaming statistics: against brute force, chunking, merging, save/resume, NaN.
#include <gtest/gtest.h>

#include <cmath>

#include "cpu/recon.hpp"
#include "dalr/backend.hpp"
#include "dalr/communicator.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"
#include "oracle.hpp"
#include "test_util.hpp"

using namespace dalr;

namespace {

struct Data {
  Matrix<double> x, w;  // n x p, m x n
  std::vector<double> b;
};

Data make_data(int64_t n, int64_t m, int64_t p, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Data d{test::random_matrix<double>(n, p, rng), test::random_matrix<double>(m, n, rng), {}};
  for (auto& v : d.x.data) v = std::abs(v) + 0.25;  // post-ReLU-like, never all zero
  std::normal_distribution<double> nd;
  for (int64_t i = 0; i < m; ++i) d.b.push_back(nd(rng));
  return d;
}

template <typename T>
LayerStats<T> accumulate(const Data& d, int64_t chunk, int64_t from = 0, int64_t to = -1) {
  if (to < 0) to = d.x.cols;
  Matrix<T> x(d.x.rows, d.x.cols), w(d.w.rows, d.w.cols);
  for (int64_t i = 0; i < x.size(); ++i) x.data[i] = static_cast<T>(d.x.data[i]);
  for (int64_t i = 0; i < w.size(); ++i) w.data[i] = static_cast<T>(d.w.data[i]);
  std::vector<T> b(d.b.begin(), d.b.end());
  LayerStats<T> st(d.x.rows, d.w.rows);
  for (int64_t j = from; j < to; j += chunk)
    st.add(x.ptr() + j * x.ld(), std::min(chunk, to - j), x.ld(), &w, b.data(), j);
  return st;
}

void expect_same(const LayerStats<double>& a, const LayerStats<double>& b, double tol) {
  ASSERT_EQ(a.count(), b.count());
  EXPECT_LT(oracle::rel_diff(a.gram(), b.gram()), tol);
  for (int64_t i = 0; i < a.n(); ++i) {
    EXPECT_NEAR(a.sum_x()[i], b.sum_x()[i], tol * std::abs(b.sum_x()[i]));
    EXPECT_EQ(a.max_x()[i], b.max_x()[i]);
  }
  for (int64_t i = 0; i < a.m(); ++i) {
    EXPECT_NEAR(a.sum_y()[i], b.sum_y()[i], tol * (1 + std::abs(b.sum_y()[i])));
    EXPECT_NEAR(a.max_y()[i], b.max_y()[i], tol * (1 + std::abs(b.max_y()[i])));
  }
}

TEST(Stats, MatchesBruteForce) {
  const uint64_t seed = test::test_seed(42);
  SCOPED_TRACE("seed " + std::to_string(seed));
  Data d = make_data(23, 11, 37, seed);
  LayerStats<double> st = accumulate<double>(d, 8);
  const Matrix<double> c = oracle::mul(d.x, d.x, false, true);
  EXPECT_LT(oracle::rel_diff(st.gram(), c), 1e-14);
  const Matrix<double> z = oracle::mul(d.w, d.x);
  for (int64_t i = 0; i < 23; ++i) {
    double s = 0, mx = -INFINITY;
    for (int64_t j = 0; j < 37; ++j) s += d.x(i, j), mx = std::max(mx, d.x(i, j));
    EXPECT_NEAR(st.sum_x()[i], s, 1e-12 * s);
    EXPECT_EQ(st.max_x()[i], mx);
    EXPECT_NEAR(st.mean_x()[i], s / 37, 1e-12 * s);
  }
  for (int64_t i = 0; i < 11; ++i) {
    double s = 0, mx = 0;
    for (int64_t j = 0; j < 37; ++j) {
      const double y = std::max(0.0, z(i, j) + d.b[i]);
      s += y, mx = std::max(mx, y);
    }
    EXPECT_NEAR(st.sum_y()[i], s, 1e-12 * (1 + s));
    EXPECT_NEAR(st.max_y()[i], mx, 1e-12 * (1 + mx));
  }
  EXPECT_EQ(st.count(), 37);
  EXPECT_NEAR(st.gram_trace(), oracle::frob2(d.x), 1e-12 * oracle::frob2(d.x));
}

TEST(Stats, ChunksEqualOnePass) {
  Data d = make_data(19, 7, 53, test::test_seed(7));
  LayerStats<double> one = accumulate<double>(d, 53);
  for (int64_t chunk : {1, 2, 7, 52}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    expect_same(accumulate<double>(d, chunk), one, 1e-13);
  }
}

TEST(Stats, MergeEqualsOnePass) {
  Data d = make_data(13, 5, 41, test::test_seed(8));
  LayerStats<double> a = accumulate<double>(d, 6, 0, 17), b = accumulate<double>(d, 6, 17, 41);
  a.merge(b);
  expect_same(a, accumulate<double>(d, 41), 1e-13);
  LayerStats<double> wrong(12, 5);
  EXPECT_THROW(a.merge(wrong), Error);
}

// Ranks simulated in one process: the other ranks' reduce_to_root records what they
// send (in call order); rank 0's then combines its own with the recordings.
class Recorder final : public Communicator {
 public:
  Recorder(int rank, int size, std::vector<std::vector<double>>* log)
      : r_(rank), s_(size), log_(log) {}
  int rank() const override { return r_; }
  int size() const override { return s_; }
  void sum_to_root(double* v, int64_t len) override { combine(v, len, false); }
  void sum_to_root(float* v, int64_t len) override {
    std::vector<double> d(v, v + len);
    combine(d.data(), len, false);
    for (int64_t i = 0; i < len; ++i) v[i] = static_cast<float>(d[i]);
  }
  void sum_to_root(int64_t* v, int64_t len) override {
    std::vector<double> d(v, v + len);
    combine(d.data(), len, false);
    for (int64_t i = 0; i < len; ++i) v[i] = static_cast<int64_t>(d[i]);
  }
  void max_to_root(double* v, int64_t len) override { combine(v, len, true); }

 private:
  int r_, s_;
  std::vector<std::vector<double>>* log_;  // one per call, each rank's values appended
  size_t call_ = 0;
  void combine(double* v, int64_t len, bool max) {
    if (log_->size() <= call_) log_->resize(call_ + 1);
    std::vector<double>& rec = (*log_)[call_++];
    if (r_ != 0) {
      rec.insert(rec.end(), v, v + len);
      return;
    }
    ASSERT_EQ(rec.size() % static_cast<size_t>(len ? len : 1), 0u);
    for (size_t at = 0; at < rec.size(); at += static_cast<size_t>(len))
      for (int64_t i = 0; i < len; ++i)
        v[i] = max ? std::max(v[i], rec[at + i]) : v[i] + rec[at + i];
  }
};

TEST(Stats, SharesCoverTheSamplesOnce) {
  for (int64_t count : {0, 1, 2, 5, 101}) {
    for (int size : {1, 2, 3, 7}) {
      int64_t next = 0;
      for (int r = 0; r < size; ++r) {
        const Share s = share_of(count, r, size);
        EXPECT_EQ(s.first, next);
        EXPECT_LE(s.last - s.first, count / size + 1);
        EXPECT_GE(s.last - s.first, count / size);
        next = s.last;
      }
      EXPECT_EQ(next, count) << count << " over " << size;
    }
  }
}

// Three ranks with uneven shares, one of them empty: rank 0 ends with the statistics of
// all the samples (merge()'s, and one pass's).
TEST(Stats, ReduceToRootEqualsOnePass) {
  Data d = make_data(13, 5, 41, test::test_seed(15));
  std::vector<std::vector<double>> log;
  const int64_t cuts[] = {0, 17, 17, 41};  // rank 1's share is empty
  std::vector<LayerStats<double>> ranks;
  for (int r = 0; r < 3; ++r) ranks.push_back(accumulate<double>(d, 6, cuts[r], cuts[r + 1]));
  for (int r : {1, 2}) {
    Recorder c(r, 3, &log);
    ranks[r].reduce_to_root(c);
  }
  Recorder root(0, 3, &log);
  ranks[0].reduce_to_root(root);
  expect_same(ranks[0], accumulate<double>(d, 41), 1e-13);
  SingleProcess one;
  LayerStats<double> all = accumulate<double>(d, 41);
  all.reduce_to_root(one);  // one process: unchanged
  expect_same(all, accumulate<double>(d, 41), 1e-15);
}

TEST(Stats, SaveAndResumeEqualsOnePass) {
  test::TempDir dir;
  Data d = make_data(17, 9, 29, test::test_seed(9));
  accumulate<double>(d, 4, 0, 12).save(dir.file("s.safetensors"), {{"dalr.layer", "fc"}});
  std::map<std::string, std::string> meta;
  LayerStats<double> resumed = LayerStats<double>::load(dir.file("s.safetensors"), &meta);
  EXPECT_EQ(meta["dalr.layer"], "fc");
  EXPECT_EQ(meta["dalr.precision"], "fp64");
  resumed.merge(accumulate<double>(d, 5, 12, 29));
  expect_same(resumed, accumulate<double>(d, 29), 1e-13);

  // fp32 statistics round-trip exactly, and agree with fp64 to fp32 accuracy.
  LayerStats<float> f = accumulate<float>(d, 3);
  f.save(dir.file("f.safetensors"));
  LayerStats<float> g = LayerStats<float>::load(dir.file("f.safetensors"));
  EXPECT_EQ(g.gram().data, f.gram().data);
  EXPECT_EQ(g.count(), 29);
  EXPECT_LT(oracle::rel_diff(oracle::to_double(g.gram()), accumulate<double>(d, 29).gram()), 1e-6);
}

TEST(Stats, RejectsNonFiniteActivationsNamingTheSample) {
  Data d = make_data(6, 3, 10, 1);
  d.x(4, 7) = NAN;
  try {
    accumulate<double>(d, 3);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 7, unit 4 is NaN"), std::string::npos) << e.what();
  }
  d.x(4, 7) = INFINITY;
  EXPECT_THROW(accumulate<double>(d, 10), Error);
}

TEST(Stats, CpuAccumulatorGathersSmallBatchesToTheSameStatistics) {
  // The CPU backend's accumulator holds small batches and runs one SYRK per block of up
  // to 256 samples: batches smaller, larger and straddling the block, a gap in the sample
  // numbers, and result() in the middle must all give LayerStats' statistics.
  const uint64_t seed = test::test_seed(11);
  SCOPED_TRACE("seed " + std::to_string(seed));
  Data d = make_data(19, 7, 700, seed);
  auto backend = make_cpu_backend();
  auto acc = backend->stats(19, 7, &d.w, &d.b, 8);
  LayerStats<double> ref(19, 7);
  const std::vector<std::pair<int64_t, int64_t>> batches = {
      // (first column, columns)
      {0, 3}, {3, 1}, {4, 250}, {254, 7}, {261, 300}, {561, 5}, {600, 40}, {650, 50}};
  for (size_t i = 0; i < batches.size(); ++i) {
    const auto [j, cols] = batches[i];
    acc->add(d.x.ptr() + j * d.x.ld(), cols, d.x.ld(), j);
    ref.add(d.x.ptr() + j * d.x.ld(), cols, d.x.ld(), &d.w, d.b.data(), j);
    if (i == 3) expect_same(acc->result(), ref, 1e-13);
  }
  expect_same(acc->result(), ref, 1e-13);
  expect_same(acc->finish(), ref, 1e-13);

  // A NaN in a small batch is rejected by that add(), naming its sample; what came
  // before it is kept.
  auto acc2 = backend->stats(19, 7, &d.w, &d.b, 8);
  LayerStats<double> before(19, 7);
  acc2->add(d.x.ptr(), 5, d.x.ld(), 0);
  before.add(d.x.ptr(), 5, d.x.ld(), &d.w, d.b.data(), 0);
  d.x(2, 6) = NAN;
  try {
    acc2->add(d.x.ptr() + 5 * d.x.ld(), 4, d.x.ld(), 5);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 6, unit 2 is NaN"), std::string::npos) << e.what();
  }
  expect_same(acc2->finish(), before, 1e-13);
}

TEST(Stats, LoadRejectsOtherFiles) {
  test::TempDir dir;
  write_safetensors(dir.file("m.safetensors"), {TensorOut::f32("fc.weight", {2, 2}, {1, 2, 3, 4})},
                    {});
  try {
    LayerStats<double>::load(dir.file("m.safetensors"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a dalr-gpu statistics file"), std::string::npos);
  }
}

// ------------------------------------------------------------ error from statistics

// The reconstruction error computed from C, s and p alone (Eq. 13 without the samples)
// against the same error summed over the samples in float64, for a factoring and a
// pruning method, in both precisions, with odd sizes; and at full rank, where the
// error is (nearly) zero and a cancellation would show.
template <typename T>
void check_error_from_statistics(double tol) {
  const uint64_t seed = test::test_seed(4242);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t n = 23, m = 11, p = 37;
  const Data d = make_data(n, m, p, seed);
  const LayerStats<T> st = accumulate<T>(d, 5);
  const Matrix<T> w = oracle::from_double<T>(d.w);
  const std::vector<T> b(d.b.begin(), d.b.end());
  for (const Method method : {Method::Dalr, Method::Svd, Method::PruneMean})
    for (const int64_t k : {int64_t(4), int64_t(11)}) {
      SCOPED_TRACE(std::string(method_name(method)) + " rank " + std::to_string(k));
      const Factors<T> f = solve<T>({method, k, 0.3}, w, b, st);
      // Y = W X + b and Yhat from the factors, sample by sample, in float64.
      const oracle::Mat wd = oracle::to_double(w);
      const oracle::Mat bd = oracle::to_double(f.b);
      long double err2 = 0, ref2 = 0;
      for (int64_t s = 0; s < p; ++s) {
        std::vector<double> x(static_cast<size_t>(n));
        for (int64_t j = 0; j < n; ++j) x[j] = static_cast<double>(static_cast<T>(d.x(j, s)));
        std::vector<double> bx(static_cast<size_t>(f.b.rows), 0.0), yh(static_cast<size_t>(m));
        for (int64_t r = 0; r < f.b.rows; ++r)
          for (int64_t j = 0; j < n; ++j) bx[r] += bd(r, j) * x[j];
        if (is_pruning(method)) {
          std::fill(yh.begin(), yh.end(), 0.0);
          for (int64_t r = 0; r < f.b.rows; ++r)
            yh[f.kept_units[r]] = bx[r] + static_cast<double>(f.bias[r]);
        } else {
          for (int64_t i = 0; i < m; ++i) {
            yh[i] = static_cast<double>(f.bias[i]);
            for (int64_t r = 0; r < f.b.rows; ++r) yh[i] += static_cast<double>(f.a(i, r)) * bx[r];
          }
        }
        for (int64_t i = 0; i < m; ++i) {
          double y = static_cast<double>(b[i]);
          for (int64_t j = 0; j < n; ++j) y += wd(i, j) * x[j];
          err2 += (y - yh[i]) * (y - yh[i]);
          ref2 += y * y;
        }
      }
      const double abs = std::sqrt(static_cast<double>(err2));
      const double ref = std::sqrt(static_cast<double>(ref2));
      const ReconError e = reconstruction_error(st, w, b, f);
      EXPECT_EQ(e.samples, p);
      EXPECT_NEAR(e.ref, ref, tol * ref);
      // Relative to the reference: at full rank the error itself is rounding noise.
      EXPECT_NEAR(e.abs, abs, tol * ref) << "error " << abs << " of " << ref;
      EXPECT_NEAR(e.rel, abs / ref, tol);
      if (k == 4 && !is_pruning(method)) EXPECT_GT(abs, 1e-3 * ref);  // not a trivial case
    }
}

TEST(Recon, ErrorFromStatisticsMatchesTheSamplesFp64) {
  check_error_from_statistics<double>(1e-10);
}

TEST(Recon, ErrorFromStatisticsMatchesTheSamplesFp32) {
  check_error_from_statistics<float>(2e-5);
}

}  // namespace

namespace {

// A device copy of C as a backend would keep it (here in host memory), counting how
// often the statistics fetch it.
struct FakeDeviceCopy : LayerStats<double>::DeviceCopy {
  explicit FakeDeviceCopy(Matrix<double> c) : c(std::move(c)) {}
  void download(double* host) const override {
    ++downloads;
    for (int64_t j = 0; j < c.cols; ++j)
      for (int64_t i = 0; i < c.rows; ++i)  // only the lower triangle is meaningful
        host[i + j * c.rows] = i >= j ? c(i, j) : -1e300;
  }
  double trace() const override {
    ++traces;
    double t = 0;
    for (int64_t i = 0; i < c.rows; ++i) t += c(i, i);
    return t;
  }
  Matrix<double> c;
  mutable int downloads = 0, traces = 0;
};

// The device copy of C a backend may attach (LayerStats::DeviceCopy) follows C: copies
// of the statistics share it, and add() and merge(), which change C, drop it. Statistics
// made from a device copy alone fetch C once, when the host first reads it; the trace
// never needs it.
TEST(Stats, DeviceCopyFollowsC) {
  const Data d = make_data(7, 3, 12, 5);
  const LayerStats<double> ref = accumulate<double>(d, 4, 0, 6);
  LayerStats<double> st = ref;
  EXPECT_EQ(st.device_copy(), nullptr);
  auto fake = std::make_shared<FakeDeviceCopy>(ref.gram());
  st.attach_device_copy(fake);
  ASSERT_EQ(st.device_copy(), fake.get());
  const LayerStats<double> copy = st;
  EXPECT_EQ(copy.device_copy(), st.device_copy());
  LayerStats<double> merged = st;
  merged.merge(accumulate<double>(d, 4, 6, 12));
  EXPECT_EQ(merged.device_copy(), nullptr);
  expect_same(merged, accumulate<double>(d, 4, 0, 12), 1e-12);
  LayerStats<double> added = st;
  added.add(d.x.ptr() + 6 * d.x.ld(), 2, d.x.ld(), &d.w, d.b.data(), 6);
  EXPECT_EQ(added.device_copy(), nullptr);
  EXPECT_NE(copy.device_copy(), nullptr);  // the others keep theirs
  EXPECT_EQ(fake->downloads, 0);           // st had C on the host all along

  // Only on the device: the trace asks the copy; gram() downloads once and fills the
  // upper triangle; add() after that keeps working on the host.
  auto only = std::make_shared<FakeDeviceCopy>(ref.gram());
  LayerStats<double> dev = LayerStats<double>::from_device(ref.count(), ref.n(), only, ref.sum_x(),
                                                           ref.max_x(), ref.sum_y(), ref.max_y());
  EXPECT_EQ(dev.gram_trace(), ref.gram_trace());
  EXPECT_EQ(only->traces, 1);
  EXPECT_EQ(only->downloads, 0);
  const LayerStats<double> dev_copy = dev;  // shares the copy, fetches on its own
  EXPECT_EQ(dev.gram().data, ref.gram().data);
  EXPECT_EQ(dev.gram().data, ref.gram().data);
  EXPECT_EQ(only->downloads, 1);
  EXPECT_EQ(dev.gram_trace(), ref.gram_trace());
  EXPECT_EQ(only->traces, 1);
  dev.add(d.x.ptr() + 6 * d.x.ld(), 6, d.x.ld(), &d.w, d.b.data(), 6);
  expect_same(dev, accumulate<double>(d, 4, 0, 12), 1e-12);
  EXPECT_EQ(dev.device_copy(), nullptr);
  // Detaching keeps C: it comes to the host first.
  LayerStats<double> detached = dev_copy;
  detached.attach_device_copy(nullptr);
  EXPECT_EQ(only->downloads, 2);
  EXPECT_EQ(detached.gram().data, ref.gram().data);
  EXPECT_THROW(LayerStats<double>::from_device(1, 7, nullptr, ref.sum_x(), ref.max_x(), {}, {}),
               Error);
}

}  // namespace
