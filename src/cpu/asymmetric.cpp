// The host side of the asymmetric sequential fit (dalr/asymmetric.hpp): the cross
// accumulator K = X X^^T, the solve (through the ordinary solver) and the error.
#include "dalr/asymmetric.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "common/checked.hpp"
#include "common/recon_common.hpp"
#include "cpu/lapack.hpp"
#include "dalr/error.hpp"
#include "dalr/patches.hpp"

namespace dalr {

namespace {

// c (+)= op(a) op(b), column-major.
template <typename T>
void gemm_into(const Matrix<T>& a, bool ta, const Matrix<T>& b, bool tb, Matrix<T>& c, T beta) {
  const int64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols, n = tb ? b.rows : b.cols;
  if (m > 0 && n > 0)
    cpu::gemm(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, T(1),
              a.ptr(), a.ld(), b.ptr(), b.ld(), beta, c.ptr(), c.ld());
}
template <typename T>
Matrix<T> product(const Matrix<T>& a, bool ta, const Matrix<T>& b, bool tb) {
  Matrix<T> c(ta ? a.cols : a.rows, tb ? b.rows : b.cols);
  gemm_into(a, ta, b, tb, c, T(0));
  return c;
}

template <typename T>
class HostCross final : public CrossAccumulator<T> {
 public:
  HostCross(int64_t n, const ConvGeometry* g, int64_t tile_cols)
      : n_(n), conv_(g != nullptr), k_(n, n) {
    if (conv_) {
      g_ = *g;
      g_.check();
      if (g_.patch_size() != n) throw Error("internal: cross statistics of the wrong width");
      tile_ = std::max<int64_t>(1, std::min(tile_cols, g_.positions()));
      tx_.resize(static_cast<size_t>(checked_mul(n, tile_, "the patch tile")));
      th_.resize(tx_.size());
    }
  }
  void add(const T* x, const T* xh, int64_t cols, int64_t ldx) override {
    if (!conv_) {
      if (cols > 0)
        cpu::gemm(CblasNoTrans, CblasTrans, n_, n_, cols, T(1), x, ldx, xh, ldx, T(1), k_.ptr(),
                  k_.ld());
      return;
    }
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t pos = 0; pos < g_.positions(); pos += tile_) {
        const int64_t c = std::min(tile_, g_.positions() - pos);
        im2row(g_, x + j * ldx, pos, c, tx_.data(), n_);
        im2row(g_, xh + j * ldx, pos, c, th_.data(), n_);
        cpu::gemm(CblasNoTrans, CblasTrans, n_, n_, c, T(1), tx_.data(), n_, th_.data(), n_, T(1),
                  k_.ptr(), k_.ld());
      }
  }
  Matrix<T> result() override { return k_; }

 private:
  int64_t n_;
  bool conv_;
  ConvGeometry g_{};
  int64_t tile_ = 0;
  Matrix<T> k_;
  std::vector<T> tx_, th_;
};

template <typename T>
void check_asymmetric(const SolveOptions& opt, const Matrix<T>& w, const AsymmetricStats<T>& st) {
  if (opt.method != Method::Dalr && opt.method != Method::DalrExact)
    throw Error(std::string("the asymmetric fit is for dalr and dalr-exact, not ") +
                method_name(opt.method));
  const int64_t n = w.cols;
  if (st.hat->n() != n || st.orig->n() != n || st.cross->rows != n || st.cross->cols != n)
    throw Error("internal: asymmetric statistics of the wrong width");
  if (st.hat->count() != st.orig->count())
    throw Error("internal: the asymmetric statistics count different samples");
  if (!(opt.lambda > 0) || !std::isfinite(opt.lambda))
    throw Error(
        "the asymmetric fit solves with C^ + lambda I by Cholesky and needs lambda > 0 "
        "(got " +
        std::to_string(opt.lambda) +
        "): give --lambda-rel or --lambda above 0, or use --sequential symmetric");
}

}  // namespace

template <typename T>
std::unique_ptr<CrossAccumulator<T>> host_cross_accumulator(int64_t n, const ConvGeometry* g,
                                                            int64_t tile_cols) {
  return std::make_unique<HostCross<T>>(n, g, tile_cols);
}

template <typename T>
Factors<T> asymmetric_solve(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                            const AsymmetricStats<T>& st) {
  check_asymmetric(opt, w, st);
  const int64_t n = w.cols;
  // D = C^ + lambda I; W_r^T = D^-1 (W K)^T by Cholesky.
  Matrix<T> d = st.hat->gram();
  for (int64_t i = 0; i < n; ++i) d(i, i) += static_cast<T>(opt.lambda);
  Matrix<T> chol = d;
  cpu::potrf('L', n, chol.ptr(), chol.ld());
  Matrix<T> wrt = product(*st.cross, true, w, true);  // K^T W^T = (W K)^T
  cpu::potrs('L', n, wrt.cols, chol.ptr(), chol.ld(), wrt.ptr(), wrt.ld());
  Matrix<T> wr(w.rows, n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < w.rows; ++i) wr(i, j) = wrt(j, i);
  const SolveOptions plain{Method::Dalr, opt.rank, 0.0, opt.eigensolver};
  Factors<T> f;
  if (opt.method == Method::DalrExact) {
    // dalr at lambda 0 on (W_r, D): U_k of W_r D W_r^T, B = U_k^T W_r D D^-1 = U_k^T W_r.
    const LayerStats<T> ds = LayerStats<T>::from_parts(st.hat->count(), std::move(d),
                                                       st.hat->sum_x(), st.hat->max_x(), {}, {});
    f = solve(plain, wr, b, ds);
  } else {
    // dalr on (W, C_o) for U_k of W C_o W^T (its B is replaced).
    f = solve({Method::Dalr, opt.rank, opt.lambda, opt.eigensolver}, w, b, *st.orig);
    f.b = product(f.a, true, wr, false);
  }
  f.method = opt.method;
  f.lambda = opt.lambda;
  f.bias = b;
  return f;
}

template <typename T>
ReconError asymmetric_error(const AsymmetricStats<T>& st, const Matrix<T>& w,
                            const std::vector<T>& b, const Factors<T>& f) {
  const int64_t m = w.rows, n = w.cols;
  const Matrix<T> ab = product(f.a, false, f.b, false);  // m x n
  const Matrix<T> wc = product(w, false, st.orig->gram(), false);
  const Matrix<T> wk = product(w, false, *st.cross, false);
  const Matrix<T> abc = product(ab, false, st.hat->gram(), false);
  long double ref_quad = 0, quad = 0;
  for (int64_t i = 0; i < w.size(); ++i) {
    ref_quad += static_cast<long double>(wc.data[i]) * w.data[i];
    quad += static_cast<long double>(wc.data[i]) * w.data[i] -
            2.0L * static_cast<long double>(wk.data[i]) * ab.data[i] +
            static_cast<long double>(abc.data[i]) * ab.data[i];
  }
  std::vector<long double> ws(static_cast<size_t>(m), 0.0L), es(static_cast<size_t>(m), 0.0L);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      const long double wsx = static_cast<long double>(w(i, j)) * st.orig->sum_x()[j];
      ws[i] += wsx;
      es[i] += wsx - static_cast<long double>(ab(i, j)) * st.hat->sum_x()[j];
    }
  std::vector<double> bv(b.begin(), b.end()), dv(b.begin(), b.end());
  for (int64_t i = 0; i < m; ++i) dv[i] -= static_cast<double>(f.bias[static_cast<size_t>(i)]);
  const int64_t p = st.hat->count();
  return recon_from(residual2(quad, es, dv, p), residual2(ref_quad, ws, bv, p), p);
}

#define DALR_ASYMMETRIC(T)                                                                \
  template std::unique_ptr<CrossAccumulator<T>> host_cross_accumulator(                   \
      int64_t, const ConvGeometry*, int64_t);                                             \
  template Factors<T> asymmetric_solve(const SolveOptions&, const Matrix<T>&,             \
                                       const std::vector<T>&, const AsymmetricStats<T>&); \
  template ReconError asymmetric_error(const AsymmetricStats<T>&, const Matrix<T>&,       \
                                       const std::vector<T>&, const Factors<T>&);
DALR_ASYMMETRIC(float)
DALR_ASYMMETRIC(double)
#undef DALR_ASYMMETRIC

}  // namespace dalr
