// CudnnForward<T>: the GPU twin of CpuForward<T> (src/cpu/forward.cpp). One activation
// block per layer boundary lives on the device in NCHW order, which per sample is the
// C-order flattening, so after a flatten the block is already the column-major
// (features x batch) matrix that cuBLAS multiplies. Two grow-only buffers ping-pong
// between out-of-place layers; relu, batchnorm and biases work in place.
//
// The input batch goes host (pageable) -> pinned stage -> device on the copy stream,
// through two stages used in turn, each with two events:
//   uploaded_i  (copy stream)     the upload out of pinned stage i has finished, so the
//                                 host may refill it and the compute stream may read it;
//   consumed_i  (compute stream)  the pass that read device stage i has finished, so the
//                                 next upload may overwrite it.
// The host waits only on uploaded_i of the pass before last, so run_taps_device returns
// as soon as its pass is queued and batch k+1 is copied and uploaded while batch k runs.
// run and run_taps stay synchronous: they end by downloading and waiting.
//
// 16-bit storage (ActStorage::Fp16 / Bf16, T = float): the float input stage is rounded
// into NHWC 16-bit activations; convolutions run on NHWC 16-bit tensors (cuDNN,
// tensor-core math, fp32 compute), pooling, biases and batchnorm in kernels that compute
// in fp32 and round (storage16.cuh); at the first flatten, linear layer or tap the block is
// permuted to NCHW (C order per sample), linear layers run as 16-bit GEMMs with fp32
// accumulation (cublasGemmEx), and taps and outputs are widened into a float buffer.
#include "dalr/cudnn_forward.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "adaptive_pool.cuh"
#include "channel_scale_shift.cuh"
#include "cuda/context.hpp"
#include "cuda/cudnn_check.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "io/half.hpp"
#include "io/layer_params.hpp"
#include "relu.cuh"
#include "storage16.cuh"

namespace dalr::cuda {
namespace {

template <typename T>
constexpr cudnnDataType_t cudnn_type() {
  return std::is_same<T, double>::value ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
}

// Owner of a cuDNN handle or descriptor: created on construction, destroyed without
// throwing. S* is the opaque pointer type the C API hands out.
template <typename S, cudnnStatus_t (*Create)(S**), cudnnStatus_t (*Destroy)(S*)>
class CudnnObject {
 public:
  CudnnObject() { DALR_CUDNN_CHECK(Create(&p_)); }
  ~CudnnObject() {
    if (p_) DALR_CUDNN_CHECK_NOTHROW(Destroy(p_));
  }
  CudnnObject(const CudnnObject&) = delete;
  CudnnObject& operator=(const CudnnObject&) = delete;
  S* get() const { return p_; }

 private:
  S* p_ = nullptr;
};
using CudnnHandle = CudnnObject<cudnnContext, cudnnCreate, cudnnDestroy>;
using TensorDesc =
    CudnnObject<cudnnTensorStruct, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDesc =
    CudnnObject<cudnnFilterStruct, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDesc = CudnnObject<cudnnConvolutionStruct, cudnnCreateConvolutionDescriptor,
                             cudnnDestroyConvolutionDescriptor>;
using PoolDesc =
    CudnnObject<cudnnPoolingStruct, cudnnCreatePoolingDescriptor, cudnnDestroyPoolingDescriptor>;

// cuDNN's legacy descriptors and cuBLAS's classic API take int sizes.
int to_int(int64_t v, const std::string& what) {
  if (v < 0 || v > INT_MAX)
    throw Error(what + " = " + std::to_string(v) +
                " does not fit the GPU libraries' 32-bit sizes (try a smaller --batch)");
  return static_cast<int>(v);
}

void set_desc(const TensorDesc& d, cudnnTensorFormat_t format, cudnnDataType_t type, int64_t n,
              const ActShape& s) {
  DALR_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.get(), format, type, to_int(n, "batch"),
                                              to_int(s.c, "channels"), to_int(s.h, "height"),
                                              to_int(s.w, "width")));
}

// Rounds host floats to 16-bit bit patterns (nearest, ties to even: CpuForward's rounding).
uint16_t to_bits16(float v, ActStorage s) {
  return s == ActStorage::Fp16 ? float_to_half(v) : float_to_bf16(v);
}

void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
          const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
  const float one = 1.f, zero = 0.f;
  DALR_CUBLAS_CHECK(cublasSgemm(h, ta, tb, m, n, k, &one, a, lda, b, ldb, &zero, c, ldc));
}
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
          const double* a, int lda, const double* b, int ldb, double* c, int ldc) {
  const double one = 1.0, zero = 0.0;
  DALR_CUBLAS_CHECK(cublasDgemm(h, ta, tb, m, n, k, &one, a, lda, b, ldb, &zero, c, ldc));
}

// cuDNN 9 reports statuses as categories with sub-codes (NOT_SUPPORTED_SHAPE, ...).
bool in_category(cudnnStatus_t s, cudnnStatus_t category) {
#ifdef CUDNN_STATUS_CATEGORY
  return CUDNN_STATUS_CATEGORY(s) == category;
#else
  return s == category;
#endif
}
bool not_supported(cudnnStatus_t s) {
  return in_category(s, CUDNN_STATUS_NOT_SUPPORTED);
}

// The conv descriptor's math type is the precision policy for cuDNN. For float data,
// CUDNN_DEFAULT_MATH permits TF32 tensor cores on sm_80 and newer, CUDNN_FMA_MATH
// restricts cuDNN to FMA kernels (no TF32): Exact. Tf32 uses CUDNN_DEFAULT_MATH rather
// than CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which may also convert fp32 data down to
// fp16 (a narrower range than TF32). fp64 has no reduced mode to guard against.
template <typename T>
cudnnMathType_t conv_math(Math math) {
  if (std::is_same<T, float>::value && math == Math::Exact) return CUDNN_FMA_MATH;
  return CUDNN_DEFAULT_MATH;
}

// Second guard on the heuristic's suggestions: an algorithm whose own math type would
// need tensor-op math (or down-conversion) is skipped where the policy forbids it.
template <typename T>
bool math_allowed(cudnnMathType_t algo_math, Math math) {
  if (algo_math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
  if (std::is_same<T, float>::value && math == Math::Exact)
    return algo_math != CUDNN_TENSOR_OP_MATH;
  return true;
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

// Records `e` on `s` when the scope is left, by a return or by an exception.
class RecordOnExit {
 public:
  RecordOnExit(const Event& e, cudaStream_t s) : e_(e), s_(s) {}
  ~RecordOnExit() { DALR_CUDA_CHECK_NOTHROW(cudaEventRecord(e_.get(), s_)); }
  RecordOnExit(const RecordOnExit&) = delete;
  RecordOnExit& operator=(const RecordOnExit&) = delete;

 private:
  const Event& e_;
  cudaStream_t s_;
};

// One of the two input stages (see the top of the file).
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

}  // namespace

template <typename T>
struct CudnnForward<T>::Impl {
  Impl(const Arch& a, Math m, int device, ActStorage st)
      : arch(a), math(m), storage(st), ctx(device, m) {
    DALR_CUDNN_CHECK(cudnnSetStream(cudnn.get(), ctx.stream()));
    // 16-bit GEMMs on tensor cores, accumulating in fp32 (CUBLAS_COMPUTE_32F): the
    // pedantic mode the context sets for Math::Exact would keep them off tensor cores.
    // Split-K partial sums stay fp32 too (else they may be added, and overflow, in the
    // 16-bit output type).
    if (s16())
      DALR_CUBLAS_CHECK(cublasSetMathMode(
          ctx.cublas(),
          static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                    CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  }
  ~Impl() {
    // A pass queued by run_taps_device may still read the buffers freed below.
    DALR_CUDA_CHECK_NOTHROW(cudaSetDevice(ctx.device()));
    DALR_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(ctx.copy_stream()));
    DALR_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(ctx.stream()));
  }

  Arch arch;
  Math math;
  ActStorage storage;
  Context ctx;  // makes the device current first: the handle below is created on it
  CudnnHandle cudnn;
  TensorDesc xdesc, ydesc;  // reset for every layer
  std::vector<LayerState<T>> layers;
  DeviceBuffer<T> act[2];
  InputStage<T> stages[2];  // created after ctx: its events belong to the device
  int next_stage = 0;
  PinnedBuffer<T> out_stage;
  DeviceBuffer<T> wide;  // 16-bit storage: a tap or the output widened to T (float)
  std::map<std::array<int64_t, 5>, ConvPlan> plans;  // (layer, batch, c, h, w)

  bool s16() const { return storage != ActStorage::Fp32; }
  kernels::Fmt16 fmt() const {
    return storage == ActStorage::Fp16 ? kernels::Fmt16::Fp16 : kernels::Fmt16::Bf16;
  }
  // The activations' cuDNN type and layout (4-d tensors; after a flatten the block is
  // the column-major matrix either way).
  cudnnDataType_t act_type() const {
    if (!s16()) return cudnn_type<T>();
    return storage == ActStorage::Fp16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
  }
  cudnnTensorFormat_t act_format() const { return s16() ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW; }
  size_t act_bytes() const { return s16() ? sizeof(uint16_t) : sizeof(T); }

  void load(const SafetensorsFile& weights);
  size_t index_of(const std::string& name) const;
  std::vector<size_t> tap_indices(const std::vector<std::string>& taps) const;
  // Exactly one of tap, device_tap and out is used (taps empty with out).
  void walk(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w, size_t stop,
            const std::vector<size_t>& taps, const Tap* tap, const DeviceTap* device_tap,
            Matrix<T>* out);
  InputStage<T>& upload_input(const T* input, size_t count);
  void download(const T* src, int64_t count);  // into out_stage, then waits
  const ConvPlan& plan(size_t i, int64_t batch, const ActShape& s, const ActShape& o, const void* x,
                       void* y);
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

template <typename T>
const float* CudnnForward<T>::Impl::f32(const DeviceBuffer<T>& b) const {
  if constexpr (std::is_same<T, float>::value) {
    return b.empty() ? nullptr : b.data();
  } else {
    (void)b;
    throw Error("internal: 16-bit storage with a double forward pass");
  }
}

template <typename T>
const T* CudnnForward<T>::Impl::widen(const void* x, int64_t count) {
  ensure_device(wide, static_cast<size_t>(count), ctx);
  if constexpr (std::is_same<T, float>::value) {
    kernels::launch_widen16(static_cast<const uint16_t*>(x), count, wide.data(), fmt(),
                            ctx.stream());
  } else {
    throw Error("internal: 16-bit storage with a double forward pass");
  }
  return wide.data();
}

template <typename T>
void CudnnForward<T>::Impl::load(const SafetensorsFile& weights) {
  const cudaStream_t stream = ctx.stream();
  layers.resize(arch.layers.size());
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    const LayerSpec& l = arch.layers[i];
    LayerState<T>& st = layers[i];
    std::vector<T> wv, bv;
    load_layer_params(l, weights, &wv, &bv);
    if (l.type == LayerType::BatchNorm) st.bn_channels = static_cast<int64_t>(wv.size());
    std::vector<uint16_t> w16;
    if (s16() && (l.type == LayerType::Conv || l.type == LayerType::Linear)) {
      // Rounded as CpuForward rounds them; conv filters reordered to (O, k, k, C).
      w16.resize(wv.size());
      if (l.type == LayerType::Conv) {
        const int64_t cin = l.in, kk = l.kernel * l.kernel;
        for (int64_t o = 0; o < l.out; ++o)
          for (int64_t c = 0; c < cin; ++c)
            for (int64_t r = 0; r < kk; ++r)
              w16[static_cast<size_t>((o * kk + r) * cin + c)] = to_bits16(
                  static_cast<float>(wv[static_cast<size_t>((o * cin + c) * kk + r)]), storage);
      } else {
        for (size_t j = 0; j < wv.size(); ++j)
          w16[j] = to_bits16(static_cast<float>(wv[j]), storage);
      }
      st.weight16 = DeviceBuffer<uint16_t>(w16.size());
      st.weight16.upload(w16.data(), w16.size(), stream);
    } else if (!wv.empty()) {
      st.weight = DeviceBuffer<T>(wv.size());
      st.weight.upload(wv.data(), wv.size(), stream);
    }
    if (!bv.empty()) {
      st.bias = DeviceBuffer<T>(bv.size());
      st.bias.upload(bv.data(), bv.size(), stream);
    }
    ctx.synchronize();  // the host vectors die at the end of this iteration

    if (l.type == LayerType::Conv) {
      const int k = to_int(l.kernel, "kernel"), s = to_int(l.stride, "stride");
      const int p = to_int(l.pad, "pad");
      st.filter = std::make_unique<FilterDesc>();
      DALR_CUDNN_CHECK(cudnnSetFilter4dDescriptor(st.filter->get(), act_type(), act_format(),
                                                  to_int(l.out, "out"), to_int(l.in, "in"), k, k));
      st.conv = std::make_unique<ConvDesc>();
      // 16-bit data computes in fp32 (cuDNN's PSEUDO_HALF / PSEUDO_BFLOAT16 configs).
      DALR_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(st.conv->get(), p, p, s, s, 1, 1,
                                                       CUDNN_CROSS_CORRELATION, cudnn_type<T>()));
      DALR_CUDNN_CHECK(cudnnSetConvolutionMathType(
          st.conv->get(), s16() ? CUDNN_TENSOR_OP_MATH : conv_math<T>(math)));
    } else if (l.type == LayerType::MaxPool || l.type == LayerType::AvgPool) {
      const int k = to_int(l.kernel, "kernel"), s = to_int(l.stride, "stride");
      st.pool = std::make_unique<PoolDesc>();
      // Floor mode without padding, as PyTorch; a max over a window with a NaN is NaN.
      DALR_CUDNN_CHECK(cudnnSetPooling2dDescriptor(
          st.pool->get(),
          l.type == LayerType::MaxPool ? CUDNN_POOLING_MAX
                                       : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING,
          CUDNN_PROPAGATE_NAN, k, k, 0, 0, s, s));
    }
  }
}

template <typename T>
size_t CudnnForward<T>::Impl::index_of(const std::string& name) const {
  std::string names;  // the message CpuForward gives
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    if (arch.layers[i].name == name) return i;
    if (!arch.layers[i].name.empty()) names += (names.empty() ? "" : ", ") + arch.layers[i].name;
  }
  throw Error("no layer named '" + name + "' (named layers: " + names + ")");
}

template <typename T>
std::vector<size_t> CudnnForward<T>::Impl::tap_indices(const std::vector<std::string>& taps) const {
  std::vector<size_t> at;
  for (const std::string& name : taps) at.push_back(index_of(name));
  return at;
}

// Copies the host batch into the next stage's pinned buffer and queues its upload on the
// copy stream; the compute stream waits for the upload.
template <typename T>
InputStage<T>& CudnnForward<T>::Impl::upload_input(const T* input, size_t count) {
  InputStage<T>& st = stages[next_stage];
  next_stage ^= 1;
  if (st.host.size() < count) {  // grow: nothing queued may still use the old buffers
    DALR_CUDA_CHECK(cudaStreamSynchronize(ctx.copy_stream()));
    ctx.synchronize();
    st.host = PinnedBuffer<T>();
    st.dev = DeviceBuffer<T>();
    st.host = PinnedBuffer<T>(count);
    st.dev = DeviceBuffer<T>(count);
  }
  st.uploaded.synchronize();  // the upload that last read st.host (two passes ago) is done
  std::memcpy(st.host.data(), input, count * sizeof(T));
  const cudaStream_t copy = ctx.copy_stream();
  DALR_CUDA_CHECK(cudaStreamWaitEvent(copy, st.consumed.get(), 0));  // and its pass too
  st.dev.upload(st.host.data(), count, copy);
  st.uploaded.record(copy);
  DALR_CUDA_CHECK(cudaStreamWaitEvent(ctx.stream(), st.uploaded.get(), 0));
  return st;
}

template <typename T>
void CudnnForward<T>::Impl::download(const T* src, int64_t count) {
  ensure_pinned(out_stage, static_cast<size_t>(count), ctx);
  if (count > 0)
    DALR_CUDA_CHECK(cudaMemcpyAsync(out_stage.data(), src, static_cast<size_t>(count) * sizeof(T),
                                    cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.synchronize();
}

// The algorithm for layer i at this input shape, chosen once:
//  1. the fastest that cudnnFindConvolutionForwardAlgorithmEx measures on the pass's own
//     buffers (it runs each candidate; y is rewritten by the convolution right after)
//     that the precision policy allows and whose workspace fits the budget below, as
//     PyTorch's cudnn.benchmark does;
//  2. else the first of cuDNN's heuristic ranking that the policy allows, that this
//     descriptor supports (its workspace query succeeds) and whose workspace fits;
//  3. else IMPLICIT_GEMM (no workspace, supports every shape).
// The measured choice can differ from run to run when two algorithms time alike, so
// results are reproducible to rounding, not to the bit, across processes.
template <typename T>
const ConvPlan& CudnnForward<T>::Impl::plan(size_t i, int64_t batch, const ActShape& s,
                                            const ActShape& o, const void* x, void* y) {
  const std::array<int64_t, 5> key{static_cast<int64_t>(i), batch, s.c, s.h, s.w};
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;

  const LayerState<T>& st = layers[i];
  int dims[4] = {0, 0, 0, 0};
  DALR_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(
      st.conv->get(), xdesc.get(), st.filter->get(), &dims[0], &dims[1], &dims[2], &dims[3]));
  if (dims[0] != batch || dims[1] != o.c || dims[2] != o.h || dims[3] != o.w)
    throw Error("internal: cuDNN's output shape for " + layer_label(arch, i) + " is " +
                std::to_string(dims[1]) + "x" + std::to_string(dims[2]) + "x" +
                std::to_string(dims[3]) + ", the arch's " + std::to_string(o.c) + "x" +
                std::to_string(o.h) + "x" + std::to_string(o.w));

  int max_algos = 0;
  DALR_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(cudnn.get(), &max_algos));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(max_algos, 1)));
  int found = 0;
  DALR_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
      cudnn.get(), xdesc.get(), st.filter->get(), st.conv->get(), ydesc.get(),
      static_cast<int>(perf.size()), &found, perf.data()));

  size_t free_b = 0, total_b = 0;
  Context::memory(&free_b, &total_b);
  ConvPlan chosen;
  bool have = false;
  auto allowed = [&](cudnnMathType_t t) {
    return s16() ? t != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION : math_allowed<T>(t, math);
  };

  // 1. Measured, with a workspace of its own (at most an eighth of the free memory and
  // 512 MiB, freed after: the pass keeps only what the chosen algorithm needs).
  {
    size_t budget = std::min<size_t>(free_b / 8, size_t(512) << 20);
    DeviceBuffer<unsigned char> find_ws;
    try {
      ctx.synchronize();  // the pass's queued work may still use memory freed below
      find_ws = DeviceBuffer<unsigned char>(budget);
    } catch (const Error&) {
      budget = 0;  // no room to measure: the candidates that need no workspace
    }
    const void* wd = s16() ? static_cast<const void*>(st.weight16.data()) : st.weight.data();
    std::vector<cudnnConvolutionFwdAlgoPerf_t> timed(perf.size());
    int returned = 0;
    const cudnnStatus_t status = cudnnFindConvolutionForwardAlgorithmEx(
        cudnn.get(), xdesc.get(), x, st.filter->get(), wd, st.conv->get(), ydesc.get(), y,
        static_cast<int>(timed.size()), &returned, timed.data(), budget ? find_ws.data() : nullptr,
        budget);
    if (status == CUDNN_STATUS_SUCCESS) {
      for (int a = 0; a < returned && !have; ++a)  // fastest first
        if (timed[a].status == CUDNN_STATUS_SUCCESS && allowed(timed[a].mathType) &&
            timed[a].memory <= budget) {
          chosen.algo = timed[a].algo;
          chosen.workspace = timed[a].memory;
          have = true;
        }
    } else if (not_supported(status) || status == CUDNN_STATUS_ALLOC_FAILED ||
               in_category(status, CUDNN_STATUS_BAD_PARAM)) {
      (void)cudaGetLastError();  // a refused candidate's launch error must not linger
    } else {
      DALR_CUDNN_CHECK(status);  // an execution failure: say so here, not later
    }
  }
  auto try_algo = [&](cudnnConvolutionFwdAlgo_t algo) {
    size_t bytes = 0;
    if (cudnnGetConvolutionForwardWorkspaceSize(cudnn.get(), xdesc.get(), st.filter->get(),
                                                st.conv->get(), ydesc.get(), algo,
                                                &bytes) != CUDNN_STATUS_SUCCESS)
      return false;
    if (bytes > free_b / 2) return false;
    chosen.algo = algo;
    chosen.workspace = bytes;
    return true;
  };
  // 2. The heuristic's ranking.
  for (int a = 0; a < found && !have; ++a)
    if (perf[a].status == CUDNN_STATUS_SUCCESS && allowed(perf[a].mathType))
      have = try_algo(perf[a].algo);
  if (!have) have = try_algo(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
  if (!have)
    throw Error("cuDNN has no usable convolution algorithm for " + layer_label(arch, i) +
                " at batch " + std::to_string(batch) + " (input " + std::to_string(s.c) + "x" +
                std::to_string(s.h) + "x" + std::to_string(s.w) + ")");
  return plans.emplace(key, chosen).first->second;
}

template <typename T>
void CudnnForward<T>::Impl::conv(size_t i, int64_t batch, const ActShape& s, const ActShape& o,
                                 const void* x, void* y, bool relu) {
  set_desc(xdesc, act_format(), act_type(), batch, s);
  set_desc(ydesc, act_format(), act_type(), batch, o);
  const ConvPlan& p = plan(i, batch, s, o, x, y);
  void* ws = p.workspace ? ctx.workspace(p.workspace) : nullptr;
  // float scalars for float and 16-bit data, double for double
  const T one = 1, zero = 0;
  const LayerState<T>& st = layers[i];
  const void* wd = s16() ? static_cast<const void*>(st.weight16.data()) : st.weight.data();
  cudnnStatus_t status =
      cudnnConvolutionForward(cudnn.get(), &one, xdesc.get(), x, st.filter->get(), wd,
                              st.conv->get(), p.algo, ws, p.workspace, &zero, ydesc.get(), y);
  if (not_supported(status) && p.algo != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM) {
    // A refused launch may leave a runtime error behind that a later launch check
    // would report: clear it before trying again.
    (void)cudaGetLastError();
    // The heuristic's choice passed the workspace query but not the call (seen with
    // channels-last 16-bit tensors of few channels): IMPLICIT_GEMM, which supports every
    // shape and needs no workspace, from now on for this shape.
    ConvPlan& fallback =
        plans[std::array<int64_t, 5>{static_cast<int64_t>(i), batch, s.c, s.h, s.w}];
    fallback = ConvPlan{};
    status =
        cudnnConvolutionForward(cudnn.get(), &one, xdesc.get(), x, st.filter->get(), wd,
                                st.conv->get(), fallback.algo, nullptr, 0, &zero, ydesc.get(), y);
  }
  DALR_CUDNN_CHECK(status);
  if (st.bias.empty()) return;
  if (s16())
    kernels::launch_channel_scale_shift16(static_cast<uint16_t*>(y), batch, o.c, o.h * o.w,
                                          /*channels_last=*/true, nullptr, f32(st.bias), fmt(),
                                          ctx.stream(), relu);
  else
    kernels::launch_channel_scale_shift<T>(static_cast<T*>(y), batch, o.c, o.h * o.w, nullptr,
                                           st.bias.data(), ctx.stream(), relu);
}

template <typename T>
void CudnnForward<T>::Impl::pool(size_t i, int64_t batch, const ActShape& s, const ActShape& o,
                                 const void* x, void* y) {
  const LayerState<T>& st = layers[i];
  if (s16()) {  // the CPU's windows and NaN rule, in a kernel (see storage16.cuh)
    const LayerSpec& l = arch.layers[i];
    kernels::launch_pool16(static_cast<const uint16_t*>(x), batch, s.c, s.h, s.w,
                           /*channels_last=*/true, l.kernel, l.stride, l.type == LayerType::MaxPool,
                           static_cast<uint16_t*>(y), o.h, o.w, fmt(), ctx.stream());
    return;
  }
  set_desc(xdesc, act_format(), act_type(), batch, s);
  set_desc(ydesc, act_format(), act_type(), batch, o);
  int dims[4] = {0, 0, 0, 0};
  DALR_CUDNN_CHECK(cudnnGetPooling2dForwardOutputDim(st.pool->get(), xdesc.get(), &dims[0],
                                                     &dims[1], &dims[2], &dims[3]));
  if (dims[0] != batch || dims[1] != o.c || dims[2] != o.h || dims[3] != o.w)
    throw Error("internal: cuDNN's output shape for " + layer_label(arch, i) +
                " differs from the arch's");
  const T one = 1, zero = 0;
  DALR_CUDNN_CHECK(cudnnPoolingForward(cudnn.get(), st.pool->get(), &one, xdesc.get(), x, &zero,
                                       ydesc.get(), y));
}

template <typename T>
void CudnnForward<T>::Impl::linear(size_t i, int64_t batch, const void* x, void* y, bool relu) {
  // Y (out x batch) = W X; the row-major (out, in) weight is the column-major in x out W^T.
  const LayerSpec& l = arch.layers[i];
  const int out = to_int(l.out, "out"), in = to_int(l.in, "in"), cols = to_int(batch, "batch");
  const LayerState<T>& st = layers[i];
  if (s16()) {
    const cudaDataType_t t = storage == ActStorage::Fp16 ? CUDA_R_16F : CUDA_R_16BF;
    const float one = 1.f, zero = 0.f;
    DALR_CUBLAS_CHECK(cublasGemmEx(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, out, cols, in, &one,
                                   st.weight16.data(), t, in, x, t, in, &zero, y, t, out,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (!st.bias.empty())
      kernels::launch_channel_scale_shift16(static_cast<uint16_t*>(y), batch, l.out, 1, false,
                                            nullptr, f32(st.bias), fmt(), ctx.stream(), relu);
    return;
  }
  gemm(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, out, cols, in, st.weight.data(), in,
       static_cast<const T*>(x), in, static_cast<T*>(y), out);
  if (!st.bias.empty())
    kernels::launch_channel_scale_shift<T>(static_cast<T*>(y), batch, l.out, 1, nullptr,
                                           st.bias.data(), ctx.stream(), relu);
}

// Long (about 150 lines) because its steps share the pass's state (the current buffer,
// its layout, the staging): the checks, the buffers, then one case per layer type.
template <typename T>
void CudnnForward<T>::Impl::walk(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                                 size_t stop, const std::vector<size_t>& taps, const Tap* tap,
                                 const DeviceTap* device_tap, Matrix<T>* out) {
  // Every check CpuForward makes, before any device work.
  if (batch < 1) throw Error("batch size must be >= 1, got " + std::to_string(batch));
  if (!input) throw Error("CudnnForward::run: input is null");
  const std::vector<ActShape> shapes = layer_input_shapes(arch, c, h, w);
  size_t most = 0;
  for (size_t i = 0; i <= stop; ++i) {
    const int64_t count = batch * shapes[i].numel();
    to_int(count, "elements of the activations entering " +
                      (i < arch.layers.size() ? layer_label(arch, i) : std::string("the output")));
    most = std::max(most, static_cast<size_t>(count));
    if (i < stop && arch.layers[i].type == LayerType::BatchNorm &&
        layers[i].bn_channels != shapes[i].c)
      throw Error(layer_label(arch, i) + " has " + std::to_string(layers[i].bn_channels) +
                  " channels, but its input has " + std::to_string(shapes[i].c));
  }

  // Work queued on the compute stream by an earlier pass (perhaps a failed one) is
  // ordered before this one; only growing a buffer waits for it.
  DALR_CUDA_CHECK(cudaSetDevice(ctx.device()));
  const cudaStream_t stream = ctx.stream();
  const size_t act_elems = (most * act_bytes() + sizeof(T) - 1) / sizeof(T);
  ensure_device(act[0], act_elems, ctx);
  ensure_device(act[1], act_elems, ctx);
  InputStage<T>& in = upload_input(input, static_cast<size_t>(batch * shapes[0].numel()));
  // However the pass ends (a tap may throw), the next upload into this stage waits for
  // everything it queued.
  const RecordOnExit release(in.consumed, stream);

  // x: the current activations, first the input stage; an out-of-place layer writes to
  // whichever of act[0], act[1] does not hold its input.
  void* x = in.dev.data();
  auto other = [&](const void* p) -> void* {
    return p == act[0].data() ? static_cast<void*>(act[1].data())
                              : static_cast<void*>(act[0].data());
  };
  // 16-bit storage: whether x is channels-last (NHWC) rather than C order per sample.
  bool nhwc = false;
  if constexpr (std::is_same<T, float>::value) {
    if (s16()) {
      void* y = other(x);
      kernels::launch_round_to_nhwc16(static_cast<const float*>(x), batch, shapes[0].c,
                                      shapes[0].h * shapes[0].w, static_cast<uint16_t*>(y), fmt(),
                                      stream);
      x = y;
      nhwc = true;
    }
  }
  // Permutes an NHWC block of shape s into `dst` (NCHW); a 1 x 1 image is both.
  auto nchw_of = [&](const ActShape& s, void* dst) -> const void* {
    if (!nhwc || s.h * s.w == 1) return x;
    kernels::launch_nhwc_to_nchw16(static_cast<const uint16_t*>(x), batch, s.c, s.h * s.w,
                                   static_cast<uint16_t*>(dst), stream);
    return dst;
  };
  auto to_nchw = [&](const ActShape& s) {
    if (!nhwc) return;
    x = const_cast<void*>(nchw_of(s, other(x)));
    nhwc = false;
  };
  // The block a tap or the output sees: x itself, or widened from 16 bits (through the
  // free activation buffer when it must be permuted first).
  auto view = [&](size_t i) -> const T* {
    if (!s16()) return static_cast<const T*>(x);
    return widen(nchw_of(shapes[i], other(x)), batch * shapes[i].numel());
  };
  auto emit = [&](size_t i) {
    if (std::find(taps.begin(), taps.end(), i) == taps.end()) return;
    const int64_t n = shapes[i].numel();
    if (device_tap) {
      (*device_tap)(arch.layers[i].name, view(i), n, batch, static_cast<void*>(stream));
    } else if (tap) {
      download(view(i), n * batch);
      (*tap)(arch.layers[i].name, out_stage.data(), n, batch);
    }
  };
  // A ReLU right after a conv or linear layer with a bias runs in its bias kernel (one
  // pass over the activations instead of two), unless its input is tapped. fused[i]:
  // layer i runs inside layer i - 1; decided here, so the loop visits every index once.
  std::vector<char> fused(stop + 1, 0);
  for (size_t i = 0; i + 1 < stop; ++i) {
    const LayerType t = arch.layers[i].type;
    fused[i + 1] = (t == LayerType::Conv || t == LayerType::Linear) && !layers[i].bias.empty() &&
                   arch.layers[i + 1].type == LayerType::Relu &&
                   std::find(taps.begin(), taps.end(), i + 1) == taps.end();
  }
  for (size_t i = 0; i < stop; ++i) {
    if (fused[i]) continue;  // the ReLU ran in the layer before (shapes[i + 1] == shapes[i])
    emit(i);
    const LayerSpec& l = arch.layers[i];
    const ActShape &s = shapes[i], &o = shapes[i + 1];
    void* y = other(x);
    switch (l.type) {
      case LayerType::Conv: {
        if (s16() && !nhwc) throw Error(layer_label(arch, i) + ": a convolution after a flatten");
        conv(i, batch, s, o, x, y, fused[i + 1] != 0);
        x = y;
        break;
      }
      case LayerType::MaxPool:
      case LayerType::AvgPool:
        if (s16() && !nhwc) throw Error(layer_label(arch, i) + ": pooling after a flatten");
        pool(i, batch, s, o, x, y);
        x = y;
        break;
      case LayerType::AdaptiveAvgPool:
        if (s16())
          kernels::launch_adaptive_avgpool16(static_cast<const uint16_t*>(x), batch, s.c, s.h, s.w,
                                             nhwc, static_cast<uint16_t*>(y), o.h, o.w, fmt(),
                                             stream);
        else
          kernels::launch_adaptive_avgpool<T>(static_cast<const T*>(x), batch * s.c, s.h, s.w,
                                              static_cast<T*>(y), o.h, o.w, stream);
        x = y;
        break;
      case LayerType::Linear: {
        to_nchw(s);
        linear(i, batch, x, other(x), fused[i + 1] != 0);
        x = other(x);
        break;
      }
      case LayerType::Relu:
        if (s16())
          kernels::launch_relu16(static_cast<uint16_t*>(x), batch * s.numel(), fmt(), stream);
        else
          kernels::launch_relu<T>(static_cast<T*>(x), batch * s.numel(), stream);
        break;
      case LayerType::BatchNorm:
        if (s16())
          kernels::launch_channel_scale_shift16(static_cast<uint16_t*>(x), batch, s.c, s.h * s.w,
                                                nhwc, f32(layers[i].weight), f32(layers[i].bias),
                                                fmt(), stream);
        else
          kernels::launch_channel_scale_shift<T>(static_cast<T*>(x), batch, s.c, s.h * s.w,
                                                 layers[i].weight.data(), layers[i].bias.data(),
                                                 stream);
        break;
      case LayerType::Flatten:  // NCHW is already C-order per sample
        to_nchw(s);
        break;
      case LayerType::Dropout:  // identity at inference
        break;
    }
  }
  emit(stop);
  if (out) {
    const int64_t n = shapes[stop].numel();
    download(view(stop), n * batch);
    out->rows = n;
    out->cols = batch;
    out->data.assign(out_stage.data(), out_stage.data() + n * batch);
  }
}

template <typename T>
CudnnForward<T>::CudnnForward(const Arch& arch, const SafetensorsFile& weights, Math math,
                              int device, ActStorage storage) {
  if (!std::is_same<T, float>::value && storage != ActStorage::Fp32)
    throw Error(std::string("--precision ") + act_storage_name(storage) +
                " stores activations in 16 bits: it needs the float forward pass, not fp64");
  check_weights(arch, weights);
  impl_ = std::make_unique<Impl>(arch, math, device, storage);
  impl_->load(weights);
}

template <typename T>
CudnnForward<T>::~CudnnForward() = default;
template <typename T>
CudnnForward<T>::CudnnForward(CudnnForward&&) noexcept = default;
template <typename T>
CudnnForward<T>& CudnnForward<T>::operator=(CudnnForward&&) noexcept = default;

template <typename T>
const Arch& CudnnForward<T>::arch() const {
  return impl_->arch;
}

template <typename T>
Matrix<T> CudnnForward<T>::run(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                               const std::string& stop_at_layer_input) const {
  const size_t stop = stop_at_layer_input.empty() ? impl_->arch.layers.size()
                                                  : impl_->index_of(stop_at_layer_input);
  Matrix<T> out;
  impl_->walk(input, batch, c, h, w, stop, {}, nullptr, nullptr, &out);
  return out;
}

template <typename T>
void CudnnForward<T>::run_taps(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                               const std::vector<std::string>& taps, const Tap& tap) const {
  const std::vector<size_t> at = impl_->tap_indices(taps);
  if (at.empty()) return;
  impl_->walk(input, batch, c, h, w, *std::max_element(at.begin(), at.end()), at, &tap, nullptr,
              nullptr);
}

template <typename T>
void CudnnForward<T>::run_taps_device(const T* input, int64_t batch, int64_t c, int64_t h,
                                      int64_t w, const std::vector<std::string>& taps,
                                      const DeviceTap& tap) const {
  const std::vector<size_t> at = impl_->tap_indices(taps);
  if (at.empty()) return;
  impl_->walk(input, batch, c, h, w, *std::max_element(at.begin(), at.end()), at, nullptr, &tap,
              nullptr);
}

template class CudnnForward<float>;
template class CudnnForward<double>;

}  // namespace dalr::cuda
