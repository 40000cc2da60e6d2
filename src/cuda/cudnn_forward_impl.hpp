#pragma once
// CudnnForward<T>::Impl, shared by the files that implement it: cudnn_forward.cpp (weights,
// input stages, the public calls), cudnn_layers.cpp (convolution algorithm search and the
// conv, pooling and linear layers), cudnn_walk.cpp (the pass over the layers) and
// cudnn_ops.cpp (the pass's step for each layer type).
// See cudnn_forward.cpp for the design (buffers, stages, events, 16-bit storage).
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda/context.hpp"
#include "cuda/cudnn_desc.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/cudnn_forward.hpp"
#include "fmt16.cuh"
#include "io/half.hpp"

namespace dalr::cuda {
namespace fwd {

// Rounds host floats to 16-bit bit patterns (nearest, ties to even: CpuForward's rounding).
inline uint16_t to_bits16(float v, ActStorage s) {
  return s == ActStorage::Fp16 ? float_to_half(v) : float_to_bf16(v);
}

struct ConvPlan {
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  size_t workspace = 0;
};

template <typename T>
struct LayerState {
  // 16-bit storage: conv (O, k, k, C) (cuDNN's NHWC filter) / linear (out, in), rounded;
  // `weight` then stays empty for conv and linear layers.
  DeviceBuffer<uint16_t> weight16;
  DeviceBuffer<T> weight;  // conv (O, C, k, k) / linear (out, in) row-major; bn: scale
  DeviceBuffer<T> bias;    // empty when the layer has none; bn: shift
  int64_t bn_channels = 0;
  std::unique_ptr<FilterDesc> filter;
  std::unique_ptr<ConvDesc> conv;
  std::unique_ptr<PoolDesc> pool;
};

template <typename T>
void ensure_device(DeviceBuffer<T>& b, size_t n, const Context& ctx) {
  if (b.size() >= n) return;
  ctx.synchronize();  // work in flight may still read the old buffer
  b = DeviceBuffer<T>();
  b = DeviceBuffer<T>(n);
}

// One of the two input stages (see the top of cudnn_forward.cpp).
template <typename T>
struct InputStage {
  PinnedBuffer<T> host;
  DeviceBuffer<T> dev;
  // The host blocks on `uploaded` (yielding its core to the decoding threads).
  Event uploaded{cudaEventDisableTiming | cudaEventBlockingSync};
  Event consumed{cudaEventDisableTiming};
};

template <typename T>
void ensure_pinned(PinnedBuffer<T>& b, size_t n, const Context& ctx) {
  if (b.size() >= n) return;
  ctx.synchronize();
  b = PinnedBuffer<T>();
  b = PinnedBuffer<T>(n);
}

}  // namespace fwd

template <typename T>
struct CudnnForward<T>::Impl {
  // ctx: the context to run on (the backend's, or one of the forward's own).
  Impl(const Arch& a, std::shared_ptr<Context> c, ActStorage st)
      : arch(a),
        math(c->math()),  // read before `owner` takes c (declaration order)
        storage(st),
        owner(current(std::move(c))),
        ctx(*owner),
        cudnn(ctx.cudnn()) {}
  ~Impl() {
    // A pass queued by run_taps_device may still read the buffers freed below.
    DALR_CUDA_CHECK_NOTHROW(cudaSetDevice(ctx.device()));
    DALR_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(ctx.copy_stream()));
    DALR_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(ctx.stream()));
  }

  Arch arch;
  Math math;
  ActStorage storage;
  // The context is released after everything below (allocated on it). It may be shared
  // (the backend's): its streams then carry other work too (the statistics the taps
  // feed), ordered with this pass's by the stream and the events of the stages.
  std::shared_ptr<Context> owner;
  Context& ctx;
  cudnnHandle_t cudnn;           // ctx's, bound to its compute stream
  fwd::TensorDesc xdesc, ydesc;  // reset for every layer
  std::vector<fwd::LayerState<T>> layers;
  DeviceBuffer<T> act[2];
  fwd::InputStage<T> stages[2];  // created after ctx: its events belong to the device
  int next_stage = 0;
  PinnedBuffer<T> out_stage;
  DeviceBuffer<T> wide;  // 16-bit storage: a tap or the output widened to T (float)
  std::map<std::array<int64_t, 5>, fwd::ConvPlan> plans;  // (layer, batch, c, h, w)

  // Makes ctx's device current before the members below are created on it.
  static std::shared_ptr<Context> current(std::shared_ptr<Context> c) {
    c->make_current();
    return c;
  }
  // The cuBLAS math of the 16-bit GEMMs, set around them (the context's is its policy's):
  // tensor cores, accumulating in fp32 (CUBLAS_COMPUTE_32F); the pedantic mode the
  // context sets for Math::Exact would keep them off tensor cores. Split-K partial sums
  // stay fp32 too (else they may be added, and overflow, in the 16-bit output type).
  static cublasMath_t gemm16_math() {
    return static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                     CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  }
  bool s16() const { return storage != ActStorage::Fp32; }
  kernels::Fmt16 fmt() const {
    return storage == ActStorage::Fp16 ? kernels::Fmt16::Fp16 : kernels::Fmt16::Bf16;
  }
  // The activations' cuDNN type and layout (4-d tensors; after a flatten the block is
  // the column-major matrix either way).
  cudnnDataType_t act_type() const {
    if (!s16()) return fwd::cudnn_type<T>();
    return storage == ActStorage::Fp16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
  }
  cudnnTensorFormat_t act_format() const { return s16() ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW; }
  size_t act_bytes() const { return s16() ? sizeof(uint16_t) : sizeof(T); }

  // The state of one pass (walk), handed to each layer's step.
  struct Pass {
    int64_t batch;
    cudaStream_t stream;
    // The current activations, first the input stage; an out-of-place layer writes to
    // other(x) and moves x there.
    void* x;
    bool nhwc;  // 16-bit storage: whether x is channels-last (NHWC) rather than C order
    const std::vector<size_t>* taps;
    const Tap* tap;
    const DeviceTap* device_tap;
  };

  void load(const SafetensorsFile& weights);
  size_t index_of(const std::string& name) const;
  std::vector<size_t> tap_indices(const std::vector<std::string>& taps) const;
  // Exactly one of tap, device_tap and out is used (taps empty with out).
  void walk(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w, size_t stop,
            const std::vector<size_t>& taps, const Tap* tap, const DeviceTap* device_tap,
            Matrix<T>* out);
  // The pass's bookkeeping (cudnn_walk.cpp).
  std::vector<ActShape> pass_shapes(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                                    size_t stop, size_t* most) const;
  std::vector<char> fused_relus(size_t stop, const std::vector<size_t>& taps) const;
  void* other(const void* p);
  void round_input16(Pass& p, const ActShape& s0);
  const void* nchw_of(const Pass& p, const ActShape& s, void* dst);
  void to_nchw(Pass& p, const ActShape& s);
  const T* view(const Pass& p, const ActShape& s);
  void emit(const Pass& p, size_t i, const ActShape& s);
  // One step per layer type (cudnn_ops.cpp); relu: run the ReLU that follows in the bias
  // kernel.
  void run_conv(Pass& p, size_t i, const ActShape& s, const ActShape& o, bool relu);
  void run_pool(Pass& p, size_t i, const ActShape& s, const ActShape& o);
  void run_adaptive_pool(Pass& p, const ActShape& s, const ActShape& o);
  void run_linear(Pass& p, size_t i, const ActShape& s, bool relu);
  void run_relu(Pass& p, const ActShape& s);
  void run_batchnorm(Pass& p, size_t i, const ActShape& s);
  fwd::InputStage<T>& upload_input(const T* input, size_t count);
  void download(const T* src, int64_t count);  // into out_stage, then waits
  const fwd::ConvPlan& plan(size_t i, int64_t batch, const ActShape& s, const ActShape& o,
                            const void* x, void* y);
  // relu: the ReLU after the layer runs in the bias kernel (the layer has a bias).
  void conv(size_t i, int64_t batch, const ActShape& s, const ActShape& o, const void* x, void* y,
            bool relu);
  void pool(size_t i, int64_t batch, const ActShape& s, const ActShape& o, const void* x, void* y);
  void linear(size_t i, int64_t batch, const void* x, void* y, bool relu);
  // 16-bit storage: the kernels' float view of a layer's fp32 parameters (T is float).
  const float* f32(const DeviceBuffer<T>& b) const;
  // 16-bit storage: widens the n x batch block x (NCHW 16-bit) into `wide`.
  const T* widen(const void* x, int64_t count);
};

}  // namespace dalr::cuda
