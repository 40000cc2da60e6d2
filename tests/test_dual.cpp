// The sample-space (dual) solve against the primal one on the same samples: seeded random
// cases with p < n (C singular), p < k, lambda 0 and the default, odd sizes, fp32 and
// fp64. Factors compared by their product A B, the spectrum and the reconstruction error
// (the error where eigenvalues tie, since there A B is not unique).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "cpu/recon.hpp"
#include "dalr/error.hpp"
#include "dalr/npy.hpp"
#include "dalr/solver.hpp"
#include "oracle.hpp"
#include "test_util.hpp"

using namespace dalr;
using oracle::Mat;

namespace {

struct Case {
  int64_t m, n, p, k;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "m=" << c.m << " n=" << c.n << " p=" << c.p << " k=" << c.k;
}

// Correlated post-ReLU-like samples (non-negative, decaying spectrum), n x p.
template <typename T>
Matrix<T> samples(int64_t n, int64_t p, std::mt19937_64& rng) {
  Matrix<T> mix = test::random_matrix<T>(n, n, rng), z = test::random_matrix<T>(n, p, rng);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < n; ++i) mix(i, j) *= static_cast<T>(std::pow(0.85, double(j)));
  Matrix<T> x = oracle::from_double<T>(oracle::mul(oracle::to_double(mix), oracle::to_double(z)));
  for (auto& v : x.data) v = std::max(v + T(0.3), T(0));
  return x;
}

template <typename T>
LayerStats<T> primal_stats(const Matrix<T>& x) {
  LayerStats<T> st(x.rows, 0);
  st.add(x.ptr(), x.cols, x.ld(), nullptr, nullptr, 0);
  return st;
}

template <typename T>
double tol() {
  return sizeof(T) == 8 ? 1e-8 : 2e-3;
}

class DualShapes : public ::testing::TestWithParam<Case> {};

template <typename T>
void check_case(const Case& c) {
  const uint64_t seed = test::test_seed(4242 + c.m * 7 + c.n * 3 + c.p);
  SCOPED_TRACE("seed " + std::to_string(seed) + (sizeof(T) == 8 ? " fp64" : " fp32"));
  std::mt19937_64 rng(seed);
  const Matrix<T> w = test::random_matrix<T>(c.m, c.n, rng);
  std::vector<T> b(static_cast<size_t>(c.m), T(0.25));
  auto x = std::make_shared<const Matrix<T>>(samples<T>(c.n, c.p, rng));
  const LayerStats<T> st = primal_stats(*x);
  const LayerStats<T> kept = stats_keeping_samples(x);
  // lambda's default from ||X||_F^2 as from C's diagonal.
  EXPECT_EQ(kept.count(), st.count());
  EXPECT_NEAR(kept.gram_trace(), st.gram_trace(), 1e-6 * st.gram_trace());
  const double lam_default = default_lambda(kept, 1e-3);
  EXPECT_NEAR(lam_default, default_lambda(st, 1e-3), 1e-6 * lam_default);
  for (Method method : {Method::Dalr, Method::DalrExact})
    for (double lambda : {lam_default, 0.0, 40 * lam_default}) {
      SCOPED_TRACE(std::string(method_name(method)) + " lambda " + std::to_string(lambda));
      const SolveOptions opt{method, c.k, lambda, Eigensolver::Full};
      const Factors<T> pf = solve(opt, w, b, st), df = solve_dual(opt, w, b, *x);
      ASSERT_EQ(df.a.rows, c.m);
      ASSERT_EQ(df.a.cols, c.k);
      ASSERT_EQ(df.b.rows, c.k);
      ASSERT_EQ(df.b.cols, c.n);
      EXPECT_EQ(df.lambda, lambda);
      ASSERT_EQ(df.spectrum.size(), pf.spectrum.size());
      for (size_t i = 0; i < pf.spectrum.size(); ++i)
        EXPECT_NEAR(df.spectrum[i], pf.spectrum[i], tol<T>() * pf.spectrum[0])
            << "eigenvalue " << i;
      EXPECT_NEAR(df.energy_kept, pf.energy_kept, tol<T>());
      const ReconError pe = reconstruction_error(st, w, b, pf),
                       de = reconstruction_error(st, w, b, df);
      EXPECT_NEAR(de.abs, pe.abs, tol<T>() * pe.ref) << "primal error " << pe.rel;
      // A B is unique when the k-th eigenvalue is clear of the (k+1)-th (or k is all of
      // them); p < k ties zeros.
      const auto& s = pf.spectrum;
      const size_t k = static_cast<size_t>(c.k);
      if (c.k < c.p && (k == s.size() || s[k - 1] - s[k] > 1e-3 * s[0]))
        EXPECT_LT(oracle::rel_diff(oracle::mul(oracle::to_double(df.a), oracle::to_double(df.b)),
                                   oracle::mul(oracle::to_double(pf.a), oracle::to_double(pf.b))),
                  10 * tol<T>());
    }
}

TEST_P(DualShapes, EqualsThePrimalFp64) {
  check_case<double>(GetParam());
}
TEST_P(DualShapes, EqualsThePrimalFp32) {
  check_case<float>(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Shapes, DualShapes,
                         ::testing::Values(Case{13, 37, 11, 5},    // p < n
                                           Case{9, 41, 6, 8},      // p < k
                                           Case{21, 17, 16, 3},    // m > n, p < n
                                           Case{7, 30, 1, 1},      // one sample
                                           Case{12, 29, 29, 12},   // p = n, k = m
                                           Case{10, 23, 40, 4}));  // p > n still agrees

TEST(Dual, KeptSamplesFormCOnlyWhenRead) {
  std::mt19937_64 rng(test::test_seed(9));
  auto x = std::make_shared<const Matrix<double>>(samples<double>(19, 7, rng));
  const LayerStats<double> kept = stats_keeping_samples(x), st = primal_stats(*x);
  ASSERT_NE(kept.device_copy(), nullptr);
  EXPECT_LT(oracle::rel_diff(oracle::to_double(kept.gram()), oracle::to_double(st.gram())), 1e-14);
  for (int64_t i = 0; i < 19; ++i) {
    EXPECT_NEAR(kept.sum_x()[i], st.sum_x()[i], 1e-12 * (1 + std::abs(st.sum_x()[i])));
    EXPECT_EQ(kept.max_x()[i], st.max_x()[i]);
  }
}

TEST(Dual, RefusesOtherMethodsAndBadShapes) {
  std::mt19937_64 rng(test::test_seed(10));
  const Matrix<double> w = test::random_matrix<double>(5, 8, rng), x = samples<double>(8, 3, rng);
  const std::vector<double> b(5, 0.0);
  for (Method m : {Method::Svd, Method::SvdBc, Method::PruneMean, Method::PruneMax})
    EXPECT_THROW(solve_dual<double>({m, 2, 0.0}, w, b, x), Error) << method_name(m);
  EXPECT_THROW(solve_dual<double>({Method::Dalr, 6, 0.0}, w, b, x), Error);   // rank > min(m, n)
  EXPECT_THROW(solve_dual<double>({Method::Dalr, 2, -1.0}, w, b, x), Error);  // lambda < 0
  EXPECT_THROW(solve_dual<double>({Method::Dalr, 2, 0.0}, w, b, samples<double>(7, 3, rng)), Error);
  EXPECT_THROW(solve_dual<double>({Method::Dalr, 2, 0.0}, w, b, Matrix<double>(8, 0)), Error);
}

// ---- compress --solve ----

// The shipped example's classifier.3 (128 x 256) on its first 100 training activations:
// p = 100 < n = 256, so auto takes the dual.
class SolveCli : public ::testing::Test {
 protected:
  void SetUp() override {
    NpyReader r(std::string(DALR_SOURCE_DIR) + "/examples/fashion2digits/acts_train.npy");
    std::vector<float> x(static_cast<size_t>(100 * r.cols()));
    ASSERT_EQ(r.read_rows<float>(x.data(), 100), 100);
    write_npy(dir_.file("acts.npy"), x.data(), 100, r.cols());
  }
  test::CommandResult run(const std::string& name, const std::string& extra) {
    return test::run_cli("--model " + std::string(DALR_SOURCE_DIR) +
                         "/examples/fashion2digits/model.bin --acts " + dir_.file("acts.npy") +
                         " --layer classifier.3 --out " + dir_.file(name + ".bin") + " --report " +
                         dir_.file(name + ".json") + " --device cpu -q " + extra);
  }
  nlohmann::json report(const std::string& name) {
    return nlohmann::json::parse(test::read_file(dir_.file(name + ".json")));
  }
  test::TempDir dir_;
};

TEST_F(SolveCli, DualAndPrimalGiveTheSameLayer) {
  for (const std::string prec : {"fp64", "fp32"})
    for (const std::string method : {"dalr", "dalr-exact"})
      for (const std::string lambda : {"", " --lambda 0"}) {
        SCOPED_TRACE(prec + " " + method + lambda);
        const std::string common = "--method " + method + " --rank 12 --precision " + prec + lambda;
        for (const std::string solve : {"primal", "dual", "auto"}) {
          const test::CommandResult r = run(solve, common + " --solve " + solve);
          ASSERT_EQ(r.exit_code, 0) << r.output;
        }
        const auto p = report("primal"), d = report("dual"), a = report("auto");
        EXPECT_EQ(p["solve"], "primal");
        EXPECT_EQ(d["solve"], "dual");
        EXPECT_EQ(a["solve"], "dual");  // p < n on the CPU
        const double tol = prec == "fp64" ? 1e-9 : 1e-4;
        EXPECT_NEAR(d["lambda"].get<double>(), p["lambda"].get<double>(),
                    tol * (1 + p["lambda"].get<double>()));
        EXPECT_NEAR(d["energy_kept"].get<double>(), p["energy_kept"].get<double>(), tol);
        const double pe = p["error_train"]["rel"], de = d["error_train"]["rel"];
        EXPECT_NEAR(de, pe, 10 * tol * pe);
        EXPECT_EQ(d["error_train"]["samples"], 100);
        EXPECT_EQ(test::read_file(dir_.file("dual.bin")), test::read_file(dir_.file("auto.bin")));
      }
}

TEST_F(SolveCli, PrimalWhenDualDoesNotApplyAndDualRefusedNamingWhy) {
  ASSERT_EQ(run("svd", "--method svd --rank 12").exit_code, 0);
  EXPECT_EQ(report("svd")["solve"], "primal");  // auto: not dalr
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"--method svd --rank 12", "dalr and dalr-exact only"},
      {"--rank 12 --save-stats " + dir_.file("s.safetensors"), "--save-stats saves C"},
      {"--rank 12 --lambda auto", "--lambda auto"},
      {"--budget 0.3", "--budget"}};
  for (const auto& [args, why] : refused) {
    const test::CommandResult r = run("x", args + " --solve dual");
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.output.find("--solve dual cannot be used here: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(why), std::string::npos) << r.output;
  }
  const test::CommandResult bad = run("x", "--rank 12 --solve sideways");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--solve must be primal, dual or auto (got 'sideways')"),
            std::string::npos)
      << bad.output;
  ASSERT_EQ(run("big", "--rank 12 --save-stats " + dir_.file("s.safetensors")).exit_code, 0);
  EXPECT_EQ(report("big")["solve"], "primal");  // auto: C is saved
}

}  // namespace
