#pragma once
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "dalr/error.hpp"

namespace dalr {

// The message for a non-finite value at (sample, unit); also used by the GPU statistics,
// which find the value on the device.
inline std::string non_finite_message(int64_t sample, int64_t unit, bool is_nan,
                                      const std::string& what = "activation") {
  std::ostringstream os;
  os << what << " sample " << sample << ", unit " << unit << " is " << (is_nan ? "NaN" : "Inf")
     << ": the activations must be finite (check the network or the export)";
  return os.str();
}

// Throws naming the first non-finite activation (sample first_index + column, unit).
template <typename T>
void check_finite(const T* x, int64_t n, int64_t cols, int64_t ldx, int64_t first_index,
                  const std::string& what = "activation") {
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i + j * ldx];
      if (!std::isfinite(v))
        throw Error(non_finite_message(first_index + j, i, std::isnan(v), what));
    }
}

// The index of the first value of v[0..n) that is NaN or Inf, or -1.
template <typename T>
int64_t first_non_finite(const T* v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return static_cast<int64_t>(i);
  return -1;
}

// A relative error abs / ref that is NaN when either overflowed: Inf / Inf would be NaN
// anyway, but a finite error over an Inf reference would read as a perfect 0.
inline double relative_error(double abs, double ref) {
  if (!std::isfinite(abs) || !std::isfinite(ref)) return std::nan("");
  return ref > 0 ? abs / ref : 0.0;
}

}  // namespace dalr
