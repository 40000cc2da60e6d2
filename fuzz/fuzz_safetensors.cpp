// The safetensors reader: header JSON, dtypes, shapes, offsets, then every tensor's data.
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dalr::fuzz::MemFile file(data, size);
  try {
    dalr::SafetensorsFile f(file.path());
    for (const auto& t : f.tensors()) {
      if (dalr::dtype_is_float(t.dtype)) (void)f.read_f32(t.name);
      (void)f.find(t.name);
    }
    (void)f.metadata();
  } catch (const dalr::Error&) {
  }
  return 0;
}
