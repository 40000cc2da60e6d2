#pragma once
// Sizes computed from input (command-line numbers, a file's shapes) with their overflow
// checked, and the ranges of the jobs' counting options. A stranger's --batch
// 9223372036854775807 must end in a message, not in undefined behaviour.
#include <cstdint>
#include <string>

#include "dalr/error.hpp"

namespace dalr {

// Largest --batch: a million samples per chunk is far beyond any useful chunk.
constexpr int64_t kMaxBatch = int64_t(1) << 20;
// Largest --workers: each worker holds 4 decoded images in the ring; 256 threads are
// already more than any image folder decodes usefully in parallel.
constexpr int kMaxWorkers = 256;

// a * b for sizes >= 0; throws naming `what` when the product passes int64_t.
inline int64_t checked_mul(int64_t a, int64_t b, const std::string& what) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    throw Error(what + " is too large: " + std::to_string(a) + " x " + std::to_string(b) +
                " does not fit in 64 bits");
  return r;
}

// --batch and --workers in range, before any data is read.
inline void check_batch_and_workers(int64_t batch, int64_t workers) {
  if (batch < 1) throw Error("--batch must be at least 1");
  if (batch > kMaxBatch)
    throw Error("--batch must be at most " + std::to_string(kMaxBatch) + " (got " +
                std::to_string(batch) + ")");
  if (workers < 1 || workers > kMaxWorkers)
    throw Error("--workers must be between 1 and " + std::to_string(kMaxWorkers) + " (got " +
                std::to_string(workers) + ")");
}

}  // namespace dalr
