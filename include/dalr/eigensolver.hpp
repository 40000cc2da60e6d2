#pragma once
// The eigensolver choice of the dalr and dalr-exact solves (SolveOptions, and the
// compress and sweep jobs' --eigensolver), in a header of its own so the job options
// need not include the solver.
#include <cstdint>
#include <string>

namespace dalr {

// How dalr and dalr-exact find the top k eigenvectors of their m x m matrix (G or H):
// the full decomposition (?syevd, cuSOLVER Xsyevd), or only the index range m-k+1..m
// (?sytrd + ?stemr + ?ormtr, cuSOLVER Xsyevdx). Auto picks by m and k (use_topk_eigensolver). Both
// give the same eigenvalues and, where the k-th and (k+1)-th eigenvalues are apart, the same
// subspace to rounding; the factors may differ in their last bits.
// Subspace: on the CPU, Chebyshev-filtered subspace iteration (cpu/subspace_eig.hpp) to
// LAPACK's residual, falling back to the index-range solver where it does not converge;
// on the GPU it is the index-range solver (Xsyevdx).
enum class Eigensolver { Auto, Full, TopK, Subspace };

Eigensolver eigensolver_from_name(const std::string& name);  // auto | full | topk | subspace
const char* eigensolver_name(Eigensolver e);
// Whether only the top k are found (TopK, Subspace, or Auto when m >= 512 and k <= m / 5,
// where bench_eigen measured the index-range solver faster: bench/RESULTS.md); false: the
// full decomposition.
bool use_topk_eigensolver(Eigensolver e, int64_t m, int64_t k);
// Whether the CPU tries subspace iteration first: Subspace (where its block of 1.5 k fits
// in half of m), or Auto when also m >= 1024 and k <= m / 8, where bench_eigen measured it
// faster than the index-range solver (bench/RESULTS.md).
bool use_subspace_eigensolver(Eigensolver e, int64_t m, int64_t k);
// The subspace iteration's block for k of m: k plus half of k, at least 32 more; 0 when the
// block would be more than half of m (then it gains nothing: a dense solver runs).
int64_t subspace_block(int64_t m, int64_t k);

}  // namespace dalr
