#pragma once
// The device twin of dalr::im2row (src/cpu/patches.cpp) over a batch of images: a tile
// of consecutive patch samples that may span several images, so that layers with few
// output positions (14 x 14 in VGG's last block) still fill a large SYRK.
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

// dalr::ConvGeometry's fields and output size, as the host computed them
// (cuda::im2row_geometry in src/cuda/gpu_patch_stats.hpp makes one).
struct Im2rowGeometry {
  int64_t channels, height, width, kernel_h, kernel_w, stride, pad, dilation;
  int64_t out_height, out_width;
};

// x: `images` feature maps on the device, one per column (channels * height * width
// values each, column-major, leading dimension ldx >= that), each C x H x W in C order.
// The batch's patch samples are numbered image * positions + position (image counted
// from x's first column; positions = out_height * out_width in row-major order). Writes
// samples s0 .. s0 + count - 1 into dst (n x count, column-major, leading dimension
// ldd >= n = channels * kernel_h * kernel_w): column q is what dalr::im2row writes for
// sample s0 + q, the same values bit for bit (zeros in the padding); rows n .. ldd - 1
// are left alone. Asynchronous on `stream`; throws dalr::Error on bad arguments; checks
// the launch.
template <typename T>
void launch_im2row(const Im2rowGeometry& g, const T* x, int64_t ldx, int64_t images, int64_t s0,
                   int64_t count, T* dst, int64_t ldd, cudaStream_t stream);

}  // namespace dalr::kernels
