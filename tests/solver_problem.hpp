#pragma once
// A random layer and its activations for the solver tests (test_solver, test_eigensolver):
// W (m x n), b (m) and samples X (n x p) correlated with a decaying spectrum (column j of
// the mixing matrix scaled by decay^j) and shifted to a non-zero mean, as real post-ReLU
// features are, so that G's eigenvalues decay as real layers' do.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "oracle.hpp"
#include "test_util.hpp"

namespace dalr::test {

struct Problem {
  oracle::Mat w, x;  // m x n, n x p
  std::vector<double> b;
};

inline Problem make_problem(int64_t m, int64_t n, int64_t p, uint64_t seed, double decay = 0.8) {
  std::mt19937_64 rng(seed);
  Problem pr;
  pr.w = random_matrix<double>(m, n, rng);
  oracle::Mat mix = random_matrix<double>(n, n, rng);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < n; ++i) mix(i, j) *= std::pow(decay, double(j));
  pr.x = oracle::mul(mix, random_matrix<double>(n, p, rng));
  for (int64_t j = 0; j < p; ++j)
    for (int64_t i = 0; i < n; ++i) pr.x(i, j) += 0.5 + 0.1 * double(i % 3);
  std::normal_distribution<double> nd;
  for (int64_t i = 0; i < m; ++i) pr.b.push_back(nd(rng));
  return pr;
}

}  // namespace dalr::test
