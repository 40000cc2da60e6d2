#pragma once
// In place, per channel: x = x * scale[c] + shift[c] over `batch` blocks of C planes of
// hw elements each (NCHW). Serves inference batchnorm (scale and shift folded from the
// running statistics) and the bias of conv (hw = Ho * Wo) and linear (hw = 1, C = out)
// layers, with scale null meaning 1.
#include <cuda_runtime.h>

#include <cstdint>

#include "fmt16.cuh"

namespace dalr::kernels {

// All pointers are device pointers; scale may be null. With relu, the ReLU that follows
// is applied in the same pass (NaN stays NaN, as kernels/relu.cuh). Checks the launch.
template <typename T>
void launch_channel_scale_shift(T* x, int64_t batch, int64_t channels, int64_t hw, const T* scale,
                                const T* shift, cudaStream_t stream, bool relu = false);

// 16-bit storage (see fmt16.cuh), in place, per channel: x = round(float(x) * scale[ch] +
// shift[ch]), or with scale null round(float(x) + shift[ch]); shift must not be null. scale
// and shift are float arrays of `channels` values. The data are `batch` blocks of channels
// x hw values: NCHW when channels_last is false (the channel of element i is (i / hw) %
// channels), NHWC when true (the channel is i % channels). Inference batchnorm and
// conv/linear biases; with relu, the ReLU that follows too (before the rounding, which
// keeps the sign: the same result as rounding first), in the same pass.
void launch_channel_scale_shift16(uint16_t* x, int64_t batch, int64_t channels, int64_t hw,
                                  bool channels_last, const float* scale, const float* shift,
                                  Fmt16 f, cudaStream_t stream, bool relu = false);

}  // namespace dalr::kernels
