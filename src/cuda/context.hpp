#pragma once
// One context per GPU: owns the compute and copy streams, the cuBLAS and cuSOLVER
// handles (bound to the compute stream once), cuSOLVER's 64-bit API parameters, a cuDNN
// handle (created on first use, bound to the compute stream), and a grow-only device
// workspace. No globals: the CUDA backend makes one and hands it to its statistics,
// forward passes, solves and errors; the free functions of dalr/cuda.hpp called without
// one make their own. Not thread-safe: one thread drives a context.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>
#include <string>

struct cudnnContext;  // cudnn.h's handle type (cudnnHandle_t): no cuDNN header here

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
  Math math() const { return math_; }
  // Makes this context's device current for the calling thread.
  void make_current() const;
  cudaStream_t stream() const { return compute_.get(); }
  cudaStream_t copy_stream() const { return copy_.get(); }
  cublasHandle_t cublas() const { return cublas_; }
  cusolverDnHandle_t cusolver() const { return cusolver_; }
  cusolverDnParams_t cusolver_params() const { return params_; }
  // The cuDNN handle (a cudnnHandle_t), created on the first call.
  cudnnContext* cudnn();

  // Device scratch of at least `bytes`, valid until the next call (grow-only; growing
  // synchronises the compute stream first, so work in flight never loses its buffer).
  void* workspace(size_t bytes);
  // Frees the workspace (synchronising the compute stream first): a solve gives back
  // what it grew, as its own context used to when it was destroyed.
  void release_workspace();
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
  Math math_;
  Stream compute_, copy_;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  cusolverDnParams_t params_ = nullptr;
  cudnnContext* cudnn_ = nullptr;
  DeviceBuffer<unsigned char> work_;
  DeviceBuffer<int> info_;
};

// The cuBLAS math mode of a precision policy: Exact is pedantic fp32 with no
// reduced-precision reductions (no TF32); Tf32 allows TF32 tensor-core math.
cublasMath_t cublas_math(Math math);

// Sets a cuBLAS handle's math mode for a scope and restores the previous one after: code
// that needs another mode than its context's sets it around its calls (the math mode is
// read when a call is queued, so queued work is unaffected).
class CublasMathScope {
 public:
  CublasMathScope(cublasHandle_t h, cublasMath_t mode);
  ~CublasMathScope();
  CublasMathScope(const CublasMathScope&) = delete;
  CublasMathScope& operator=(const CublasMathScope&) = delete;

 private:
  cublasHandle_t h_;
  cublasMath_t previous_;
};

// Throws "not enough GPU memory for WHAT: needs N bytes, F free of T" when the device
// has less than `bytes` free.
void require_device_memory(size_t bytes, const std::string& what);

// Throws "WHAT batch: not memory of CUDA device N (host batches go through add)" unless
// p points into device (or managed) memory of `device`: checked before a kernel reads a
// batch handed to add_device.
void require_on_device(const void* p, int device, const std::string& what);

}  // namespace dalr::cuda
