#pragma once
// The GPU statistics' C, kept on the device by GpuStats::finish() and attached to the
// LayerStats it returns (LayerStats::DeviceCopy). cuda::solve and
// cuda::reconstruction_error on the same device read it instead of uploading C (2.5 GB
// at VGG19's fc6). Only the lower triangle is meaningful, as everywhere C is read.
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "cuda/device_buffer.hpp"
#include "dalr/communicator.hpp"
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

  // The whole n x n buffer (the lower triangle is C's) into host memory.
  void download(T* host) const override {
    const DeviceScope on(device_);
    DALR_CUDA_CHECK(cudaMemcpy(host, c_.data(), c_.bytes(), cudaMemcpyDeviceToHost));
  }
  // The diagonal alone comes to the host: n values, one pitch apart.
  double trace() const override {
    const DeviceScope on(device_);
    std::vector<T> d(static_cast<size_t>(n_));
    DALR_CUDA_CHECK(cudaMemcpy2D(d.data(), sizeof(T), c_.data(),
                                 static_cast<size_t>(n_ + 1) * sizeof(T), sizeof(T),
                                 static_cast<size_t>(n_), cudaMemcpyDeviceToHost));
    double t = 0;
    for (T v : d) t += static_cast<double>(v);
    return t;
  }
  // In place on rank 0's device (the buffer is this copy's own; the statistics holding
  // it are rank 0's totals afterwards, the others' unspecified, as reduce_to_root says).
  bool sum_to_root(Communicator& comm) const override {
    return comm.sum_to_root_device(const_cast<T*>(c_.data()), n_ * n_, device_);
  }

 private:
  // Makes `device` current for a scope and restores the caller's device after.
  class DeviceScope {
   public:
    explicit DeviceScope(int device) {
      if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
      if (previous_ != device) DALR_CUDA_CHECK(cudaSetDevice(device));
    }
    ~DeviceScope() {
      int now = -1;
      if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_)
        DALR_CUDA_CHECK_NOTHROW(cudaSetDevice(previous_));
    }
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;

   private:
    int previous_ = -1;
  };

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
