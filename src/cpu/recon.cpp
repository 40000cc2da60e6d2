#include "cpu/recon.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/finite.hpp"
#include "cpu/lapack.hpp"
#include "dalr/error.hpp"

namespace dalr {

namespace {

// The error over samples that come in chunks (at most `batch` columns each): Y = W x + b
// against Yhat = A (B x) + bias, summed in long double.
template <typename T>
class ChunkError {
 public:
  ChunkError(const Matrix<T>& w, const std::vector<T>& b, const Factors<T>& f, int64_t batch)
      : w_(w), b_(b), f_(f), m_(w.rows), k_(f.b.rows) {
    y_.resize(static_cast<size_t>(m_ * batch));
    bx_.resize(static_cast<size_t>(k_ * batch));
    yhat_.resize(static_cast<size_t>(m_ * batch));
  }
  // x: n x c, leading dimension ldx.
  void add(const T* x, int64_t c, int64_t ldx) {
    const int64_t m = m_, n = w_.cols, k = k_;
    cpu::gemm(CblasNoTrans, CblasNoTrans, m, c, n, T(1), w_.ptr(), w_.ld(), x, ldx, T(0), y_.data(),
              m);
    cpu::gemm(CblasNoTrans, CblasNoTrans, k, c, n, T(1), f_.b.ptr(), f_.b.ld(), x, ldx, T(0),
              bx_.data(), k);
    if (is_pruning(f_.method)) {
      std::fill(yhat_.begin(), yhat_.begin() + m * c, T(0));
      for (int64_t j = 0; j < c; ++j)
        for (int64_t r2 = 0; r2 < k; ++r2)
          yhat_[f_.kept_units[r2] + j * m] = bx_[r2 + j * k] + f_.bias[r2];
    } else {
      cpu::gemm(CblasNoTrans, CblasNoTrans, m, c, k, T(1), f_.a.ptr(), f_.a.ld(), bx_.data(), k,
                T(0), yhat_.data(), m);
      for (int64_t j = 0; j < c; ++j)
        for (int64_t i = 0; i < m; ++i) yhat_[i + j * m] += f_.bias[i];
    }
    for (int64_t j = 0; j < c; ++j)
      for (int64_t i = 0; i < m; ++i) {
        const long double yi = static_cast<long double>(y_[i + j * m]) + b_[i];
        const long double d = yi - yhat_[i + j * m];
        err2_ += d * d;
        ref2_ += yi * yi;
      }
    samples_ += c;
  }
  int64_t samples() const { return samples_; }
  ReconError result() const {
    ReconError r;
    r.samples = samples_;
    r.abs = std::sqrt(static_cast<double>(err2_));
    r.ref = std::sqrt(static_cast<double>(ref2_));
    r.rel = relative_error(r.abs, r.ref);
    return r;
  }

 private:
  const Matrix<T>& w_;
  const std::vector<T>& b_;
  const Factors<T>& f_;
  int64_t m_, k_, samples_ = 0;
  std::vector<T> y_, bx_, yhat_;
  long double err2_ = 0, ref2_ = 0;
};

}  // namespace

template <typename T>
ReconError reconstruction_error(NpyReader& acts, const Matrix<T>& w, const std::vector<T>& b,
                                const Factors<T>& f, int64_t batch) {
  const int64_t n = w.cols;
  std::vector<T> x(static_cast<size_t>(n * batch));
  ChunkError<T> e(w, b, f, batch);
  acts.rewind();
  for (int64_t c; (c = acts.read_rows<T>(x.data(), batch)) > 0;) {
    check_finite(x.data(), n, c, n, e.samples(), acts.path() + ": activation");
    e.add(x.data(), c, n);
  }
  return e.result();
}

template <typename T>
ReconError reconstruction_error(const Matrix<T>& x, const Matrix<T>& w, const std::vector<T>& b,
                                const Factors<T>& f, int64_t batch) {
  if (x.rows != w.cols)
    throw Error("reconstruction_error: the samples have " + std::to_string(x.rows) +
                " rows, the layer takes " + std::to_string(w.cols) + " inputs");
  ChunkError<T> e(w, b, f, batch);
  for (int64_t at = 0; at < x.cols; at += batch)
    e.add(x.ptr() + at * x.ld(), std::min(batch, x.cols - at), x.ld());
  return e.result();
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
template ReconError reconstruction_error(const Matrix<float>&, const Matrix<float>&,
                                         const std::vector<float>&, const Factors<float>&, int64_t);
template ReconError reconstruction_error(const Matrix<double>&, const Matrix<double>&,
                                         const std::vector<double>&, const Factors<double>&,
                                         int64_t);

}  // namespace dalr
