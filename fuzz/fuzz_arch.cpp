// dalr.arch and dalr.input, the two metadata strings of a model: the input is split at
// its first NUL byte (arch before it, input after; no NUL: a fixed valid input spec).
#include <cstring>
#include <string>

#include "dalr/arch.hpp"
#include "dalr/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  const void* nul = std::memchr(text, '\0', size);
  std::string arch, input;
  if (nul) {
    const size_t at = static_cast<size_t>(static_cast<const char*>(nul) - text);
    arch.assign(text, at);
    input.assign(text + at + 1, size - at - 1);
  } else {
    arch.assign(text, size);
    input = R"({"channels":3,"crop":[32,32]})";
  }
  try {
    const dalr::Arch a = dalr::parse_arch(arch, input);
    // What parses must print back and parse to the same thing.
    (void)dalr::parse_arch(dalr::arch_to_json(a), dalr::input_to_json(a.input));
  } catch (const dalr::Error&) {
  }
  return 0;
}
