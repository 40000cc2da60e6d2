#pragma once
// The 16-bit storage formats of cuda::CudnnForward (--precision fp16|bf16) and what the
// 16-bit kernels share (kernels/layout16, relu, channel_scale_shift, pool16). Activations
// are stored as fp16 or bf16, channels-last (NHWC) between convolutions so that cuDNN can
// use tensor cores, while every layer computes in fp32: each 16-bit kernel is widen ->
// fp32 math -> one rounding. The CPU twin is CpuForward<float> with ActStorage::Fp16 /
// Bf16, which rounds every layer's output with src/io/half.hpp (nearest, ties to even,
// overflow to inf): the kernels produce the same bits for every finite or infinite value;
// a NaN stays some NaN. Data are raw uint16_t bit patterns so that the kernel headers need
// no cuda_fp16.h and can be included by host code compiled by g++.
//
// All pointers are device pointers. Every 16-bit launcher checks its arguments first
// (negative sizes, unknown format, and null pointers when there is work to do throw
// dalr::Error before any CUDA call), returns at once when there is nothing to do, runs
// asynchronously on `stream` and checks the launch.
#include <cstdint>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <string>

#include "cuda/cuda_check.hpp"
#endif

namespace dalr::kernels {

enum class Fmt16 { Fp16, Bf16 };

#ifdef __CUDACC__
// ---------------------------------------------------------------- conversions

// Exact: fp16 through cvt.f32.f16; bf16 is the top half of a float.
template <Fmt16 F>
__device__ __forceinline__ float widen(uint16_t b) {
  if constexpr (F == Fmt16::Fp16) {
    return __half2float(__ushort_as_half(b));
  } else {
    return __uint_as_float(static_cast<uint32_t>(b) << 16);
  }
}

// cvt.rn: nearest, ties to even, overflow to inf, subnormal results kept (this code is
// not built with -ftz), as half.hpp rounds. NaN gives the canonical NaN.
template <Fmt16 F>
__device__ __forceinline__ uint16_t narrow(float v) {
  if constexpr (F == Fmt16::Fp16) {
    return __half_as_ushort(__float2half_rn(v));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
}

template <Fmt16 F>
__device__ __forceinline__ bool is_nan16(uint16_t b) {
  constexpr uint16_t kInf = F == Fmt16::Fp16 ? 0x7c00 : 0x7f80;
  return (b & 0x7fffu) > kInf;
}

// ---------------------------------------------------------------- argument checks
// Host code of the 16-bit launchers, in a namespace of its own so that its names do not
// meet other kernels' helpers (solver_ops.cu has a blocks_for too); a .cu file that
// launches 16-bit kernels says `using namespace check16;`.
namespace check16 {

constexpr int kThreads = 256;

[[noreturn]] inline void fail(const char* what, const std::string& why) {
  throw Error(std::string(what) + ": " + why);
}

inline void require_format(const char* what, Fmt16 f) {
  if (f != Fmt16::Fp16 && f != Fmt16::Bf16)
    fail(what, "unknown 16-bit format " + std::to_string(static_cast<int>(f)));
}

inline void require_size(const char* what, const char* name, int64_t v, int64_t min = 0) {
  if (v < min)
    fail(what,
         std::string(min == 0 ? "negative " : "non-positive ") + name + " " + std::to_string(v));
}

// Null pointers are refused only when there is work to do (an empty DeviceBuffer is null).
inline void require_pointer(const char* what, const char* name, const void* p) {
  if (!p) fail(what, std::string(name) + " is a null pointer");
}

// The product of non-negative sizes, refusing one that does not fit in int64_t.
inline int64_t element_count(const char* what, std::initializer_list<int64_t> sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) {
    if (s != 0 && n > std::numeric_limits<int64_t>::max() / s)
      fail(what, "element count overflows int64");
    n *= s;
  }
  return n;
}

// The elements of batch blocks of c channels of hw values, each size non-negative.
inline int64_t bchw_count(const char* what, int64_t batch, int64_t c, int64_t hw) {
  require_size(what, "batch", batch);
  require_size(what, "channels", c);
  require_size(what, "hw", hw);
  return element_count(what, {batch, c, hw});
}

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20));
}

}  // namespace check16
#endif  // __CUDACC__

}  // namespace dalr::kernels
