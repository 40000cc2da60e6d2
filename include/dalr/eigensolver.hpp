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
enum class Eigensolver { Auto, Full, TopK };

Eigensolver eigensolver_from_name(const std::string& name);  // auto | full | topk
const char* eigensolver_name(Eigensolver e);
// Whether the top-k solver runs for an m x m eigenproblem at rank k: TopK always, Full
// never, Auto when m >= 512 and k <= m / 5, where bench_eigen measured it faster
// (bench/RESULTS.md).
bool use_topk_eigensolver(Eigensolver e, int64_t m, int64_t k);

}  // namespace dalr
