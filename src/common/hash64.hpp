#pragma once
// A 64-bit hash of byte strings (not cryptographic: it tells two models' weights apart,
// it does not resist a forger). Statistics files carry the hash of the weights they were
// collected with (core/stats_binding.hpp), so that another model's are refused.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace dalr {

class Hash64 {
 public:
  // Bytes, taken as one piece: the same bytes give the same hash, however they are split
  // among several add() calls only if split identically (each call adds its length too).
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    add_u64(n);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      mix(w);
    }
    if (i < n) {
      uint64_t w = 0;
      std::memcpy(&w, p + i, n - i);
      mix(w ^ (uint64_t{0xA5} << 56));
    }
  }
  void add(const std::string& s) { add(s.data(), s.size()); }
  void add_u64(uint64_t v) { mix(v); }
  // 16 lowercase hex digits.
  std::string hex() const {
    uint64_t z = h_;  // splitmix64's finaliser
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    static const char* digits = "0123456789abcdef";
    std::string s(16, '0');
    for (int i = 15; i >= 0; --i, z >>= 4) s[static_cast<size_t>(i)] = digits[z & 15];
    return s;
  }

 private:
  uint64_t h_ = 0x243F6A8885A308D3ull;
  void mix(uint64_t w) {
    w *= 0x87C37B91114253D5ull;
    w = (w << 31) | (w >> 33);
    w *= 0x4CF5AD432745937Full;
    h_ ^= w;
    h_ = ((h_ << 27) | (h_ >> 37)) * 5 + 0x52DCE729;
  }
};

}  // namespace dalr
