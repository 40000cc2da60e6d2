#include <algorithm>
#include <climits>
#include <string>

#include "cuda/cuda_check.hpp"
#include "im2row.cuh"

namespace dalr::kernels {

namespace {

// The geometry as the kernel reads it: sizes inside a patch fit an int (n <= INT_MAX / 2
// is checked), offsets into the batch and sample numbers are 64-bit.
struct Im2rowShape {
  int64_t height, width, plane;   // plane = height * width
  int kernel_h, kernel_w, kk, n;  // kk = kernel_h * kernel_w, n = channels * kk
  int64_t stride, pad, dilation, out_width, positions;
};

// Block x threads walk the units of a patch (consecutive threads write consecutive
// values of one column: coalesced stores; the reads of neighbouring kernel columns are
// neighbours in the image); block y walks the columns of the tile.
template <typename T>
__global__ void im2row_kernel(Im2rowShape a, const T* __restrict__ x, int64_t ldx, int64_t s0,
                              int64_t count, T* __restrict__ dst, int64_t ldd) {
  for (int64_t q = blockIdx.y; q < count; q += gridDim.y) {
    const int64_t sample = s0 + q, image = sample / a.positions, pos = sample - image * a.positions;
    const int64_t oy = pos / a.out_width, ox = pos - oy * a.out_width;
    const int64_t y0 = oy * a.stride - a.pad, x0 = ox * a.stride - a.pad;
    const T* img = x + image * ldx;
    T* col = dst + q * ldd;
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < a.n; r += gridDim.x * blockDim.x) {
      const int c = r / a.kk, rem = r - c * a.kk, i = rem / a.kernel_w, j = rem - i * a.kernel_w;
      const int64_t iy = y0 + i * a.dilation, ix = x0 + j * a.dilation;
      const bool inside = iy >= 0 && iy < a.height && ix >= 0 && ix < a.width;
      col[r] = inside ? img[c * a.plane + iy * a.width + ix] : T(0);
    }
  }
}

}  // namespace

template <typename T>
void launch_im2row(const Im2rowGeometry& g, const T* x, int64_t ldx, int64_t images, int64_t s0,
                   int64_t count, T* dst, int64_t ldd, cudaStream_t stream) {
  if (g.channels < 1 || g.height < 1 || g.width < 1 || g.kernel_h < 1 || g.kernel_w < 1 ||
      g.stride < 1 || g.pad < 0 || g.dilation < 1 || g.out_height < 1 || g.out_width < 1)
    throw Error("im2row: bad geometry (every size at least 1, the padding at least 0)");
  const int64_t n = g.channels * g.kernel_h * g.kernel_w, positions = g.out_height * g.out_width;
  const int64_t map = g.channels * g.height * g.width;
  if (n > INT_MAX / 2)  // the kernel's unit loop counts in int
    throw Error("im2row: patch size " + std::to_string(n) + " exceeds " +
                std::to_string(INT_MAX / 2));
  if (ldx < map || ldd < n || images < 0 || s0 < 0 || count < 0 || s0 > images * positions - count)
    throw Error("im2row: bad tile (ldx " + std::to_string(ldx) + " for maps of " +
                std::to_string(map) + ", ldd " + std::to_string(ldd) + " for patches of " +
                std::to_string(n) + ", samples " + std::to_string(s0) + " + " +
                std::to_string(count) + " of " + std::to_string(images * positions) + ")");
  if (count == 0) return;
  if (!x || !dst) throw Error("im2row: null pointer");
  const Im2rowShape a{g.height,
                      g.width,
                      g.height * g.width,
                      static_cast<int>(g.kernel_h),
                      static_cast<int>(g.kernel_w),
                      static_cast<int>(g.kernel_h * g.kernel_w),
                      static_cast<int>(n),
                      g.stride,
                      g.pad,
                      g.dilation,
                      g.out_width,
                      positions};
  // A warp-multiple no wider than the patch (27 units at a first 3x3 layer), at most 256.
  const int threads = static_cast<int>(std::min<int64_t>(256, (n + 31) / 32 * 32));
  const int64_t bx = std::min<int64_t>((n + threads - 1) / threads, 64);
  const int64_t by = std::min<int64_t>(count, 65535);
  im2row_kernel<T>
      <<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)), threads, 0, stream>>>(
          a, x, ldx, s0, count, dst, ldd);
  DALR_CUDA_CHECK_LAUNCH();
}

template void launch_im2row<float>(const Im2rowGeometry&, const float*, int64_t, int64_t, int64_t,
                                   int64_t, float*, int64_t, cudaStream_t);
template void launch_im2row<double>(const Im2rowGeometry&, const double*, int64_t, int64_t, int64_t,
                                    int64_t, double*, int64_t, cudaStream_t);

}  // namespace dalr::kernels
