// dalr::cuda::solve_dual (through the CUDA backend's solve_dual) against its CPU twin
// dalr::solve_dual on the same seeded samples: dalr and dalr-exact, fp32 and fp64, p < n,
// p < k, lambda 0 and > 0. Compared by spectrum, energy and reconstruction error, and by
// A B where the k-th eigenvalue is clear of the next (never raw factors). Skips without a
// device; solve_dual_bytes is tested everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cpu/recon.hpp"
#include "dalr/backend.hpp"
#include "dalr/cuda.hpp"
#include "dalr/solver.hpp"
#include "gpu_test.hpp"
#include "oracle.hpp"
#include "test_util.hpp"

namespace dc = dalr::cuda;
using namespace dalr;

namespace {

struct Case {
  int64_t m, n, p, k;
};

template <typename T>
void compare_twins(const Case& c) {
  const uint64_t seed = test::announce_seed(777 + c.m + c.n + c.p);
  SCOPED_TRACE("seed " + std::to_string(seed) + (sizeof(T) == 8 ? " fp64" : " fp32"));
  std::mt19937_64 rng(seed);
  const Matrix<T> w = test::random_matrix<T>(c.m, c.n, rng);
  Matrix<T> x = test::random_matrix<T>(c.n, c.p, rng);
  for (int64_t j = 0; j < c.p; ++j)
    for (int64_t i = 0; i < c.n; ++i)
      x(i, j) = static_cast<T>((1.0 + 0.5 * double(i) / double(c.n)) * x(i, j) + 0.3);
  const std::vector<T> b(static_cast<size_t>(c.m), T(0.5));
  LayerStats<T> st(c.n, 0);
  st.add(x.ptr(), x.cols, x.ld(), nullptr, nullptr, 0);
  auto gpu = dc::make_backend(0, sizeof(T) == 8 ? Precision::Fp64 : Precision::Fp32);
  const double tol = sizeof(T) == 8 ? 1e-8 : 2e-3;
  for (Method method : {Method::Dalr, Method::DalrExact})
    for (double lambda : {0.0, default_lambda(st, 1e-3)}) {
      SCOPED_TRACE(std::string(method_name(method)) + " lambda " + std::to_string(lambda));
      const SolveOptions opt{method, c.k, lambda, Eigensolver::Full};
      const Factors<T> cf = solve_dual(opt, w, b, x), gf = gpu->solve_dual(opt, w, b, x);
      ASSERT_EQ(gf.spectrum.size(), cf.spectrum.size());
      for (size_t i = 0; i < cf.spectrum.size(); ++i)
        EXPECT_NEAR(gf.spectrum[i], cf.spectrum[i], tol * cf.spectrum[0]) << "eigenvalue " << i;
      EXPECT_NEAR(gf.energy_kept, cf.energy_kept, tol);
      const ReconError ce = reconstruction_error(st, w, b, cf),
                       ge = reconstruction_error(st, w, b, gf);
      EXPECT_NEAR(ge.abs, ce.abs, tol * ce.ref);
      const auto& s = cf.spectrum;
      if (c.k < c.p && s[c.k - 1] - s[c.k] > 1e-3 * s[0])
        EXPECT_LT(oracle::rel_diff(oracle::mul(oracle::to_double(gf.a), oracle::to_double(gf.b)),
                                   oracle::mul(oracle::to_double(cf.a), oracle::to_double(cf.b))),
                  10 * tol);
    }
}

class GpuDualShapes : public ::testing::TestWithParam<Case> {};

TEST_P(GpuDualShapes, DoubleMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  compare_twins<double>(GetParam());
}
TEST_P(GpuDualShapes, FloatMatchesCpu) {
  DALR_SKIP_WITHOUT_GPU();
  compare_twins<float>(GetParam());
}

INSTANTIATE_TEST_SUITE_P(OddSizes, GpuDualShapes,
                         ::testing::Values(Case{13, 37, 11, 5}, Case{9, 41, 6, 8},
                                           Case{33, 17, 12, 4}, Case{65, 130, 31, 9}));

TEST(SolveDualBytes, GrowsWithEveryDimension) {
  const size_t base = dc::solve_dual_bytes(100, 200, 50, 10, 4);
  EXPECT_GT(dc::solve_dual_bytes(101, 200, 50, 10, 4), base);
  EXPECT_GT(dc::solve_dual_bytes(100, 201, 50, 10, 4), base);
  EXPECT_GT(dc::solve_dual_bytes(100, 200, 51, 10, 4), base);
  EXPECT_GT(dc::solve_dual_bytes(100, 200, 50, 11, 4), base);
  EXPECT_GT(dc::solve_dual_bytes(100, 200, 50, 10, 8), base);
  // At least W, X and Z themselves.
  EXPECT_GE(dc::solve_dual_bytes(100, 200, 50, 10, 4),
            size_t(4) * (100 * 200 + 200 * 50 + 100 * 50));
}

}  // namespace
