#pragma once
// Pooling of 16-bit storage (see fmt16.cuh), fixed windows and adaptive, in one kernel:
// cuDNN pools the fp32 path (and kernels/adaptive_pool.cuh its adaptive pool), these
// kernels the 16-bit one, with the CPU twin's windows, summation order and NaN rule.
#include <cuda_runtime.h>

#include <cstdint>

#include "fmt16.cuh"

namespace dalr::kernels {

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
