// The six methods against independent float64 computations (tests/oracle.hpp), on
// seeded random inputs with odd sizes, p < n (singular C) and p > n.
#include <gtest/gtest.h>

#include <cmath>

#include "cpu/lapack.hpp"
#include "dalr/error.hpp"
#include "dalr/solver.hpp"
#include "oracle.hpp"
#include "solver_problem.hpp"
#include "test_util.hpp"

using namespace dalr;
using oracle::Mat;

namespace {

using test::make_problem;
using test::Problem;

template <typename T>
LayerStats<T> stats_of(const Problem& pr, int64_t chunk) {
  Matrix<T> x = oracle::from_double<T>(pr.x), w = oracle::from_double<T>(pr.w);
  std::vector<T> b(pr.b.begin(), pr.b.end());
  LayerStats<T> st(x.rows, w.rows);
  for (int64_t j = 0; j < x.cols; j += chunk)
    st.add(x.ptr() + j * x.ld(), std::min(chunk, x.cols - j), x.ld(), &w, b.data(), j);
  return st;
}

template <typename T>
Factors<T> run(const Problem& pr, Method method, int64_t k, double lambda) {
  LayerStats<T> st = stats_of<T>(pr, 5);
  Matrix<T> w = oracle::from_double<T>(pr.w);
  std::vector<T> b(pr.b.begin(), pr.b.end());
  return solve<T>({method, k, lambda}, w, b, st);
}

Mat product(const Factors<double>& f) {
  return oracle::mul(f.a, f.b);
}

// Eq. 7: ||W X - M X||_F^2 + lambda ||M||_F^2.
double objective(const Problem& pr, const Mat& m, double lambda) {
  return oracle::frob2(oracle::mul(oracle::sub(pr.w, m), pr.x)) + lambda * oracle::frob2(m);
}

// Alternating exact block minimisation of Eq. 7 over M = A B (no eigensolver):
//   A <- W C B^T (B C_l B^T)^-1,   B <- (A^T A)^-1 A^T W C C_l^-1.
Mat als_optimum(const Problem& pr, int64_t k, double lambda, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Mat c = oracle::mul(pr.x, pr.x, false, true);
  const Mat cl = oracle::add_diag(c, lambda);
  const Mat wc = oracle::mul(pr.w, c);
  const Mat wr = oracle::solve(cl, oracle::mul(c, pr.w, false, true));  // (W C C_l^-1)^T
  Mat b = test::random_matrix<double>(k, pr.w.cols, rng), a;
  double prev = 1e300;
  for (int it = 0; it < 20000; ++it) {
    const Mat wcbt = oracle::mul(wc, b, false, true);                  // W C B^T (m x k)
    const Mat gram = oracle::mul(b, oracle::mul(cl, b, false, true));  // B C_l B^T (k x k)
    const Mat at = oracle::solve(gram, oracle::transpose(wcbt));       // gram symmetric
    a = oracle::transpose(at);
    b = oracle::solve(oracle::mul(a, a, true, false), oracle::mul(a, wr, true, true));
    const double obj = objective(pr, oracle::mul(a, b), lambda);
    if (std::abs(prev - obj) <= 1e-15 * obj) break;
    prev = obj;
  }
  return oracle::mul(a, b);
}

struct Shape {
  int64_t m, n, p, k;
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << "m=" << s.m << " n=" << s.n << " p=" << s.p << " k=" << s.k;
}

class SolverShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(SolverShapes, DalrExactReachesTheOptimumOfEq7) {
  const Shape s = GetParam();
  const uint64_t seed = test::test_seed(1234 + s.m + s.p);
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr = make_problem(s.m, s.n, s.p, seed);
  for (double rel : {1e-3, 0.1, 1.0}) {
    LayerStats<double> st = stats_of<double>(pr, 4);
    const double lambda = default_lambda(st, rel);
    Factors<double> f = run<double>(pr, Method::DalrExact, s.k, lambda);
    const Mat ours = product(f);
    const Mat als = als_optimum(pr, s.k, lambda, seed + 1);
    const double fo = objective(pr, ours, lambda), fa = objective(pr, als, lambda);
    // Ours is the global minimiser: never worse than ALS, and equal to its converged value.
    EXPECT_LE(fo, fa * (1 + 1e-9)) << "lambda " << lambda;
    EXPECT_NEAR(fo / fa, 1.0, 1e-7) << "lambda " << lambda;
    EXPECT_LT(oracle::rel_diff(ours, als), 1e-5) << "lambda " << lambda;
  }
}

TEST_P(SolverShapes, DalrIsEquation11AsTheAuthorsCompute) {
  const Shape s = GetParam();
  const uint64_t seed = test::test_seed(77 + s.n);
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr = make_problem(s.m, s.n, s.p, seed);
  const double lambda = 0.37 * default_lambda(stats_of<double>(pr, 7), 1.0);
  Factors<double> f = run<double>(pr, Method::Dalr, s.k, lambda);
  // U_k U_k^T Z X^T (X X^T + lambda I)^-1 with U from Z Z^T, Z = W X.
  const Mat z = oracle::mul(pr.w, pr.x);
  Mat u;
  std::vector<double> ev = oracle::jacobi_eig(oracle::mul(z, z, false, true), &u);
  const Mat uk = oracle::first_cols(u, s.k);
  const Mat cl = oracle::add_diag(oracle::mul(pr.x, pr.x, false, true), lambda);
  const Mat zxt_t = oracle::mul(pr.x, z, false, true);         // (Z X^T)^T = X Z^T
  const Mat proj = oracle::solve(cl, oracle::mul(zxt_t, uk));  // C_l^-1 X Z^T U_k
  const Mat expect = oracle::mul(uk, proj, false, true);       // U_k (..)^T
  EXPECT_LT(oracle::rel_diff(product(f), expect), 1e-8);
  ASSERT_EQ(f.spectrum.size(), static_cast<size_t>(s.m));
  for (int64_t i = 0; i < s.m; ++i)
    EXPECT_NEAR(f.spectrum[i], ev[i], 1e-9 * ev[0]) << "eigenvalue " << i;
}

TEST_P(SolverShapes, DalrEqualsDalrExactAtLambdaZero) {
  const Shape s = GetParam();
  const uint64_t seed = test::test_seed(99 + s.k);
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr = make_problem(s.m, s.n, s.p, seed);
  const Mat a = product(run<double>(pr, Method::Dalr, s.k, 0.0));
  const Mat b = product(run<double>(pr, Method::DalrExact, s.k, 0.0));
  EXPECT_LT(oracle::rel_diff(a, b), 1e-8);
  // Pseudo-inverse semantics: with p < n, C is singular; the answer is U_k U_k^T W P
  // (P projects on the span of the samples), so M X == U_k U_k^T W X.
  const Mat z = oracle::mul(pr.w, pr.x);
  Mat u;
  oracle::jacobi_eig(oracle::mul(z, z, false, true), &u);
  const Mat uk = oracle::first_cols(u, s.k);
  const Mat expect = oracle::mul(uk, oracle::mul(uk, z, true, false));
  EXPECT_LT(oracle::rel_diff(oracle::mul(a, pr.x), expect), 1e-8);
}

TEST_P(SolverShapes, SvdIsTheEckartYoungOptimum) {
  const Shape s = GetParam();
  const uint64_t seed = test::test_seed(5 + s.m);
  SCOPED_TRACE("seed " + std::to_string(seed));
  Problem pr = make_problem(s.m, s.n, s.p, seed);
  Factors<double> f = run<double>(pr, Method::Svd, s.k, 0.0);
  // ||W - A B||^2 equals the sum of the trailing eigenvalues of W W^T (Jacobi).
  std::vector<double> ev = oracle::jacobi_eig(oracle::mul(pr.w, pr.w, false, true), nullptr);
  double tail = 0;
  for (size_t i = s.k; i < ev.size(); ++i) tail += std::max(ev[i], 0.0);
  const double err = oracle::frob2(oracle::sub(pr.w, product(f)));
  EXPECT_NEAR(err, tail, 1e-9 * oracle::frob2(pr.w));
  // A has orthonormal columns; the bias is unchanged.
  const Mat ata = oracle::mul(f.a, f.a, true, false);
  for (int64_t i = 0; i < s.k; ++i)
    for (int64_t j = 0; j < s.k; ++j) EXPECT_NEAR(ata(i, j), i == j ? 1.0 : 0.0, 1e-10);
  EXPECT_EQ(f.bias, pr.b);
}

TEST_P(SolverShapes, SvdBcBiasIsTheMeanResidual) {
  const Shape s = GetParam();
  Problem pr = make_problem(s.m, s.n, s.p, test::test_seed(11));
  Factors<double> f = run<double>(pr, Method::SvdBc, s.k, 0.0);
  const Mat resid = oracle::mul(oracle::sub(pr.w, product(f)), pr.x);  // (W - AB) X
  for (int64_t i = 0; i < s.m; ++i) {
    double mean = 0;
    for (int64_t j = 0; j < s.p; ++j) mean += resid(i, j);
    mean /= double(s.p);
    EXPECT_NEAR(f.bias[i], pr.b[i] + mean, 1e-9 * (1 + std::abs(mean)));
  }
  EXPECT_LT(oracle::rel_diff(product(f), product(run<double>(pr, Method::Svd, s.k, 0.0))), 1e-12);
}

TEST_P(SolverShapes, PruningKeepsTheMostActiveUnits) {
  const Shape s = GetParam();
  Problem pr = make_problem(s.m, s.n, s.p, test::test_seed(21));
  const Mat z = oracle::mul(pr.w, pr.x);
  for (Method method : {Method::PruneMean, Method::PruneMax}) {
    std::vector<std::pair<double, int64_t>> score;
    for (int64_t i = 0; i < s.m; ++i) {
      double sum = 0, mx = 0;
      for (int64_t j = 0; j < s.p; ++j) {
        const double y = std::max(0.0, z(i, j) + pr.b[i]);
        sum += y;
        mx = std::max(mx, y);
      }
      score.push_back({method == Method::PruneMax ? mx : sum / double(s.p), i});
    }
    std::sort(score.begin(), score.end(), [](auto& x, auto& y) { return x.first > y.first; });
    std::vector<int64_t> expect;
    for (int64_t i = 0; i < s.k; ++i) expect.push_back(score[i].second);
    std::sort(expect.begin(), expect.end());
    Factors<double> f = run<double>(pr, method, s.k, 0.0);
    EXPECT_EQ(f.kept_units, expect) << method_name(method);
    ASSERT_EQ(f.b.rows, s.k);
    ASSERT_EQ(f.b.cols, s.n);
    for (int64_t r = 0; r < s.k; ++r) {
      EXPECT_EQ(f.bias[r], pr.b[f.kept_units[r]]);
      for (int64_t j = 0; j < s.n; ++j) EXPECT_EQ(f.b(r, j), pr.w(f.kept_units[r], j));
    }
  }
}

TEST_P(SolverShapes, FactorShapes) {
  const Shape s = GetParam();
  Problem pr = make_problem(s.m, s.n, s.p, test::test_seed(3));
  for (Method method : {Method::Dalr, Method::DalrExact, Method::Svd, Method::SvdBc}) {
    Factors<double> f = run<double>(pr, method, s.k, 1.0);
    EXPECT_EQ(f.a.rows, s.m);
    EXPECT_EQ(f.a.cols, s.k);
    EXPECT_EQ(f.b.rows, s.k);
    EXPECT_EQ(f.b.cols, s.n);
    EXPECT_EQ(static_cast<int64_t>(f.bias.size()), s.m);
    EXPECT_GT(f.energy_kept, 0.0);
    EXPECT_LE(f.energy_kept, 1.0 + 1e-12);
  }
}

TEST_P(SolverShapes, Fp32AgreesWithFp64) {
  const Shape s = GetParam();
  Problem pr = make_problem(s.m, s.n, s.p, test::test_seed(8));
  const double lambda = default_lambda(stats_of<double>(pr, 3), 0.05);
  for (Method method : {Method::Dalr, Method::DalrExact, Method::Svd, Method::SvdBc}) {
    Factors<float> f32 = run<float>(pr, method, s.k, lambda);
    Factors<double> f64 = run<double>(pr, method, s.k, lambda);
    // Products, not factors (eigenvector signs are arbitrary); fp32 tolerance.
    EXPECT_LT(oracle::rel_diff(oracle::mul(oracle::to_double(f32.a), oracle::to_double(f32.b)),
                               product(f64)),
              2e-3)
        << method_name(method);
  }
}

INSTANTIATE_TEST_SUITE_P(OddSizes, SolverShapes,
                         ::testing::Values(Shape{7, 13, 9, 3},     // p < n: C singular
                                           Shape{9, 11, 31, 4},    // p > n
                                           Shape{17, 6, 23, 5},    // m > n
                                           Shape{12, 19, 19, 1}),  // p == n, rank 1
                         [](const auto& info) {
                           const Shape& s = info.param;
                           return "m" + std::to_string(s.m) + "n" + std::to_string(s.n) + "p" +
                                  std::to_string(s.p) + "k" + std::to_string(s.k);
                         });

TEST(Solver, RejectsBadRanksAndShapes) {
  Problem pr = make_problem(6, 8, 10, 1);
  LayerStats<double> st = stats_of<double>(pr, 10);
  Matrix<double> w = pr.w;
  auto expect_error = [&](SolveOptions o, const char* words) {
    try {
      solve<double>(o, w, pr.b, st);
      ADD_FAILURE() << "no error for " << words;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_error({Method::Dalr, 0, 1.0}, "rank 0 is out of range");
  expect_error({Method::Svd, 7, 1.0}, "between 1 and 6");
  expect_error({Method::PruneMax, 7, 0}, "kept units 7");
  expect_error({Method::Dalr, 2, -1.0}, "lambda must be");
  std::vector<double> short_bias(5, 0.0);
  EXPECT_THROW(solve<double>({Method::Svd, 2, 0}, w, short_bias, st), Error);
  LayerStats<double> wrong(9, 6);
  EXPECT_THROW(solve<double>({Method::Svd, 2, 0}, w, pr.b, wrong), Error);
  EXPECT_THROW(method_from_name("dlar"), Error);
}

// A value outside the enum (a cast, a newer caller) throws naming it, on every method
// check the solve passes through, instead of returning empty factors.
TEST(Solver, UnknownMethodValueThrows) {
  Problem pr = make_problem(6, 8, 10, 3);
  const LayerStats<double> st = stats_of<double>(pr, 4);
  ASSERT_GT(st.count(), 0);
  for (int value : {6, 42, -1}) {
    SCOPED_TRACE(value);
    const SolveOptions o{static_cast<Method>(value), 2, 0.5};
    try {
      solve<double>(o, pr.w, pr.b, st);
      ADD_FAILURE() << "no error for method value " << value;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("unknown method"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::to_string(value)), std::string::npos) << e.what();
    }
  }
}

}  // namespace

namespace {

// In float, LAPACK's workspace query for n >= 2897 exceeds 2^24 and rounds down below
// the minimum; the wrapper must still size the workspace right (this failed once on a
// 4096 x 4096 layer with info = -9).
TEST(Lapack, FloatEigensolverWorkspaceAbove2To24) {
  const int64_t n = 2900;
  ASSERT_GT(1 + 6 * n + 2 * n * n, 1 << 24);
  dalr::Matrix<float> a(n, n);
  for (int64_t i = 0; i < n; ++i) {
    a(i, i) = static_cast<float>(i % 7 + 1);
    if (i + 1 < n) a(i + 1, i) = 0.5f;  // lower triangle is what syevd reads
  }
  std::vector<float> w(static_cast<size_t>(n));
  dalr::cpu::syevd('V', 'L', n, a.ptr(), a.ld(), w.data());
  double trace = 0;
  for (int64_t i = 0; i < n; ++i) trace += i % 7 + 1;
  double sum = 0;
  for (float v : w) sum += v;
  EXPECT_NEAR(sum, trace, 1e-4 * trace);  // eigenvalues sum to the trace
}

}  // namespace
