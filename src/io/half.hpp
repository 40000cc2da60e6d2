#pragma once
// IEEE half (fp16) and bfloat16 conversions in plain C++ (no CUDA headers), for the
// file formats. Widening is exact; narrowing rounds to nearest, ties to even, keeps
// infinities, quiets NaNs (keeping the top payload bits) and produces subnormals.
// Narrowing goes from double so that a double input is rounded once, not twice
// (double -> float -> half can land on the wrong side of a tie).
#include <cstdint>
#include <cstring>

namespace dalr {

namespace detail {

inline uint64_t bits_of(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

inline float float_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Rounds `d` to the binary format with E exponent bits and M stored mantissa bits and
// returns its bit pattern (sign at bit E + M).
template <int E, int M>
uint32_t narrow_from_double(double d) {
  constexpr uint64_t kMant52 = (uint64_t{1} << 52) - 1;
  constexpr uint32_t kExpAll = (1u << E) - 1;
  constexpr int kBias = (1 << (E - 1)) - 1;
  constexpr uint32_t kInf = kExpAll << M;

  const uint64_t x = bits_of(d);
  const uint32_t sign = static_cast<uint32_t>(x >> 63) << (E + M);
  const uint64_t absx = x & ~(uint64_t{1} << 63);
  if (absx >= 0x7ff0000000000000ull) {
    if (absx == 0x7ff0000000000000ull) return sign | kInf;
    // NaN: force the quiet bit so a payload living only in dropped bits stays a NaN.
    return sign | kInf | (1u << (M - 1)) | static_cast<uint32_t>((absx & kMant52) >> (52 - M));
  }
  const int e = static_cast<int>(absx >> 52);
  if (e == 0) return sign;  // double subnormals are far below any target's range
  const uint64_t mant = (absx & kMant52) | (uint64_t{1} << 52);
  const int te = e - 1023 + kBias;                   // biased exponent in the target format
  const int shift = te >= 1 ? 52 - M : 53 - M - te;  // subnormal targets shift further
  if (shift >= 64) return sign;                      // below half the smallest subnormal
  uint64_t r = mant >> shift;
  const uint64_t rem = mant & ((uint64_t{1} << shift) - 1);
  const uint64_t halfway = uint64_t{1} << (shift - 1);
  if (rem > halfway || (rem == halfway && (r & 1))) ++r;
  // Normal: r holds the implicit bit at position M, so (te - 1) << M + r carries a
  // mantissa overflow into the exponent. Subnormal: r is the whole encoding (r == 1 << M
  // is the smallest normal, which is also right).
  const uint64_t enc = te >= 1 ? (static_cast<uint64_t>(te - 1) << M) + r : r;
  if (enc >= kInf) return sign | kInf;
  return sign | static_cast<uint32_t>(enc);
}

}  // namespace detail

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return detail::float_from_bits(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return detail::float_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return detail::float_from_bits(sign);
  // Subnormal half: normalise into a float (which has the range for it).
  uint32_t e = 113;
  while (!(mant & 0x400u)) {
    mant <<= 1;
    --e;
  }
  return detail::float_from_bits(sign | (e << 23) | ((mant & 0x3ffu) << 13));
}

inline float bf16_to_float(uint16_t b) {
  return detail::float_from_bits(static_cast<uint32_t>(b) << 16);
}

inline uint16_t double_to_half(double d) {
  return static_cast<uint16_t>(detail::narrow_from_double<5, 10>(d));
}
inline uint16_t float_to_half(float f) {
  return double_to_half(static_cast<double>(f));
}

inline uint16_t double_to_bf16(double d) {
  return static_cast<uint16_t>(detail::narrow_from_double<8, 7>(d));
}
inline uint16_t float_to_bf16(float f) {
  return double_to_bf16(static_cast<double>(f));
}

}  // namespace dalr
