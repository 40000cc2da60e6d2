#pragma once
// Statistics of a conv layer's patches without materialising the patch matrix of a whole
// batch (dalr/conv_geometry.hpp): the feature maps are cut into tiles of patches, one
// tile at a time, and each tile goes to an ordinary fully connected accumulator of width
// n = c_in kh kw. Memory: one tile (n x tile_cols values) besides the accumulator's own.
#include <cstdint>
#include <memory>
#include <vector>

#include "dalr/backend.hpp"
#include "dalr/conv_geometry.hpp"

namespace dalr {

// Patches pos0 .. pos0 + count - 1 of one image (output positions in row-major order,
// oy * out_width + ox) into dst, column-major n x count with leading dimension ldd >= n:
// dst[(c kh kw + i kw + j) + q ldd] = image[c][oy s - pad + i d][ox s - pad + j d], or 0
// where that falls in the padding. image: C x H x W, row-major (C order).
template <typename T>
void im2row(const ConvGeometry& g, const T* image, int64_t pos0, int64_t count, T* dst,
            int64_t ldd);

// The host twin: add() takes whole feature maps, one image per column (x is
// map_size x cols, column-major, leading dimension ldx >= map_size; first_index numbers
// the first image). The inner accumulator sees each image's positions as consecutive
// samples numbered image * positions + position, so its NaN messages and --lambda auto's
// every-10th-sample split are in patch samples. merge(), result() and finish() are the
// inner accumulator's: statistics of width n = patch_size.
template <typename T>
class PatchAccumulator : public StatsAccumulator<T> {
 public:
  PatchAccumulator(std::unique_ptr<StatsAccumulator<T>> inner, const ConvGeometry& g,
                   int64_t tile_cols);
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override;
  void merge(const LayerStats<T>& earlier) override { inner_->merge(earlier); }
  LayerStats<T> result() override { return inner_->result(); }
  LayerStats<T> finish() override { return inner_->finish(); }
  const ConvGeometry& geometry() const { return g_; }

 protected:
  StatsAccumulator<T>& inner() { return *inner_; }
  int64_t tile_cols() const { return tile_cols_; }

 private:
  std::unique_ptr<StatsAccumulator<T>> inner_;
  ConvGeometry g_;
  int64_t tile_cols_;
  std::vector<T> tile_;  // n x tile_cols, allocated on the first add
};

extern template class PatchAccumulator<float>;
extern template class PatchAccumulator<double>;

}  // namespace dalr
