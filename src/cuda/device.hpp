#pragma once
// Which GPUs exist. Plain C++: callers need no CUDA headers.
#include <string>

namespace dalr::cuda {

// Number of usable CUDA devices; 0 when there is none, no driver, or the driver is too
// old for this runtime. Never throws, never aborts.
int device_count() noexcept;

// The device's marketing name (e.g. "NVIDIA H100 80GB HBM3"); throws dalr::Error.
std::string device_name(int device);

}  // namespace dalr::cuda
