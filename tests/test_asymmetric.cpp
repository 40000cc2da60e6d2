// The asymmetric fit of sequential compression (dalr/asymmetric.hpp) against float64
// brute force (tests/oracle.hpp: plain loops, Gaussian elimination, Jacobi): the cross
// statistics K = X X^^T of fc inputs and of conv patches, the factors of dalr and
// dalr-exact from W K (C^ + lambda I)^-1, the reduction to the ordinary solve when X^ = X,
// and the error from the statistics against the error over the samples.
#include <gtest/gtest.h>

#include <random>

#include "cpu/recon.hpp"
#include "dalr/asymmetric.hpp"
#include "dalr/backend.hpp"
#include "oracle.hpp"
#include "patch_oracle.hpp"
#include "test_util.hpp"

using namespace dalr;
using oracle::Mat;

namespace {

constexpr int64_t kM = 6, kN = 9, kP = 53;

struct Problem {
  Mat w, x, xh;  // W (m x n), X and X^ (n x p)
  std::vector<double> b;
  LayerStats<double> hat, orig;
  Mat cross;
  AsymmetricStats<double> stats() const { return {&hat, &orig, &cross}; }
};

// X^ = X plus a perturbation of a fifth of its size, as a compressed upstream gives.
Problem make_problem(std::mt19937_64& rng, bool same) {
  Problem q;
  q.w = test::random_matrix<double>(kM, kN, rng);
  q.x = test::random_matrix<double>(kN, kP, rng);
  q.xh = q.x;
  if (!same) {
    const Mat noise = test::random_matrix<double>(kN, kP, rng, 0.2);
    for (size_t i = 0; i < q.xh.data.size(); ++i) q.xh.data[i] += noise.data[i] + 0.1;
  }
  std::normal_distribution<double> nd;
  for (int64_t i = 0; i < kM; ++i) q.b.push_back(nd(rng));
  q.hat = LayerStats<double>(kN, 0);
  q.orig = LayerStats<double>(kN, 0);
  q.hat.add(q.xh.ptr(), kP, kN, nullptr, nullptr);
  q.orig.add(q.x.ptr(), kP, kN, nullptr, nullptr);
  auto acc = host_cross_accumulator<double>(kN, nullptr, 0);
  acc->add(q.x.ptr(), q.xh.ptr(), 20, kN);  // in two batches
  acc->add(q.x.ptr() + 20 * kN, q.xh.ptr() + 20 * kN, kP - 20, kN);
  q.cross = acc->result();
  return q;
}

double trace_over_n(const Mat& c) {
  double t = 0;
  for (int64_t i = 0; i < c.rows; ++i) t += c(i, i);
  return t / c.rows;
}

// A B by brute force from the problem's samples.
Mat brute_ab(const Problem& q, int64_t k, double lambda, bool exact) {
  return oracle::asymmetric_ab(q.w, q.x, q.xh, k, lambda, exact);
}

TEST(Asymmetric, CrossStatisticsOfFcInputsAreXTimesXHatTransposed) {
  std::mt19937_64 rng(test::test_seed(31));
  const Problem q = make_problem(rng, false);
  EXPECT_LT(oracle::rel_diff(q.cross, oracle::mul(q.x, q.xh, false, true)), 1e-13);
}

// Feature maps cut into patches (stride 2, padding, dilation, odd sizes, tiles that do
// not divide the positions) against brute-force patches of both maps.
TEST(Asymmetric, CrossStatisticsOfConvPatchesEqualThoseOfExplicitPatches) {
  std::mt19937_64 rng(test::test_seed(37));
  const ConvGeometry g{3, 9, 8, 3, 2, 2, 1, 2};  // c, h, w, kh, kw, stride, pad, dilation
  g.check();
  const int64_t images = 5, n = g.patch_size(), P = g.positions();
  const Mat maps = test::random_matrix<double>(g.map_size(), images, rng);
  const Mat mapsh = test::random_matrix<double>(g.map_size(), images, rng);
  auto acc = host_cross_accumulator<double>(n, &g, 4);
  acc->add(maps.ptr(), mapsh.ptr(), 2, maps.rows);
  acc->add(maps.ptr() + 2 * maps.rows, mapsh.ptr() + 2 * maps.rows, images - 2, maps.rows);
  Mat want(n, n);
  for (int64_t img = 0; img < images; ++img) {
    const std::vector<double> p = test::patches_of(g, maps.ptr() + img * maps.rows);
    const std::vector<double> ph = test::patches_of(g, mapsh.ptr() + img * maps.rows);
    for (int64_t s = 0; s < P; ++s)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < n; ++i) want(i, j) += p[s * n + i] * ph[s * n + j];
  }
  EXPECT_LT(oracle::rel_diff(acc->result(), want), 1e-13);
}

TEST(Asymmetric, FactorsEqualBruteForce) {
  std::mt19937_64 rng(test::test_seed(41));
  const Problem q = make_problem(rng, false);
  const double lambda = 1e-2 * trace_over_n(oracle::mul(q.xh, q.xh, false, true));
  for (const bool exact : {false, true}) {
    SCOPED_TRACE(exact ? "dalr-exact" : "dalr");
    const SolveOptions opt{exact ? Method::DalrExact : Method::Dalr, 3, lambda, Eigensolver::Full};
    const Factors<double> f = asymmetric_solve(opt, q.w, q.b, q.stats());
    EXPECT_EQ(f.a.rows, kM);
    EXPECT_EQ(f.b.cols, kN);
    EXPECT_EQ(f.bias, q.b);
    EXPECT_LT(oracle::rel_diff(oracle::mul(f.a, f.b), brute_ab(q, 3, lambda, exact)), 1e-9);
    // Neither the other method's nor the symmetric fit on C^ alone.
    EXPECT_GT(oracle::rel_diff(oracle::mul(f.a, f.b), brute_ab(q, 3, lambda, !exact)), 1e-3);
    const Factors<double> sym = solve(opt, q.w, q.b, q.hat);
    EXPECT_GT(oracle::rel_diff(oracle::mul(f.a, f.b), oracle::mul(sym.a, sym.b)), 1e-3);
    // The backend's default reaches the same.
    const Factors<double> g = make_cpu_backend()->asymmetric_solve(opt, q.w, q.b, q.stats());
    EXPECT_LT(oracle::rel_diff(oracle::mul(g.a, g.b), oracle::mul(f.a, f.b)), 1e-14);
  }
}

// With X^ = X (nothing compressed upstream) the asymmetric fit is the ordinary solve.
TEST(Asymmetric, WithoutACompressedUpstreamItIsTheOrdinarySolve) {
  std::mt19937_64 rng(test::test_seed(43));
  const Problem q = make_problem(rng, true);
  const double lambda = 3e-3 * trace_over_n(oracle::mul(q.x, q.x, false, true));
  for (const Method m : {Method::Dalr, Method::DalrExact}) {
    SCOPED_TRACE(method_name(m));
    const SolveOptions opt{m, 4, lambda, Eigensolver::Full};
    const Factors<double> f = asymmetric_solve(opt, q.w, q.b, q.stats());
    const Factors<double> s = solve(opt, q.w, q.b, q.orig);
    EXPECT_LT(oracle::rel_diff(oracle::mul(f.a, f.b), oracle::mul(s.a, s.b)), 1e-10);
    const ReconError e = asymmetric_error(q.stats(), q.w, q.b, f);
    const ReconError r = reconstruction_error(q.orig, q.w, q.b, s);
    EXPECT_NEAR(e.abs, r.abs, 1e-9 * r.ref);
    EXPECT_NEAR(e.ref, r.ref, 1e-12 * r.ref);
  }
}

// The error from C_o, K, C^ and the sums against ||W X + b - (A B X^ + bias)|| over the
// samples, with a bias that differs from b so that the bias terms count.
TEST(Asymmetric, ErrorFromStatisticsEqualsTheErrorOverTheSamples) {
  std::mt19937_64 rng(test::test_seed(47));
  const Problem q = make_problem(rng, false);
  const double lambda = 1e-2 * trace_over_n(oracle::mul(q.xh, q.xh, false, true));
  Factors<double> f =
      asymmetric_solve({Method::DalrExact, 2, lambda, Eigensolver::Full}, q.w, q.b, q.stats());
  std::normal_distribution<double> nd;
  for (double& v : f.bias) v += 0.3 * nd(rng);
  const Mat y = oracle::mul(q.w, q.x), yh = oracle::mul(f.a, oracle::mul(f.b, q.xh));
  double err2 = 0, ref2 = 0;
  for (int64_t j = 0; j < kP; ++j)
    for (int64_t i = 0; i < kM; ++i) {
      const double yi = y(i, j) + q.b[i], d = yi - yh(i, j) - f.bias[i];
      err2 += d * d;
      ref2 += yi * yi;
    }
  const ReconError e = asymmetric_error(q.stats(), q.w, q.b, f);
  EXPECT_NEAR(e.abs, std::sqrt(err2), 1e-10 * std::sqrt(ref2));
  EXPECT_NEAR(e.ref, std::sqrt(ref2), 1e-12 * std::sqrt(ref2));
  EXPECT_EQ(e.samples, kP);
  EXPECT_GT(e.rel, 1e-3);  // a real error, not a vanishing one
}

TEST(Asymmetric, RefusesOtherMethodsAndLambdaZero) {
  std::mt19937_64 rng(test::test_seed(53));
  const Problem q = make_problem(rng, false);
  EXPECT_THROW(asymmetric_solve({Method::Svd, 2, 1.0, Eigensolver::Full}, q.w, q.b, q.stats()),
               Error);
  try {
    asymmetric_solve({Method::Dalr, 2, 0.0, Eigensolver::Full}, q.w, q.b, q.stats());
    FAIL() << "lambda 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--sequential symmetric"), std::string::npos) << e.what();
  }
}

}  // namespace
