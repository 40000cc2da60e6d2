#pragma once
// The GPU statistics' C, kept on the device by GpuStats::finish() and attached to the
// LayerStats it returns (LayerStats::DeviceCopy). cuda::solve and
// cuda::reconstruction_error on the same device read it instead of uploading C (2.5 GB
// at VGG19's fc6). Only the lower triangle is meaningful, as everywhere C is read.
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "cuda/device_buffer.hpp"
#include "dalr/stats.hpp"

namespace dalr::cuda {

template <typename T>
class DeviceGram final : public LayerStats<T>::DeviceCopy {
 public:
  DeviceGram(int device, int64_t n, DeviceBuffer<T> c) : device_(device), n_(n), c_(std::move(c)) {}
  ~DeviceGram() override {
    // Freed on its own device, leaving the caller's current device as it was.
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess) current = -1;
    if (current != device_) DALR_CUDA_CHECK_NOTHROW(cudaSetDevice(device_));
    c_ = DeviceBuffer<T>();
    if (current >= 0 && current != device_) DALR_CUDA_CHECK_NOTHROW(cudaSetDevice(current));
  }
  DeviceGram(const DeviceGram&) = delete;
  DeviceGram& operator=(const DeviceGram&) = delete;

  int device() const { return device_; }
  int64_t n() const { return n_; }
  const T* data() const { return c_.data(); }

 private:
  int device_;
  int64_t n_;
  DeviceBuffer<T> c_;
};

// st's C on `device` (n x n, leading dimension n), or null when st carries no device
// copy there.
template <typename T>
const T* device_gram(const LayerStats<T>& st, int device) {
  const auto* g = dynamic_cast<const DeviceGram<T>*>(st.device_copy());
  return g && g->device() == device && g->n() == st.n() ? g->data() : nullptr;
}

}  // namespace dalr::cuda
