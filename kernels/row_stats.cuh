#pragma once
// Per-unit sum and max over a batch on the GPU: the twin of cpu::row_sum_max
// (src/cpu/row_stats.hpp). X is n x c column-major with leading dimension ldx;
// sum[i] += sum_j v(i, j), max[i] = max(max[i], max_j v(i, j)), where v = X(i, j), or
// max(0, X(i, j) + bias[i]) with relu. Accumulation is in double; sum/max persist
// across batches (the caller zeroes sum and fills max with -inf once).
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

// Launch geometry: a block of kRowStatsRows x kRowStatsLanes threads covers
// kRowStatsRows consecutive rows; lane y of a row takes columns y, y + lanes, ...
// A warp is one lane over 32 consecutive rows of one column: one coalesced read.
constexpr int kRowStatsRows = 32;
constexpr int kRowStatsLanes = 8;
constexpr int kRowStatsThreads = kRowStatsRows * kRowStatsLanes;

__host__ __device__ inline int64_t row_stats_blocks(int64_t n) {
  return (n + kRowStatsRows - 1) / kRowStatsRows;
}

// What thread (tx, ty) of block b reads: row `row` (idle if row >= n) at columns
// col_begin, col_begin + col_step, ... below c.
struct RowStatsSlice {
  int64_t row;
  int64_t col_begin;
  int64_t col_step;
};
__host__ __device__ inline RowStatsSlice row_stats_slice(int64_t block, int tx, int ty) {
  return {block * kRowStatsRows + tx, ty, kRowStatsLanes};
}

// bias may be null; all pointers are device pointers. Checks the launch.
template <typename T>
void launch_row_sum_max(const T* x, int64_t n, int64_t c, int64_t ldx, const T* bias, bool relu,
                        double* sum, double* max, cudaStream_t stream);

}  // namespace dalr::kernels
