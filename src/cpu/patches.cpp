#include "dalr/patches.hpp"

#include <algorithm>
#include <string>
#include <utility>

#include "common/checked.hpp"
#include "dalr/error.hpp"

namespace dalr {

void ConvGeometry::check() const {
  auto bad = [](const char* what, int64_t v, const char* need) {
    throw Error(std::string("convolution: ") + what + " is " + std::to_string(v) + "; it must be " +
                need);
  };
  if (channels < 1) bad("the input channel count", channels, "at least 1");
  if (height < 1) bad("the input height", height, "at least 1");
  if (width < 1) bad("the input width", width, "at least 1");
  if (kernel_h < 1) bad("the kernel height", kernel_h, "at least 1");
  if (kernel_w < 1) bad("the kernel width", kernel_w, "at least 1");
  if (stride < 1) bad("the stride", stride, "at least 1");
  if (pad < 0) bad("the padding", pad, "at least 0");
  if (dilation < 1) bad("the dilation", dilation, "at least 1");
  const int64_t span_h = dilation * (kernel_h - 1) + 1, span_w = dilation * (kernel_w - 1) + 1;
  if (span_h > height + 2 * pad || span_w > width + 2 * pad)
    throw Error("convolution: the kernel spans " + std::to_string(span_h) + " x " +
                std::to_string(span_w) + " (dilation " + std::to_string(dilation) +
                "), more than the padded input's " + std::to_string(height + 2 * pad) + " x " +
                std::to_string(width + 2 * pad));
}

template <typename T>
void im2row(const ConvGeometry& g, const T* image, int64_t pos0, int64_t count, T* dst,
            int64_t ldd) {
  const int64_t wo = g.out_width(), kk = g.kernel_h * g.kernel_w;
  for (int64_t q = 0; q < count; ++q) {
    const int64_t pos = pos0 + q, oy = pos / wo, ox = pos % wo;
    const int64_t y0 = oy * g.stride - g.pad, x0 = ox * g.stride - g.pad;
    T* col = dst + q * ldd;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      const int64_t iy = y0 + i * g.dilation;
      const bool row_in = iy >= 0 && iy < g.height;
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        const int64_t ix = x0 + j * g.dilation;
        T* out = col + i * g.kernel_w + j;
        if (!row_in || ix < 0 || ix >= g.width) {
          for (int64_t c = 0; c < g.channels; ++c) out[c * kk] = T(0);
          continue;
        }
        const T* in = image + iy * g.width + ix;
        const int64_t plane = g.height * g.width;
        for (int64_t c = 0; c < g.channels; ++c) out[c * kk] = in[c * plane];
      }
    }
  }
}

template <typename T>
PatchAccumulator<T>::PatchAccumulator(std::unique_ptr<StatsAccumulator<T>> inner,
                                      const ConvGeometry& g, int64_t tile_cols)
    : inner_(std::move(inner)), g_(g), tile_cols_(tile_cols) {
  g_.check();
  if (!inner_) throw Error("patch statistics need an accumulator");
  if (tile_cols_ < 1) throw Error("patch statistics: the tile needs at least one column");
}

template <typename T>
void PatchAccumulator<T>::add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) {
  if (cols <= 0) return;
  const int64_t n = g_.patch_size(), positions = g_.positions();
  if (ldx < g_.map_size())
    throw Error("feature-map batch: leading dimension " + std::to_string(ldx) +
                " is smaller than one image's " + std::to_string(g_.map_size()) + " values");
  const int64_t tile = std::min(tile_cols_, positions);
  if (tile_.empty()) tile_.resize(static_cast<size_t>(checked_mul(n, tile, "the patch tile")));
  for (int64_t j = 0; j < cols; ++j) {
    const T* image = x + j * ldx;
    const int64_t first_sample = (first_index + j) * positions;
    for (int64_t pos = 0; pos < positions; pos += tile) {
      const int64_t c = std::min(tile, positions - pos);
      im2row(g_, image, pos, c, tile_.data(), n);
      inner_->add(tile_.data(), c, n, first_sample + pos);
    }
  }
}

template void im2row(const ConvGeometry&, const float*, int64_t, int64_t, float*, int64_t);
template void im2row(const ConvGeometry&, const double*, int64_t, int64_t, double*, int64_t);
template class PatchAccumulator<float>;
template class PatchAccumulator<double>;

}  // namespace dalr
