#pragma once
// The comparisons every GPU twin test makes against its CPU oracle (DESIGN.md section 4):
// relative Frobenius errors of blocks, Gram matrices and factor products (never raw
// eigenvectors, whose signs are arbitrary), the spectrum's worst difference, and a
// per-element check that reports the first few failures. Each test states its
// tolerance next to the call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "dalr/matrix.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"
#include "oracle.hpp"

namespace dalr::test::twin {

// Relative Frobenius error of got against the reference want (n values each); NaN if
// either has a non-finite value (so an unwritten or poisoned element fails).
template <typename T>
double rel_fro(const T* got, const T* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(double(got[i])) || !std::isfinite(double(want[i]))) return NAN;
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// The same for vectors (relative 2-norm error); NaN also when the sizes differ.
inline double rel_fro(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return NAN;
  return rel_fro(got.data(), want.data(), want.size());
}

// Same shape, and relative Frobenius error (rel_fro) at most tol.
template <typename T>
void expect_close(const Matrix<T>& got, const Matrix<T>& want, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.rows, want.rows) << what;
  ASSERT_EQ(got.cols, want.cols) << what;
  ASSERT_EQ(got.data.size(), want.data.size()) << what;
  const double err = rel_fro(got.data.data(), want.data.data(), want.data.size());
  EXPECT_LE(err, tol) << what << " (relative Frobenius error " << err << ")";
}

// Relative Frobenius error of two matrices, accumulated in long double (the oracle's
// rel_diff; non-finite values propagate as NaN).
template <typename T>
double matrix_error(const Matrix<T>& got, const Matrix<T>& want) {
  return oracle::rel_diff(oracle::to_double(got), oracle::to_double(want));
}

// Relative Frobenius error of the statistics' C (the whole stored matrix).
template <typename T>
double gram_error(const LayerStats<T>& got, const LayerStats<T>& want) {
  return matrix_error(got.gram(), want.gram());
}

// Two twins' statistics: the same shape and count; C, the input and output means and
// maxima within relative (Frobenius / 2-norm) error tol.
template <typename T>
void expect_stats_close(const LayerStats<T>& got, const LayerStats<T>& want, double tol,
                        const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(got.n(), want.n());
  ASSERT_EQ(got.m(), want.m());
  EXPECT_EQ(got.count(), want.count());
  EXPECT_LE(gram_error(got, want), tol) << "C";
  EXPECT_LE(rel_fro(got.mean_x(), want.mean_x()), tol) << "mean_x";
  EXPECT_LE(rel_fro(got.max_x(), want.max_x()), tol) << "max_x";
  EXPECT_LE(rel_fro(got.mean_y(), want.mean_y()), tol) << "mean_y";
  EXPECT_LE(rel_fro(got.max_y(), want.max_y()), tol) << "max_y";
}

// Relative Frobenius error of the product A B of two factorisations (the factors
// themselves are unique only up to signs and rotations).
template <typename T>
double product_error(const Factors<T>& got, const Factors<T>& want) {
  const oracle::Mat pg = oracle::mul(oracle::to_double(got.a), oracle::to_double(got.b));
  const oracle::Mat pw = oracle::mul(oracle::to_double(want.a), oracle::to_double(want.b));
  return oracle::rel_diff(pg, pw);
}

// The largest |got[i] - want[i]| of two equally long spectra, and in *top the largest
// |want[i]| (the scale a relative tolerance multiplies).
inline double spectrum_max_abs_diff(const std::vector<double>& got, const std::vector<double>& want,
                                    double* top) {
  double t = 0, worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    t = std::max(t, std::abs(want[i]));
    worst = std::max(worst, std::abs(got[i] - want[i]));
  }
  *top = t;
  return worst;
}

// Counts the indices in [0, n) where ok(i) fails and reports the first few with
// detail(i).
template <typename Ok, typename Detail>
void expect_all(size_t n, Ok ok, Detail detail) {
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    if (ok(i)) continue;
    if (++bad <= 5) ADD_FAILURE() << "[" << i << "] " << detail(i);
  }
  EXPECT_EQ(bad, 0u) << bad << " of " << n << " values differ";
}

}  // namespace dalr::test::twin
