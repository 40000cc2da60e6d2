#include "cpu/subspace_eig.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include "cpu/lapack.hpp"

namespace dalr::cpu {

namespace {

constexpr int kDegree = 3;          // of the Chebyshev filter: GEMMs per step
constexpr int kMaxIterations = 12;  // filter steps before giving up (then MRRR runs)
constexpr uint64_t kSeed = 0x5eed5eedULL;

// y = S x, S symmetric (lower triangle).
template <typename T>
void apply(const Matrix<T>& s, const Matrix<T>& x, Matrix<T>& y) {
  symm(CblasLeft, CblasLower, s.rows, x.cols, T(1), s.ptr(), s.ld(), x.ptr(), x.ld(), T(0), y.ptr(),
       y.ld());
}

template <typename T>
double column_norm(const Matrix<T>& x, int64_t j) {
  const T* c = x.ptr() + j * x.ld();
  double acc = 0;
  for (int64_t i = 0; i < x.rows; ++i) acc += double(c[i]) * double(c[i]);
  return std::sqrt(acc);
}

// Rayleigh-Ritz: with H = V^T (S V) = Q diag(theta) Q^T (in double, descending), V <- V Q and
// SV <- SV Q, so that V's columns are the Ritz vectors and SV's their images.
template <typename T>
void rayleigh_ritz(Matrix<T>& v, Matrix<T>& sv, Matrix<T>& scratch, std::vector<double>& theta) {
  const int64_t m = v.rows, l = v.cols;
  Matrix<T> rot(l, l);
  gemm(CblasTrans, CblasNoTrans, l, l, m, T(1), v.ptr(), v.ld(), sv.ptr(), sv.ld(), T(0), rot.ptr(),
       rot.ld());
  Matrix<double> h(l, l);
  for (int64_t j = 0; j < l; ++j)
    for (int64_t i = j; i < l; ++i) h(i, j) = 0.5 * (double(rot(i, j)) + double(rot(j, i)));
  theta.assign(static_cast<size_t>(l), 0.0);
  syevd('V', 'L', l, h.ptr(), h.ld(), theta.data());  // ascending
  std::reverse(theta.begin(), theta.end());
  for (int64_t j = 0; j < l; ++j)
    for (int64_t i = 0; i < l; ++i) rot(i, j) = static_cast<T>(h(i, l - 1 - j));
  gemm(CblasNoTrans, CblasNoTrans, m, l, l, T(1), v.ptr(), v.ld(), rot.ptr(), rot.ld(), T(0),
       scratch.ptr(), scratch.ld());
  std::swap(v, scratch);
  gemm(CblasNoTrans, CblasNoTrans, m, l, l, T(1), sv.ptr(), sv.ld(), rot.ptr(), rot.ld(), T(0),
       scratch.ptr(), scratch.ld());
  std::swap(sv, scratch);
}

}  // namespace

template <typename T>
SubspaceResult top_eigenpairs_subspace(const Matrix<T>& s, int64_t k, Matrix<T>* vectors,
                                       std::vector<double>* values) {
  const int64_t m = s.rows, l = subspace_block(m, k);
  SubspaceResult r;
  r.block = l;
  const double eps = double(std::numeric_limits<T>::epsilon());
  r.tolerance = 16.0 * eps;
  if (l == 0) return r;
  const size_t count = static_cast<size_t>(m * l);
  Matrix<T> v(m, l), sv(m, l), y(m, l), prev(m, l);
  std::mt19937_64 gen(kSeed);  // the same start every time: the same result
  for (T& x : v.data) x = static_cast<T>(double(gen() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  apply(s, v, y);  // one power step, then an orthonormal start
  std::swap(v, y);
  orthonormalize(m, l, v.ptr(), v.ld());
  std::vector<double> theta;
  double previous = 0;  // the residual one step before
  for (int it = 0;; ++it) {
    apply(s, v, sv);
    rayleigh_ritz(v, sv, y, theta);
    const double scale = std::max(std::abs(theta.front()), std::abs(theta.back()));
    double worst = 0;
    for (int64_t j = 0; j < k; ++j) {
      const T* vj = v.ptr() + j * v.ld();
      const T* sj = sv.ptr() + j * sv.ld();
      double acc = 0;
      for (int64_t i = 0; i < m; ++i) {
        const double d = double(sj[i]) - theta[static_cast<size_t>(j)] * double(vj[i]);
        acc += d * d;
      }
      worst = std::max(worst, std::sqrt(acc));
    }
    r.iterations = it;
    r.residual = scale > 0 ? worst / scale : (worst > 0 ? INFINITY : 0.0);
    if (!std::isfinite(r.residual)) return r;  // NaN/Inf: let the dense solver say so
    // A Ritz value below zero by more than rounding: not PSD. The filter would then grow
    // what lies below zero too, and a block of converged but wrong pairs could pass the
    // residual test, so the dense solver takes over.
    if (theta.back() < -std::max(1e3, double(m)) * eps * scale) {
      r.residual = INFINITY;
      return r;
    }
    if (r.residual <= r.tolerance) {
      *vectors = Matrix<T>(m, k);
      std::copy_n(v.ptr(), m * k, vectors->ptr());
      values->assign(theta.begin(), theta.begin() + k);
      r.converged = true;
      return r;
    }
    if (it == kMaxIterations) return r;
    // Stagnation: from the second filter step on, the residual's fall per step predicts the
    // steps still needed; where they would pass kMaxIterations (a spectrum with no room
    // between the k-th eigenvalue and the rest, white noise's), the dense solver takes over
    // now instead of after every step.
    if (it >= 2) {
      const double fall = r.residual / previous;
      if (!(fall < 1) ||
          it + std::log(r.tolerance / r.residual) / std::log(fall) > kMaxIterations + 0.5)
        return r;
    }
    previous = r.residual;
    // The filter: T_d((2 x - hi) / hi) is at most 1 on [0, hi], where the block's last Ritz
    // value hi bounds what is left out (the matrix is PSD), and grows fast above it.
    const double hi = theta.back();
    if (!(hi > r.tolerance * scale)) {
      std::swap(v, sv);  // the rest of the spectrum is 0 to rounding: one power step does
    } else {
      const double c = hi / 2, e = hi / 2;  // the centre and half-width of [0, hi]
      for (size_t i = 0; i < count; ++i)
        y.data[i] = static_cast<T>((double(sv.data[i]) - c * double(v.data[i])) / e);
      std::swap(prev, v);  // prev: degree 0, y: degree 1
      for (int d = 2; d <= kDegree; ++d) {
        // Scale each column of both terms alike (the recurrence is per column), so that the
        // filter's growth (T_3 of 1e4 is 4e12) never overflows single precision.
        for (int64_t j = 0; j < l; ++j) {
          const double nrm = column_norm(y, j);
          if (!(nrm > 0)) continue;
          const T f = static_cast<T>(1.0 / nrm);
          T* yj = y.ptr() + j * y.ld();
          T* pj = prev.ptr() + j * prev.ld();
          for (int64_t i = 0; i < m; ++i) {
            yj[i] *= f;
            pj[i] *= f;
          }
        }
        apply(s, y, sv);
        for (size_t i = 0; i < count; ++i)
          prev.data[i] = static_cast<T>(2.0 * (double(sv.data[i]) - c * double(y.data[i])) / e -
                                        double(prev.data[i]));
        std::swap(prev, y);  // y: the newest degree, prev: the one before
      }
      std::swap(v, y);
    }
    orthonormalize(m, l, v.ptr(), v.ld());
  }
}

template SubspaceResult top_eigenpairs_subspace<float>(const Matrix<float>&, int64_t,
                                                       Matrix<float>*, std::vector<double>*);
template SubspaceResult top_eigenpairs_subspace<double>(const Matrix<double>&, int64_t,
                                                        Matrix<double>*, std::vector<double>*);

}  // namespace dalr::cpu
