#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>

#include "cuda/cuda_check.hpp"
#include "relu.cuh"
#include "storage16.cuh"

namespace dalr::kernels {
namespace {

constexpr int kThreads = 256;

// ---------------------------------------------------------------- conversions

// Exact: fp16 through cvt.f32.f16; bf16 is the top half of a float.
template <Fmt16 F>
__device__ __forceinline__ float widen(uint16_t b) {
  if constexpr (F == Fmt16::Fp16) {
    return __half2float(__ushort_as_half(b));
  } else {
    return __uint_as_float(static_cast<uint32_t>(b) << 16);
  }
}

// cvt.rn: nearest, ties to even, overflow to inf, subnormal results kept (this code is
// not built with -ftz), as half.hpp rounds. NaN gives the canonical NaN.
template <Fmt16 F>
__device__ __forceinline__ uint16_t narrow(float v) {
  if constexpr (F == Fmt16::Fp16) {
    return __half_as_ushort(__float2half_rn(v));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
}

template <Fmt16 F>
__device__ __forceinline__ bool is_nan16(uint16_t b) {
  constexpr uint16_t kInf = F == Fmt16::Fp16 ? 0x7c00 : 0x7f80;
  return (b & 0x7fffu) > kInf;
}

// ---------------------------------------------------------------- kernels
// All are grid-stride loops over the n elements of the output (or of x, in place).

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

template <Fmt16 F>
__global__ void relu16_kernel(uint16_t* __restrict__ x, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const uint16_t b = x[i];
    if ((b & 0x8000u) && !is_nan16<F>(b)) x[i] = 0;  // only negatives and -0 change
  }
}

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

// The pooling windows: PyTorch's adaptive bins, or fixed k x k windows every `stride`
// (floor mode, no padding), averaged or maxed.
enum class Pool16 { Adaptive, Avg, Max };

// One thread per output. NCHW: consecutive threads take consecutive columns of a plane;
// NHWC: consecutive channels of a pixel, so the reads of a warp are contiguous.
template <Fmt16 F>
__global__ void pool16_kernel(const uint16_t* __restrict__ x, int64_t c, int64_t h, int64_t w,
                              bool channels_last, uint16_t* __restrict__ y, int64_t ho, int64_t wo,
                              int64_t n, Pool16 mode, int64_t k, int64_t stride_px) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const uint16_t* in;  // (iy, ix) of this output's plane is in[(iy * w + ix) * stride]
    int64_t ox, oy, stride;
    if (channels_last) {
      const int64_t ch = i % c, q = i / c;
      ox = q % wo;
      oy = (q / wo) % ho;
      in = x + q / (wo * ho) * h * w * c + ch;
      stride = c;
    } else {
      ox = i % wo;
      oy = (i / wo) % ho;
      in = x + i / (wo * ho) * h * w;
      stride = 1;
    }
    int64_t y0, y1, x0, x1;
    if (mode == Pool16::Adaptive) {
      y0 = oy * h / ho, y1 = ((oy + 1) * h + ho - 1) / ho;
      x0 = ox * w / wo, x1 = ((ox + 1) * w + wo - 1) / wo;
    } else {
      y0 = oy * stride_px, y1 = y0 + k;
      x0 = ox * stride_px, x1 = x0 + k;
    }
    if (mode == Pool16::Max) {
      // As the CPU twin: the first NaN of the window wins, else the largest value.
      float acc = -CUDART_INF_F;
      for (int64_t iy = y0; iy < y1; ++iy)
        for (int64_t ix = x0; ix < x1; ++ix) {
          const float v = widen<F>(in[(iy * w + ix) * stride]);
          if (v > acc || isnan(v)) acc = v;
        }
      y[i] = narrow<F>(acc);  // a value of the window: exact
    } else {
      float acc = 0.f;
      for (int64_t iy = y0; iy < y1; ++iy)
        for (int64_t ix = x0; ix < x1; ++ix) acc += widen<F>(in[(iy * w + ix) * stride]);
      y[i] = narrow<F>(acc / static_cast<float>((y1 - y0) * (x1 - x0)));
    }
  }
}

// ---------------------------------------------------------------- argument checks

[[noreturn]] void fail(const char* what, const std::string& why) {
  throw Error(std::string(what) + ": " + why);
}

void require_format(const char* what, Fmt16 f) {
  if (f != Fmt16::Fp16 && f != Fmt16::Bf16)
    fail(what, "unknown 16-bit format " + std::to_string(static_cast<int>(f)));
}

void require_size(const char* what, const char* name, int64_t v, int64_t min = 0) {
  if (v < min)
    fail(what,
         std::string(min == 0 ? "negative " : "non-positive ") + name + " " + std::to_string(v));
}

// Null pointers are refused only when there is work to do (an empty DeviceBuffer is null).
void require_pointer(const char* what, const char* name, const void* p) {
  if (!p) fail(what, std::string(name) + " is a null pointer");
}

// The product of non-negative sizes, refusing one that does not fit in int64_t.
int64_t element_count(const char* what, std::initializer_list<int64_t> sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) {
    if (s != 0 && n > std::numeric_limits<int64_t>::max() / s)
      fail(what, "element count overflows int64");
    n *= s;
  }
  return n;
}

// The elements of batch blocks of c channels of hw values, each size non-negative.
int64_t bchw_count(const char* what, int64_t batch, int64_t c, int64_t hw) {
  require_size(what, "batch", batch);
  require_size(what, "channels", c);
  require_size(what, "hw", hw);
  return element_count(what, {batch, c, hw});
}

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20));
}

}  // namespace

// ---------------------------------------------------------------- launchers

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

namespace {

void launch_pool16_mode(const char* what, const uint16_t* x, int64_t batch, int64_t c, int64_t h,
                        int64_t w, bool channels_last, uint16_t* y, int64_t ho, int64_t wo,
                        Pool16 mode, int64_t k, int64_t stride, Fmt16 f, cudaStream_t s) {
  require_format(what, f);
  require_size(what, "batch", batch);
  require_size(what, "channels", c);
  require_size(what, "input height", h, 1);
  require_size(what, "input width", w, 1);
  require_size(what, "output height", ho, 1);
  require_size(what, "output width", wo, 1);
  if (mode != Pool16::Adaptive) {
    require_size(what, "kernel", k, 1);
    require_size(what, "stride", stride, 1);
    if ((ho - 1) * stride + k > h || (wo - 1) * stride + k > w)
      fail(what, "the windows of a " + std::to_string(ho) + "x" + std::to_string(wo) +
                     " output (kernel " + std::to_string(k) + ", stride " + std::to_string(stride) +
                     ") do not fit a " + std::to_string(h) + "x" + std::to_string(w) + " input");
  }
  element_count(what, {batch, c, h, w});  // the input's offsets must fit too
  const int64_t n = element_count(what, {batch, c, ho, wo});
  if (n == 0) return;
  require_pointer(what, "x", x);
  require_pointer(what, "y", y);
  auto* kernel = f == Fmt16::Fp16 ? pool16_kernel<Fmt16::Fp16> : pool16_kernel<Fmt16::Bf16>;
  kernel<<<blocks_for(n), kThreads, 0, s>>>(x, c, h, w, channels_last, y, ho, wo, n, mode, k,
                                            stride);
  DALR_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_adaptive_avgpool16(const uint16_t* x, int64_t batch, int64_t c, int64_t h, int64_t w,
                               bool channels_last, uint16_t* y, int64_t ho, int64_t wo, Fmt16 f,
                               cudaStream_t stream) {
  launch_pool16_mode("adaptive_avgpool16", x, batch, c, h, w, channels_last, y, ho, wo,
                     Pool16::Adaptive, 0, 0, f, stream);
}

void launch_pool16(const uint16_t* x, int64_t batch, int64_t c, int64_t h, int64_t w,
                   bool channels_last, int64_t kernel, int64_t stride, bool is_max, uint16_t* y,
                   int64_t ho, int64_t wo, Fmt16 f, cudaStream_t stream) {
  launch_pool16_mode("pool16", x, batch, c, h, w, channels_last, y, ho, wo,
                     is_max ? Pool16::Max : Pool16::Avg, kernel, stride, f, stream);
}

}  // namespace dalr::kernels
