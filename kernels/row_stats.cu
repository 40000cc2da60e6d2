#include <math_constants.h>

#include <climits>
#include <string>

#include "cuda/cuda_check.hpp"
#include "row_stats.cuh"

namespace dalr::kernels {

// Comparisons written as in std::max so that max matches the CPU twin bit for bit.
template <typename T>
__global__ void __launch_bounds__(kRowStatsThreads)
    row_sum_max_kernel(const T* __restrict__ x, int64_t n, int64_t c, int64_t ldx,
                       const T* __restrict__ bias, bool relu, double* __restrict__ sum,
                       double* __restrict__ max) {
  __shared__ double s_sum[kRowStatsLanes][kRowStatsRows];
  __shared__ double s_max[kRowStatsLanes][kRowStatsRows];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const RowStatsSlice sl = row_stats_slice(blockIdx.x, tx, ty);

  double s = 0.0, m = -CUDART_INF;
  if (sl.row < n) {
    const double b = bias ? static_cast<double>(bias[sl.row]) : 0.0;
    for (int64_t j = sl.col_begin; j < c; j += sl.col_step) {
      double v = static_cast<double>(x[sl.row + j * ldx]) + b;
      if (relu) v = v < 0.0 ? 0.0 : v;
      s += v;
      m = m < v ? v : m;
    }
  }
  s_sum[ty][tx] = s;
  s_max[ty][tx] = m;
  __syncthreads();

  // Fixed-order reduction over the lanes: results do not depend on scheduling.
  if (ty == 0 && sl.row < n) {
    for (int k = 1; k < kRowStatsLanes; ++k) {
      s += s_sum[k][tx];
      m = m < s_max[k][tx] ? s_max[k][tx] : m;
    }
    sum[sl.row] += s;
    max[sl.row] = max[sl.row] < m ? m : max[sl.row];
  }
}

template <typename T>
void launch_row_sum_max(const T* x, int64_t n, int64_t c, int64_t ldx, const T* bias, bool relu,
                        double* sum, double* max, cudaStream_t stream) {
  if (n < 0 || c < 0 || ldx < (n > 1 ? n : 1))
    throw Error("row_sum_max: bad shape n=" + std::to_string(n) + " c=" + std::to_string(c) +
                " ldx=" + std::to_string(ldx));
  if (n == 0 || c == 0) return;
  const int64_t blocks = row_stats_blocks(n);
  if (blocks > INT_MAX) throw Error("row_sum_max: n=" + std::to_string(n) + " too large");
  row_sum_max_kernel<T>
      <<<static_cast<unsigned>(blocks), dim3(kRowStatsRows, kRowStatsLanes), 0, stream>>>(
          x, n, c, ldx, bias, relu, sum, max);
  DALR_CUDA_CHECK_LAUNCH();
}

template void launch_row_sum_max<float>(const float*, int64_t, int64_t, int64_t, const float*, bool,
                                        double*, double*, cudaStream_t);
template void launch_row_sum_max<double>(const double*, int64_t, int64_t, int64_t, const double*,
                                         bool, double*, double*, cudaStream_t);

}  // namespace dalr::kernels
