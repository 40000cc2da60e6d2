#include <algorithm>
#include <string>

#include "cuda/cuda_check.hpp"
#include "relu.cuh"

namespace dalr::kernels {

template <typename T>
__global__ void relu_kernel(T* __restrict__ x, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    x[i] = relu_keep_nan(x[i]);
  }
}

template <typename T>
void launch_relu(T* x, int64_t n, cudaStream_t stream) {
  if (n < 0) throw Error("relu: negative size " + std::to_string(n));
  if (n == 0) return;
  constexpr int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20);
  relu_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(x, n);
  DALR_CUDA_CHECK_LAUNCH();
}

template void launch_relu<float>(float*, int64_t, cudaStream_t);
template void launch_relu<double>(double*, int64_t, cudaStream_t);

}  // namespace dalr::kernels
