#include "core/recon.hpp"

#include <cmath>

#include "core/finite.hpp"
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
  r.rel = r.ref > 0 ? r.abs / r.ref : 0.0;
  return r;
}

template ReconError reconstruction_error(NpyReader&, const Matrix<float>&,
                                         const std::vector<float>&, const Factors<float>&, int64_t);
template ReconError reconstruction_error(NpyReader&, const Matrix<double>&,
                                         const std::vector<double>&, const Factors<double>&,
                                         int64_t);

}  // namespace dalr
