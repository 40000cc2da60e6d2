// CudnnForward<T>::Impl::walk: one pass of a batch through the layers, on the device
// (see cudnn_forward.cpp for the design).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "adaptive_pool.cuh"
#include "channel_scale_shift.cuh"
#include "cuda/cudnn_forward_impl.hpp"
#include "dalr/error.hpp"
#include "layout16.cuh"
#include "pool16.cuh"
#include "relu.cuh"

namespace dalr::cuda {

using namespace fwd;

// Long (about 150 lines) because it is one loop over the layers with the lambdas that
// track where the activations are; it moved here unchanged, and the layer walk itself is
// to be restructured separately (one step per layer type).
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

template struct CudnnForward<float>::Impl;
template struct CudnnForward<double>::Impl;

}  // namespace dalr::cuda
