#pragma once
// What the CUDA benchmarks share: device time with events (warm-up, median of repeats).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "cuda/device_buffer.hpp"

namespace dalr::bench {

// Device seconds of the work f enqueues on `stream`: one warm-up, then the median of
// `repeats` runs, each timed by events recorded around it.
inline double device_median(int64_t repeats, cudaStream_t stream, const std::function<void()>& f) {
  cuda::Event start, stop;
  f();
  std::vector<double> t;
  for (int64_t r = 0; r < std::max<int64_t>(repeats, 1); ++r) {
    start.record(stream);
    f();
    stop.record(stream);
    stop.synchronize();
    t.push_back(stop.elapsed_ms_since(start) / 1e3);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace dalr::bench
