// The .npy reader: magic, version, the Python-literal header, then the rows.
#include <vector>

#include "dalr/error.hpp"
#include "dalr/npy.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dalr::fuzz::MemFile file(data, size);
  try {
    dalr::NpyReader r(file.path());
    if (r.cols() > 0 && r.cols() <= 4096) {
      std::vector<float> buf(static_cast<size_t>(r.cols()) * 7);
      while (r.read_rows(buf.data(), 7) > 0) {
      }
    }
  } catch (const dalr::Error&) {
  }
  return 0;
}
