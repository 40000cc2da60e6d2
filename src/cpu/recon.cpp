#include "cpu/recon.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/finite.hpp"
#include "cpu/lapack.hpp"

namespace dalr {

template <typename T>
ReconError reconstruction_error(NpyReader& acts, const Matrix<T>& w, const std::vector<T>& b,
                                const Factors<T>& f, int64_t batch) {
  const int64_t m = w.rows, n = w.cols, k = f.b.rows;
  std::vector<T> x(static_cast<size_t>(n * batch)), y(static_cast<size_t>(m * batch));
  std::vector<T> bx(static_cast<size_t>(k * batch)), yhat(static_cast<size_t>(m * batch));
  long double err2 = 0, ref2 = 0;
  ReconError r;
  acts.rewind();
  for (int64_t c; (c = acts.read_rows<T>(x.data(), batch)) > 0;) {
    check_finite(x.data(), n, c, n, r.samples, acts.path() + ": activation");
    cpu::gemm(CblasNoTrans, CblasNoTrans, m, c, n, T(1), w.ptr(), w.ld(), x.data(), n, T(0),
              y.data(), m);
    cpu::gemm(CblasNoTrans, CblasNoTrans, k, c, n, T(1), f.b.ptr(), f.b.ld(), x.data(), n, T(0),
              bx.data(), k);
    if (is_pruning(f.method)) {
      std::fill(yhat.begin(), yhat.begin() + m * c, T(0));
      for (int64_t j = 0; j < c; ++j)
        for (int64_t r2 = 0; r2 < k; ++r2)
          yhat[f.kept_units[r2] + j * m] = bx[r2 + j * k] + f.bias[r2];
    } else {
      cpu::gemm(CblasNoTrans, CblasNoTrans, m, c, k, T(1), f.a.ptr(), f.a.ld(), bx.data(), k, T(0),
                yhat.data(), m);
      for (int64_t j = 0; j < c; ++j)
        for (int64_t i = 0; i < m; ++i) yhat[i + j * m] += f.bias[i];
    }
    for (int64_t j = 0; j < c; ++j)
      for (int64_t i = 0; i < m; ++i) {
        const long double yi = static_cast<long double>(y[i + j * m]) + b[i];
        const long double d = yi - yhat[i + j * m];
        err2 += d * d;
        ref2 += yi * yi;
      }
    r.samples += c;
  }
  r.abs = std::sqrt(static_cast<double>(err2));
  r.ref = std::sqrt(static_cast<double>(ref2));
  r.rel = relative_error(r.abs, r.ref);
  return r;
}

namespace {

// ||E X + e 1^T||^2 from E C (given), C's s and p: <E C, E> + 2 e.(E s) + p |e|^2,
// accumulated in long double.
template <typename T>
double residual2_of(const LayerStats<T>& st, const Matrix<T>& e, const Matrix<T>& ec,
                    const std::vector<double>& ev) {
  const int64_t m = e.rows, n = e.cols;
  long double quad = 0;
  for (int64_t i = 0; i < e.size(); ++i) quad += static_cast<long double>(ec.data[i]) * e.data[i];
  std::vector<long double> es(static_cast<size_t>(m), 0.0L);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) es[i] += static_cast<long double>(e(i, j)) * st.sum_x()[j];
  return residual2(quad, es, ev, st.count());
}

}  // namespace

// One product with C, not two: W C (m n^2) gives the reference, and D C = W C - A (B C)
// (B C costs k n^2) the error, with D = W - A B formed explicitly for the inner product.
// The subtraction loses about eps / (error / reference) of relative accuracy in the
// error, against eps in a direct D C: 6e-5 at a relative error of 1e-3 in fp32, and the
// test checks both precisions against the samples, full rank included.
template <typename T>
ReconError reconstruction_error(const LayerStats<T>& st, const Matrix<T>& w,
                                const std::vector<T>& b, const Factors<T>& f) {
  const Matrix<T>& c = st.gram();
  const int64_t m = w.rows, n = w.cols, k = f.b.rows;
  Matrix<T> wc(m, n);  // W C
  cpu::symm(CblasRight, CblasLower, m, n, T(1), c.ptr(), c.ld(), w.ptr(), w.ld(), T(0), wc.ptr(),
            wc.ld());
  Matrix<T> bc(k, n);  // B C
  if (k > 0)
    cpu::symm(CblasRight, CblasLower, k, n, T(1), c.ptr(), c.ld(), f.b.ptr(), f.b.ld(), T(0),
              bc.ptr(), bc.ld());
  Matrix<T> d = w, dc = wc;  // W - A B and (W - A B) C (pruning: dropped rows stay W's)
  std::vector<double> dv(b.begin(), b.end()), bv(b.begin(), b.end());
  if (is_pruning(f.method)) {
    for (int64_t r = 0; r < k; ++r) {
      const int64_t i = f.kept_units[static_cast<size_t>(r)];
      for (int64_t j = 0; j < n; ++j) {
        d(i, j) -= f.b(r, j);
        dc(i, j) -= bc(r, j);
      }
      dv[i] -= static_cast<double>(f.bias[static_cast<size_t>(r)]);
    }
  } else {
    if (k > 0) {
      cpu::gemm(CblasNoTrans, CblasNoTrans, m, n, k, T(-1), f.a.ptr(), f.a.ld(), f.b.ptr(),
                f.b.ld(), T(1), d.ptr(), d.ld());
      cpu::gemm(CblasNoTrans, CblasNoTrans, m, n, k, T(-1), f.a.ptr(), f.a.ld(), bc.ptr(), bc.ld(),
                T(1), dc.ptr(), dc.ld());
    }
    for (int64_t i = 0; i < m; ++i) dv[i] -= static_cast<double>(f.bias[static_cast<size_t>(i)]);
  }
  return recon_from(residual2_of(st, d, dc, dv), residual2_of(st, w, wc, bv), st.count());
}

template ReconError reconstruction_error(const LayerStats<float>&, const Matrix<float>&,
                                         const std::vector<float>&, const Factors<float>&);
template ReconError reconstruction_error(const LayerStats<double>&, const Matrix<double>&,
                                         const std::vector<double>&, const Factors<double>&);
template ReconError reconstruction_error(NpyReader&, const Matrix<float>&,
                                         const std::vector<float>&, const Factors<float>&, int64_t);
template ReconError reconstruction_error(NpyReader&, const Matrix<double>&,
                                         const std::vector<double>&, const Factors<double>&,
                                         int64_t);

}  // namespace dalr
