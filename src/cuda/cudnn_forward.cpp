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
// in fp32 and round (kernels/fmt16.cuh); at the first flatten, linear layer or tap the block is
// permuted to NCHW (C order per sample), linear layers run as 16-bit GEMMs with fp32
// accumulation (cublasGemmEx), and taps and outputs are widened into a float buffer.
#include "dalr/cudnn_forward.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/cudnn_check.hpp"
#include "cuda/cudnn_forward_impl.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "io/layer_params.hpp"
#include "layout16.cuh"

namespace dalr::cuda {

using namespace fwd;

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
      const int p = to_int(l.pad, "pad"), d = to_int(l.dilation, "dilation");
      st.filter = std::make_unique<FilterDesc>();
      DALR_CUDNN_CHECK(cudnnSetFilter4dDescriptor(st.filter->get(), act_type(), act_format(),
                                                  to_int(l.out, "out"), to_int(l.in, "in"), k, k));
      st.conv = std::make_unique<ConvDesc>();
      // 16-bit data computes in fp32 (cuDNN's PSEUDO_HALF / PSEUDO_BFLOAT16 configs).
      DALR_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(st.conv->get(), p, p, s, s, d, d,
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

template <typename T>
CudnnForward<T>::CudnnForward(const Arch& arch, const SafetensorsFile& weights, Math math,
                              int device, ActStorage storage) {
  if (!std::is_same<T, float>::value && storage != ActStorage::Fp32)
    throw Error(std::string("--precision ") + act_storage_name(storage) +
                " stores activations in 16 bits: it needs the float forward pass, not fp64");
  check_weights(arch, weights);
  impl_ = std::make_unique<Impl>(arch, std::make_shared<Context>(device, math), storage);
  impl_->load(weights);
}

template <typename T>
CudnnForward<T>::CudnnForward(const Arch& arch, const SafetensorsFile& weights,
                              std::shared_ptr<Context> ctx, ActStorage storage) {
  if (!std::is_same<T, float>::value && storage != ActStorage::Fp32)
    throw Error(std::string("--precision ") + act_storage_name(storage) +
                " stores activations in 16 bits: it needs the float forward pass, not fp64");
  if (!ctx) throw Error("CudnnForward: no CUDA context");
  check_weights(arch, weights);
  impl_ = std::make_unique<Impl>(arch, std::move(ctx), storage);
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
