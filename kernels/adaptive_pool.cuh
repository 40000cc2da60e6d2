#pragma once
// Adaptive average pooling with PyTorch's bins: output (oy, ox) of each of `planes`
// (image, channel) planes averages rows [floor(oy*H/Ho), ceil((oy+1)*H/Ho)) and columns
// [floor(ox*W/Wo), ceil((ox+1)*W/Wo)) of the H x W input plane. The twin of
// CpuForward's adaptive pool: same window, same summation order, in T. (The 16-bit storage
// path's, launch_adaptive_avgpool16, is one mode of the 16-bit pooling kernel: pool16.cuh.)
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

// x: planes x H x W, y: planes x Ho x Wo (device, NCHW, not overlapping). Checks the launch.
template <typename T>
void launch_adaptive_avgpool(const T* x, int64_t planes, int64_t h, int64_t w, T* y, int64_t ho,
                             int64_t wo, cudaStream_t stream);

}  // namespace dalr::kernels
