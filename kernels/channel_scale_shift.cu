#include <algorithm>
#include <string>

#include "channel_scale_shift.cuh"
#include "cuda/cuda_check.hpp"
#include "fmt16.cuh"
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

// ---------------------------------------------------------------- 16-bit storage

using namespace check16;
namespace {

template <Fmt16 F>
__global__ void channel_scale_shift16_kernel(uint16_t* __restrict__ x, int64_t n, int64_t channels,
                                             int64_t hw, bool channels_last,
                                             const float* __restrict__ scale,
                                             const float* __restrict__ shift, bool relu) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t ch = channels_last ? i % channels : (i / hw) % channels;
    float v = widen<F>(x[i]);
    // Multiply, then add, each rounded (no FMA contraction), as the CPU twin computes.
    v = scale ? __fadd_rn(__fmul_rn(v, scale[ch]), shift[ch]) : v + shift[ch];
    // ReLU before rounding gives what rounding first would: rounding keeps the sign.
    if (relu) v = relu_keep_nan(v);
    x[i] = narrow<F>(v);
  }
}

}  // namespace

void launch_channel_scale_shift16(uint16_t* x, int64_t batch, int64_t channels, int64_t hw,
                                  bool channels_last, const float* scale, const float* shift,
                                  Fmt16 f, cudaStream_t stream, bool relu) {
  const char* what = "channel_scale_shift16";
  require_format(what, f);
  const int64_t n = bchw_count(what, batch, channels, hw);
  if (n == 0) return;
  require_pointer(what, "x", x);
  require_pointer(what, "shift", shift);  // scale may be null: 1
  auto* kernel = f == Fmt16::Fp16 ? channel_scale_shift16_kernel<Fmt16::Fp16>
                                  : channel_scale_shift16_kernel<Fmt16::Bf16>;
  kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, channels, hw, channels_last, scale, shift,
                                                 relu);
  DALR_CUDA_CHECK_LAUNCH();
}

}  // namespace dalr::kernels
