// The statistics file (a safetensors file with dalr.kind=stats and dalr.count).
#include "dalr/error.hpp"
#include "dalr/stats.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dalr::fuzz::MemFile file(data, size);
  try {
    (void)dalr::LayerStats<double>::load(file.path());
  } catch (const dalr::Error&) {
  }
  try {
    (void)dalr::LayerStats<float>::load(file.path());
  } catch (const dalr::Error&) {
  }
  return 0;
}
