#pragma once
// The six compression methods of DESIGN.md section 1, one solver for all.
// A layer y = W x + b (W: m x n) becomes y ~= A (B x) + bias with A: m x k, B: k x n.
// Pruning methods keep `rank` output units instead: B = W[kept, :], bias = b[kept].
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dalr/eigensolver.hpp"
#include "dalr/matrix.hpp"
#include "dalr/stats.hpp"

namespace dalr {

enum class Method { Dalr, DalrExact, Svd, SvdBc, PruneMean, PruneMax };

// The method table: one row per Method, in the enum's order (checked at compile time in
// src/common/method.cpp, so a method without a row, or out of order, does not build).
// A new method is a value above, a row here, and its case in each backend's solve
// (src/cpu/solver.cpp, src/cuda/gpu_solver.cpp), whose switches have no default.
struct MethodInfo {
  Method method;
  const char* name;  // --method's word
  bool pruning;      // keeps `rank` output units instead of factoring
  bool gram;         // the solve uses C (and lambda)
};
inline constexpr std::array<MethodInfo, 6> kMethodTable{{
    {Method::Dalr, "dalr", false, true},
    {Method::DalrExact, "dalr-exact", false, true},
    {Method::Svd, "svd", false, false},
    {Method::SvdBc, "svd-bc", false, false},
    {Method::PruneMean, "prune-mean", true, false},
    {Method::PruneMax, "prune-max", true, false},
}};

Method method_from_name(const std::string& name);  // throws dalr::Error listing the valid ones
const char* method_name(Method m);
const std::vector<std::string>& method_names();
bool is_pruning(Method m);
bool needs_gram(Method m);  // dalr, dalr-exact: the solve uses C

struct SolveOptions {
  Method method = Method::Dalr;
  int64_t rank = 0;     // k for factorisations; the number of kept units for pruning
  double lambda = 0.0;  // absolute ridge added to C (dalr, dalr-exact)
  Eigensolver eigensolver = Eigensolver::Auto;  // dalr, dalr-exact
};

template <typename T>
struct Factors {
  Method method = Method::Dalr;
  int64_t rank = 0;
  Matrix<T> a;                      // m x k (empty for pruning)
  Matrix<T> b;                      // k x n
  std::vector<T> bias;              // m (k for pruning)
  std::vector<int64_t> kept_units;  // pruning: indices into the m outputs, ascending
  double lambda = 0.0;
  // What the method ranks by, descending: all of it, except after the top-k
  // eigensolver, which finds only the top `rank` eigenvalues; spectrum_rest then holds
  // the sum of the others (the trace minus the top `rank`, at least 0).
  std::vector<double> spectrum;
  double spectrum_rest = 0.0;
  double energy_kept = 0.0;  // sum of the top `rank` of spectrum / sum of all
  // dalr, dalr-exact: the eigensolver that found A ("full", "topk", "subspace"; empty for
  // the other methods), and for "subspace" its filter steps; `eigensolver_note` says why
  // the subspace iteration gave way to "topk" where it did.
  std::string eigensolver;
  int eigensolver_steps = 0;
  std::string eigensolver_note;
};

// The reconstruction error of Eq. 13 over a set of samples: ||Y - Yhat||_F with Y = W X + b
// and Yhat the compressed layer's output (pre-activation; for pruning the dropped units'
// outputs count as zero).
struct ReconError {
  double abs = 0;  // ||Y - Yhat||_F
  double ref = 0;  // ||Y||_F
  double rel = 0;  // abs / ref
  int64_t samples = 0;
};

// Checks shapes and the rank (1 <= rank <= min(m, n), or <= m for pruning), then
// solves. `stats` must have n == W.cols (and m == W.rows for pruning).
template <typename T>
Factors<T> solve(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                 const LayerStats<T>& stats);

// The sample-space (dual) solve of dalr and dalr-exact from the samples x (n x p, one
// per column) instead of C = X X^T: the same factors as solve() on their statistics (to
// rounding), through p x p and m x m problems; worth it when p < n. Other methods throw.
template <typename T>
Factors<T> solve_dual(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                      const Matrix<T>& x);

// Statistics of the samples x (n x p) without C: count, sums, maxima, and trace(C) =
// ||X||_F^2 (so default_lambda works); C is formed from x only if something reads it.
// No output statistics (m() == 0).
template <typename T>
LayerStats<T> stats_keeping_samples(std::shared_ptr<const Matrix<T>> x);

// Throws "--lambda-rel must be a finite number >= 0" unless `rel` is one.
void check_lambda_rel(double rel);

// The scale-aware default ridge: rel * trace(C) / n (rel checked as above; throws naming
// the statistics' problem when trace(C) is not finite or is negative).
template <typename T>
double default_lambda(const LayerStats<T>& stats, double rel);

// Rank for a kept fraction of the layer's parameters: floor(f * m * n / (m + n)) (at
// least 1); for pruning the number of kept units floor(f * m).
int64_t rank_for_keep(Method method, int64_t m, int64_t n, double keep);
// Units a pruning method keeps at the parameter budget of rank k: floor(k (m + n) / n).
int64_t units_for_rank(int64_t m, int64_t n, int64_t k);
// Parameters of the replaced layer (weights + bias).
int64_t params_after(Method method, int64_t m, int64_t n, int64_t rank);

// Ranks for several layers under one budget, from their spectra alone. A layer's cost
// model: `per_rank`, what one more rank costs (weights: m + n; multiply-adds per image:
// positions (m + n), positions = 1 for an fc layer), `dense`, what the layer costs
// uncompressed (m n, positions m n), and its largest rank. Starting at rank 1 each,
// repeatedly give one more rank to the layer whose next spectral value, as a share of its
// spectrum's total, is largest per unit of cost, while sum(k per_rank) stays within
// budget * sum(dense). Throws (naming `unit`) when even rank 1 everywhere does not fit.
struct RankCost {
  int64_t max_rank = 0;
  double per_rank = 0, dense = 0;
};
std::vector<int64_t> allocate_ranks(const std::vector<RankCost>& layers,
                                    const std::vector<std::vector<double>>& spectra, double budget,
                                    const std::string& unit);
// The weight budget of fc-shaped layers m x n: per_rank m + n, dense m n, max min(m, n).
std::vector<int64_t> allocate_ranks(const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                    const std::vector<std::vector<double>>& spectra, double budget);

}  // namespace dalr
