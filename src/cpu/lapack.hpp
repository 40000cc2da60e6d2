#pragma once
// Typed float/double wrappers over CBLAS and LAPACKE, column-major only, with the
// same argument shapes as the cuBLAS/cuSOLVER calls of the CUDA backend (the twin
// rule of DESIGN.md section 4). LAPACK `info` is always checked: a failure throws
// dalr::Error with the routine's name and a readable cause.
#include <cblas.h>
#include <lapacke.h>

#include <cstdint>
#include <string>

namespace dalr::cpu {

[[noreturn]] void throw_lapack(const char* routine, int64_t info, const char* hint);

inline void syrk(CBLAS_UPLO uplo, CBLAS_TRANSPOSE tr, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, float beta, float* c, int64_t ldc) {
  cblas_ssyrk(CblasColMajor, uplo, tr, n, k, alpha, a, lda, beta, c, ldc);
}
inline void syrk(CBLAS_UPLO uplo, CBLAS_TRANSPOSE tr, int64_t n, int64_t k, double alpha,
                 const double* a, int64_t lda, double beta, double* c, int64_t ldc) {
  cblas_dsyrk(CblasColMajor, uplo, tr, n, k, alpha, a, lda, beta, c, ldc);
}

inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                 float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                 float* c, int64_t ldc) {
  cblas_sgemm(CblasColMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                 double alpha, const double* a, int64_t lda, const double* b, int64_t ldb,
                 double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasColMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// C = alpha * A * S + beta * C (side Right) or alpha * S * A + beta * C (side Left),
// S symmetric with only the `uplo` triangle referenced.
inline void symm(CBLAS_SIDE side, CBLAS_UPLO uplo, int64_t m, int64_t n, float alpha,
                 const float* s, int64_t lds, const float* a, int64_t lda, float beta, float* c,
                 int64_t ldc) {
  cblas_ssymm(CblasColMajor, side, uplo, m, n, alpha, s, lds, a, lda, beta, c, ldc);
}
inline void symm(CBLAS_SIDE side, CBLAS_UPLO uplo, int64_t m, int64_t n, double alpha,
                 const double* s, int64_t lds, const double* a, int64_t lda, double beta, double* c,
                 int64_t ldc) {
  cblas_dsymm(CblasColMajor, side, uplo, m, n, alpha, s, lds, a, lda, beta, c, ldc);
}

// Eigen-decomposition of a symmetric matrix (eigenvalues ascending in w; with
// jobz = 'V' the eigenvectors overwrite a). Workspace query, then the call.
void syevd(char jobz, char uplo, int64_t n, float* a, int64_t lda, float* w);
void syevd(char jobz, char uplo, int64_t n, double* a, int64_t lda, double* w);

// The eigenpairs il..iu (1-based, in ascending order of eigenvalue) of a symmetric
// matrix (the `uplo` triangle of a is read and destroyed): iu - il + 1 eigenvalues,
// ascending, in w, their eigenvectors in z (n x (iu - il + 1)). ?sytrd, ?stemr (MRRR) for
// the range only, ?ormtr: ?syevr's steps, without its switch to inverse iteration for a
// partial range (lapack.cpp says why). Workspace queries, then the calls.
void syev_range(char uplo, int64_t n, float* a, int64_t lda, int64_t il, int64_t iu, float* w,
                float* z, int64_t ldz);
void syev_range(char uplo, int64_t n, double* a, int64_t lda, int64_t il, int64_t iu, double* w,
                double* z, int64_t ldz);

// Cholesky factorisation; throws "not positive definite" with the failing minor.
// Overwrites the m x n (m >= n) a with an orthonormal basis of its columns' span: the Q of
// a = Q R by Householder reflections (?geqrf, then ?orgqr).
void orthonormalize(int64_t m, int64_t n, float* a, int64_t lda);
void orthonormalize(int64_t m, int64_t n, double* a, int64_t lda);

void potrf(char uplo, int64_t n, float* a, int64_t lda);
void potrf(char uplo, int64_t n, double* a, int64_t lda);
void potrs(char uplo, int64_t n, int64_t nrhs, const float* a, int64_t lda, float* b, int64_t ldb);
void potrs(char uplo, int64_t n, int64_t nrhs, const double* a, int64_t lda, double* b,
           int64_t ldb);

// Thin SVD (jobz = 'S'): a (m x n) = u (m x r) diag(s) vt (r x n), r = min(m, n).
void gesdd(int64_t m, int64_t n, float* a, int64_t lda, float* s, float* u, int64_t ldu, float* vt,
           int64_t ldvt);
void gesdd(int64_t m, int64_t n, double* a, int64_t lda, double* s, double* u, int64_t ldu,
           double* vt, int64_t ldvt);

}  // namespace dalr::cpu
