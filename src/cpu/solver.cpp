#include "dalr/solver.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>

#include "common/solver_common.hpp"
#include "cpu/lapack.hpp"
#include "cpu/row_stats.hpp"
#include "cpu/subspace_eig.hpp"
#include "dalr/error.hpp"

namespace dalr {

namespace {

template <typename T>
Matrix<T> transpose(const Matrix<T>& x) {
  Matrix<T> t(x.cols, x.rows);
  transpose_into(x.ptr(), x.rows, x.cols, x.ld(), t.ptr(), t.ld());
  return t;
}

// C = op(A) op(B) for column-major matrices.
template <typename T>
Matrix<T> matmul(const Matrix<T>& a, bool ta, const Matrix<T>& b, bool tb) {
  const int64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols;
  const int64_t n = tb ? b.rows : b.cols;
  Matrix<T> c(m, n);
  if (m > 0 && n > 0)
    cpu::gemm(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, T(1),
              a.ptr(), a.ld(), b.ptr(), b.ld(), T(0), c.ptr(), c.ld());
  return c;
}

// Top-k eigenvectors of a symmetric matrix (only its lower triangle is read), into
// f->a, and f->spectrum: all eigenvalues in descending order after the full solver; the
// top k after the top-k one, with the trace's remainder in f->spectrum_rest.
template <typename T>
void top_eigenvectors(Matrix<T> s, int64_t k, Eigensolver es, Factors<T>* f) {
  const int64_t m = s.rows;
  std::vector<T> w(static_cast<size_t>(m));
  f->a = Matrix<T>(m, k);
  if (use_topk_eigensolver(es, m, k)) {  // only the top k: the trace gives the rest's sum
    double trace = 0, top = 0;
    for (int64_t i = 0; i < m; ++i) trace += double(s(i, i));
    bool found = false;
    if (use_subspace_eigensolver(es, m, k)) {
      const cpu::SubspaceResult r = cpu::top_eigenpairs_subspace(s, k, &f->a, &f->spectrum);
      found = r.converged;
      if (found) {
        f->eigensolver = "subspace";
        f->eigensolver_steps = r.iterations;
      } else {
        f->eigensolver_note = "the subspace iteration did not reach its tolerance (" +
                              std::to_string(r.residual) + " after " +
                              std::to_string(r.iterations) + " steps): the index-range solver ran";
        f->a = Matrix<T>(m, k);
      }
    }
    if (!found) {
      f->eigensolver = "topk";
      cpu::syev_range('L', m, s.ptr(), s.ld(), m - k + 1, m, w.data(), f->a.ptr(), f->a.ld());
      for (int64_t j = 0; j < k / 2; ++j)  // ascending: reverse to descending
        std::swap_ranges(&f->a(0, j), &f->a(0, j) + m, &f->a(0, k - 1 - j));
      f->spectrum.assign(w.rend() - k, w.rend());  // w[k-1], ..., w[0]
    }
    for (double v : f->spectrum) top += std::max(v, 0.0);
    f->spectrum_rest = std::max(trace - top, 0.0);
    return;
  }
  f->eigensolver = "full";
  cpu::syevd('V', 'L', m, s.ptr(), s.ld(), w.data());
  for (int64_t j = 0; j < k; ++j)
    std::copy_n(&s(0, m - 1 - j), m, &f->a(0, j));  // syevd sorts ascending
  f->spectrum.assign(w.rbegin(), w.rend());
}

// Applies (C + lambda I)^-1 by Cholesky when lambda > 0, and the pseudo-inverse C^+
// (through the eigendecomposition, dropping eigenvalues below n * eps * max) when
// lambda == 0, so a rank-deficient C still gives the minimum-norm answer. Never
// forms an inverse.
template <typename T>
class RidgeSolve {
 public:
  // tol_n: the dimension in the pseudo-inverse's cut-off (n * eps * max); the dual solve
  // passes the primal's n so that both drop the same eigenvalues.
  RidgeSolve(const Matrix<T>& c, double lambda, int64_t tol_n = -1) : lambda_(lambda), f_(c) {
    const int64_t n = c.rows;
    if (tol_n < 0) tol_n = n;
    if (lambda > 0) {
      for (int64_t i = 0; i < n; ++i) f_(i, i) += static_cast<T>(lambda);
      cpu::potrf('L', n, f_.ptr(), f_.ld());
      return;
    }
    std::vector<T> w(static_cast<size_t>(n));
    cpu::syevd('V', 'L', n, f_.ptr(), f_.ld(), w.data());
    const double wmax = std::max<double>(w.empty() ? 0 : w.back(), 0.0);
    const double tol = wmax * static_cast<double>(tol_n) * std::numeric_limits<T>::epsilon();
    int64_t first = 0;  // eigenvalues ascending: keep [first, n)
    while (first < n && !(static_cast<double>(w[first]) > tol)) ++first;
    inv_w_.clear();
    for (int64_t i = first; i < n; ++i) inv_w_.push_back(T(1) / w[i]);
    first_ = first;
  }

  // rhs (n x q) <- (C + lambda I)^-1 rhs, or C^+ rhs when lambda == 0.
  void apply(Matrix<T>& rhs) const {
    const int64_t n = f_.rows, q = rhs.cols;
    if (lambda_ > 0) {
      cpu::potrs('L', n, q, f_.ptr(), f_.ld(), rhs.ptr(), rhs.ld());
      return;
    }
    const int64_t r = n - first_;
    const T* vr = f_.ptr() + first_ * f_.ld();
    Matrix<T> tmp(r, q);
    if (r > 0)
      cpu::gemm(CblasTrans, CblasNoTrans, r, q, n, T(1), vr, f_.ld(), rhs.ptr(), rhs.ld(), T(0),
                tmp.ptr(), tmp.ld());
    for (int64_t j = 0; j < q; ++j)
      for (int64_t i = 0; i < r; ++i) tmp(i, j) *= inv_w_[static_cast<size_t>(i)];
    if (r > 0)
      cpu::gemm(CblasNoTrans, CblasNoTrans, n, q, r, T(1), vr, f_.ld(), tmp.ptr(), tmp.ld(), T(0),
                rhs.ptr(), rhs.ld());
    else
      std::fill(rhs.data.begin(), rhs.data.end(), T(0));
  }

 private:
  double lambda_;
  Matrix<T> f_;  // Cholesky factor, or eigenvectors
  std::vector<T> inv_w_;
  int64_t first_ = 0;
};

template <typename T>
void solve_dalr(const Matrix<T>& w, const LayerStats<T>& st, int64_t k, double lambda, bool exact,
                Eigensolver es, Factors<T>& f) {
  const Matrix<T>& c = st.gram();
  const int64_t m = w.rows, n = w.cols;
  Matrix<T> wc(m, n);  // W C
  cpu::symm(CblasRight, CblasLower, m, n, T(1), c.ptr(), c.ld(), w.ptr(), w.ld(), T(0), wc.ptr(),
            wc.ld());
  RidgeSolve<T> ridge(c, lambda);
  if (!exact) {
    // Eq. 11: U_k from G = W C W^T; B = U_k^T W C (C + lambda I)^-1.
    Matrix<T> g = matmul(wc, false, w, true);
    top_eigenvectors(std::move(g), k, es, &f);
    Matrix<T> bt = matmul(wc, true, f.a, false);  // n x k: C W^T U_k
    ridge.apply(bt);
    f.b = transpose(bt);
  } else {
    // W_r = W C (C + lambda I)^-1; U_k from W_r (C + lambda I) W_r^T = W C W_r^T.
    Matrix<T> wrt = transpose(wc);  // n x m, becomes W_r^T
    ridge.apply(wrt);
    Matrix<T> h = matmul(wc, false, wrt, false);
    top_eigenvectors(std::move(h), k, es, &f);
    f.b = transpose(matmul(wrt, false, f.a, false));
  }
}

// The sample-space twin of solve_dalr (DESIGN.md's dual): with C = X X^T (X: n x p) and
// K = X^T X, W C (C + lambda I)^-1 = Z (K + lambda I)^-1 X^T for Z = W X, so only p x p
// and m x m problems are solved. dalr: G = Z Z^T, B = (U_k^T Z)(K + lambda I)^-1 X^T.
// dalr-exact: H = W C W_r^T = Z K (K + lambda I)^-1 Z^T, B the same form. lambda == 0
// uses K^+ (X K^+ X^T is the projector C C^+), cut at the primal's n * eps * max.
template <typename T>
void solve_dalr_dual(const Matrix<T>& w, const Matrix<T>& x, int64_t k, double lambda, bool exact,
                     Eigensolver es, Factors<T>& f) {
  const int64_t p = x.cols, n = x.rows;
  Matrix<T> z = matmul(w, false, x, false);  // m x p
  Matrix<T> kk(p, p);                        // K = X^T X, lower triangle
  cpu::syrk(CblasLower, CblasTrans, p, n, T(1), x.ptr(), x.ld(), T(0), kk.ptr(), kk.ld());
  RidgeSolve<T> ridge(kk, lambda, n);
  Matrix<T> s;  // p x k: (K + lambda I)^-1 Z^T U_k
  if (!exact) {
    top_eigenvectors(matmul(z, false, z, true), k, es, &f);
    s = matmul(z, true, f.a, false);
    ridge.apply(s);
  } else {
    Matrix<T> zt = transpose(z);  // becomes (K + lambda I)^-1 Z^T
    ridge.apply(zt);
    Matrix<T> kzt(p, z.rows);
    cpu::symm(CblasLeft, CblasLower, p, z.rows, T(1), kk.ptr(), kk.ld(), zt.ptr(), zt.ld(), T(0),
              kzt.ptr(), kzt.ld());
    top_eigenvectors(matmul(z, false, kzt, false), k, es, &f);
    s = matmul(zt, false, f.a, false);
  }
  f.b = matmul(s, true, x, true);  // k x n: S^T X^T
}

template <typename T>
void solve_svd(const Matrix<T>& w, int64_t k, Factors<T>& f) {
  const int64_t m = w.rows, n = w.cols, r = std::min(m, n);
  Matrix<T> a = w, u(m, r), vt(r, n);
  std::vector<T> s(static_cast<size_t>(r));
  cpu::gesdd(m, n, a.ptr(), a.ld(), s.data(), u.ptr(), u.ld(), vt.ptr(), vt.ld());
  f.a = Matrix<T>(m, k);
  std::copy_n(u.ptr(), m * k, f.a.ptr());
  f.b = Matrix<T>(k, n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < k; ++i) f.b(i, j) = s[static_cast<size_t>(i)] * vt(i, j);
  f.spectrum.resize(s.size());
  for (size_t i = 0; i < s.size(); ++i) f.spectrum[i] = double(s[i]) * double(s[i]);
}

template <typename T>
void solve_prune(const Matrix<T>& w, const std::vector<T>& b, const LayerStats<T>& st,
                 int64_t units, bool by_max, Factors<T>& f) {
  const std::vector<double> score = by_max ? st.max_y() : st.mean_y();
  std::vector<int64_t> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return score[x] > score[y]; });
  f.kept_units.assign(order.begin(), order.begin() + units);
  std::sort(f.kept_units.begin(), f.kept_units.end());
  f.b = Matrix<T>(units, w.cols);
  f.bias.resize(static_cast<size_t>(units));
  for (int64_t r = 0; r < units; ++r) {
    const int64_t src = f.kept_units[static_cast<size_t>(r)];
    for (int64_t j = 0; j < w.cols; ++j) f.b(r, j) = w(src, j);
    f.bias[static_cast<size_t>(r)] = b[static_cast<size_t>(src)];
  }
  for (int64_t i : order) f.spectrum.push_back(score[static_cast<size_t>(i)]);
}

// Every Method has its case and there is no default, so the compiler flags a Method
// added without one (-Wswitch); a value outside the enum (a cast) falls out of the switch
// and throws instead of returning empty factors.
template <typename T>
void solve_method(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                  const LayerStats<T>& stats, Factors<T>& f) {
  const int64_t k = opt.rank;
  switch (opt.method) {
    case Method::Dalr:
    case Method::DalrExact:
      return solve_dalr(w, stats, k, opt.lambda, opt.method == Method::DalrExact, opt.eigensolver,
                        f);
    case Method::Svd:
    case Method::SvdBc:
      solve_svd(w, k, f);
      if (opt.method == Method::SvdBc) detail::compensate_bias(w, stats, f);
      return;
    case Method::PruneMean:
    case Method::PruneMax:
      return solve_prune(w, b, stats, k, opt.method == Method::PruneMax, f);
  }
  throw Error("solve: unknown method (enum value " + std::to_string(static_cast<int>(opt.method)) +
              ")");
}

}  // namespace

template <typename T>
Factors<T> solve(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                 const LayerStats<T>& stats) {
  const int64_t k = opt.rank;
  detail::check_solve_arguments(opt, w, b, stats);

  Factors<T> f = detail::start_factors(opt, b);
  solve_method(opt, w, b, stats, f);
  f.energy_kept = detail::energy_fraction(f.spectrum, k, f.spectrum_rest);
  return f;
}

template <typename T>
Factors<T> solve_dual(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                      const Matrix<T>& x) {
  detail::check_dual_arguments(opt, w, b, x);
  Factors<T> f = detail::start_factors(opt, b);
  solve_dalr_dual(w, x, opt.rank, opt.lambda, opt.method == Method::DalrExact, opt.eigensolver, f);
  f.energy_kept = detail::energy_fraction(f.spectrum, opt.rank, f.spectrum_rest);
  return f;
}

namespace {

// X standing in for C = X X^T: the trace from X, and C itself (SYRK) only if read.
template <typename T>
class KeptSamples final : public LayerStats<T>::DeviceCopy {
 public:
  explicit KeptSamples(std::shared_ptr<const Matrix<T>> x) : x_(std::move(x)) {
    for (const T v : x_->data) trace_ += static_cast<long double>(v) * v;
  }
  void download(T* host) const override {
    const int64_t n = x_->rows;
    cpu::syrk(CblasLower, CblasNoTrans, n, x_->cols, T(1), x_->ptr(), x_->ld(), T(0), host, n);
  }
  double trace() const override { return static_cast<double>(trace_); }
  const Matrix<T>& samples() const { return *x_; }

 private:
  std::shared_ptr<const Matrix<T>> x_;
  long double trace_ = 0;
};

}  // namespace

template <typename T>
LayerStats<T> stats_keeping_samples(std::shared_ptr<const Matrix<T>> x) {
  const int64_t n = x->rows, p = x->cols;
  // The per-unit sums and maxima as LayerStats::add takes them (without samples: 0).
  std::vector<double> sum(static_cast<size_t>(n), 0.0),
      mx(static_cast<size_t>(n), p > 0 ? -std::numeric_limits<double>::infinity() : 0.0);
  cpu::row_sum_max(x->ptr(), n, p, x->ld(), static_cast<const T*>(nullptr), false, sum.data(),
                   mx.data());
  return LayerStats<T>::from_device(p, n, std::make_shared<KeptSamples<T>>(std::move(x)),
                                    std::move(sum), std::move(mx), {}, {});
}

template Factors<float> solve_dual(const SolveOptions&, const Matrix<float>&,
                                   const std::vector<float>&, const Matrix<float>&);
template Factors<double> solve_dual(const SolveOptions&, const Matrix<double>&,
                                    const std::vector<double>&, const Matrix<double>&);
template LayerStats<float> stats_keeping_samples(std::shared_ptr<const Matrix<float>>);
template LayerStats<double> stats_keeping_samples(std::shared_ptr<const Matrix<double>>);
template Factors<float> solve(const SolveOptions&, const Matrix<float>&, const std::vector<float>&,
                              const LayerStats<float>&);
template Factors<double> solve(const SolveOptions&, const Matrix<double>&,
                               const std::vector<double>&, const LayerStats<double>&);

}  // namespace dalr
