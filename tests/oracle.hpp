#pragma once
// Independent float64 reference computations for the tests: plain loops, no BLAS or
// LAPACK, so a mistake in the library's leading dimensions or transposes cannot
// cancel out in the comparison.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "dalr/matrix.hpp"

namespace dalr::oracle {

using Mat = Matrix<double>;

template <typename T>
inline Mat to_double(const Matrix<T>& x) {
  Mat d(x.rows, x.cols);
  for (int64_t i = 0; i < x.size(); ++i) d.data[i] = static_cast<double>(x.data[i]);
  return d;
}

template <typename T>
inline Matrix<T> from_double(const Mat& a) {
  Matrix<T> c(a.rows, a.cols);
  for (int64_t i = 0; i < a.size(); ++i) c.data[i] = static_cast<T>(a.data[i]);
  return c;
}

inline Mat mul(const Mat& a, const Mat& b, bool ta = false, bool tb = false) {
  const int64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols, n = tb ? b.rows : b.cols;
  Mat c(m, n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      long double s = 0;
      for (int64_t l = 0; l < k; ++l) s += (ta ? a(l, i) : a(i, l)) * (tb ? b(j, l) : b(l, j));
      c(i, j) = static_cast<double>(s);
    }
  return c;
}

inline Mat transpose(const Mat& a) {
  Mat t(a.cols, a.rows);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t j = 0; j < a.cols; ++j) t(j, i) = a(i, j);
  return t;
}

inline Mat sub(const Mat& a, const Mat& b) {
  Mat c = a;
  for (int64_t i = 0; i < c.size(); ++i) c.data[i] -= b.data[i];
  return c;
}

inline double frob2(const Mat& a) {
  long double s = 0;
  for (double v : a.data) s += static_cast<long double>(v) * v;
  return static_cast<double>(s);
}

inline double rel_diff(const Mat& a, const Mat& b) {
  return std::sqrt(frob2(sub(a, b)) / std::max(frob2(b), 1e-300));
}

inline Mat add_diag(Mat a, double lambda) {
  for (int64_t i = 0; i < a.rows; ++i) a(i, i) += lambda;
  return a;
}

// Solves S X = R for square S by Gaussian elimination with partial pivoting.
inline Mat solve(Mat s, Mat r) {
  const int64_t n = s.rows;
  for (int64_t c = 0; c < n; ++c) {
    int64_t p = c;
    for (int64_t i = c + 1; i < n; ++i)
      if (std::abs(s(i, c)) > std::abs(s(p, c))) p = i;
    for (int64_t j = 0; j < n; ++j) std::swap(s(c, j), s(p, j));
    for (int64_t j = 0; j < r.cols; ++j) std::swap(r(c, j), r(p, j));
    for (int64_t i = c + 1; i < n; ++i) {
      const double f = s(i, c) / s(c, c);
      for (int64_t j = c; j < n; ++j) s(i, j) -= f * s(c, j);
      for (int64_t j = 0; j < r.cols; ++j) r(i, j) -= f * r(c, j);
    }
  }
  for (int64_t c = n - 1; c >= 0; --c)
    for (int64_t j = 0; j < r.cols; ++j) {
      double v = r(c, j);
      for (int64_t l = c + 1; l < n; ++l) v -= s(c, l) * r(l, j);
      r(c, j) = v / s(c, c);
    }
  return r;
}

// Cyclic Jacobi eigen-decomposition of a symmetric matrix: eigenvalues descending,
// eigenvectors as the columns of *vecs in the same order.
inline std::vector<double> jacobi_eig(Mat a, Mat* vecs) {
  const int64_t n = a.rows;
  Mat v(n, n);
  for (int64_t i = 0; i < n; ++i) v(i, i) = 1;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) off += a(i, j) * a(i, j);
    if (off < 1e-30 * std::max(1.0, frob2(a))) break;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        if (a(p, q) == 0) continue;
        const double theta = (a(q, q) - a(p, p)) / (2 * a(p, q));
        const double t = (theta >= 0 ? 1 : -1) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // A <- A J
          const double akp = a(k, p), akq = a(k, q);
          a(k, p) = c * akp - s * akq;
          a(k, q) = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; ++k) {  // A <- J^T A
          const double apk = a(p, k), aqk = a(q, k);
          a(p, k) = c * apk - s * aqk;
          a(q, k) = s * apk + c * aqk;
        }
        for (int64_t k = 0; k < n; ++k) {
          const double vkp = v(k, p), vkq = v(k, q);
          v(k, p) = c * vkp - s * vkq;
          v(k, q) = s * vkp + c * vkq;
        }
      }
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return a(x, x) > a(y, y); });
  std::vector<double> w;
  Mat sorted(n, n);
  for (int64_t j = 0; j < n; ++j) {
    w.push_back(a(order[j], order[j]));
    for (int64_t i = 0; i < n; ++i) sorted(i, j) = v(i, order[j]);
  }
  if (vecs) *vecs = sorted;
  return w;
}

// First k columns of a matrix.
inline Mat first_cols(const Mat& a, int64_t k) {
  Mat c(a.rows, k);
  std::copy_n(a.data.begin(), a.rows * k, c.data.begin());
  return c;
}

// The asymmetric fit's A B (dalr/asymmetric.hpp) from the samples X and X^ (n x p):
// W_r = W K (C^ + lambda I)^-1 with K = X X^^T, C^ = X^ X^^T; U_k of W_r (C^ + lambda I)
// W_r^T (exact) or of W X X^T W^T; A B = U_k U_k^T W_r.
inline Mat asymmetric_ab(const Mat& w, const Mat& x, const Mat& xh, int64_t k, double lambda,
                         bool exact) {
  const Mat d = add_diag(mul(xh, xh, false, true), lambda);
  const Mat wr = transpose(solve(d, transpose(mul(w, mul(x, xh, false, true)))));  // D symmetric
  const Mat g = exact ? mul(mul(wr, d), wr, false, true)
                      : mul(mul(w, mul(x, x, false, true)), w, false, true);
  Mat u;
  jacobi_eig(g, &u);
  const Mat uk = first_cols(u, k);
  return mul(uk, mul(uk, wr, true, false));
}

}  // namespace dalr::oracle
