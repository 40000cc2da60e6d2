#include <algorithm>
#include <string>

#include "adaptive_pool.cuh"
#include "cuda/cuda_check.hpp"

namespace dalr::kernels {

// One thread per output element; consecutive threads take consecutive columns.
template <typename T>
__global__ void adaptive_avgpool_kernel(const T* __restrict__ x, int64_t planes, int64_t h,
                                        int64_t w, T* __restrict__ y, int64_t ho, int64_t wo) {
  const int64_t n = planes * ho * wo;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t ox = i % wo, oy = (i / wo) % ho, p = i / (wo * ho);
    const int64_t y0 = oy * h / ho, y1 = ((oy + 1) * h + ho - 1) / ho;
    const int64_t x0 = ox * w / wo, x1 = ((ox + 1) * w + wo - 1) / wo;
    const T* in = x + p * h * w;
    T acc = T(0);
    for (int64_t iy = y0; iy < y1; ++iy)
      for (int64_t ix = x0; ix < x1; ++ix) acc += in[iy * w + ix];
    y[i] = acc / T((y1 - y0) * (x1 - x0));
  }
}

template <typename T>
void launch_adaptive_avgpool(const T* x, int64_t planes, int64_t h, int64_t w, T* y, int64_t ho,
                             int64_t wo, cudaStream_t stream) {
  if (planes < 0 || h < 1 || w < 1 || ho < 1 || wo < 1)
    throw Error("adaptive_avgpool: bad shape planes=" + std::to_string(planes) + " in " +
                std::to_string(h) + "x" + std::to_string(w) + " out " + std::to_string(ho) + "x" +
                std::to_string(wo));
  const int64_t n = planes * ho * wo;
  if (n == 0) return;
  constexpr int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20);
  adaptive_avgpool_kernel<T>
      <<<static_cast<unsigned>(blocks), threads, 0, stream>>>(x, planes, h, w, y, ho, wo);
  DALR_CUDA_CHECK_LAUNCH();
}

template void launch_adaptive_avgpool<float>(const float*, int64_t, int64_t, int64_t, float*,
                                             int64_t, int64_t, cudaStream_t);
template void launch_adaptive_avgpool<double>(const double*, int64_t, int64_t, int64_t, double*,
                                              int64_t, int64_t, cudaStream_t);

}  // namespace dalr::kernels
