#pragma once
// The top k eigenpairs of a symmetric positive semi-definite m x m matrix by subspace
// iteration with a Chebyshev filter (Zhou and Saad's ChFSI, without locking): a block of
// l > k vectors is multiplied by a degree-3 Chebyshev polynomial of the matrix that
// damps [0, the block's smallest Ritz value] and grows what lies above it, then made
// orthonormal (Householder QR) and rotated by the Rayleigh-Ritz step, until every one of
// the top k Ritz pairs has a residual ||S v - theta v|| below tol * |theta_max|, the
// accuracy LAPACK's own solvers reach. Each step costs a few m x m x l GEMMs where the
// tridiagonal reduction of ?syevd and ?sytrd costs 4/3 m^3 flops, half of them
// memory-bound: at VGG19 fc7's G (m = 4096, k = 256) it converges in 3-4 steps and takes
// about half the time of the MRRR top-k solve (bench/RESULTS.md).
//
// Convergence is never assumed: a start that does not reach the tolerance within
// kMaxIterations steps, or whose residual falls too slowly after two filter steps to get
// there in time (a spectrum with no room between the k-th eigenvalue and the rest),
// returns converged = false early, and so does a matrix with a Ritz value
// below zero by more than rounding (not PSD: the filter would grow that part too, and the
// residual test cannot see eigenpairs missing from the block); the caller then uses the
// MRRR solver. G and H of dalr and dalr-exact (and their sample-space forms) are PSD by
// construction. The start block is a fixed pseudo-random one, so the same matrix gives the
// same result.
#include <cstdint>
#include <vector>

#include "dalr/eigensolver.hpp"  // subspace_block
#include "dalr/matrix.hpp"

namespace dalr::cpu {

struct SubspaceResult {
  bool converged = false;
  int iterations = 0;    // filter steps taken
  double residual = 0;   // the largest residual of the top k, relative to |theta_max|
  double tolerance = 0;  // what converged means, relative to |theta_max|
  int64_t block = 0;     // l
};

// Top k eigenpairs of s (lower triangle read): vectors (m x k) and values, both in
// descending order of the eigenvalue. On converged == false the outputs are unspecified.
template <typename T>
SubspaceResult top_eigenpairs_subspace(const Matrix<T>& s, int64_t k, Matrix<T>* vectors,
                                       std::vector<double>* values);

}  // namespace dalr::cpu
