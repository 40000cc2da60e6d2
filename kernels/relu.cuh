#pragma once
// In-place ReLU over n contiguous elements: the twin of CpuForward's relu, NaN stays
// NaN (as torch.relu), which cudnnActivationForward does not promise.
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

// x is a device pointer. Checks the launch.
template <typename T>
void launch_relu(T* x, int64_t n, cudaStream_t stream);

}  // namespace dalr::kernels
