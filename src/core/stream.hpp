#pragma once
// The streaming half of the pipeline: images (an image folder or a preprocessed .npy)
// through the network's forward pass, handing each target layer's input to a
// statistics accumulator batch by batch, so memory does not grow with the data.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/backend.hpp"
#include "dalr/forward.hpp"
#include "dalr/images.hpp"

namespace dalr {

struct DataOptions {
  std::string data;  // image folder, or .npy of shape (N, C, H, W) already preprocessed
  int workers = 2;
  int64_t limit = 0;  // 0: all
  bool shuffle = false;
  uint64_t seed = 0;
  int64_t batch = 64;
  bool quiet = false;
};

Preprocess preprocess_of(const InputSpec& in);
std::unique_ptr<BatchSource> open_data(const DataOptions& o, const InputSpec& in);

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

// An error of a statistics pass, with a hint when --precision fp16 is the likely cause
// of a non-finite activation (fp16 overflows above 65504; Inf - Inf gives NaN).
Error with_precision_hint(const Error& e, Precision precision);

}  // namespace dalr
