// CudnnForward<T>::Impl's layers (see cudnn_forward.cpp for the design): the choice of a
// convolution algorithm per shape, and the convolution, pooling and linear layers.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <string>
#include <type_traits>
#include <vector>

#include "channel_scale_shift.cuh"
#include "cuda/blas.hpp"
#include "cuda/cudnn_check.hpp"
#include "cuda/cudnn_forward_impl.hpp"
#include "dalr/error.hpp"
#include "pool16.cuh"

namespace dalr::cuda {

using namespace fwd;

// The algorithm for layer i at this input shape, chosen once:
//  1. the fastest that cudnnFindConvolutionForwardAlgorithmEx measures on the pass's own
//     buffers (it runs each candidate; y is rewritten by the convolution right after)
//     that the precision policy allows and whose workspace fits the budget below, as
//     PyTorch's cudnn.benchmark does;
//  2. else the first of cuDNN's heuristic ranking that the policy allows, that this
//     descriptor supports (its workspace query succeeds) and whose workspace fits;
//  3. else IMPLICIT_GEMM (no workspace, supports every shape).
// (About 90 lines: the three steps above in order, each short, sharing the candidate
// tables and the budget; split apart they would pass all of those around.)
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
  DALR_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(cudnn, &max_algos));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(max_algos, 1)));
  int found = 0;
  DALR_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
      cudnn, xdesc.get(), st.filter->get(), st.conv->get(), ydesc.get(),
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
        cudnn, xdesc.get(), x, st.filter->get(), wd, st.conv->get(), ydesc.get(), y,
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
    if (cudnnGetConvolutionForwardWorkspaceSize(cudnn, xdesc.get(), st.filter->get(),
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
      cudnnConvolutionForward(cudnn, &one, xdesc.get(), x, st.filter->get(), wd, st.conv->get(),
                              p.algo, ws, p.workspace, &zero, ydesc.get(), y);
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
        cudnnConvolutionForward(cudnn, &one, xdesc.get(), x, st.filter->get(), wd, st.conv->get(),
                                fallback.algo, nullptr, 0, &zero, ydesc.get(), y);
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
  if (s16()) {  // the CPU's windows and NaN rule, in a kernel (see pool16.cuh)
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
  DALR_CUDNN_CHECK(
      cudnnPoolingForward(cudnn, st.pool->get(), &one, xdesc.get(), x, &zero, ydesc.get(), y));
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
    const CublasMathScope tensor_cores(ctx.cublas(), gemm16_math());
    DALR_CUBLAS_CHECK(blas::gemm_ex(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, out, cols, in, &one,
                                    st.weight16.data(), t, in, x, t, in, &zero, y, t, out,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (!st.bias.empty())
      kernels::launch_channel_scale_shift16(static_cast<uint16_t*>(y), batch, l.out, 1, false,
                                            nullptr, f32(st.bias), fmt(), ctx.stream(), relu);
    return;
  }
  const T one = 1, zero = 0;
  DALR_CUBLAS_CHECK(blas::gemm(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, out, cols, in, &one,
                               st.weight.data(), in, static_cast<const T*>(x), in, &zero,
                               static_cast<T*>(y), out));
  if (!st.bias.empty())
    kernels::launch_channel_scale_shift<T>(static_cast<T*>(y), batch, l.out, 1, nullptr,
                                           st.bias.data(), ctx.stream(), relu);
}

template struct CudnnForward<float>::Impl;
template struct CudnnForward<double>::Impl;

}  // namespace dalr::cuda
