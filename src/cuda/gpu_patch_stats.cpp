// GpuPatchStats<T>: see gpu_patch_stats.hpp. Each batch of feature maps is cut into
// tiles on the producer's stream (the caller's for add_device, the copy stream for
// add): im2row into the one tile buffer, then GpuStats::add_device, which copies the
// tile into its staging slot on the same stream before the next im2row overwrites it,
// and runs the SYRK on the compute stream. `tile_free` (recorded after a batch's last
// use of the tile) orders batches that come on different streams.
#include "cuda/gpu_patch_stats.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/checked.hpp"
#include "common/finite.hpp"
#include "cuda/context.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/cuda.hpp"
#include "dalr/error.hpp"
#include "dalr/patches.hpp"

namespace dalr::cuda {

namespace {

ConvGeometry checked(const ConvGeometry& g, int64_t tile_cols) {
  g.check();
  if (tile_cols < 1) throw Error("patch statistics: the tile needs at least one column");
  return g;
}

template <typename T>
class GpuPatchStats final : public StatsAccumulator<T> {
 public:
  GpuPatchStats(std::shared_ptr<Context> ctx, const ConvGeometry& g, int64_t m, const Matrix<T>* w,
                const std::vector<T>* b, int64_t tile_cols)
      : g_(checked(g, tile_cols)),
        n_(g.patch_size()),
        positions_(g.positions()),
        tile_cols_(tile_cols),
        ctx_(ctx),
        inner_(std::move(ctx), n_, m, w, b, tile_cols),  // makes ctx's device current
        tile_(static_cast<size_t>(checked_mul(n_, tile_cols, "the patch tile"))) {}

  ~GpuPatchStats() override {
    // Work queued on a producer's stream may still read the tile and the maps.
    DALR_CUDA_CHECK_NOTHROW(cudaSetDevice(ctx_->device()));
    DALR_CUDA_CHECK_NOTHROW(cudaEventSynchronize(tile_free_.get()));
    DALR_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(ctx_->copy_stream()));
  }
  GpuPatchStats(const GpuPatchStats&) = delete;
  GpuPatchStats& operator=(const GpuPatchStats&) = delete;

  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override {
    if (cols <= 0) return;
    const int64_t first = check_batch(x, ldx, first_index, cols);
    // Every image is checked before anything is queued: a throw leaves the statistics as
    // they were.
    for (int64_t j = 0; j < cols; ++j) check_patches_finite(x + j * ldx, first + j * positions_);
    ctx_->make_current();
    const int64_t map = g_.map_size(), per = std::max<int64_t>(1, tile_cols_ / positions_);
    if (maps_dev_.empty()) {
      const size_t elems = static_cast<size_t>(checked_mul(map, per, "the feature-map stage"));
      maps_host_ = PinnedBuffer<T>(elems);
      maps_dev_ = DeviceBuffer<T>(elems);
    }
    const cudaStream_t copy = ctx_->copy_stream();
    for (int64_t j0 = 0; j0 < cols; j0 += per) {
      const int64_t k = std::min(per, cols - j0);
      maps_uploaded_.synchronize();  // the last upload out of the pinned stage is done
      for (int64_t j = 0; j < k; ++j)
        std::memcpy(maps_host_.data() + j * map, x + (j0 + j) * ldx,
                    static_cast<size_t>(map) * sizeof(T));
      // The last im2row that read maps_dev_ is on this stream too: no wait needed.
      maps_dev_.upload(maps_host_.data(), static_cast<size_t>(k * map), copy);
      maps_uploaded_.record(copy);
      tiles(maps_dev_.data(), k, map, first + j0 * positions_, copy);
    }
  }

  bool supports_device_add() const override { return true; }
  void add_device(const T* dx, int64_t cols, int64_t ldx, int64_t first_index,
                  void* stream) override {
    if (cols <= 0) return;
    const int64_t first = check_batch(dx, ldx, first_index, cols);
    ctx_->make_current();
    require_on_device(dx, ctx_->device(), "feature-map");
    tiles(dx, cols, ldx, first, static_cast<cudaStream_t>(stream));
  }

  void merge(const LayerStats<T>& earlier) override { inner_.merge(earlier); }
  LayerStats<T> result() override { return inner_.result(); }
  LayerStats<T> finish() override { return inner_.finish(); }

 private:
  // The checks both paths make; returns the batch's first sample number.
  int64_t check_batch(const T* x, int64_t ldx, int64_t first_index, int64_t cols) const {
    if (!x) throw Error("feature-map batch: no data (null pointer)");
    if (ldx < g_.map_size())
      throw Error("feature-map batch: leading dimension " + std::to_string(ldx) +
                  " is smaller than one image's " + std::to_string(g_.map_size()) + " values");
    if (first_index < 0)
      throw Error("feature-map batch: negative first image index " + std::to_string(first_index));
    checked_mul(first_index + cols, positions_, "the patch sample number");
    return first_index * positions_;
  }

  // The host twin's NaN/Inf message for one image's patches (its first sample is
  // `first`); quick when the image is finite, which is the rule.
  void check_patches_finite(const T* image, int64_t first) {
    if (first_non_finite(image, static_cast<size_t>(g_.map_size())) < 0) return;
    const int64_t tile = std::min(tile_cols_, positions_);
    std::vector<T> cols(static_cast<size_t>(n_ * tile));
    for (int64_t pos = 0; pos < positions_; pos += tile) {
      const int64_t c = std::min(tile, positions_ - pos);
      im2row(g_, image, pos, c, cols.data(), n_);
      check_finite(cols.data(), n_, c, n_, first + pos);
    }
  }

  // Samples first .. first + cols * positions - 1 of the maps x (device memory, cols
  // images), tile by tile on `s`.
  void tiles(const T* x, int64_t cols, int64_t ldx, int64_t first, cudaStream_t s) {
    DALR_CUDA_CHECK(cudaStreamWaitEvent(s, tile_free_.get(), 0));
    const RecordOnExit release(tile_free_, s);
    const int64_t total = cols * positions_;
    for (int64_t s0 = 0; s0 < total; s0 += tile_cols_) {
      const int64_t c = std::min(tile_cols_, total - s0);
      kernels::launch_im2row<T>(im2row_geometry(g_), x, ldx, cols, s0, c, tile_.data(), n_, s);
      inner_.add_device(tile_.data(), c, n_, first + s0, s);
    }
  }

  ConvGeometry g_;
  int64_t n_, positions_, tile_cols_;
  std::shared_ptr<Context> ctx_;
  GpuStats<T> inner_;
  DeviceBuffer<T> tile_;  // n x tile_cols
  Event tile_free_{cudaEventDisableTiming};
  // add(): the maps of up to tile_cols / positions images (at least one), made on first use.
  PinnedBuffer<T> maps_host_;
  DeviceBuffer<T> maps_dev_;
  Event maps_uploaded_{cudaEventDisableTiming | cudaEventBlockingSync};
};

}  // namespace

template <typename T>
std::unique_ptr<StatsAccumulator<T>> make_patch_stats(std::shared_ptr<Context> ctx,
                                                      const ConvGeometry& g, int64_t m,
                                                      const Matrix<T>* w, const std::vector<T>* b,
                                                      int64_t tile_cols) {
  if (!ctx) throw Error("patch statistics: no CUDA context");
  return std::make_unique<GpuPatchStats<T>>(std::move(ctx), g, m, w, b, tile_cols);
}

template std::unique_ptr<StatsAccumulator<float>> make_patch_stats(std::shared_ptr<Context>,
                                                                   const ConvGeometry&, int64_t,
                                                                   const Matrix<float>*,
                                                                   const std::vector<float>*,
                                                                   int64_t);
template std::unique_ptr<StatsAccumulator<double>> make_patch_stats(std::shared_ptr<Context>,
                                                                    const ConvGeometry&, int64_t,
                                                                    const Matrix<double>*,
                                                                    const std::vector<double>*,
                                                                    int64_t);

}  // namespace dalr::cuda
