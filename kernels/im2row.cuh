#pragma once
// The device twin of dalr::im2row (src/cpu/patches.cpp) over a batch of images: a tile
// of consecutive patch samples that may span several images, so that layers with few
// output positions (14 x 14 in VGG's last block) still fill a large SYRK.
#include <cuda_runtime.h>

#include <cstdint>

#include "dalr/conv_geometry.hpp"

namespace dalr::kernels {

// x: `images` feature maps on the device, one per column (g.map_size() x images,
// column-major, leading dimension ldx >= map_size), each C x H x W in C order. The
// batch's patch samples are numbered image * positions + position (image counted from
// x's first column, positions in row-major order oy * out_width + ox). Writes samples
// s0 .. s0 + count - 1 into dst (n x count, column-major, leading dimension ldd >= n,
// n = g.patch_size()): column q is what im2row(g, x + image * ldx, position, 1,
// dst + q * ldd, ldd) writes for sample s0 + q = image * positions + position, the same
// values bit for bit (zeros in the padding); rows n .. ldd - 1 are left alone.
// Asynchronous on `stream`; throws dalr::Error on bad arguments; checks the launch.
template <typename T>
void launch_im2row(const ConvGeometry& g, const T* x, int64_t ldx, int64_t images, int64_t s0,
                   int64_t count, T* dst, int64_t ldd, cudaStream_t stream);

}  // namespace dalr::kernels
