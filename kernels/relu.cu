#include <algorithm>
#include <string>

#include "cuda/cuda_check.hpp"
#include "fmt16.cuh"
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

// ---------------------------------------------------------------- 16-bit storage

using namespace check16;
namespace {

template <Fmt16 F>
__global__ void relu16_kernel(uint16_t* __restrict__ x, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const uint16_t b = x[i];
    if ((b & 0x8000u) && !is_nan16<F>(b)) x[i] = 0;  // only negatives and -0 change
  }
}

}  // namespace

void launch_relu16(uint16_t* x, int64_t n, Fmt16 f, cudaStream_t stream) {
  const char* what = "relu16";
  require_format(what, f);
  require_size(what, "n", n);
  if (n == 0) return;
  require_pointer(what, "x", x);
  auto* kernel = f == Fmt16::Fp16 ? relu16_kernel<Fmt16::Fp16> : relu16_kernel<Fmt16::Bf16>;
  kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n);
  DALR_CUDA_CHECK_LAUNCH();
}

}  // namespace dalr::kernels
