#pragma once
// The forward pass of an Arch on the GPU: the twin of CpuForward<T> (src/cpu/forward.hpp),
// with the same inputs, outputs, errors and tap semantics. Convolutions (algorithms
// measured once per shape) and fixed-window pooling run through cuDNN, linear layers
// through cuBLAS, the rest in small kernels (a ReLU after a biased layer fused into its
// bias kernel); with 16-bit storage, pooling runs in a kernel too.
// Plain C++: no CUDA headers. Built only with CUDA (DALR_HAVE_CUDA).
//
// Precision: T = double runs in fp64 throughout (math is ignored). T = float with
// Math::Exact forbids TF32 in both cuDNN (CUDNN_FMA_MATH) and cuBLAS (pedantic math);
// Math::Tf32 lets both use TF32 tensor cores. T = float with ActStorage::Fp16 or Bf16
// (math is ignored) stores the activations and the conv and linear weights in that
// 16-bit format, channels-last (NHWC) from the input to the flatten, and runs the
// convolutions and linear layers on tensor cores with fp32 accumulation; biases and
// batchnorm stay fp32 (a biased layer rounds its product, then product + bias). Taps and
// outputs are widened to float, in the C order of the fp32 path. The CPU twin is
// CpuForward<float> with the same ActStorage.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/cuda.hpp"
#include "dalr/forward.hpp"
#include "dalr/matrix.hpp"

namespace dalr {
class SafetensorsFile;
}

namespace dalr::cuda {

template <typename T>  // float or double
class CudnnForward final : public Forward<T> {
 public:
  using Tap = typename Forward<T>::Tap;
  using DeviceTap = typename Forward<T>::DeviceTap;

  // Checks the weights against the arch (check_weights) and uploads them, converted to
  // T, once. The file may be closed afterwards. Throws dalr::Error if `device` does not
  // exist, or if `storage` is not Fp32 and T is not float.
  CudnnForward(const Arch& arch, const SafetensorsFile& weights, Math math = Math::Exact,
               int device = 0, ActStorage storage = ActStorage::Fp32);
  // The same on a shared context (the CUDA backend's: its device and math), which the
  // object keeps alive. The pass then runs on the context's streams and handles.
  CudnnForward(const Arch& arch, const SafetensorsFile& weights, std::shared_ptr<Context> ctx,
               ActStorage storage = ActStorage::Fp32);
  ~CudnnForward();
  CudnnForward(CudnnForward&&) noexcept;
  CudnnForward& operator=(CudnnForward&&) noexcept;
  CudnnForward(const CudnnForward&) = delete;
  CudnnForward& operator=(const CudnnForward&) = delete;

  const Arch& arch() const override;

  // As CpuForward<T>::run: `input` is a host batch of NCHW images; returns the input of
  // layer `stop_at_layer_input` (n x batch, column-major) or, with an empty name, the
  // network's output. Shapes are checked before any device work.
  // Not thread-safe: one object runs one pass at a time (it caches buffers and
  // algorithm choices per shape).
  Matrix<T> run(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                const std::string& stop_at_layer_input = "") const override;

  // As CpuForward<T>::run_taps: `tap` receives a HOST pointer to the n x batch input
  // of each named layer, valid during the call.
  void run_taps(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                const std::vector<std::string>& taps, const Tap& tap) const override;

  // As run_taps, but `tap` receives a DEVICE pointer and this object's compute stream
  // (its context's; Forward<T>::DeviceTap): the blocks never leave the GPU. `input` is copied into
  // one of two pinned stages before the call returns; the call does not wait for the GPU, only
  // (when the stage it refills is still being uploaded) for the upload of the pass before last.
  // Errors of the queued work surface at a later call that waits.
  bool supports_device_taps() const override { return true; }
  void run_taps_device(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                       const std::vector<std::string>& taps, const DeviceTap& tap) const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class CudnnForward<float>;
extern template class CudnnForward<double>;

}  // namespace dalr::cuda
