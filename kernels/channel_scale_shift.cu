#include <algorithm>
#include <string>

#include "channel_scale_shift.cuh"
#include "cuda/cuda_check.hpp"
#include "relu.cuh"

namespace dalr::kernels {

// Multiply, then add, each rounded (no FMA contraction): what the CPU twin computes.
__device__ __forceinline__ float mul_rn(float a, float b) {
  return __fmul_rn(a, b);
}
__device__ __forceinline__ double mul_rn(double a, double b) {
  return __dmul_rn(a, b);
}
__device__ __forceinline__ float add_rn(float a, float b) {
  return __fadd_rn(a, b);
}
__device__ __forceinline__ double add_rn(double a, double b) {
  return __dadd_rn(a, b);
}

template <typename T>
__global__ void channel_scale_shift_kernel(T* __restrict__ x, int64_t n, int64_t channels,
                                           int64_t hw, const T* __restrict__ scale,
                                           const T* __restrict__ shift, bool relu) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t c = (i / hw) % channels;
    const T v = scale ? add_rn(mul_rn(x[i], scale[c]), shift[c]) : x[i] + shift[c];
    x[i] = relu ? relu_keep_nan(v) : v;
  }
}

template <typename T>
void launch_channel_scale_shift(T* x, int64_t batch, int64_t channels, int64_t hw, const T* scale,
                                const T* shift, cudaStream_t stream, bool relu) {
  if (batch < 0 || channels < 0 || hw < 0 || !shift)
    throw Error("channel_scale_shift: bad arguments batch=" + std::to_string(batch) +
                " channels=" + std::to_string(channels) + " hw=" + std::to_string(hw));
  const int64_t n = batch * channels * hw;
  if (n == 0) return;
  constexpr int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20);
  channel_scale_shift_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      x, n, channels, hw, scale, shift, relu);
  DALR_CUDA_CHECK_LAUNCH();
}

template void launch_channel_scale_shift<float>(float*, int64_t, int64_t, int64_t, const float*,
                                                const float*, cudaStream_t, bool);
template void launch_channel_scale_shift<double>(double*, int64_t, int64_t, int64_t, const double*,
                                                 const double*, cudaStream_t, bool);

}  // namespace dalr::kernels
