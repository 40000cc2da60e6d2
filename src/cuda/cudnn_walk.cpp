// CudnnForward<T>::Impl::walk: one pass of a batch through the layers, on the device
// (see cudnn_forward.cpp for the design), and the pass's bookkeeping: where the
// activations are, their layout, the taps. Each layer's step is in cudnn_ops.cpp.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/cudnn_forward_impl.hpp"
#include "dalr/error.hpp"
#include "layout16.cuh"

namespace dalr::cuda {

using namespace fwd;

template <typename T>
void CudnnForward<T>::Impl::walk(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                                 size_t stop, const std::vector<size_t>& taps, const Tap* tap,
                                 const DeviceTap* device_tap, Matrix<T>* out) {
  size_t most = 0;
  const std::vector<ActShape> shapes = pass_shapes(input, batch, c, h, w, stop, &most);

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

  Pass p{batch, stream, in.dev.data(), false, &taps, tap, device_tap};
  round_input16(p, shapes[0]);
  const std::vector<char> fused = fused_relus(stop, taps);
  for (size_t i = 0; i < stop; ++i) {
    if (fused[i]) continue;  // the ReLU ran in the layer before (shapes[i + 1] == shapes[i])
    emit(p, i, shapes[i]);
    const ActShape &s = shapes[i], &o = shapes[i + 1];
    const bool relu = fused[i + 1] != 0;  // the ReLU after the layer runs in its bias kernel
    switch (arch.layers[i].type) {
      case LayerType::Conv:
        run_conv(p, i, s, o, relu);
        break;
      case LayerType::MaxPool:
      case LayerType::AvgPool:
        run_pool(p, i, s, o);
        break;
      case LayerType::AdaptiveAvgPool:
        run_adaptive_pool(p, s, o);
        break;
      case LayerType::Linear:
        run_linear(p, i, s, relu);
        break;
      case LayerType::Relu:
        run_relu(p, s);
        break;
      case LayerType::BatchNorm:
        run_batchnorm(p, i, s);
        break;
      case LayerType::Flatten:  // NCHW is already C-order per sample
        to_nchw(p, s);
        break;
      case LayerType::Dropout:  // identity at inference
        break;
    }
  }
  emit(p, stop, shapes[stop]);
  if (out) {
    const int64_t n = shapes[stop].numel();
    download(view(p, shapes[stop]), n * batch);
    out->rows = n;
    out->cols = batch;
    out->data.assign(out_stage.data(), out_stage.data() + n * batch);
  }
}

// Every check CpuForward makes, before any device work. *most: the largest activation
// block (elements) of the pass.
template <typename T>
std::vector<ActShape> CudnnForward<T>::Impl::pass_shapes(const T* input, int64_t batch, int64_t c,
                                                         int64_t h, int64_t w, size_t stop,
                                                         size_t* most) const {
  if (batch < 1) throw Error("batch size must be >= 1, got " + std::to_string(batch));
  if (!input) throw Error("CudnnForward::run: input is null");
  const std::vector<ActShape> shapes = layer_input_shapes(arch, c, h, w);
  for (size_t i = 0; i <= stop; ++i) {
    const int64_t count = batch * shapes[i].numel();
    to_int(count, "elements of the activations entering " +
                      (i < arch.layers.size() ? layer_label(arch, i) : std::string("the output")));
    *most = std::max(*most, static_cast<size_t>(count));
    if (i < stop && arch.layers[i].type == LayerType::BatchNorm &&
        layers[i].bn_channels != shapes[i].c)
      throw Error(layer_label(arch, i) + " has " + std::to_string(layers[i].bn_channels) +
                  " channels, but its input has " + std::to_string(shapes[i].c));
  }
  return shapes;
}

// A ReLU right after a conv or linear layer with a bias runs in its bias kernel (one
// pass over the activations instead of two), unless its input is tapped. fused[i]:
// layer i runs inside layer i - 1; decided before the walk's loop, so that the loop
// visits every index once.
template <typename T>
std::vector<char> CudnnForward<T>::Impl::fused_relus(size_t stop,
                                                     const std::vector<size_t>& taps) const {
  std::vector<char> fused(stop + 1, 0);
  for (size_t i = 0; i + 1 < stop; ++i) {
    const LayerType t = arch.layers[i].type;
    fused[i + 1] = (t == LayerType::Conv || t == LayerType::Linear) && !layers[i].bias.empty() &&
                   arch.layers[i + 1].type == LayerType::Relu &&
                   std::find(taps.begin(), taps.end(), i + 1) == taps.end();
  }
  return fused;
}

// An out-of-place layer writes to whichever of act[0], act[1] does not hold its input.
template <typename T>
void* CudnnForward<T>::Impl::other(const void* p) {
  return p == act[0].data() ? static_cast<void*>(act[1].data()) : static_cast<void*>(act[0].data());
}

// 16-bit storage: rounds the float input stage into 16-bit NHWC, in an activation buffer.
template <typename T>
void CudnnForward<T>::Impl::round_input16(Pass& p, const ActShape& s0) {
  if constexpr (std::is_same<T, float>::value) {
    if (s16()) {
      void* y = other(p.x);
      kernels::launch_round_to_nhwc16(static_cast<const float*>(p.x), p.batch, s0.c, s0.h * s0.w,
                                      static_cast<uint16_t*>(y), fmt(), p.stream);
      p.x = y;
      p.nhwc = true;
    }
  }
}

// Permutes an NHWC block of shape s into `dst` (NCHW); a 1 x 1 image is both.
template <typename T>
const void* CudnnForward<T>::Impl::nchw_of(const Pass& p, const ActShape& s, void* dst) {
  if (!p.nhwc || s.h * s.w == 1) return p.x;
  kernels::launch_nhwc_to_nchw16(static_cast<const uint16_t*>(p.x), p.batch, s.c, s.h * s.w,
                                 static_cast<uint16_t*>(dst), p.stream);
  return dst;
}

template <typename T>
void CudnnForward<T>::Impl::to_nchw(Pass& p, const ActShape& s) {
  if (!p.nhwc) return;
  p.x = const_cast<void*>(nchw_of(p, s, other(p.x)));
  p.nhwc = false;
}

// The block a tap or the output sees: x itself, or widened from 16 bits (through the
// free activation buffer when it must be permuted first).
template <typename T>
const T* CudnnForward<T>::Impl::view(const Pass& p, const ActShape& s) {
  if (!s16()) return static_cast<const T*>(p.x);
  return widen(nchw_of(p, s, other(p.x)), p.batch * s.numel());
}

// Hands the block entering layer i (of shape s) to the tap, when i is tapped.
template <typename T>
void CudnnForward<T>::Impl::emit(const Pass& p, size_t i, const ActShape& s) {
  if (std::find(p.taps->begin(), p.taps->end(), i) == p.taps->end()) return;
  const int64_t n = s.numel();
  if (p.device_tap) {
    (*p.device_tap)(arch.layers[i].name, view(p, s), n, p.batch, static_cast<void*>(p.stream));
  } else if (p.tap) {
    download(view(p, s), n * p.batch);
    (*p.tap)(arch.layers[i].name, out_stage.data(), n, p.batch);
  }
}

template struct CudnnForward<float>::Impl;
template struct CudnnForward<double>::Impl;

}  // namespace dalr::cuda
