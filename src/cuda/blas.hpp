#pragma once
// The one set of typed cuBLAS and cuSOLVER wrappers (RAFT's cublassyrk<T> idiom).
//
// cuBLAS: overloads on float and double over the 64-bit integer API (cublas<t>xxx_64,
// CUDA 12+), so no size is narrowed to int on the way in. Each returns the status for
// the caller's DALR_CUBLAS_CHECK, which then names the call site. alpha and beta are host
// pointers (CUBLAS_POINTER_MODE_HOST, cuBLAS's default, which no dalr code changes).
// Arguments are cuBLAS's own, in its order: what the caller writes is what runs.
//
// cuSOLVER: the 64-bit X API on a Context (its handle, parameters and stream). Each call
// queries its device and host workspace first, runs, and checks devInfo through
// Context::check_info, which synchronises the stream (so the host workspace lives long
// enough). The device workspace is Context::workspace, taken right before the call and
// not held past it (a later call may grow, and so move, it).
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda/context.hpp"
#include "cuda/cuda_check.hpp"

namespace dalr::cuda::blas {

template <typename T>
constexpr cudaDataType kDataType = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_64F;

inline cublasOperation_t op(bool trans) {
  return trans ? CUBLAS_OP_T : CUBLAS_OP_N;
}

// ---- cuBLAS level 3 and extensions

// c = alpha op(a) op(b) + beta c
inline cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                           int64_t n, int64_t k, const float* alpha, const float* a, int64_t lda,
                           const float* b, int64_t ldb, const float* beta, float* c, int64_t ldc) {
  return cublasSgemm_64(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                           int64_t n, int64_t k, const double* alpha, const double* a, int64_t lda,
                           const double* b, int64_t ldb, const double* beta, double* c,
                           int64_t ldc) {
  return cublasDgemm_64(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// c = alpha a b + beta c (side left) or alpha b a + beta c (right), a symmetric.
inline cublasStatus_t symm(cublasHandle_t h, cublasSideMode_t side, cublasFillMode_t uplo,
                           int64_t m, int64_t n, const float* alpha, const float* a, int64_t lda,
                           const float* b, int64_t ldb, const float* beta, float* c, int64_t ldc) {
  return cublasSsymm_64(h, side, uplo, m, n, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline cublasStatus_t symm(cublasHandle_t h, cublasSideMode_t side, cublasFillMode_t uplo,
                           int64_t m, int64_t n, const double* alpha, const double* a, int64_t lda,
                           const double* b, int64_t ldb, const double* beta, double* c,
                           int64_t ldc) {
  return cublasDsymm_64(h, side, uplo, m, n, alpha, a, lda, b, ldb, beta, c, ldc);
}

// c = alpha op(a) op(a)^T + beta c, the `uplo` triangle of c.
inline cublasStatus_t syrk(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t trans,
                           int64_t n, int64_t k, const float* alpha, const float* a, int64_t lda,
                           const float* beta, float* c, int64_t ldc) {
  return cublasSsyrk_64(h, uplo, trans, n, k, alpha, a, lda, beta, c, ldc);
}
inline cublasStatus_t syrk(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t trans,
                           int64_t n, int64_t k, const double* alpha, const double* a, int64_t lda,
                           const double* beta, double* c, int64_t ldc) {
  return cublasDsyrk_64(h, uplo, trans, n, k, alpha, a, lda, beta, c, ldc);
}

// c = alpha op(a) + beta op(b)
inline cublasStatus_t geam(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                           int64_t n, const float* alpha, const float* a, int64_t lda,
                           const float* beta, const float* b, int64_t ldb, float* c, int64_t ldc) {
  return cublasSgeam_64(h, ta, tb, m, n, alpha, a, lda, beta, b, ldb, c, ldc);
}
inline cublasStatus_t geam(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                           int64_t n, const double* alpha, const double* a, int64_t lda,
                           const double* beta, const double* b, int64_t ldb, double* c,
                           int64_t ldc) {
  return cublasDgeam_64(h, ta, tb, m, n, alpha, a, lda, beta, b, ldb, c, ldc);
}

// y = alpha x + y (level 1; the count can pass 2^31 for a chunk of an n x n matrix).
inline cublasStatus_t axpy(cublasHandle_t h, int64_t n, const float* alpha, const float* x,
                           int64_t incx, float* y, int64_t incy) {
  return cublasSaxpy_64(h, n, alpha, x, incx, y, incy);
}
inline cublasStatus_t axpy(cublasHandle_t h, int64_t n, const double* alpha, const double* x,
                           int64_t incx, double* y, int64_t incy) {
  return cublasDaxpy_64(h, n, alpha, x, incx, y, incy);
}

// c = alpha op(a) op(b) + beta c with the storage and compute types given (16-bit data
// accumulated in fp32, ...); alpha and beta are of the compute type's scalar type.
inline cublasStatus_t gemm_ex(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                              int64_t m, int64_t n, int64_t k, const void* alpha, const void* a,
                              cudaDataType_t ta_type, int64_t lda, const void* b,
                              cudaDataType_t tb_type, int64_t ldb, const void* beta, void* c,
                              cudaDataType_t tc_type, int64_t ldc, cublasComputeType_t compute,
                              cublasGemmAlgo_t algo) {
  return cublasGemmEx_64(h, ta, tb, m, n, k, alpha, a, ta_type, lda, b, tb_type, ldb, beta, c,
                         tc_type, ldc, compute, algo);
}

// ---- cuSOLVER (64-bit X API) on a context's stream

namespace detail {
inline void* host_ptr(std::vector<unsigned char>& v) {
  return v.empty() ? nullptr : v.data();
}
// Never a null pointer, even when cuSOLVER asks for no device workspace.
inline void* device_ws(Context& ctx, size_t bytes) {
  return ctx.workspace(std::max<size_t>(bytes, 256));
}
}  // namespace detail

// Eigenvectors overwrite a (n x n, `uplo` triangle read); eigenvalues ascending in w.
template <typename T>
void syevd(Context& ctx, cublasFillMode_t uplo, int64_t n, T* a, int64_t lda, T* w,
           const char* no_convergence_hint) {
  constexpr cudaDataType t = kDataType<T>;
  size_t dev_bytes = 0, host_bytes = 0;
  DALR_CUSOLVER_CHECK(cusolverDnXsyevd_bufferSize(ctx.cusolver(), ctx.cusolver_params(),
                                                  CUSOLVER_EIG_MODE_VECTOR, uplo, n, t, a, lda, t,
                                                  w, t, &dev_bytes, &host_bytes));
  void* dev_ws = detail::device_ws(ctx, dev_bytes);
  std::vector<unsigned char> host_ws(host_bytes);
  DALR_CUSOLVER_CHECK(cusolverDnXsyevd(
      ctx.cusolver(), ctx.cusolver_params(), CUSOLVER_EIG_MODE_VECTOR, uplo, n, t, a, lda, t, w, t,
      dev_ws, dev_bytes, detail::host_ptr(host_ws), host_bytes, ctx.dev_info()));
  ctx.check_info("Xsyevd", no_convergence_hint);  // host_ws lives until the stream is idle
}

// The eigenpairs il..iu (1-based, ascending order) of a (n x n, `uplo` triangle read;
// destroyed): their eigenvalues ascending in w[0, iu - il] (w holds n), their eigenvectors
// in a's first iu - il + 1 columns. Returns how many cuSOLVER found (the caller checks).
template <typename T>
int64_t syevdx(Context& ctx, cublasFillMode_t uplo, int64_t n, T* a, int64_t lda, int64_t il,
               int64_t iu, T* w, const char* no_convergence_hint) {
  constexpr cudaDataType t = kDataType<T>;
  T vl = 0, vu = 0;  // read only for CUSOLVER_EIG_RANGE_V
  int64_t found = 0;
  size_t dev_bytes = 0, host_bytes = 0;
  DALR_CUSOLVER_CHECK(cusolverDnXsyevdx_bufferSize(
      ctx.cusolver(), ctx.cusolver_params(), CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I, uplo,
      n, t, a, lda, &vl, &vu, il, iu, &found, t, w, t, &dev_bytes, &host_bytes));
  void* dev_ws = detail::device_ws(ctx, dev_bytes);
  std::vector<unsigned char> host_ws(host_bytes);
  DALR_CUSOLVER_CHECK(
      cusolverDnXsyevdx(ctx.cusolver(), ctx.cusolver_params(), CUSOLVER_EIG_MODE_VECTOR,
                        CUSOLVER_EIG_RANGE_I, uplo, n, t, a, lda, &vl, &vu, il, iu, &found, t, w, t,
                        dev_ws, dev_bytes, detail::host_ptr(host_ws), host_bytes, ctx.dev_info()));
  ctx.check_info("Xsyevdx", no_convergence_hint);  // synchronises: `found` is set
  return found;
}

// Cholesky factor of a (n x n) in place, in its `uplo` triangle.
template <typename T>
void potrf(Context& ctx, cublasFillMode_t uplo, int64_t n, T* a, int64_t lda,
           const char* not_pd_hint) {
  constexpr cudaDataType t = kDataType<T>;
  size_t dev_bytes = 0, host_bytes = 0;
  DALR_CUSOLVER_CHECK(cusolverDnXpotrf_bufferSize(ctx.cusolver(), ctx.cusolver_params(), uplo, n, t,
                                                  a, lda, t, &dev_bytes, &host_bytes));
  void* dev_ws = detail::device_ws(ctx, dev_bytes);
  std::vector<unsigned char> host_ws(host_bytes);
  DALR_CUSOLVER_CHECK(cusolverDnXpotrf(ctx.cusolver(), ctx.cusolver_params(), uplo, n, t, a, lda, t,
                                       dev_ws, dev_bytes, detail::host_ptr(host_ws), host_bytes,
                                       ctx.dev_info()));
  ctx.check_info("Xpotrf", not_pd_hint);
}

// b (n x nrhs) <- a^-1 b with the factor of a from potrf (same `uplo`).
template <typename T>
void potrs(Context& ctx, cublasFillMode_t uplo, int64_t n, int64_t nrhs, const T* l, int64_t ldl,
           T* b, int64_t ldb) {
  constexpr cudaDataType t = kDataType<T>;
  DALR_CUSOLVER_CHECK(cusolverDnXpotrs(ctx.cusolver(), ctx.cusolver_params(), uplo, n, nrhs, t, l,
                                       ldl, t, b, ldb, ctx.dev_info()));
  ctx.check_info("Xpotrs", nullptr);
}

// SVD of a (m x n, m >= n as cuSOLVER requires; destroyed), jobs as LAPACK's gesvd:
// with 'S', a = u (m x n) diag(s) vt (n x n), singular values descending.
template <typename T>
void gesvd(Context& ctx, signed char jobu, signed char jobvt, int64_t m, int64_t n, T* a,
           int64_t lda, T* s, T* u, int64_t ldu, T* vt, int64_t ldvt, const char* hint) {
  constexpr cudaDataType t = kDataType<T>;
  size_t dev_bytes = 0, host_bytes = 0;
  DALR_CUSOLVER_CHECK(cusolverDnXgesvd_bufferSize(ctx.cusolver(), ctx.cusolver_params(), jobu,
                                                  jobvt, m, n, t, a, lda, t, s, t, u, ldu, t, vt,
                                                  ldvt, t, &dev_bytes, &host_bytes));
  void* dev_ws = detail::device_ws(ctx, dev_bytes);
  std::vector<unsigned char> host_ws(host_bytes);
  DALR_CUSOLVER_CHECK(cusolverDnXgesvd(ctx.cusolver(), ctx.cusolver_params(), jobu, jobvt, m, n, t,
                                       a, lda, t, s, t, u, ldu, t, vt, ldvt, t, dev_ws, dev_bytes,
                                       detail::host_ptr(host_ws), host_bytes, ctx.dev_info()));
  ctx.check_info("Xgesvd", hint);
}

}  // namespace dalr::cuda::blas
