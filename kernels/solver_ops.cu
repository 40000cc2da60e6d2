#include <string>

#include "cuda/cuda_check.hpp"
#include "solver_ops.cuh"

namespace dalr::kernels {

namespace {

// Grid-stride launches: enough blocks to fill the GPU, never more than the grid limit.
unsigned blocks_for(int64_t elements) {
  const int64_t want = (elements + kSolverOpsThreads - 1) / kSolverOpsThreads;
  return static_cast<unsigned>(want < 65536 ? want : 65536);
}

void check_shape(const char* op, int64_t rows, int64_t cols, int64_t ld) {
  if (rows < 0 || cols < 0 || ld < (rows > 1 ? rows : 1))
    throw Error(std::string(op) + ": bad shape rows=" + std::to_string(rows) +
                " cols=" + std::to_string(cols) + " ld=" + std::to_string(ld));
}

}  // namespace

template <typename T>
__global__ void add_diagonal_kernel(T* a, int64_t n, int64_t lda, T value) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    a[i + i * lda] += value;
}

// Element e of the rows x cols result is (e % rows, e / rows): consecutive threads
// touch consecutive rows of one column, so reads and writes coalesce.
template <typename T>
__global__ void scale_rows_kernel(const T* src, int64_t lds, const T* __restrict__ scale, T* dst,
                                  int64_t ldd, int64_t rows, int64_t cols) {
  const int64_t total = rows * cols, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t i = e % rows, j = e / rows;
    dst[i + j * ldd] = scale[i] * src[i + j * lds];
  }
}

template <typename T>
__global__ void reverse_columns_kernel(const T* __restrict__ src, int64_t lds, int64_t last,
                                       T* __restrict__ dst, int64_t ldd, int64_t rows,
                                       int64_t cols) {
  const int64_t total = rows * cols, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t i = e % rows, j = e / rows;
    dst[i + j * ldd] = src[i + (last - j) * lds];
  }
}

template <typename T>
void launch_add_diagonal(T* a, int64_t n, int64_t lda, T value, cudaStream_t stream) {
  check_shape("add_diagonal", n, n, lda);
  if (n == 0) return;
  add_diagonal_kernel<T><<<blocks_for(n), kSolverOpsThreads, 0, stream>>>(a, n, lda, value);
  DALR_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_scale_rows(const T* src, int64_t lds, const T* scale, T* dst, int64_t ldd, int64_t rows,
                       int64_t cols, cudaStream_t stream) {
  check_shape("scale_rows (source)", rows, cols, lds);
  check_shape("scale_rows (destination)", rows, cols, ldd);
  if (rows == 0 || cols == 0) return;
  scale_rows_kernel<T><<<blocks_for(rows * cols), kSolverOpsThreads, 0, stream>>>(
      src, lds, scale, dst, ldd, rows, cols);
  DALR_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_reverse_columns(const T* src, int64_t lds, int64_t last, T* dst, int64_t ldd,
                            int64_t rows, int64_t cols, cudaStream_t stream) {
  check_shape("reverse_columns (source)", rows, last + 1, lds);
  check_shape("reverse_columns (destination)", rows, cols, ldd);
  if (cols > last + 1)
    throw Error("reverse_columns: " + std::to_string(cols) + " columns from a source of " +
                std::to_string(last + 1));
  if (rows == 0 || cols == 0) return;
  reverse_columns_kernel<T><<<blocks_for(rows * cols), kSolverOpsThreads, 0, stream>>>(
      src, lds, last, dst, ldd, rows, cols);
  DALR_CUDA_CHECK_LAUNCH();
}

#define DALR_INSTANTIATE(T)                                                                      \
  template void launch_add_diagonal<T>(T*, int64_t, int64_t, T, cudaStream_t);                   \
  template void launch_scale_rows<T>(const T*, int64_t, const T*, T*, int64_t, int64_t, int64_t, \
                                     cudaStream_t);                                              \
  template void launch_reverse_columns<T>(const T*, int64_t, int64_t, T*, int64_t, int64_t,      \
                                          int64_t, cudaStream_t);
DALR_INSTANTIATE(float)
DALR_INSTANTIATE(double)
#undef DALR_INSTANTIATE

template <typename T>
__global__ void row_dot_double_kernel(const T* __restrict__ e, int64_t m, int64_t n, int64_t lde,
                                      const double* __restrict__ s, double* __restrict__ y) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m; i += stride) {
    double acc = 0;
    for (int64_t j = 0; j < n; ++j) acc += double(e[i + j * lde]) * s[j];
    y[i] = acc;
  }
}

template <typename T>
void launch_row_dot_double(const T* e, int64_t m, int64_t n, int64_t lde, const double* s,
                           double* y, cudaStream_t stream) {
  check_shape("row_dot_double", m, n, lde);
  if (m == 0) return;
  if (!y || (n > 0 && (!e || !s))) throw Error("row_dot_double: a null pointer");
  row_dot_double_kernel<T><<<blocks_for(m), kSolverOpsThreads, 0, stream>>>(e, m, n, lde, s, y);
  DALR_CUDA_CHECK_LAUNCH();
}

template void launch_row_dot_double<float>(const float*, int64_t, int64_t, int64_t, const double*,
                                           double*, cudaStream_t);
template void launch_row_dot_double<double>(const double*, int64_t, int64_t, int64_t, const double*,
                                            double*, cudaStream_t);

template <typename T>
__global__ void dot_partials_kernel(const T* __restrict__ x, const T* __restrict__ y, int64_t n,
                                    double* __restrict__ partials) {
  __shared__ double sum[kSolverOpsThreads];
  double acc = 0;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    acc += double(x[i]) * double(y[i]);
  sum[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kSolverOpsThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) sum[threadIdx.x] += sum[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = sum[0];
}

template <typename T>
void launch_dot_partials(const T* x, const T* y, int64_t n, double* partials, cudaStream_t stream) {
  if (n < 0) throw Error("dot_partials: negative size " + std::to_string(n));
  if (!partials) throw Error("dot_partials: partials is a null pointer");
  if (n > 0 && (!x || !y)) throw Error("dot_partials: x or y is a null pointer");
  // Every block writes its partial, zero when it has no element: the host sums all.
  dot_partials_kernel<T><<<kDotBlocks, kSolverOpsThreads, 0, stream>>>(x, y, n, partials);
  DALR_CUDA_CHECK_LAUNCH();
}

template void launch_dot_partials<float>(const float*, const float*, int64_t, double*,
                                         cudaStream_t);
template void launch_dot_partials<double>(const double*, const double*, int64_t, double*,
                                          cudaStream_t);

}  // namespace dalr::kernels
