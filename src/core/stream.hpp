#pragma once
// The streaming half of the pipeline: images (an image folder or a preprocessed .npy)
// through the network's forward pass, handing each target layer's input to a
// statistics accumulator batch by batch, so memory does not grow with the data.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common/checked.hpp"
#include "dalr/arch.hpp"
#include "dalr/backend.hpp"
#include "dalr/forward.hpp"
#include "dalr/images.hpp"

namespace dalr {

class SafetensorsFile;

struct DataOptions {
  std::string data;  // image folder, or .npy of shape (N, C, H, W) already preprocessed
  int workers = 2;
  int64_t limit = 0;  // 0: all
  bool shuffle = false;
  uint64_t seed = 0;
  int64_t batch = 64;
  bool quiet = false;
  // An image folder's labels as the model's outputs (open_images); null: a statistics
  // pass, which reads no label.
  const ModelClasses* classes = nullptr;
  // Several processes: this one streams the rank-th of `ranks` contiguous parts of the
  // (shuffled, limited) list, its samples numbered by their place in the whole list.
  int rank = 0, ranks = 1;
};

std::unique_ptr<BatchSource> open_data(const DataOptions& o, const InputSpec& in);

// The model's class names (its metadata's dalr.classes, checked against its outputs)
// and number of outputs, for DataOptions::classes.
ModelClasses model_classes(const SafetensorsFile& file, const Arch& arch);

// The host batch a forward pass reads, filled by BatchSource::next. For float the
// source writes into this memory directly, so the decode is the only host copy of a
// batch before the forward pass takes it; for double the source's floats are widened.
template <typename T>
class HostBatch {
 public:
  HostBatch(const BatchSource& src, int64_t batch)
      : per_(src.channels() * src.height() * src.width()),
        batch_(batch),
        floats_(static_cast<size_t>(checked_mul(per_, batch, "--batch times the image size"))) {
    if constexpr (!std::is_same_v<T, float>) wide_.resize(floats_.size());
  }
  // The next batch (up to `batch` images); 0 at the end.
  int64_t next(BatchSource& src, std::vector<int64_t>* labels) {
    const int64_t got = src.next(floats_.data(), batch_, labels);
    if constexpr (!std::is_same_v<T, float>)
      std::copy_n(floats_.begin(), got * per_, wide_.begin());
    return got;
  }
  const T* data() const {
    if constexpr (std::is_same_v<T, float>) {
      return floats_.data();
    } else {
      return wide_.data();
    }
  }

 private:
  int64_t per_, batch_;
  std::vector<float> floats_;
  std::vector<T> wide_;  // double only
};

// Progress on stderr: a rewritten line on a terminal, a line every few seconds
// otherwise, nothing when quiet.
class Progress {
 public:
  Progress(std::string what, int64_t total, bool quiet);
  void add(int64_t done);
  void finish();

 private:
  std::string what_;
  int64_t total_, done_ = 0;
  bool quiet_, tty_;
  double start_, last_ = -1e9;
};

// One pass over `src`: the input of each layer in `layers` goes to accs[i]. When the
// forward pass and every accumulator support it (the GPU backend), the blocks stay on
// the device (Forward::run_taps_device, StatsAccumulator::add_device) and the call may
// return with work in flight: accs[i]->result() waits for it, and reports a NaN/Inf
// that add() would have thrown here (see StatsAccumulator::add_device).
template <typename T>
void stream_statistics(const Forward<T>& fwd, BatchSource& src,
                       const std::vector<std::string>& layers,
                       const std::vector<StatsAccumulator<T>*>& accs, const DataOptions& o);

// A conv layer's statistics take its patches a tile at a time: at most 2^22 values (32 MB
// at fp64) and one image's positions.
inline int64_t patch_tile(const ConvGeometry& g) {
  return std::max<int64_t>(1, std::min(g.positions(), (int64_t(1) << 22) / g.patch_size()));
}

// A conv layer's statistics accumulator (Backend::conv_stats), patch_tile's tiles.
template <typename T>
std::unique_ptr<StatsAccumulator<T>> patch_accumulator(Backend& backend, const ConvGeometry& g,
                                                       const Matrix<T>& w,
                                                       const std::vector<T>& b) {
  return backend.conv_stats(g, w.rows, &w, &b, patch_tile(g));
}

// An error of a statistics pass, with a hint when --precision fp16 is the likely cause
// of a non-finite activation (fp16 overflows above 65504; Inf - Inf gives NaN).
Error with_precision_hint(const Error& e, Precision precision);

}  // namespace dalr
