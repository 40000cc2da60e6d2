#pragma once
// The 16-bit storage path of cuda::CudnnForward (--precision fp16|bf16): activations are
// stored as fp16 or bf16, channels-last (NHWC) between convolutions so that cuDNN can
// use tensor cores, while every layer computes in fp32. These kernels are the glue
// around cuDNN: round a float input into 16-bit NHWC, widen taps and outputs back to
// float (exactly), change layout, and do in 16-bit storage what the float path does in
// place (relu, per-channel scale and shift, adaptive average pooling), each as widen ->
// fp32 math -> one rounding. The CPU twin is CpuForward<float> with ActStorage::Fp16 /
// Bf16, which rounds every layer's output with src/io/half.hpp (nearest, ties to even,
// overflow to inf): these kernels produce the same bits for every finite or infinite
// value; a NaN stays some NaN. Data are raw uint16_t bit patterns so that this header
// needs no cuda_fp16.h and can be included by host code compiled by g++.
//
// All pointers are device pointers. Every launcher checks its arguments first (negative
// sizes, unknown format, and null pointers when there is work to do throw dalr::Error
// before any CUDA call), returns at once when there is nothing to do, runs
// asynchronously on `stream` and checks the launch.
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

enum class Fmt16 { Fp16, Bf16 };

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

// In-place ReLU on n values, on the bits: negative values (-inf included) and -0 become
// +0; NaN keeps its exact bits (as torch.relu keeps NaN); +inf stays.
void launch_relu16(uint16_t* x, int64_t n, Fmt16 f, cudaStream_t stream);

// In place, per channel: x = round(float(x) * scale[ch] + shift[ch]), or with scale null
// round(float(x) + shift[ch]); shift must not be null. scale and shift are float arrays
// of `channels` values. The data are `batch` blocks of channels x hw values: NCHW when
// channels_last is false (the channel of element i is (i / hw) % channels), NHWC when
// true (the channel is i % channels). Inference batchnorm and conv/linear biases; with
// relu, the ReLU that follows too (before the rounding, which keeps the sign: the same
// result as rounding first), in the same pass.
void launch_channel_scale_shift16(uint16_t* x, int64_t batch, int64_t channels, int64_t hw,
                                  bool channels_last, const float* scale, const float* shift,
                                  Fmt16 f, cudaStream_t stream, bool relu = false);

// Adaptive average pooling with PyTorch's bins (see adaptive_pool.cuh): output (oy, ox)
// averages rows [floor(oy*h/ho), ceil((oy+1)*h/ho)) and columns [floor(ox*w/wo),
// ceil((ox+1)*w/wo)). The window is summed in float in row-major order (iy outer, ix
// inner), divided by float(count) and rounded once, as the CPU twin does. channels_last:
// x is batch x h x w x c and y batch x ho x wo x c (NHWC); else both are NCHW. x and y
// must not overlap.
void launch_adaptive_avgpool16(const uint16_t* x, int64_t batch, int64_t c, int64_t h, int64_t w,
                               bool channels_last, uint16_t* y, int64_t ho, int64_t wo, Fmt16 f,
                               cudaStream_t stream);

// Fixed-window pooling (max or average) over k x k windows every `stride` pixels, floor
// mode without padding (PyTorch's MaxPool2d / AvgPool2d defaults): the twin of the CPU's
// pool, used instead of cuDNN's for 16-bit data. Max: the first NaN of a window wins,
// else the largest value (exact). Average: summed in float (iy outer, ix inner), divided
// by k*k and rounded once. Layout and overlap as launch_adaptive_avgpool16; throws when
// the windows do not fit the input.
void launch_pool16(const uint16_t* x, int64_t batch, int64_t c, int64_t h, int64_t w,
                   bool channels_last, int64_t kernel, int64_t stride, bool is_max, uint16_t* y,
                   int64_t ho, int64_t wo, Fmt16 f, cudaStream_t stream);

}  // namespace dalr::kernels
