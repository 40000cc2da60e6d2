// CudnnForward<T>::Impl's step for each layer type, called by the walk (cudnn_walk.cpp),
// as the CPU's run_layer calls src/cpu/forward_ops: it picks the 16-bit or T kernel, or the
// cuDNN/cuBLAS layer of cudnn_layers.cpp, and moves the pass's activations (Pass::x).
#include <cuda_runtime.h>

#include <cstdint>

#include "adaptive_pool.cuh"
#include "channel_scale_shift.cuh"
#include "cuda/cudnn_forward_impl.hpp"
#include "dalr/error.hpp"
#include "pool16.cuh"
#include "relu.cuh"

namespace dalr::cuda {

using namespace fwd;

template <typename T>
void CudnnForward<T>::Impl::run_conv(Pass& p, size_t i, const ActShape& s, const ActShape& o,
                                     bool relu) {
  void* y = other(p.x);
  if (s16() && !p.nhwc) throw Error(layer_label(arch, i) + ": a convolution after a flatten");
  conv(i, p.batch, s, o, p.x, y, relu);
  p.x = y;
}

template <typename T>
void CudnnForward<T>::Impl::run_pool(Pass& p, size_t i, const ActShape& s, const ActShape& o) {
  void* y = other(p.x);
  if (s16() && !p.nhwc) throw Error(layer_label(arch, i) + ": pooling after a flatten");
  pool(i, p.batch, s, o, p.x, y);
  p.x = y;
}

template <typename T>
void CudnnForward<T>::Impl::run_adaptive_pool(Pass& p, const ActShape& s, const ActShape& o) {
  void* y = other(p.x);
  if (s16())
    kernels::launch_adaptive_avgpool16(static_cast<const uint16_t*>(p.x), p.batch, s.c, s.h, s.w,
                                       p.nhwc, static_cast<uint16_t*>(y), o.h, o.w, fmt(),
                                       p.stream);
  else
    kernels::launch_adaptive_avgpool<T>(static_cast<const T*>(p.x), p.batch * s.c, s.h, s.w,
                                        static_cast<T*>(y), o.h, o.w, p.stream);
  p.x = y;
}

template <typename T>
void CudnnForward<T>::Impl::run_linear(Pass& p, size_t i, const ActShape& s, bool relu) {
  to_nchw(p, s);
  linear(i, p.batch, p.x, other(p.x), relu);
  p.x = other(p.x);
}

template <typename T>
void CudnnForward<T>::Impl::run_relu(Pass& p, const ActShape& s) {
  if (s16())
    kernels::launch_relu16(static_cast<uint16_t*>(p.x), p.batch * s.numel(), fmt(), p.stream);
  else
    kernels::launch_relu<T>(static_cast<T*>(p.x), p.batch * s.numel(), p.stream);
}

template <typename T>
void CudnnForward<T>::Impl::run_batchnorm(Pass& p, size_t i, const ActShape& s) {
  if (s16())
    kernels::launch_channel_scale_shift16(static_cast<uint16_t*>(p.x), p.batch, s.c, s.h * s.w,
                                          p.nhwc, f32(layers[i].weight), f32(layers[i].bias), fmt(),
                                          p.stream);
  else
    kernels::launch_channel_scale_shift<T>(static_cast<T*>(p.x), p.batch, s.c, s.h * s.w,
                                           layers[i].weight.data(), layers[i].bias.data(),
                                           p.stream);
}

template struct CudnnForward<float>::Impl;
template struct CudnnForward<double>::Impl;

}  // namespace dalr::cuda
