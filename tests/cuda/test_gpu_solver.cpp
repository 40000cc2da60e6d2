// dalr::cuda::solve against its CPU twin dalr::solve (the oracle) on the same seeded
// inputs: every method, float and double, odd shapes with m < n and m > n, p < n
// (singular C) with lambda = 0 and lambda > 0. Products A B are compared, never raw
// factors (eigenvector and singular vector signs are arbitrary).
// GPU tests skip without a device; argument errors, the no-device error, pruning (host
// work) and solve_bytes are tested everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/recon.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"
#include "dalr/solver.hpp"
#include "gpu_test.hpp"
#include "oracle.hpp"
#include "test_util.hpp"
#include "twin.hpp"

namespace dc = dalr::cuda;
using namespace dalr;
using oracle::Mat;

namespace {

using dalr::test::contains;

const std::vector<Method> kAllMethods = {Method::Dalr,  Method::DalrExact, Method::Svd,
                                         Method::SvdBc, Method::PruneMean, Method::PruneMax};

struct Problem {
  Mat w, x;  // m x n, n x p
  std::vector<double> b;
};

// Activations with unequal unit scales and a non-zero mean (as post-ReLU features), but
// well conditioned: with p outside [n/2, 2n] the non-zero eigenvalues of C = X X^T span
// about two orders of magnitude, so the fp32 pseudo-inverse (lambda = 0) of two
// implementations agrees far inside the fp32 tolerance.
Problem make_problem(int64_t m, int64_t n, int64_t p, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem pr;
  pr.w = test::random_matrix<double>(m, n, rng);
  pr.x = test::random_matrix<double>(n, p, rng);
  for (int64_t j = 0; j < p; ++j)
    for (int64_t i = 0; i < n; ++i)
      pr.x(i, j) = (1.0 + 0.5 * double(i) / double(n)) * pr.x(i, j) + 0.3 + 0.1 * double(i % 3);
  std::normal_distribution<double> nd;
  for (int64_t i = 0; i < m; ++i) pr.b.push_back(nd(rng));
  return pr;
}

// The same problem in precision T: weight, bias and streamed statistics (input and
// output), built exactly as the CPU tests build them.
template <typename T>
struct Inputs {
  Matrix<T> w;
  std::vector<T> b;
  LayerStats<T> stats;
};

template <typename T>
Inputs<T> inputs_of(const Problem& pr, int64_t chunk = 5) {
  Inputs<T> in{oracle::from_double<T>(pr.w), std::vector<T>(pr.b.begin(), pr.b.end()), {}};
  const Matrix<T> x = oracle::from_double<T>(pr.x);
  in.stats = LayerStats<T>(x.rows, in.w.rows);
  for (int64_t j = 0; j < x.cols; j += chunk)
    in.stats.add(x.ptr() + j * x.ld(), std::min(chunk, x.cols - j), x.ld(), &in.w, in.b.data(), j);
  return in;
}

template <typename T>
double norm(const std::vector<T>& v) {
  double s = 0;
  for (T x : v) s += double(x) * double(x);
  return std::sqrt(s);
}

template <typename T>
bool all_finite(const std::vector<T>& v) {
  for (T x : v)
    if (!std::isfinite(double(x))) return false;
  return true;
}

// GPU factors against CPU factors of the same call. `tol` is the relative tolerance of
// the precision (stated with the tests below), applied to:
//   the product A B          relative Frobenius error
//   the spectrum             max abs difference relative to the largest value
//   energy_kept              absolute difference
//   the svd-bc bias          norm of the difference relative to its scale ||b|| + ||W|| ||xbar||
// Everything else (shapes, method, rank, lambda, kept units, pruned rows, untouched
// biases) must match exactly.
template <typename T>
void expect_same(const Factors<T>& gpu, const Factors<T>& cpu, const Inputs<T>& in, double tol) {
  EXPECT_EQ(gpu.method, cpu.method);
  EXPECT_EQ(gpu.rank, cpu.rank);
  EXPECT_EQ(gpu.lambda, cpu.lambda);
  ASSERT_EQ(gpu.a.rows, cpu.a.rows);
  ASSERT_EQ(gpu.a.cols, cpu.a.cols);
  ASSERT_EQ(gpu.b.rows, cpu.b.rows);
  ASSERT_EQ(gpu.b.cols, cpu.b.cols);
  ASSERT_EQ(gpu.bias.size(), cpu.bias.size());
  ASSERT_EQ(gpu.a.data.size(), size_t(gpu.a.rows * gpu.a.cols));
  ASSERT_EQ(gpu.b.data.size(), size_t(gpu.b.rows * gpu.b.cols));
  EXPECT_TRUE(all_finite(gpu.a.data)) << "A has NaN/Inf";
  EXPECT_TRUE(all_finite(gpu.b.data)) << "B has NaN/Inf";
  EXPECT_TRUE(all_finite(gpu.bias)) << "bias has NaN/Inf";
  EXPECT_EQ(gpu.kept_units, cpu.kept_units);

  if (is_pruning(cpu.method)) {
    EXPECT_EQ(gpu.b.data, cpu.b.data);
    EXPECT_EQ(gpu.bias, cpu.bias);
    EXPECT_EQ(gpu.spectrum, cpu.spectrum);
    EXPECT_EQ(gpu.energy_kept, cpu.energy_kept);
    return;
  }

  EXPECT_LT(test::twin::product_error(gpu, cpu), tol) << "product A B";

  if (cpu.method == Method::SvdBc) {
    std::vector<double> diff(cpu.bias.size());
    for (size_t i = 0; i < diff.size(); ++i) diff[i] = double(gpu.bias[i]) - double(cpu.bias[i]);
    const double scale =
        norm(in.b) + std::sqrt(oracle::frob2(oracle::to_double(in.w))) * norm(in.stats.mean_x());
    EXPECT_LE(norm(diff), tol * scale) << "svd-bc bias";
  } else {
    EXPECT_EQ(gpu.bias, cpu.bias);
  }

  ASSERT_EQ(gpu.spectrum.size(), cpu.spectrum.size());
  double top = 0;
  const double worst = test::twin::spectrum_max_abs_diff(gpu.spectrum, cpu.spectrum, &top);
  EXPECT_LE(worst, tol * top) << "spectrum (largest " << top << ")";
  for (size_t i = 1; i < gpu.spectrum.size(); ++i)
    EXPECT_GE(gpu.spectrum[i - 1], gpu.spectrum[i]) << "spectrum not descending at " << i;
  EXPECT_NEAR(gpu.energy_kept, cpu.energy_kept, tol);
}

// ---------------------------------------------------------------- runs everywhere

// Argument checks happen before any device work, with the CPU's messages, so these hold
// with and without a GPU.
TEST(GpuSolverArguments, SameErrorsAsTheCpu) {
  const Problem pr = make_problem(6, 8, 10, 1);
  const Inputs<double> in = inputs_of<double>(pr);
  const LayerStats<double> no_samples(8, 6);
  LayerStats<double> no_outputs(8, 0);
  const Matrix<double> x = oracle::from_double<double>(pr.x);
  no_outputs.add(x.ptr(), x.cols, x.ld(), nullptr, nullptr);
  const LayerStats<double> wrong_width(9, 6);
  const std::vector<double> short_bias(5, 0.0);
  const double nan = std::numeric_limits<double>::quiet_NaN();

  struct Bad {
    const char* what;
    SolveOptions opt;
    const std::vector<double>* b;
    const LayerStats<double>* st;
  };
  const std::vector<Bad> cases = {
      {"rank 0", {Method::Dalr, 0, 1.0}, &in.b, &in.stats},
      {"rank above min(m, n)", {Method::Svd, 7, 0.0}, &in.b, &in.stats},
      {"rank above min(m, n), exact", {Method::DalrExact, 9, 0.0}, &in.b, &in.stats},
      {"negative rank", {Method::SvdBc, -3, 0.0}, &in.b, &in.stats},
      {"kept units above m", {Method::PruneMax, 7, 0.0}, &in.b, &in.stats},
      {"negative lambda", {Method::Dalr, 2, -1.0}, &in.b, &in.stats},
      {"NaN lambda", {Method::DalrExact, 2, nan}, &in.b, &in.stats},
      {"short bias", {Method::Svd, 2, 0.0}, &short_bias, &in.stats},
      {"statistics of another width", {Method::Dalr, 2, 1.0}, &in.b, &wrong_width},
      {"no samples", {Method::SvdBc, 2, 0.0}, &in.b, &no_samples},
      {"pruning without output statistics", {Method::PruneMean, 2, 0.0}, &in.b, &no_outputs},
  };
  for (const Bad& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string cpu =
        dalr::test::error_message([&] { dalr::solve<double>(c.opt, in.w, *c.b, *c.st); });
    const std::string gpu =
        dalr::test::error_message([&] { dc::solve<double>(c.opt, in.w, *c.b, *c.st); });
    EXPECT_NE(cpu, "<no throw>");
    EXPECT_EQ(gpu, cpu);
  }
  // A negative lambda is irrelevant to the methods that do not use C, on both backends.
  const SolveOptions svd_negative{Method::Svd, 2, -1.0};
  EXPECT_EQ(
      dalr::test::error_message([&] { dalr::solve<double>(svd_negative, in.w, in.b, in.stats); }),
      "<no throw>");
  if (dc::available()) {
    EXPECT_EQ(
        dalr::test::error_message([&] { dc::solve<double>(svd_negative, in.w, in.b, in.stats); }),
        "<no throw>");
  }
}

TEST(GpuSolverNoDevice, SolveThrowsAnError) {
  if (dc::available()) GTEST_SKIP() << "a CUDA device exists";
  const Problem pr = make_problem(7, 13, 5, 2);
  const Inputs<float> in = inputs_of<float>(pr);
  for (Method method : {Method::Dalr, Method::DalrExact, Method::Svd, Method::SvdBc}) {
    SCOPED_TRACE(method_name(method));
    const std::string msg = dalr::test::error_message([&] {
      dc::solve<float>({method, 2, 0.5}, in.w, in.b, in.stats);
    });
    EXPECT_TRUE(contains(msg, "CUDA device")) << msg;
  }
}

TEST(GpuSolver, NonexistentDeviceThrows) {
  const Problem pr = make_problem(7, 13, 5, 3);
  const Inputs<double> in = inputs_of<double>(pr);
  const int missing = dc::device_count();  // device ids are 0 .. count - 1
  const std::string msg = dalr::test::error_message([&] {
    dc::solve<double>({Method::Svd, 2, 0.0}, in.w, in.b, in.stats, dc::Math::Exact, missing);
  });
  EXPECT_TRUE(contains(msg, "CUDA device " + std::to_string(missing) + " does not exist")) << msg;
}

// Pruning is a sort on the host: cuda::solve delegates to the CPU solver, so it works
// (and matches exactly) with or without a device.
TEST(GpuSolver, PruningIsTheCpuSolver) {
  const uint64_t seed = test::test_seed(515);
  std::cout << "[ seed     ] " << seed << " (set DALR_TEST_SEED to change)\n";
  const Problem pr = make_problem(19, 11, 30, seed);
  const Inputs<float> in = inputs_of<float>(pr);
  for (Method method : {Method::PruneMean, Method::PruneMax}) {
    SCOPED_TRACE(method_name(method));
    const Factors<float> cpu = dalr::solve<float>({method, 7, 0.0}, in.w, in.b, in.stats);
    const Factors<float> gpu = dc::solve<float>({method, 7, 0.0}, in.w, in.b, in.stats);
    expect_same(gpu, cpu, in, 0.0);
  }
}

TEST(SolveBytes, GrowsWithEveryDimensionAndCountsTheInputs) {
  const int64_t m = 100, n = 300, k = 10;
  for (Method method : {Method::Dalr, Method::DalrExact, Method::Svd, Method::SvdBc}) {
    SCOPED_TRACE(method_name(method));
    for (size_t elem : {sizeof(float), sizeof(double)}) {
      const size_t base = dc::solve_bytes(method, m, n, k, elem);
      EXPECT_GT(dc::solve_bytes(method, m, n, k + 1, elem), base);
      EXPECT_GT(dc::solve_bytes(method, m, n + 1, k, elem), base);
      EXPECT_GT(dc::solve_bytes(method, m + 1, n, k, elem), base);
      // W always; C too for the methods that use it.
      const size_t inputs = size_t(m * n + (needs_gram(method) ? n * n : 0)) * elem;
      EXPECT_GE(base, inputs);
    }
    EXPECT_GT(dc::solve_bytes(method, m, n, k, 8), dc::solve_bytes(method, m, n, k, 4));
    // m < n and m > n are both handled (the SVD decomposes W^T when W is wide).
    EXPECT_GT(dc::solve_bytes(method, n, m, k, 4), size_t(m * n * 4));
  }
  // Pruning runs on the host.
  EXPECT_EQ(dc::solve_bytes(Method::PruneMean, m, n, k, 4), 0u);
  EXPECT_EQ(dc::solve_bytes(Method::PruneMax, m, n, k, 8), 0u);
  // VGG19 fc6 (4096 x 25088) at the paper's largest rank fits an 80 GB card even in fp64,
  // and does not overflow.
  const size_t gib = size_t(1) << 30;
  for (Method method : {Method::Dalr, Method::DalrExact, Method::Svd})
    EXPECT_LT(dc::solve_bytes(method, 4096, 25088, 1024, 8), 40 * gib) << method_name(method);
  EXPECT_EQ(dc::solve_bytes(Method::Dalr, int64_t(1) << 40, int64_t(1) << 40, 1, 8),
            std::numeric_limits<size_t>::max());
}

// ---------------------------------------------------------------- needs a GPU

struct Shape {
  int64_t m, n, p, k;  // k <= min(m, n, p): the top-k eigenspace of G is well defined
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << "m=" << s.m << " n=" << s.n << " p=" << s.p << " k=" << s.k;
}

class GpuSolverShapes : public ::testing::TestWithParam<Shape> {};

// Every method, lambda = 0 (pseudo-inverse) and lambda > 0 (Cholesky) for the methods
// that use C, and for those both eigensolvers (full: Xsyevd against syevd; top-k: Xsyevdx
// against cpu::syev_range), on the same inputs through both backends.
template <typename T>
void compare_all_methods(const Shape& s, double tol) {
  const uint64_t seed = test::test_seed(4242 + 7 * s.m + s.n + s.p);
  std::cout << "[ seed     ] " << seed << " (set DALR_TEST_SEED to change)\n";
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Problem pr = make_problem(s.m, s.n, s.p, seed);
  const Inputs<T> in = inputs_of<T>(pr);
  const double ridge = default_lambda(in.stats, 0.1);
  for (Method method : kAllMethods) {
    for (double lambda : {0.0, ridge}) {
      if (lambda > 0 && !needs_gram(method)) continue;
      for (Eigensolver es : {Eigensolver::Full, Eigensolver::TopK}) {
        if (es == Eigensolver::TopK && !needs_gram(method)) continue;
        SCOPED_TRACE(std::string(method_name(method)) + " lambda=" + std::to_string(lambda) +
                     " eigensolver " + eigensolver_name(es));
        const SolveOptions opt{method, s.k, lambda, es};
        const Factors<T> cpu = dalr::solve<T>(opt, in.w, in.b, in.stats);
        const Factors<T> gpu = dc::solve<T>(opt, in.w, in.b, in.stats);
        expect_same(gpu, cpu, in, tol);
        if (es == Eigensolver::TopK)
          EXPECT_NEAR(gpu.spectrum_rest, cpu.spectrum_rest, tol * cpu.spectrum[0]);
      }
    }
  }
}

// fp64: both backends are backward stable; 1e-9 leaves room for the conditioning of
// the test problems (C's non-zero spectrum spans ~1e2, eigengaps ~1e-2 of the largest).
TEST_P(GpuSolverShapes, DoubleMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  compare_all_methods<double>(GetParam(), 1e-9);
}

// fp32: 1e-3 (unit roundoff 6e-8 times the same conditioning, with a wide margin).
TEST_P(GpuSolverShapes, FloatMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  compare_all_methods<float>(GetParam(), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(OddSizes, GpuSolverShapes,
                         ::testing::Values(Shape{7, 13, 5, 3},       // m < n, p < n: C singular
                                           Shape{9, 11, 31, 4},      // m < n, p > n
                                           Shape{17, 6, 23, 5},      // m > n
                                           Shape{33, 65, 20, 7},     // m < n, C singular
                                           Shape{70, 37, 101, 12},   // m > n, p > n
                                           Shape{12, 19, 41, 1},     // rank 1
                                           Shape{9, 11, 31, 9},      // k = m = min(m, n)
                                           Shape{23, 10, 27, 10},    // k = n = min(m, n)
                                           Shape{300, 513, 129, 40}  // many blocks, C singular
                                           ),
                         [](const auto& info) {
                           const Shape& s = info.param;
                           return "m" + std::to_string(s.m) + "n" + std::to_string(s.n) + "p" +
                                  std::to_string(s.p) + "k" + std::to_string(s.k);
                         });

// TF32 products (only when the user asks): inputs rounded to 10 mantissa bits (unit
// roundoff 4.9e-4), amplified by cond(C + lambda I) (about 4 with this ridge) in B. So a
// loose 2e-2, on a rank-1 problem whose top eigenvalue (the mean direction) is well
// separated.
TEST(GpuSolver, Tf32IsCloseToTheCpu) {
  DALR_SKIP_WITHOUT_GPU();
  const uint64_t seed = test::test_seed(31337);
  std::cout << "[ seed     ] " << seed << " (set DALR_TEST_SEED to change)\n";
  const Problem pr = make_problem(70, 37, 101, seed);
  const Inputs<float> in = inputs_of<float>(pr);
  const double ridge = default_lambda(in.stats, 1.0);
  for (Method method : {Method::Dalr, Method::DalrExact, Method::Svd}) {
    SCOPED_TRACE(method_name(method));
    const SolveOptions opt{method, 1, ridge};
    const Factors<float> cpu = dalr::solve<float>(opt, in.w, in.b, in.stats);
    const Factors<float> gpu = dc::solve<float>(opt, in.w, in.b, in.stats, dc::Math::Tf32);
    EXPECT_LT(test::twin::product_error(gpu, cpu), 2e-2);
  }
}

// devInfo is checked: a Cholesky failure is a dalr::Error with the CPU's explanation.
// C = -I with lambda = 0.5 makes C + lambda I negative definite (first minor fails).
TEST(GpuSolver, CholeskyFailureIsReported) {
  DALR_SKIP_WITHOUT_GPU();
  const int64_t m = 5, n = 7;
  std::mt19937_64 rng(9);
  const Matrix<double> w = test::random_matrix<double>(m, n, rng);
  const std::vector<double> b(m, 0.0);
  Matrix<double> gram(n, n);
  for (int64_t i = 0; i < n; ++i) gram(i, i) = -1.0;
  const LayerStats<double> st = LayerStats<double>::from_parts(3, gram, std::vector<double>(n, 0.0),
                                                               std::vector<double>(n, 0.0), {}, {});
  for (Method method : {Method::Dalr, Method::DalrExact}) {
    SCOPED_TRACE(method_name(method));
    const SolveOptions opt{method, 2, 0.5};
    const std::string cpu = dalr::test::error_message([&] { dalr::solve<double>(opt, w, b, st); });
    const std::string gpu = dalr::test::error_message([&] { dc::solve<double>(opt, w, b, st); });
    EXPECT_TRUE(contains(cpu, "not positive definite")) << cpu;
    EXPECT_TRUE(contains(gpu, "not positive definite")) << gpu;
    EXPECT_TRUE(contains(gpu, "Xpotrf")) << gpu;
  }
  // The context survives a failed solve: the next call on the device works.
  const Factors<double> ok = dc::solve<double>({Method::Svd, 2, 0.0}, w, b, st);
  EXPECT_EQ(ok.a.cols, 2);
}

// The same call twice gives the same answer (no state leaks between solves).
TEST(GpuSolver, RepeatedSolvesAgree) {
  DALR_SKIP_WITHOUT_GPU();
  const Problem pr = make_problem(33, 65, 20, test::test_seed(808));
  const Inputs<double> in = inputs_of<double>(pr);
  for (Method method : {Method::Dalr, Method::DalrExact, Method::Svd, Method::SvdBc}) {
    SCOPED_TRACE(method_name(method));
    const SolveOptions opt{method, 5, 0.0};
    const Factors<double> f1 = dc::solve<double>(opt, in.w, in.b, in.stats);
    const Factors<double> f2 = dc::solve<double>(opt, in.w, in.b, in.stats);
    expect_same(f2, f1, in, 1e-12);
  }
}

// The reconstruction error from the statistics on the GPU against the CPU's, for the
// same factors: every method (pruning delegates to the CPU, so it must match exactly),
// fp64 to 1e-10 and fp32 to 1e-4 of the reference norm (the two products with C differ
// by summation order; the error is a difference of such sums), at a middle and the full
// rank, on shapes with more blocks than the dot product's 1024.
template <typename T>
void recon_matches_cpu(double tol) {
  DALR_SKIP_WITHOUT_GPU();
  const uint64_t seed = test::test_seed(909);
  std::cout << "[ seed     ] " << seed << " (set DALR_TEST_SEED to change)\n";
  for (const Shape sh : {Shape{9, 11, 31, 4}, Shape{300, 513, 129, 40}, Shape{23, 10, 27, 10}}) {
    const Problem pr = make_problem(sh.m, sh.n, sh.p, seed);
    const Inputs<T> in = inputs_of<T>(pr);
    for (Method method : kAllMethods) {
      SCOPED_TRACE(std::string(method_name(method)) + " m" + std::to_string(sh.m) + " n" +
                   std::to_string(sh.n) + " k" + std::to_string(sh.k));
      const Factors<T> f =
          dalr::solve<T>({method, sh.k, default_lambda(in.stats, 0.1)}, in.w, in.b, in.stats);
      const ReconError cpu = dalr::reconstruction_error(in.stats, in.w, in.b, f);
      const ReconError gpu = dc::reconstruction_error<T>(in.stats, in.w, in.b, f);
      EXPECT_EQ(gpu.samples, cpu.samples);
      EXPECT_NEAR(gpu.ref, cpu.ref, tol * cpu.ref);
      EXPECT_NEAR(gpu.abs, cpu.abs, tol * cpu.ref) << "CPU error " << cpu.abs;
      if (is_pruning(method)) {
        EXPECT_EQ(gpu.abs, cpu.abs);
      }
    }
  }
}

TEST(GpuRecon, DoubleMatchesCpu) {
  recon_matches_cpu<double>(1e-10);
}

TEST(GpuRecon, FloatMatchesCpu) {
  recon_matches_cpu<float>(1e-4);
}

// GpuStats::finish() keeps C on the device (LayerStats::DeviceCopy); the solve and the
// error read it there instead of uploading the host copy. Same bits in both copies (the
// lower triangle, all that is read), so the same answers exactly; and nothing may be
// added after finish().
TEST(GpuSolver, StatisticsKeptOnTheDeviceGiveTheSameAnswers) {
  DALR_SKIP_WITHOUT_GPU();
  const uint64_t seed = test::test_seed(4711);
  std::cout << "[ seed     ] " << seed << " (set DALR_TEST_SEED to change)\n";
  const Problem pr = make_problem(33, 65, 20, seed);
  const Inputs<float> in = inputs_of<float>(pr);
  const Matrix<float> x = oracle::from_double<float>(pr.x);
  dc::GpuStats<float> gs(x.rows, in.w.rows, &in.w, &in.b, 8);
  for (int64_t j = 0; j < x.cols; j += 8)
    gs.add(x.ptr() + j * x.ld(), std::min<int64_t>(8, x.cols - j), x.ld(), j);
  const LayerStats<float> on_device = gs.finish();
  ASSERT_NE(on_device.device_copy(), nullptr);
  LayerStats<float> on_host = on_device;
  on_host.attach_device_copy(nullptr);
  for (Method method : {Method::Dalr, Method::DalrExact, Method::SvdBc}) {
    SCOPED_TRACE(method_name(method));
    const SolveOptions opt{method, 5, default_lambda(on_host, 0.1)};
    const Factors<float> a = dc::solve<float>(opt, in.w, in.b, on_device);
    const Factors<float> b = dc::solve<float>(opt, in.w, in.b, on_host);
    EXPECT_EQ(a.a.data, b.a.data);
    EXPECT_EQ(a.b.data, b.b.data);
    const ReconError ea = dc::reconstruction_error<float>(on_device, in.w, in.b, a);
    const ReconError eb = dc::reconstruction_error<float>(on_host, in.w, in.b, a);
    EXPECT_EQ(ea.abs, eb.abs);
    EXPECT_EQ(ea.ref, eb.ref);
  }
  const std::string m = dalr::test::error_message([&] { gs.add(x.ptr(), 1, x.ld(), 0); });
  EXPECT_TRUE(contains(m, "finish() was called")) << m;
}

}  // namespace
