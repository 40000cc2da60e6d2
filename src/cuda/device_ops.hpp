#pragma once
// The BLAS/LAPACK steps of the GPU solver and reconstruction error on one context's
// stream, with the same argument shapes as the cpu:: wrappers the CPU twins call.
// Matrices are column-major device pointers; the cuSOLVER steps (blas.hpp) query their
// workspace first and check devInfo after (which synchronises the stream).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/blas.hpp"
#include "cuda/context.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_buffer.hpp"
#include "cuda/device_gram.hpp"
#include "dalr/error.hpp"
#include "dalr/stats.hpp"
#include "solver_ops.cuh"

namespace dalr::cuda {

inline constexpr const char* kNoConvergence =
    "the eigensolver did not converge (input has NaN/Inf or is badly scaled)";
inline constexpr const char* kNotPd =
    "the matrix is not positive definite (C + lambda I needs lambda > 0 when C is singular)";

template <typename T>
DeviceBuffer<T> device_matrix(int64_t rows, int64_t cols) {
  return DeviceBuffer<T>(static_cast<size_t>(rows) * static_cast<size_t>(cols));
}

template <typename T>
class Ops {
 public:
  explicit Ops(Context& ctx) : ctx_(ctx) {}
  cudaStream_t stream() const { return ctx_.stream(); }
  int device() const { return ctx_.device(); }

  // d (n x n) = C of st: a device-to-device copy when st carries C on this device
  // (GpuStats::finish), else an upload of the host copy.
  void load_gram(const LayerStats<T>& st, DeviceBuffer<T>& d) {
    if (const T* g = device_gram(st, device())) {
      DALR_CUDA_CHECK(cudaMemcpyAsync(d.data(), g, d.bytes(), cudaMemcpyDeviceToDevice, stream()));
      return;
    }
    d.upload(st.gram().ptr(), d.size(), stream());
  }

  // c (m x n) = op(a) op(b).
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
            int64_t ldb, T* c, int64_t ldc) {
    const T one = 1, zero = 0;
    DALR_CUBLAS_CHECK(blas::gemm(ctx_.cublas(), blas::op(ta), blas::op(tb), m, n, k, &one, a, lda,
                                 b, ldb, &zero, c, ldc));
  }

  // c (m x n) -= a b (a: m x k, b: k x n).
  void gemm_subtract(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                     int64_t ldb, T* c, int64_t ldc) {
    const T minus_one = -1, one = 1;
    DALR_CUBLAS_CHECK(blas::gemm(ctx_.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &minus_one, a,
                                 lda, b, ldb, &one, c, ldc));
  }

  // sum_i x[i] y[i] over n contiguous elements, accumulated in double in a fixed order
  // (waits for the stream).
  double dot(const T* x, const T* y, int64_t n) {
    namespace dk = dalr::kernels;
    DeviceBuffer<double> partials(static_cast<size_t>(dk::kDotBlocks));
    dk::launch_dot_partials(x, y, n, partials.data(), stream());
    std::vector<double> h(static_cast<size_t>(dk::kDotBlocks));
    partials.download(h.data(), h.size(), stream());
    ctx_.synchronize();
    long double sum = 0;
    for (double v : h) sum += v;
    return static_cast<double>(sum);
  }

  // c (m x n) = a s, s symmetric n x n of which only the lower triangle is read.
  void symm_right_lower(int64_t m, int64_t n, const T* s, int64_t lds, const T* a, int64_t lda,
                        T* c, int64_t ldc) {
    const T one = 1, zero = 0;
    DALR_CUBLAS_CHECK(blas::symm(ctx_.cublas(), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, m, n,
                                 &one, s, lds, a, lda, &zero, c, ldc));
  }

  // c (cols x rows) = a^T for a (rows x cols). geam computes 1 a^T + 0 b^T; b is a
  // itself, a valid operand of the right shape that does not overlap c.
  void transpose(const T* a, int64_t rows, int64_t cols, int64_t lda, T* c, int64_t ldc) {
    const T one = 1, zero = 0;
    DALR_CUBLAS_CHECK(blas::geam(ctx_.cublas(), CUBLAS_OP_T, CUBLAS_OP_T, cols, rows, &one, a, lda,
                                 &zero, a, lda, c, ldc));
  }

  // Eigenvectors overwrite a (n x n, lower triangle read); eigenvalues ascending in w.
  void syevd(int64_t n, T* a, int64_t lda, T* w) {
    blas::syevd(ctx_, CUBLAS_FILL_MODE_LOWER, n, a, lda, w, kNoConvergence);
  }

  // The top k eigenpairs of a (n x n, lower triangle read; destroyed): eigenvalues
  // ascending in w[0, k) (w holds n), eigenvectors in a's first k columns, same order.
  void syevdx_top(int64_t n, int64_t k, T* a, int64_t lda, T* w) {
    const int64_t found =
        blas::syevdx(ctx_, CUBLAS_FILL_MODE_LOWER, n, a, lda, n - k + 1, n, w, kNoConvergence);
    if (found != k)
      throw Error("cuSOLVER Xsyevdx returned " + std::to_string(found) + " of the " +
                  std::to_string(k) + " eigenpairs asked for (input has NaN/Inf?)");
  }

  // Cholesky factor L (lower) of a (n x n) in place.
  void potrf(int64_t n, T* a, int64_t lda) {
    blas::potrf(ctx_, CUBLAS_FILL_MODE_LOWER, n, a, lda, kNotPd);
  }

  // b (n x nrhs) <- (L L^T)^-1 b with the factor from potrf.
  void potrs(int64_t n, int64_t nrhs, const T* l, int64_t ldl, T* b, int64_t ldb) {
    blas::potrs(ctx_, CUBLAS_FILL_MODE_LOWER, n, nrhs, l, ldl, b, ldb);
  }

  // Thin SVD of a (m x n, m >= n as cuSOLVER requires; destroyed):
  // a = u (m x n) diag(s) vt (n x n), singular values descending.
  void gesvd(int64_t m, int64_t n, T* a, int64_t lda, T* s, T* u, int64_t ldu, T* vt,
             int64_t ldvt) {
    blas::gesvd(ctx_, 'S', 'S', m, n, a, lda, s, u, ldu, vt, ldvt,
                "the SVD did not converge (input has NaN/Inf?)");
  }

  // The first `count` elements of a device buffer, on the host (waits for the stream).
  std::vector<T> download(const DeviceBuffer<T>& d, int64_t count) {
    std::vector<T> h(static_cast<size_t>(count));
    d.download(h.data(), h.size(), stream());
    ctx_.synchronize();
    return h;
  }

 private:
  Context& ctx_;
};

}  // namespace dalr::cuda
