#include <math_constants.h>

#include <cstdint>
#include <string>

#include "cuda/cuda_check.hpp"
#include "fmt16.cuh"
#include "pool16.cuh"

namespace dalr::kernels {
using namespace check16;
namespace {

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
