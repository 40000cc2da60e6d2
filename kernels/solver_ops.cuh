#pragma once
// Small element-wise steps of the GPU solver (src/cuda/gpu_solver.cpp) that cuBLAS
// has no single call for. Column-major matrices with explicit leading dimensions;
// all pointers are device pointers; each launcher takes the stream, returns at once
// for empty shapes, and checks the launch.
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

constexpr int kSolverOpsThreads = 256;

// a(i, i) += value for i < n: the ridge C + lambda I before Cholesky.
template <typename T>
void launch_add_diagonal(T* a, int64_t n, int64_t lda, T value, cudaStream_t stream);

// dst(i, j) = scale[i] * src(i, j) for i < rows, j < cols: diag(scale) * src.
// In place when dst == src and ldd == lds (each element is read and written by one thread).
template <typename T>
void launch_scale_rows(const T* src, int64_t lds, const T* scale, T* dst, int64_t ldd, int64_t rows,
                       int64_t cols, cudaStream_t stream);

// dst(:, j) = src(:, last - j) for j < cols (rows elements each): the eigenvectors of
// an ascending eigensolver, largest first. src and dst must not overlap.
template <typename T>
void launch_reverse_columns(const T* src, int64_t lds, int64_t last, T* dst, int64_t ldd,
                            int64_t rows, int64_t cols, cudaStream_t stream);

// y[i] = sum_j e(i, j) * s[j] for i < m, j ascending, accumulated in double: E s for a
// column-major e (ld lde) and a double s. One thread per row (consecutive rows read
// consecutive memory for each j).
template <typename T>
void launch_row_dot_double(const T* e, int64_t m, int64_t n, int64_t lde, const double* s,
                           double* y, cudaStream_t stream);

// Blocks of the deterministic dot product below (partials has this many entries).
constexpr int kDotBlocks = 1024;

// partials[b] = the part of sum_i x[i] * y[i] (i < n, contiguous) that block b adds up,
// accumulated in double; the caller sums the kDotBlocks partials on the host in a fixed
// order, so the result does not depend on scheduling (no atomics).
template <typename T>
void launch_dot_partials(const T* x, const T* y, int64_t n, double* partials, cudaStream_t stream);

}  // namespace dalr::kernels
