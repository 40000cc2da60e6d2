#pragma once
// Per-unit sum and max over a batch: X is n x c column-major (one sample per column),
// sum[i] += sum_j X(i, j), max[i] = max(max[i], max_j X(i, j)); with `relu`, the
// values are max(0, X(i, j) + bias[i]) instead (a layer's output statistics).
// The CPU twin of kernels/row_stats.cu.
#include <cstdint>

namespace dalr::cpu {

template <typename T>
void row_sum_max(const T* x, int64_t n, int64_t c, int64_t ldx, const T* bias, bool relu,
                 double* sum, double* max);

}  // namespace dalr::cpu
