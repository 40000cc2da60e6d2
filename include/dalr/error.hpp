#pragma once
// Errors a caller can act on (bad file, wrong shape, rank too large, unknown layer).
// Internal invariants use assert; the library never calls exit().
#include <stdexcept>
#include <string>

namespace dalr {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace dalr
