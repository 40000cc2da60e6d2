#include <cstdint>

#include "cuda/cuda_check.hpp"
#include "fmt16.cuh"
#include "layout16.cuh"

namespace dalr::kernels {
using namespace check16;
namespace {

// All are grid-stride loops over the n elements of the output.

// One thread per output: the writes are coalesced, the reads stride by hw. The input is
// converted once per batch, so a tiled transpose would not pay for its code.
template <Fmt16 F>
__global__ void round_to_nhwc16_kernel(const float* __restrict__ x, int64_t c, int64_t hw,
                                       int64_t n, uint16_t* __restrict__ y) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t ch = i % c, q = i / c, p = q % hw, b = q / hw;
    y[i] = narrow<F>(x[(b * c + ch) * hw + p]);
  }
}

template <Fmt16 F>
__global__ void widen16_kernel(const uint16_t* __restrict__ x, int64_t n, float* __restrict__ y) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    y[i] = widen<F>(x[i]);
}

__global__ void nhwc_to_nchw16_kernel(const uint16_t* __restrict__ x, int64_t c, int64_t hw,
                                      int64_t n, uint16_t* __restrict__ y) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t p = i % hw, q = i / hw, ch = q % c, b = q / c;
    y[i] = x[(b * hw + p) * c + ch];
  }
}

}  // namespace

void launch_round_to_nhwc16(const float* x, int64_t batch, int64_t c, int64_t hw, uint16_t* y,
                            Fmt16 f, cudaStream_t stream) {
  const char* what = "round_to_nhwc16";
  require_format(what, f);
  const int64_t n = bchw_count(what, batch, c, hw);
  if (n == 0) return;
  require_pointer(what, "x", x);
  require_pointer(what, "y", y);
  auto* kernel =
      f == Fmt16::Fp16 ? round_to_nhwc16_kernel<Fmt16::Fp16> : round_to_nhwc16_kernel<Fmt16::Bf16>;
  kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, c, hw, n, y);
  DALR_CUDA_CHECK_LAUNCH();
}

void launch_widen16(const uint16_t* x, int64_t n, float* y, Fmt16 f, cudaStream_t stream) {
  const char* what = "widen16";
  require_format(what, f);
  require_size(what, "n", n);
  if (n == 0) return;
  require_pointer(what, "x", x);
  require_pointer(what, "y", y);
  auto* kernel = f == Fmt16::Fp16 ? widen16_kernel<Fmt16::Fp16> : widen16_kernel<Fmt16::Bf16>;
  kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, y);
  DALR_CUDA_CHECK_LAUNCH();
}

void launch_nhwc_to_nchw16(const uint16_t* x, int64_t batch, int64_t c, int64_t hw, uint16_t* y,
                           cudaStream_t stream) {
  const char* what = "nhwc_to_nchw16";
  const int64_t n = bchw_count(what, batch, c, hw);
  if (n == 0) return;
  require_pointer(what, "x", x);
  require_pointer(what, "y", y);
  nhwc_to_nchw16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, c, hw, n, y);
  DALR_CUDA_CHECK_LAUNCH();
}

}  // namespace dalr::kernels
