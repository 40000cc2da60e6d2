#pragma once
// In place, per channel: x = x * scale[c] + shift[c] over `batch` blocks of C planes of
// hw elements each (NCHW). Serves inference batchnorm (scale and shift folded from the
// running statistics) and the bias of conv (hw = Ho * Wo) and linear (hw = 1, C = out)
// layers, with scale null meaning 1.
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

// All pointers are device pointers; scale may be null. With relu, the ReLU that follows
// is applied in the same pass (NaN stays NaN, as kernels/relu.cuh). Checks the launch.
template <typename T>
void launch_channel_scale_shift(T* x, int64_t batch, int64_t channels, int64_t hw, const T* scale,
                                const T* shift, cudaStream_t stream, bool relu = false);

}  // namespace dalr::kernels
