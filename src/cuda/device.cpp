#include "cuda/device.hpp"

#include <cuda_runtime.h>

#include "cuda/cuda_check.hpp"

namespace dalr::cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // e.g. cudaErrorNoDevice: clear it so later checks start clean
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop{};
  DALR_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

}  // namespace dalr::cuda
