#pragma once
// Finds the first NaN/Inf of a batch on the GPU, for batches that never visit the host:
// the device twin of dalr::check_finite (src/common/finite.hpp). Instead of throwing, it
// lowers a device word to a key that orders values as check_finite scans them (sample,
// then unit), so the host can later name the same value check_finite would have named.
#include <cuda_runtime.h>

#include <cstdint>

namespace dalr::kernels {

// The word's value while no non-finite value has been seen.
constexpr unsigned long long kAllFinite = ~0ull;

// Key of a non-finite value at (sample, unit) of a block n wide: (sample * n + unit) * 2
// plus 1 for Inf, 0 for NaN. The caller keeps (sample + 1) * n * 2 below kAllFinite.
__host__ __device__ inline unsigned long long non_finite_key(uint64_t sample, uint64_t unit,
                                                             uint64_t n, bool is_nan) {
  return (sample * n + unit) * 2 + (is_nan ? 0 : 1);
}
struct NonFinite {
  int64_t sample, unit;
  bool is_nan;
};
inline NonFinite decode_non_finite(unsigned long long key, int64_t n) {
  const uint64_t at = key / 2, un = static_cast<uint64_t>(n);
  return {static_cast<int64_t>(at / un), static_cast<int64_t>(at % un), key % 2 == 0};
}

// x: n x cols, leading dimension ldx, device memory; column j is sample first_index + j.
// *first_bad = min(*first_bad, key of every non-finite value); unchanged if all are
// finite. Asynchronous on `stream`; checks the launch.
template <typename T>
void launch_find_non_finite(const T* x, int64_t n, int64_t cols, int64_t ldx, int64_t first_index,
                            unsigned long long* first_bad, cudaStream_t stream);

}  // namespace dalr::kernels
