#pragma once
// The conversions of the 16-bit storage path (see fmt16.cuh): a float input rounded into
// 16-bit NHWC, 16-bit taps and outputs widened back to float (exactly), and NHWC put back
// in NCHW order at a flatten, a linear layer or a tap.
#include <cuda_runtime.h>

#include <cstdint>

#include "fmt16.cuh"

namespace dalr::kernels {

// Rounds a float NCHW batch (batch x c x hw) to 16-bit and transposes it to NHWC:
// y[(b*hw + p)*c + ch] = round(x[(b*c + ch)*hw + p]). With hw == 1 (or c == 1) it is a
// plain conversion. x and y must not overlap.
void launch_round_to_nhwc16(const float* x, int64_t batch, int64_t c, int64_t hw, uint16_t* y,
                            Fmt16 f, cudaStream_t stream);

// y[i] = float(x[i]) for n values: exact (every fp16 and bf16 value is a float).
void launch_widen16(const uint16_t* x, int64_t n, float* y, Fmt16 f, cudaStream_t stream);

// Pure permutation NHWC -> NCHW of 16-bit values of any format (bits are copied):
// y[(b*c + ch)*hw + p] = x[(b*hw + p)*c + ch]. x and y must not overlap.
void launch_nhwc_to_nchw16(const uint16_t* x, int64_t batch, int64_t c, int64_t hw, uint16_t* y,
                           cudaStream_t stream);

}  // namespace dalr::kernels
