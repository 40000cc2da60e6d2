// Host parts of the solver both backends share (common/solver_common.hpp).
#include "common/solver_common.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "dalr/error.hpp"

namespace dalr {

namespace detail {

template <typename T>
void check_solve_arguments(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                           const LayerStats<T>& stats) {
  const int64_t m = w.rows, n = w.cols, k = opt.rank;
  if (static_cast<int64_t>(b.size()) != m)
    throw Error("bias has " + std::to_string(b.size()) + " values, the weight has " +
                std::to_string(m) + " rows");
  if (stats.n() != n)
    throw Error("activations have " + std::to_string(stats.n()) + " features, the layer takes " +
                std::to_string(n));
  const int64_t max_rank = is_pruning(opt.method) ? m : std::min(m, n);
  if (k < 1 || k > max_rank)
    throw Error(std::string(is_pruning(opt.method) ? "kept units " : "rank ") + std::to_string(k) +
                " is out of range: it must be between 1 and " + std::to_string(max_rank) +
                " for a " + std::to_string(m) + " x " + std::to_string(n) + " layer");
  if (opt.method != Method::Svd && stats.count() == 0)
    throw Error(std::string("method ") + method_name(opt.method) + " needs activations (got none)");
  if (is_pruning(opt.method) && stats.m() != m)
    throw Error("pruning needs the statistics of the layer's outputs");

  if (needs_gram(opt.method) && (!(opt.lambda >= 0) || !std::isfinite(opt.lambda)))
    throw Error("lambda must be a finite number >= 0 (got " + std::to_string(opt.lambda) + ")");
}

template <typename T>
void check_dual_arguments(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                          const Matrix<T>& x) {
  if (!needs_gram(opt.method))
    throw Error(std::string("the sample-space (dual) solve is for dalr and dalr-exact, not ") +
                method_name(opt.method));
  if (x.rows != w.cols)
    throw Error("activations have " + std::to_string(x.rows) + " features, the layer takes " +
                std::to_string(w.cols));
  if (x.cols == 0)
    throw Error(std::string("method ") + method_name(opt.method) + " needs activations (got none)");
  const int64_t k = opt.rank, max_rank = std::min(w.rows, w.cols);
  if (static_cast<int64_t>(b.size()) != w.rows)
    throw Error("bias has " + std::to_string(b.size()) + " values, the weight has " +
                std::to_string(w.rows) + " rows");
  if (k < 1 || k > max_rank)
    throw Error("rank " + std::to_string(k) + " is out of range: it must be between 1 and " +
                std::to_string(max_rank) + " for a " + std::to_string(w.rows) + " x " +
                std::to_string(w.cols) + " layer");
  if (!(opt.lambda >= 0) || !std::isfinite(opt.lambda))
    throw Error("lambda must be a finite number >= 0 (got " + std::to_string(opt.lambda) + ")");
}

double energy_fraction(const std::vector<double>& spectrum, int64_t k, double rest) {
  double top = 0, all = 0;
  for (size_t i = 0; i < spectrum.size(); ++i) {
    const double v = std::max(spectrum[i], 0.0);
    all += v;
    if (static_cast<int64_t>(i) < k) top += v;
  }
  all += std::max(rest, 0.0);  // + 0.0 when the spectrum is whole: the sum is unchanged
  return all > 0 ? top / all : 0.0;
}

// bias + (W - A B) xbar: the mean residual of the low-rank layer, added back.
template <typename T>
void compensate_bias(const Matrix<T>& w, const LayerStats<T>& st, Factors<T>& f) {
  const std::vector<double> xbar = st.mean_x();
  const int64_t m = w.rows, n = w.cols, k = f.b.rows;
  std::vector<double> bx(static_cast<size_t>(k), 0.0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < k; ++i) bx[i] += double(f.b(i, j)) * xbar[j];
  for (int64_t i = 0; i < m; ++i) {
    double r = 0;
    for (int64_t j = 0; j < n; ++j) r += double(w(i, j)) * xbar[j];
    for (int64_t l = 0; l < k; ++l) r -= double(f.a(i, l)) * bx[l];
    f.bias[i] = static_cast<T>(double(f.bias[i]) + r);
  }
}

template void check_solve_arguments(const SolveOptions&, const Matrix<float>&,
                                    const std::vector<float>&, const LayerStats<float>&);
template void check_solve_arguments(const SolveOptions&, const Matrix<double>&,
                                    const std::vector<double>&, const LayerStats<double>&);
template void check_dual_arguments(const SolveOptions&, const Matrix<float>&,
                                   const std::vector<float>&, const Matrix<float>&);
template void check_dual_arguments(const SolveOptions&, const Matrix<double>&,
                                   const std::vector<double>&, const Matrix<double>&);
template void compensate_bias(const Matrix<float>&, const LayerStats<float>&, Factors<float>&);
template void compensate_bias(const Matrix<double>&, const LayerStats<double>&, Factors<double>&);

}  // namespace detail

}  // namespace dalr
