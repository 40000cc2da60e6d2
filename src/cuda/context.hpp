#pragma once
// One context per GPU: owns the compute and copy streams, the cuBLAS and cuSOLVER
// handles (bound to the compute stream once), cuSOLVER's 64-bit API parameters, and a
// grow-only device workspace. No globals: each job makes its own.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>

#include "cuda/device_buffer.hpp"
#include "dalr/cuda.hpp"

namespace dalr::cuda {

class Context {
 public:
  explicit Context(int device = 0, Math math = Math::Exact);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return compute_.get(); }
  cudaStream_t copy_stream() const { return copy_.get(); }
  cublasHandle_t cublas() const { return cublas_; }
  cusolverDnHandle_t cusolver() const { return cusolver_; }
  cusolverDnParams_t cusolver_params() const { return params_; }

  // Device scratch of at least `bytes`, valid until the next call (grow-only; growing
  // synchronises the compute stream first, so work in flight never loses its buffer).
  void* workspace(size_t bytes);
  // A device int for cuSOLVER's info output.
  int* dev_info() { return info_.data(); }
  // Copies dev_info to the host (synchronising the compute stream); throws naming
  // `routine` when it is not zero, with `hint` for positive values.
  void check_info(const char* routine, const char* hint);

  void synchronize() const { compute_.synchronize(); }
  // Free and total device memory in bytes.
  static void memory(size_t* free_bytes, size_t* total_bytes);

 private:
  int device_;
  Stream compute_, copy_;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  cusolverDnParams_t params_ = nullptr;
  DeviceBuffer<unsigned char> work_;
  DeviceBuffer<int> info_;
};

// Throws "not enough GPU memory for WHAT: needs N bytes, F free of T" when the device
// has less than `bytes` free.
void require_device_memory(size_t bytes, const std::string& what);

}  // namespace dalr::cuda
