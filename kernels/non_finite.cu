#include <algorithm>
#include <string>

#include "cuda/cuda_check.hpp"
#include "non_finite.cuh"

namespace dalr::kernels {

template <typename T>
__global__ void find_non_finite_kernel(const T* __restrict__ x, int64_t n, int64_t cols,
                                       int64_t ldx, uint64_t first_index,
                                       unsigned long long* first_bad) {
  const int64_t total = n * cols;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += step) {
    const int64_t j = k / n, i = k - j * n;
    const T v = x[i + j * ldx];
    if (!isfinite(v))  // rare: the atomic costs nothing on finite data
      atomicMin(first_bad,
                non_finite_key(first_index + static_cast<uint64_t>(j), static_cast<uint64_t>(i),
                               static_cast<uint64_t>(n), isnan(v)));
  }
}

template <typename T>
void launch_find_non_finite(const T* x, int64_t n, int64_t cols, int64_t ldx, int64_t first_index,
                            unsigned long long* first_bad, cudaStream_t stream) {
  if (n < 0 || cols < 0 || ldx < std::max<int64_t>(n, 1) || first_index < 0)
    throw Error("find_non_finite: bad shape n=" + std::to_string(n) +
                " cols=" + std::to_string(cols) + " ldx=" + std::to_string(ldx) +
                " first_index=" + std::to_string(first_index));
  if (n == 0 || cols == 0) return;
  constexpr int threads = 256;
  // A grid-stride loop: a few thousand blocks fill any current GPU.
  const int64_t blocks = std::min<int64_t>((n * cols + threads - 1) / threads, 4096);
  find_non_finite_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      x, n, cols, ldx, static_cast<uint64_t>(first_index), first_bad);
  DALR_CUDA_CHECK_LAUNCH();
}

template void launch_find_non_finite<float>(const float*, int64_t, int64_t, int64_t, int64_t,
                                            unsigned long long*, cudaStream_t);
template void launch_find_non_finite<double>(const double*, int64_t, int64_t, int64_t, int64_t,
                                             unsigned long long*, cudaStream_t);

}  // namespace dalr::kernels
