#pragma once
// Host parts of the solver that both backends share (src/cpu/solver.cpp and
// src/cuda/gpu_solver.cpp), so that they check the same things with the same words.
#include <cstdint>
#include <vector>

#include "dalr/solver.hpp"

namespace dalr::detail {

// Shapes, rank range, sample count, output statistics for pruning, lambda >= 0.
template <typename T>
void check_solve_arguments(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                           const LayerStats<T>& stats);

// solve_dual's: dalr or dalr-exact, x (n x p) with n == W.cols and p >= 1, the bias,
// the rank range, lambda >= 0; the same words as above.
template <typename T>
void check_dual_arguments(const SolveOptions& opt, const Matrix<T>& w, const std::vector<T>& b,
                          const Matrix<T>& x);

// The fields every method sets the same way: method, rank, lambda (0 when unused), bias.
template <typename T>
Factors<T> start_factors(const SolveOptions& opt, const std::vector<T>& b) {
  Factors<T> f;
  f.method = opt.method;
  f.rank = opt.rank;
  f.lambda = needs_gram(opt.method) ? opt.lambda : 0.0;
  f.bias = b;
  return f;
}

// Sum of the top k of a (descending) spectrum over the sum of all, negatives as 0; rest
// is the sum of the values the spectrum does not hold (Factors::spectrum_rest).
double energy_fraction(const std::vector<double>& spectrum, int64_t k, double rest = 0.0);

// svd-bc: bias += (W - A B) xbar, the mean residual of the low-rank layer.
template <typename T>
void compensate_bias(const Matrix<T>& w, const LayerStats<T>& st, Factors<T>& f);

}  // namespace dalr::detail
