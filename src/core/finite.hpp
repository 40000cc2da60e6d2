#pragma once
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "dalr/error.hpp"

namespace dalr {

// Throws naming the first non-finite activation (sample first_index + column, unit).
template <typename T>
void check_finite(const T* x, int64_t n, int64_t cols, int64_t ldx, int64_t first_index,
                  const std::string& what = "activation") {
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < n; ++i) {
      const T v = x[i + j * ldx];
      if (!std::isfinite(v)) {
        std::ostringstream os;
        os << what << " sample " << first_index + j << ", unit " << i << " is "
           << (std::isnan(v) ? "NaN" : "Inf")
           << ": the activations must be finite (check the network or the export)";
        throw Error(os.str());
      }
    }
}

}  // namespace dalr
