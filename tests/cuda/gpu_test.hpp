#pragma once
// What every GPU twin test shares: the skip without a device, the seed announcement,
// and a substring check for error messages.
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <string>

#include "dalr/cuda.hpp"
#include "test_util.hpp"

#define DALR_SKIP_WITHOUT_GPU() \
  if (!dalr::cuda::available()) GTEST_SKIP() << "no CUDA device"

namespace dalr::test {

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// The seed (DALR_TEST_SEED or `fallback`), printed so that a failure can be replayed.
inline uint64_t announce_seed(uint64_t fallback) {
  const uint64_t seed = test_seed(fallback);
  std::cout << "[ seed     ] " << seed << " (set DALR_TEST_SEED to change)\n";
  return seed;
}

}  // namespace dalr::test
