// The top-k eigensolver (cpu::syev_range, index range m-k+1..m) against the full one
// (cpu::syevd) and against matrices of known spectrum (Q diag(lambda) Q^T, Q from the
// Jacobi oracle), fp32 and fp64, odd sizes, k = 1, k in between and k = m, with tied
// eigenvalues inside the top k; then the dalr and dalr-exact solves with
// --eigensolver full against topk (same eigenvalues, same product A B and the same
// reconstruction error to tolerance), and the auto rule. Subspaces are compared through
// their projectors, never raw eigenvectors (signs, and bases of tied eigenvalues, are
// arbitrary).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

#include "cpu/lapack.hpp"
#include "cpu/recon.hpp"
#include "cpu/subspace_eig.hpp"
#include "dalr/error.hpp"
#include "dalr/solver.hpp"
#include "oracle.hpp"
#include "solver_problem.hpp"
#include "test_util.hpp"

using namespace dalr;
using oracle::Mat;

namespace {

uint64_t announce_seed(uint64_t fallback) {
  const uint64_t seed = test::test_seed(fallback);
  std::cout << "[ seed     ] " << seed << " (set DALR_TEST_SEED to change)\n";
  return seed;
}

// ||U U^T - V V^T||_F for two m x k bases with orthonormal columns.
template <typename T, typename U>
double projector_distance(const Matrix<T>& u, const Matrix<U>& v) {
  const Mat du = oracle::to_double(u), dv = oracle::to_double(v);
  return std::sqrt(oracle::frob2(
      oracle::sub(oracle::mul(du, du, false, true), oracle::mul(dv, dv, false, true))));
}

// A symmetric m x m matrix with eigenvalues `lambda` (any order) and an orthonormal
// eigenbasis drawn at random; *top gets the eigenvectors of the k largest.
Mat known_spectrum(const std::vector<double>& lambda, int64_t k, std::mt19937_64& rng, Mat* top) {
  const int64_t m = static_cast<int64_t>(lambda.size());
  const Mat r = test::random_matrix<double>(m, m, rng);
  Mat q;
  oracle::jacobi_eig(oracle::mul(r, r, false, true), &q);  // a random orthonormal basis
  std::vector<int64_t> order(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return lambda[a] > lambda[b]; });
  *top = Mat(m, k);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t i = 0; i < m; ++i) (*top)(i, j) = q(i, order[j]);
  Mat a(m, m);
  for (int64_t j = 0; j < m; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int64_t l = 0; l < m; ++l) s += q(i, l) * lambda[l] * q(j, l);
      a(i, j) = s;
    }
  return a;
}

// Eigenvalues in (0.5, 1.5] below the top k, in (3, 4] in it, a few tied at 3.5 (when
// k >= 3); the 3 x 1.5 gap makes the top-k subspace well defined.
std::vector<double> gapped_spectrum(int64_t m, int64_t k, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> l(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) l[i] = i < k ? 3 + u(rng) : 0.5 + u(rng);
  for (int64_t i = 0; i < std::min<int64_t>(k, 3) && k >= 3; ++i) l[i] = 3.5;  // a tie
  std::shuffle(l.begin(), l.end(), rng);
  return l;
}

template <typename T>
void check_lapack_topk(int64_t m, int64_t k, uint64_t seed) {
  SCOPED_TRACE("m=" + std::to_string(m) + " k=" + std::to_string(k));
  std::mt19937_64 rng(seed);
  const std::vector<double> lambda = gapped_spectrum(m, k, rng);
  Mat top;
  const Matrix<T> a = oracle::from_double<T>(known_spectrum(lambda, k, rng, &top));
  const double tol = std::is_same_v<T, float> ? 2e-4 : 1e-11;

  Matrix<T> full = a;
  std::vector<T> wf(static_cast<size_t>(m));
  cpu::syevd('V', 'L', m, full.ptr(), full.ld(), wf.data());
  Matrix<T> z(m, k), a2 = a;
  for (auto& v : z.data) v = std::numeric_limits<T>::quiet_NaN();  // poison: all written?
  std::vector<T> w(static_cast<size_t>(k), std::numeric_limits<T>::quiet_NaN());
  cpu::syev_range('L', m, a2.ptr(), a2.ld(), m - k + 1, m, w.data(), z.ptr(), z.ld());

  std::vector<double> want(lambda);
  std::sort(want.begin(), want.end());  // ascending, as both solvers return them
  for (int64_t i = 0; i < k; ++i) {
    EXPECT_NEAR(double(w[i]), want[m - k + i], tol * 4) << "top-k eigenvalue " << i;
    EXPECT_NEAR(double(w[i]), double(wf[m - k + i]), tol * 4) << "against syevd, " << i;
  }
  Matrix<T> vf(m, k);
  std::copy_n(full.ptr() + (m - k) * m, m * k, vf.ptr());
  EXPECT_LT(projector_distance(z, top), tol * std::sqrt(double(k))) << "against the known basis";
  EXPECT_LT(projector_distance(z, vf), tol * std::sqrt(double(k))) << "against syevd";
  // Orthonormal columns.
  const Mat dz = oracle::to_double(z);
  const Mat ztz = oracle::mul(dz, dz, true, false);
  Mat eye(k, k);
  for (int64_t i = 0; i < k; ++i) eye(i, i) = 1;
  EXPECT_LT(std::sqrt(oracle::frob2(oracle::sub(ztz, eye))), tol * std::sqrt(double(k)));
}

TEST(LapackTopK, IndexRangeMatchesFullAndKnownSpectrum) {
  const uint64_t seed = announce_seed(1501);
  for (int64_t m : {1, 2, 7, 37, 61}) {
    for (int64_t k : {int64_t(1), (m + 1) / 2, m}) {
      check_lapack_topk<float>(m, k, seed + m * 100 + k);
      check_lapack_topk<double>(m, k, seed + m * 100 + k);
    }
  }
}

TEST(LapackTopK, RejectsARangeOutsideTheMatrix) {
  Matrix<double> a(3, 3), z(3, 3);
  std::vector<double> w(3);
  EXPECT_NE(test::error_message([&] {
              cpu::syev_range('L', 3, a.ptr(), 3, 0, 2, w.data(), z.ptr(), 3);
            }).find("eigenpairs 0..2"),
            std::string::npos);
}

// ---- the subspace iteration (cpu::top_eigenpairs_subspace) ----

template <typename T>
void check_subspace(const std::vector<double>& lambda, int64_t k, std::mt19937_64& rng,
                    bool gapped) {
  const int64_t m = static_cast<int64_t>(lambda.size());
  SCOPED_TRACE("m=" + std::to_string(m) + " k=" + std::to_string(k) +
               (std::is_same_v<T, float> ? " fp32" : " fp64") + (gapped ? " gapped" : " decaying"));
  Mat top;
  const Matrix<T> a = oracle::from_double<T>(known_spectrum(lambda, k, rng, &top));
  const double eps = std::numeric_limits<T>::epsilon();
  Matrix<T> v;
  std::vector<double> w;
  const cpu::SubspaceResult r = cpu::top_eigenpairs_subspace(a, k, &v, &w);
  ASSERT_TRUE(r.converged) << "residual " << r.residual << " after " << r.iterations;
  EXPECT_EQ(r.block, k + std::max<int64_t>(k / 2, 32));
  EXPECT_LE(r.residual, 16 * eps);
  ASSERT_EQ(v.rows, m);
  ASSERT_EQ(v.cols, k);
  ASSERT_EQ(static_cast<int64_t>(w.size()), k);
  std::vector<double> want(lambda);
  std::sort(want.rbegin(), want.rend());  // descending, as the iteration returns them
  const double top_value = want[0];
  for (int64_t i = 0; i < k; ++i)
    EXPECT_NEAR(w[i], want[i], 4 * double(m) * eps * top_value) << "eigenvalue " << i;
  // Each returned pair's residual in float64, and orthonormal columns.
  const Mat dv = oracle::to_double(v), da = oracle::to_double(a);
  const Mat av = oracle::mul(da, dv);
  for (int64_t j = 0; j < k; ++j) {
    double res = 0;
    for (int64_t i = 0; i < m; ++i) res += std::pow(av(i, j) - w[j] * dv(i, j), 2);
    EXPECT_LE(std::sqrt(res), 64 * eps * top_value) << "residual of pair " << j;
  }
  const Mat vtv = oracle::mul(dv, dv, true, false);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t i = 0; i < k; ++i)
      ASSERT_NEAR(vtv(i, j), i == j ? 1.0 : 0.0, 64 * eps) << i << "," << j;
  // The subspace: against the known basis and syevd's where the gap at k defines it.
  if (gapped) {
    EXPECT_LT(projector_distance(v, top), 1e3 * eps * std::sqrt(double(k)));
    Matrix<T> full = a;
    std::vector<T> wf(static_cast<size_t>(m));
    cpu::syevd('V', 'L', m, full.ptr(), full.ld(), wf.data());
    Matrix<T> vf(m, k);
    for (int64_t j = 0; j < k; ++j) std::copy_n(&full(0, m - 1 - j), m, &vf(0, j));
    EXPECT_LT(projector_distance(v, vf), 1e3 * eps * std::sqrt(double(k)));
  }
}

TEST(SubspaceEig, MatchesTheKnownSpectrumAndSyevd) {
  const uint64_t seed = announce_seed(1505);
  std::mt19937_64 rng(seed);
  for (const auto& [m, k] :
       std::vector<std::pair<int64_t, int64_t>>{{66, 1}, {101, 5}, {101, 18}, {157, 45}}) {
    const std::vector<double> gapped = gapped_spectrum(m, k, rng);
    check_subspace<double>(gapped, k, rng, true);
    check_subspace<float>(gapped, k, rng, true);
    // As G decays: a few large eigenvalues (1e3 the k-th), then i^-1.2, no gap at k, and a
    // null space of rank-deficient statistics (zeros).
    std::vector<double> decaying(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i)
      decaying[i] = i < 3 ? 1e3 * (3 - i) : (i < m - 5 ? std::pow(double(i), -1.2) : 0.0);
    std::shuffle(decaying.begin(), decaying.end(), rng);
    check_subspace<double>(decaying, k, rng, false);
    check_subspace<float>(decaying, k, rng, false);
  }
}

TEST(SubspaceEig, ZeroAndLowRankMatrices) {
  // All zero: the eigenvalues are 0 and any orthonormal basis will do.
  Matrix<double> z(70, 70), v;
  std::vector<double> w;
  const cpu::SubspaceResult r = cpu::top_eigenpairs_subspace(z, 2, &v, &w);
  ASSERT_TRUE(r.converged);
  EXPECT_EQ(w, std::vector<double>(2, 0.0));
  // Rank 3 < the block: the rest of the spectrum is 0 and one power step finishes.
  std::mt19937_64 rng(announce_seed(1506));
  std::vector<double> lambda(90, 0.0);
  lambda[10] = 5, lambda[40] = 2, lambda[77] = 1;
  check_subspace<double>(lambda, 3, rng, true);
  check_subspace<float>(lambda, 3, rng, true);
}

TEST(SubspaceEig, GivesUpRatherThanReturnAWrongAnswer) {
  // Far below zero (not what G or H are): the filter on [0, hi] cannot damp it, the top k
  // never reach the tolerance, and the caller is told so (it then runs MRRR).
  std::mt19937_64 rng(announce_seed(1507));
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> lambda(80);
  for (size_t i = 0; i < lambda.size(); ++i) lambda[i] = i < 4 ? 1 + u(rng) : -100 + 50 * u(rng);
  std::shuffle(lambda.begin(), lambda.end(), rng);
  Mat top;
  const Matrix<double> a = known_spectrum(lambda, 4, rng, &top);
  Matrix<double> v;
  std::vector<double> w;
  const cpu::SubspaceResult r = cpu::top_eigenpairs_subspace(a, 4, &v, &w);
  EXPECT_FALSE(r.converged);
  EXPECT_GT(r.residual, r.tolerance);
  // Nearly flat (eigenvalues in [1, 1.001]): the filter hardly separates the top k, the
  // residual falls too slowly, and the iteration says so after its second filter step
  // rather than after all twelve.
  std::vector<double> flat(120);
  for (double& x : flat) x = 1 + 1e-3 * u(rng);
  Mat flat_top;
  const Matrix<double> f = known_spectrum(flat, 8, rng, &flat_top);
  const cpu::SubspaceResult fr = cpu::top_eigenpairs_subspace(f, 8, &v, &w);
  EXPECT_FALSE(fr.converged);
  EXPECT_LE(fr.iterations, 3);
  // The solve then runs the index-range solver and says why: the same factors as TopK's.
  // (W = I, so G = C: the flat matrix, given as statistics.)
  const int64_t n = 120;
  Matrix<double> eye(n, n);
  for (int64_t i = 0; i < n; ++i) eye(i, i) = 1;
  const std::vector<double> zeros(n, 0.0), b(n, 0.0);
  const LayerStats<double> st =
      LayerStats<double>::from_parts(1000, f, zeros, zeros, std::vector<double>{}, {});
  const Factors<double> sub =
      solve<double>({Method::Dalr, 8, 0.5, Eigensolver::Subspace}, eye, b, st);
  const Factors<double> topk = solve<double>({Method::Dalr, 8, 0.5, Eigensolver::TopK}, eye, b, st);
  EXPECT_EQ(sub.eigensolver, "topk");
  EXPECT_NE(sub.eigensolver_note.find("did not reach its tolerance"), std::string::npos);
  EXPECT_EQ(sub.a.data, topk.a.data);
  EXPECT_EQ(sub.b.data, topk.b.data);
  // A block that would not fit in half of m is refused before any work.
  Matrix<double> small(60, 60);
  const cpu::SubspaceResult s = cpu::top_eigenpairs_subspace(small, 1, &v, &w);
  EXPECT_FALSE(s.converged);
  EXPECT_EQ(s.block, 0);
}

// ---- the dalr solves with either eigensolver ----

// Activations whose G decays as real layers' do (solver_problem.hpp, decay 0.85).
using test::make_problem;
using test::Problem;

// ||W X + b - (A B X + bias)||_F / ||W X + b||_F in float64.
template <typename T>
double recon_rel(const Problem& pr, const Factors<T>& f) {
  const Mat y = oracle::mul(pr.w, pr.x);
  const Mat yh = oracle::mul(oracle::to_double(f.a), oracle::mul(oracle::to_double(f.b), pr.x));
  double num = 0, den = 0;
  for (int64_t j = 0; j < y.cols; ++j)
    for (int64_t i = 0; i < y.rows; ++i) {
      const double yi = y(i, j) + pr.b[i];
      num += std::pow(yi - yh(i, j) - double(f.bias[i]), 2);
      den += yi * yi;
    }
  return std::sqrt(num / den);
}

template <typename T>
void check_solve_topk(const Problem& pr, Method method, int64_t k, double lambda_rel,
                      Eigensolver tried = Eigensolver::TopK) {
  const int64_t m = pr.w.rows, n = pr.w.cols;
  SCOPED_TRACE(std::string(method_name(method)) + " m=" + std::to_string(m) +
               " n=" + std::to_string(n) + " k=" + std::to_string(k) +
               (std::is_same_v<T, float> ? " fp32 " : " fp64 ") + eigensolver_name(tried));
  const Matrix<T> w = oracle::from_double<T>(pr.w), x = oracle::from_double<T>(pr.x);
  const std::vector<T> b(pr.b.begin(), pr.b.end());
  LayerStats<T> st(n, m);
  st.add(x.ptr(), x.cols, x.ld(), &w, b.data(), 0);
  const double lambda = default_lambda(st, lambda_rel);
  const Factors<T> full = solve<T>({method, k, lambda, Eigensolver::Full}, w, b, st);
  const Factors<T> topk = solve<T>({method, k, lambda, tried}, w, b, st);
  const double eps = std::numeric_limits<T>::epsilon();
  EXPECT_EQ(full.eigensolver, "full");
  // The subspace iteration runs where its block fits and converges on these spectra.
  EXPECT_EQ(topk.eigensolver, use_subspace_eigensolver(tried, m, k) ? "subspace" : "topk")
      << topk.eigensolver_note;

  // Eigenvalues: the top k, to rounding of the largest.
  ASSERT_EQ(static_cast<int64_t>(full.spectrum.size()), m);
  ASSERT_EQ(static_cast<int64_t>(topk.spectrum.size()), k);
  const double top = full.spectrum[0];
  for (int64_t i = 0; i < k; ++i)
    EXPECT_NEAR(topk.spectrum[i], full.spectrum[i], 200 * m * eps * top) << "eigenvalue " << i;
  EXPECT_NEAR(topk.energy_kept, full.energy_kept, 200 * m * eps);

  // The subspace of A: the same up to rounding amplified by 1 / (relative gap at k).
  const double gap = k < m ? (full.spectrum[k - 1] - full.spectrum[k]) / top : 1.0;
  EXPECT_LT(projector_distance(topk.a, full.a), 1e3 * eps / std::max(gap, 1e-300));

  // The reconstruction error (Eq. 13) on the samples, in float64 from the factors: equal
  // to tolerance. (Products A B are not compared: B carries (C + lambda I)^-1, whose
  // condition number amplifies rounding in both solves alike; the error at the optimum
  // is first-order insensitive to it.)
  const double ef = recon_rel(pr, full), et = recon_rel(pr, topk);
  // A floor of 1e3 eps (rounding of the solve, in units of ||Y||), and a part that grows
  // as the gap at k closes.
  EXPECT_NEAR(et, ef, 1e3 * eps + 1e2 * eps * ef / std::max(gap, 1e-300));
}

TEST(SolveTopK, DalrAndDalrExactMatchTheFullEigensolver) {
  const uint64_t seed = announce_seed(1502);
  struct Case {
    int64_t m, n, p;
  };
  for (const Case c : {Case{23, 31, 57}, Case{37, 19, 45}, Case{41, 53, 29}}) {
    const Problem pr = make_problem(c.m, c.n, c.p, seed + c.m, 0.85);
    const int64_t r = std::min(c.m, c.n);
    for (Method method : {Method::Dalr, Method::DalrExact})
      for (int64_t k : {int64_t(1), r / 2 + 1, r}) {
        check_solve_topk<double>(pr, method, k, 1e-3);
        check_solve_topk<float>(pr, method, k, 1e-3);
        check_solve_topk<double>(pr, method, k, 0.0);  // the pseudo-inverse path
      }
  }
}

// The subspace iteration in the solves: shapes whose block (k + max(k / 2, 32)) fits in
// half of m, k from 1 up to the largest that does; lambda > 0 and the pseudo-inverse.
TEST(SolveTopK, SubspaceIterationMatchesTheFullEigensolver) {
  const uint64_t seed = announce_seed(1504);
  struct Case {
    int64_t m, n, p;
  };
  for (const Case c : {Case{97, 83, 151}, Case{131, 149, 71}}) {
    const Problem pr = make_problem(c.m, c.n, c.p, seed + c.m, 0.85);
    for (Method method : {Method::Dalr, Method::DalrExact})
      for (int64_t k : {int64_t(1), int64_t(7), c.m / 2 - 32}) {
        ASSERT_TRUE(use_subspace_eigensolver(Eigensolver::Subspace, c.m, k));
        check_solve_topk<double>(pr, method, k, 1e-3, Eigensolver::Subspace);
        check_solve_topk<float>(pr, method, k, 1e-3, Eigensolver::Subspace);
        check_solve_topk<double>(pr, method, k, 0.0, Eigensolver::Subspace);
      }
  }
}

TEST(SolveTopK, SvdAndPruningIgnoreTheChoice) {
  const Problem pr = make_problem(13, 17, 25, announce_seed(1503), 0.85);
  const Matrix<double> w = pr.w;
  LayerStats<double> st(17, 13);
  st.add(pr.x.ptr(), pr.x.cols, pr.x.ld(), &w, pr.b.data(), 0);
  for (Method method : {Method::Svd, Method::SvdBc, Method::PruneMean}) {
    const Factors<double> f = solve<double>({method, 5, 0.0, Eigensolver::Full}, w, pr.b, st);
    const Factors<double> t = solve<double>({method, 5, 0.0, Eigensolver::TopK}, w, pr.b, st);
    EXPECT_EQ(f.a.data, t.a.data) << method_name(method);
    EXPECT_EQ(f.b.data, t.b.data) << method_name(method);
    EXPECT_EQ(f.spectrum, t.spectrum) << method_name(method);
  }
}

TEST(EigensolverChoice, AutoRuleAndNames) {
  EXPECT_FALSE(use_topk_eigensolver(Eigensolver::Auto, 511, 10));  // small: full
  EXPECT_TRUE(use_topk_eigensolver(Eigensolver::Auto, 512, 102));  // k <= m / 5
  EXPECT_FALSE(use_topk_eigensolver(Eigensolver::Auto, 512, 103));
  EXPECT_TRUE(use_topk_eigensolver(Eigensolver::Auto, 4096, 256));  // VGG fc7 at rank 256
  EXPECT_FALSE(use_topk_eigensolver(Eigensolver::Full, 4096, 1));
  EXPECT_TRUE(use_topk_eigensolver(Eigensolver::TopK, 7, 7));
  EXPECT_TRUE(use_topk_eigensolver(Eigensolver::Subspace, 7, 7));  // GPU: Xsyevdx
  // Subspace iteration: its block of k + max(k / 2, 32) in half of m; auto from m = 1024
  // and k <= m / 8.
  EXPECT_TRUE(use_subspace_eigensolver(Eigensolver::Auto, 4096, 256));   // fc7 at 256
  EXPECT_TRUE(use_subspace_eigensolver(Eigensolver::Auto, 4096, 512));   // k = m / 8
  EXPECT_FALSE(use_subspace_eigensolver(Eigensolver::Auto, 4096, 513));  // MRRR
  EXPECT_FALSE(use_subspace_eigensolver(Eigensolver::Auto, 1023, 100));
  EXPECT_TRUE(use_subspace_eigensolver(Eigensolver::Auto, 1024, 128));
  EXPECT_TRUE(use_subspace_eigensolver(Eigensolver::Subspace, 66, 1));  // 2 x 33 <= 66
  EXPECT_FALSE(use_subspace_eigensolver(Eigensolver::Subspace, 65, 1));
  EXPECT_FALSE(use_subspace_eigensolver(Eigensolver::Subspace, 4096, 1366));  // 2049 > m / 2
  EXPECT_FALSE(use_subspace_eigensolver(Eigensolver::TopK, 4096, 256));
  EXPECT_FALSE(use_subspace_eigensolver(Eigensolver::Full, 4096, 256));
  for (Eigensolver e :
       {Eigensolver::Auto, Eigensolver::Full, Eigensolver::TopK, Eigensolver::Subspace})
    EXPECT_EQ(eigensolver_from_name(eigensolver_name(e)), e);
  const std::string msg = test::error_message([] { eigensolver_from_name("lanczos"); });
  EXPECT_NE(msg.find("unknown eigensolver 'lanczos' (valid: auto, full, topk, subspace)"),
            std::string::npos)
      << msg;
}

TEST(EigensolverChoice, CliRejectsAnUnknownName) {
  const test::CommandResult r = test::run_cli(
      "compress --model none.bin --layer fc --acts none.npy --rank 2 --out o.bin "
      "--eigensolver lanczos");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown eigensolver 'lanczos'"), std::string::npos) << r.output;
}

}  // namespace
