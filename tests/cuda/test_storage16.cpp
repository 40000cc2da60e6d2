// The 16-bit activation storage kernels (kernels/fmt16.cuh: layout16, relu16,
// channel_scale_shift16, pool16) against a CPU reference built
// on src/io/half.hpp, the rounding CpuForward<float> applies with ActStorage::Fp16/Bf16.
// Both formats for every kernel; seeded random values over the whole exponent range
// plus constructed cases: exact ties (odd and even lower neighbours), the floats either
// side of them, overflow to inf, subnormals, signed zeros, infinities and NaNs; odd
// sizes (batch 3, 5 channels, 7x9 pixels; c == 1 and hw == 1). Outputs are poisoned with
// a signalling NaN (which the kernels never produce) so unwritten elements are caught.
//
// Comparisons are bit for bit, except: a NaN result only has to be a NaN (the kernels
// give the canonical NaN, half.hpp keeps payload bits), and channel_scale_shift16 may
// equal either rounding of v * s + t (see ChannelScaleShift).
// Tests that launch kernels skip without a device; the reference and argument checks
// make no CUDA call and run everywhere.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "channel_scale_shift.cuh"
#include "cpu/forward.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/error.hpp"
#include "fmt16.cuh"
#include "gpu_test.hpp"
#include "io/half.hpp"
#include "layout16.cuh"
#include "pool16.cuh"
#include "relu.cuh"
#include "test_util.hpp"
#include "twin.hpp"

namespace dalr::kernels {
// For gtest's messages ("where GetParam() = Bf16").
void PrintTo(Fmt16 f, std::ostream* os) {
  *os << (f == Fmt16::Fp16 ? "Fp16" : "Bf16");
}
}  // namespace dalr::kernels

namespace dc = dalr::cuda;
namespace dk = dalr::kernels;
using dk::Fmt16;

namespace {

using dalr::test::announce_seed;
using dalr::test::contains;
using dalr::test::error_message;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---------------------------------------------------------------- CPU reference

uint16_t narrow(float v, Fmt16 f) {
  return f == Fmt16::Fp16 ? dalr::float_to_half(v) : dalr::float_to_bf16(v);
}
float widen(uint16_t b, Fmt16 f) {
  return f == Fmt16::Fp16 ? dalr::half_to_float(b) : dalr::bf16_to_float(b);
}
uint16_t inf16(Fmt16 f) {
  return f == Fmt16::Fp16 ? 0x7c00 : 0x7f80;
}
bool is_nan16(uint16_t b, Fmt16 f) {
  return (b & 0x7fffu) > inf16(f);
}
// A signalling NaN of the format: the rounding kernels give the canonical quiet NaN and
// the permutations only move input bits (which never hold it), so a slot still holding
// it was not written.
uint16_t poison16(Fmt16 f) {
  return f == Fmt16::Fp16 ? 0x7d5a : 0x7f9a;
}
constexpr uint32_t kPoison32 = 0x7fa5a5a5u;  // likewise for float outputs

uint32_t bits32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
float from_bits32(uint32_t u) {
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

std::string hex16(uint16_t b) {
  char s[8];
  std::snprintf(s, sizeof s, "0x%04x", static_cast<unsigned>(b));
  return s;
}

// The result the kernel gave against the reference: equal bits, or both NaN (and not the
// poison).
bool same16(uint16_t got, uint16_t want, Fmt16 f) {
  if (is_nan16(want, f)) return is_nan16(got, f) && got != poison16(f);
  return got == want;
}

using dalr::test::twin::expect_all;  // first few failures of a per-element check

// ---------------------------------------------------------------- inputs

// n floats over the whole range of the format: most near 1, a quarter scaled by 2^k with
// k from below the smallest subnormal to past the largest finite value (so some round to
// zero, some to subnormals and some overflow).
std::vector<float> random_floats(size_t n, Fmt16 f, std::mt19937_64& rng) {
  const bool fp16 = f == Fmt16::Fp16;
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> k(fp16 ? -30 : -140, fp16 ? 17 : 128), pick(0, 3);
  std::vector<float> v(n);
  for (float& x : v) {
    x = nd(rng);
    if (pick(rng) == 0) x = std::ldexp(x, k(rng));
  }
  return v;
}

// n 16-bit values: random_floats rounded (wide) or N(0, 4) rounded (not wide).
std::vector<uint16_t> random16(size_t n, Fmt16 f, std::mt19937_64& rng, bool wide) {
  std::vector<float> v = random_floats(n, f, rng);
  if (!wide) {
    std::normal_distribution<float> nd(0.f, 4.f);
    for (float& x : v) x = nd(rng);
  }
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = narrow(v[i], f);
  return out;
}

// Floats that test the rounding: zeros, infinities, NaNs, float extremes and
// subnormals; and for lower neighbours lo (odd and even, subnormal, the smallest normal,
// the largest finite value and random ones), with either sign, the exact midpoint
// between lo and the next 16-bit value (exact in float, which has more bits) and the
// floats just below and above it. Above the largest finite value the midpoint is where
// rounding overflows to inf.
std::vector<float> rounding_cases(Fmt16 f, std::mt19937_64& rng) {
  std::vector<float> v = {0.f,
                          -0.f,
                          kInf,
                          -kInf,
                          kNaN,
                          -kNaN,
                          from_bits32(0x7f800001u),  // signalling NaN
                          std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(),
                          -std::numeric_limits<float>::denorm_min(),
                          from_bits32(0x00412345u),  // a float subnormal (bf16 keeps it)
                          1.f,
                          -1.f,
                          65504.f,
                          65520.f,
                          1e5f};
  const uint16_t max_finite = inf16(f) - 1;
  const uint16_t top_subnormal = f == Fmt16::Fp16 ? 0x3ff : 0x7f;
  std::vector<uint16_t> lows = {0, 1, 2, 3, top_subnormal, uint16_t(top_subnormal + 1), max_finite};
  std::uniform_int_distribution<int> any(0, max_finite - 1);
  for (int k = 0; k < 40; ++k) lows.push_back(static_cast<uint16_t>(any(rng)));
  for (uint16_t lo : lows) {
    const float a = widen(lo, f);
    const float ulp = lo < max_finite ? widen(lo + 1, f) - a : a - widen(lo - 1, f);
    const float mid = a + ulp / 2;  // exact: one bit more than the format
    for (float s : {1.f, -1.f}) {
      v.push_back(s * mid);
      v.push_back(s * std::nextafter(mid, 0.f));
      v.push_back(s * std::nextafter(mid, kInf));
    }
  }
  return v;
}

// ---------------------------------------------------------------- device helpers

template <typename T>
dc::DeviceBuffer<T> to_device(const std::vector<T>& v, cudaStream_t s) {
  dc::DeviceBuffer<T> d(v.size());
  d.upload(v.data(), v.size(), s);
  DALR_CUDA_CHECK(cudaStreamSynchronize(s));  // v may go away after the return
  return d;
}

template <typename T>
std::vector<T> to_host(const dc::DeviceBuffer<T>& d, cudaStream_t s) {
  std::vector<T> v(d.size());
  d.download(v.data(), v.size(), s);
  DALR_CUDA_CHECK(cudaStreamSynchronize(s));
  return v;
}

struct Shape {
  int64_t batch, c, hw;
};
std::string describe(const Shape& s) {
  return "batch=" + std::to_string(s.batch) + " c=" + std::to_string(s.c) +
         " hw=" + std::to_string(s.hw);
}
// 7x9 pixels; hw == 1 and c == 1 (plain conversions); a single value.
const std::vector<Shape> kShapes = {{3, 5, 63}, {2, 17, 1}, {4, 1, 9}, {1, 1, 1}};

// Float NCHW x rounded and transposed to NHWC on the device, against the reference.
void expect_round_to_nhwc(const std::vector<float>& x, const Shape& s, Fmt16 f,
                          const dc::Stream& stream) {
  SCOPED_TRACE(describe(s));
  const size_t n = x.size();
  ASSERT_EQ(static_cast<int64_t>(n), s.batch * s.c * s.hw);
  const auto dx = to_device(x, stream);
  auto dy = to_device(std::vector<uint16_t>(n, poison16(f)), stream);
  dk::launch_round_to_nhwc16(dx.data(), s.batch, s.c, s.hw, dy.data(), f, stream);
  const std::vector<uint16_t> y = to_host(dy, stream);
  std::vector<uint16_t> want(n);
  std::vector<size_t> from(n);  // y[i] comes from x[from[i]]
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t ch = 0; ch < s.c; ++ch)
      for (int64_t p = 0; p < s.hw; ++p) {
        const size_t i = static_cast<size_t>((b * s.hw + p) * s.c + ch);
        from[i] = static_cast<size_t>((b * s.c + ch) * s.hw + p);
        want[i] = narrow(x[from[i]], f);
      }
  expect_all(
      n, [&](size_t i) { return same16(y[i], want[i], f); },
      [&](size_t i) {
        return "x " + std::to_string(x[from[i]]) + " (bits " + std::to_string(bits32(x[from[i]])) +
               "): got " + hex16(y[i]) + " want " + hex16(want[i]);
      });
}

class Storage16 : public ::testing::TestWithParam<Fmt16> {};

// ---------------------------------------------------------------- needs a GPU

TEST_P(Storage16, RoundToNhwcRoundsTiesOverflowAndSubnormals) {
  DALR_SKIP_WITHOUT_GPU();
  const Fmt16 f = GetParam();
  std::mt19937_64 rng(announce_seed(1601));
  dc::Stream stream;
  const std::vector<float> cases = rounding_cases(f, rng);
  for (const Shape& s : kShapes) {
    // The constructed cases first (all of them fit the largest shape), shuffled so that
    // they land in every channel and pixel, then random values.
    const size_t n = static_cast<size_t>(s.batch * s.c * s.hw);
    std::vector<float> x = cases;
    std::shuffle(x.begin(), x.end(), rng);
    x.resize(std::min(n, x.size()));
    const std::vector<float> more = random_floats(n - x.size(), f, rng);
    x.insert(x.end(), more.begin(), more.end());
    expect_round_to_nhwc(x, s, f, stream);
  }
}

// Random float bit patterns reach every exponent (NaNs and float subnormals included).
TEST_P(Storage16, RoundToNhwcOnRandomFloatBits) {
  DALR_SKIP_WITHOUT_GPU();
  const Fmt16 f = GetParam();
  std::mt19937_64 rng(announce_seed(1602));
  dc::Stream stream;
  const Shape s{2, 3, 10923};
  std::vector<float> x(static_cast<size_t>(s.batch * s.c * s.hw));
  std::uniform_int_distribution<uint32_t> u32;
  for (float& v : x) v = from_bits32(u32(rng));
  expect_round_to_nhwc(x, s, f, stream);
}

TEST_P(Storage16, WidenIsExactOnEveryPattern) {
  DALR_SKIP_WITHOUT_GPU();
  const Fmt16 f = GetParam();
  dc::Stream stream;
  std::vector<uint16_t> x(65536 + 7);  // every pattern, then a few again: an odd size
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<uint16_t>(i * 40503u);  // odd: a bijection
  const auto dx = to_device(x, stream);
  auto dy = to_device(std::vector<float>(x.size(), from_bits32(kPoison32)), stream);
  dk::launch_widen16(dx.data(), static_cast<int64_t>(x.size()), dy.data(), f, stream);
  const std::vector<float> y = to_host(dy, stream);
  expect_all(
      x.size(),
      [&](size_t i) {
        const float want = widen(x[i], f);
        if (std::isnan(want)) return std::isnan(y[i]) && bits32(y[i]) != kPoison32;
        return bits32(y[i]) == bits32(want);
      },
      [&](size_t i) {
        return hex16(x[i]) + ": got bits " + std::to_string(bits32(y[i])) + " want " +
               std::to_string(bits32(widen(x[i], f)));
      });
}

TEST_P(Storage16, ReluOnBits) {
  DALR_SKIP_WITHOUT_GPU();
  const Fmt16 f = GetParam();
  std::mt19937_64 rng(announce_seed(1603));
  dc::Stream stream;
  const uint16_t inf = inf16(f), sign = 0x8000;
  std::vector<uint16_t> x = {0,
                             sign,  // -0
                             inf,
                             uint16_t(sign | inf),
                             uint16_t(inf | 1),  // NaNs of both signs keep their payloads
                             uint16_t(inf | 0x55),
                             uint16_t(sign | inf | 1),
                             uint16_t(sign | inf | 0x2a),
                             1,  // smallest subnormals
                             uint16_t(sign | 1),
                             uint16_t(inf - 1),  // largest finite
                             uint16_t(sign | (inf - 1))};
  const std::vector<uint16_t> more = random16(3 * 5 * 63 - x.size(), f, rng, true);
  x.insert(x.end(), more.begin(), more.end());
  std::shuffle(x.begin(), x.end(), rng);
  auto dx = to_device(x, stream);
  dk::launch_relu16(dx.data(), static_cast<int64_t>(x.size()), f, stream);
  const std::vector<uint16_t> y = to_host(dx, stream);
  // As CpuForward: relu in float, NaN kept (here with its exact bits), then rounded.
  auto want = [&](size_t i) {
    const float v = widen(x[i], f);
    return std::isnan(v) ? x[i] : narrow(v > 0.f ? v : 0.f, f);
  };
  expect_all(
      x.size(), [&](size_t i) { return y[i] == want(i); },
      [&](size_t i) { return hex16(x[i]) + ": got " + hex16(y[i]) + " want " + hex16(want(i)); });
}

// The kernel multiplies and adds with __fmul_rn / __fadd_rn (no FMA contraction), as the
// CPU twin does: the result must equal the rounding of the separately rounded product
// plus the shift, bit for bit.
TEST_P(Storage16, ChannelScaleShift) {
  DALR_SKIP_WITHOUT_GPU();
  const Fmt16 f = GetParam();
  std::mt19937_64 rng(announce_seed(1604));
  dc::Stream stream;
  std::normal_distribution<float> nd(0.f, 1.f);
  for (const Shape& s : kShapes) {
    for (bool channels_last : {false, true}) {
      for (int variant = 0; variant < 3; ++variant) {
        // shift only; scale and shift; shift then the fused ReLU
        const bool with_scale = variant == 1, relu = variant == 2;
        SCOPED_TRACE(describe(s) + (channels_last ? " NHWC" : " NCHW") +
                     (with_scale ? " scale"
                      : relu     ? " no scale, relu"
                                 : " no scale"));
        const size_t n = static_cast<size_t>(s.batch * s.c * s.hw);
        const std::vector<uint16_t> x = random16(n, f, rng, true);
        std::vector<float> scale(static_cast<size_t>(s.c)), shift(scale.size());
        for (float& v : scale) v = 2.f * nd(rng);
        for (float& v : shift) v = nd(rng);
        auto dx = to_device(x, stream);
        const auto dscale = to_device(scale, stream), dshift = to_device(shift, stream);
        dk::launch_channel_scale_shift16(dx.data(), s.batch, s.c, s.hw, channels_last,
                                         with_scale ? dscale.data() : nullptr, dshift.data(), f,
                                         stream, relu);
        const std::vector<uint16_t> y = to_host(dx, stream);
        auto channel = [&](size_t i) {
          const int64_t k = static_cast<int64_t>(i);
          return static_cast<size_t>(channels_last ? k % s.c : (k / s.hw) % s.c);
        };
        // The ReLU as the CPU twin applies it, after the layer's rounding (-0 and
        // negatives to +0, NaN kept).
        auto relu16 = [&](uint16_t b) {
          return relu && (b & 0x8000u) && !is_nan16(b, f) ? uint16_t(0) : b;
        };
        auto fused = [&](size_t i) {
          const float v = widen(x[i], f), t = shift[channel(i)];
          return relu16(narrow(with_scale ? std::fma(v, scale[channel(i)], t) : v + t, f));
        };
        auto separate = [&](size_t i) {
          const float v = widen(x[i], f), t = shift[channel(i)];
          if (!with_scale) return relu16(narrow(v + t, f));
          volatile float product = v * scale[channel(i)];  // no contraction here
          return narrow(product + t, f);
        };
        expect_all(
            n, [&](size_t i) { return same16(y[i], separate(i), f); },
            [&](size_t i) {
              return hex16(x[i]) + " channel " + std::to_string(channel(i)) + ": got " +
                     hex16(y[i]) + " want " + hex16(separate(i)) + " (an FMA would give " +
                     hex16(fused(i)) + ")";
            });
      }
    }
  }
}

// The offset of (image b, channel ch, row r, column col) in a batch of c-channel h x w
// images, channels-last (NHWC) or not (NCHW): the pooling tests' layouts.
size_t pixel_index(bool channels_last, int64_t c, int64_t h, int64_t w, int64_t b, int64_t ch,
                   int64_t r, int64_t col) {
  return static_cast<size_t>(channels_last ? ((b * h + r) * w + col) * c + ch
                                           : ((b * c + ch) * h + r) * w + col);
}

// Same window, same float summation order (iy outer, ix inner), the same IEEE division
// (nvcc's default -prec-div=true) and one rounding on both sides, and no product to
// contract: the results must match bit for bit.
TEST_P(Storage16, AdaptiveAvgPool) {
  DALR_SKIP_WITHOUT_GPU();
  const Fmt16 f = GetParam();
  std::mt19937_64 rng(announce_seed(1605));
  dc::Stream stream;
  struct Pool {
    int64_t batch, c, h, w, ho, wo;
  };
  // Overlapping bins; identity; more outputs than inputs (rows repeat); global average.
  const std::vector<Pool> pools = {
      {3, 5, 7, 9, 3, 4}, {3, 5, 7, 7, 7, 7}, {2, 3, 5, 3, 7, 2}, {1, 4, 9, 7, 1, 1}};
  for (const Pool& q : pools) {
    for (bool channels_last : {false, true}) {
      SCOPED_TRACE("batch=" + std::to_string(q.batch) + " c=" + std::to_string(q.c) + " " +
                   std::to_string(q.h) + "x" + std::to_string(q.w) + " -> " + std::to_string(q.ho) +
                   "x" + std::to_string(q.wo) + (channels_last ? " NHWC" : " NCHW"));
      const std::vector<uint16_t> x =
          random16(static_cast<size_t>(q.batch * q.c * q.h * q.w), f, rng, false);
      const size_t n = static_cast<size_t>(q.batch * q.c * q.ho * q.wo);
      const auto dx = to_device(x, stream);
      auto dy = to_device(std::vector<uint16_t>(n, poison16(f)), stream);
      dk::launch_adaptive_avgpool16(dx.data(), q.batch, q.c, q.h, q.w, channels_last, dy.data(),
                                    q.ho, q.wo, f, stream);
      const std::vector<uint16_t> y = to_host(dy, stream);

      auto at = [&](int64_t b, int64_t ch, int64_t r, int64_t col, int64_t h, int64_t w) {
        return pixel_index(channels_last, q.c, h, w, b, ch, r, col);
      };
      std::vector<uint16_t> want(n);
      for (int64_t b = 0; b < q.batch; ++b)
        for (int64_t ch = 0; ch < q.c; ++ch)
          for (int64_t oy = 0; oy < q.ho; ++oy)
            for (int64_t ox = 0; ox < q.wo; ++ox) {
              const int64_t y0 = oy * q.h / q.ho, y1 = ((oy + 1) * q.h + q.ho - 1) / q.ho;
              const int64_t x0 = ox * q.w / q.wo, x1 = ((ox + 1) * q.w + q.wo - 1) / q.wo;
              float acc = 0.f;
              for (int64_t iy = y0; iy < y1; ++iy)
                for (int64_t ix = x0; ix < x1; ++ix)
                  acc += widen(x[at(b, ch, iy, ix, q.h, q.w)], f);
              want[at(b, ch, oy, ox, q.ho, q.wo)] =
                  narrow(acc / static_cast<float>((y1 - y0) * (x1 - x0)), f);
            }
      if (q.h == q.ho && q.w == q.wo) {
        EXPECT_EQ(want, x) << "identity pool must copy";
      }
      expect_all(
          n, [&](size_t i) { return same16(y[i], want[i], f); },
          [&](size_t i) { return "got " + hex16(y[i]) + " want " + hex16(want[i]); });
    }
  }
}

// Fixed windows, max and average, NCHW and NHWC, with a ragged edge (floor mode) and a
// NaN planted in one window (max must return it). Same arithmetic as the reference:
// bit for bit.
TEST_P(Storage16, FixedWindowPool) {
  DALR_SKIP_WITHOUT_GPU();
  const Fmt16 f = GetParam();
  std::mt19937_64 rng(announce_seed(1606));
  dc::Stream stream;
  struct Pool {
    int64_t batch, c, h, w, k, s;
  };
  const std::vector<Pool> pools = {{3, 5, 11, 9, 3, 2}, {2, 3, 8, 6, 2, 2}, {1, 4, 5, 7, 2, 1}};
  for (const Pool& q : pools)
    for (bool channels_last : {false, true})
      for (bool is_max : {true, false}) {
        const int64_t ho = (q.h - q.k) / q.s + 1, wo = (q.w - q.k) / q.s + 1;
        SCOPED_TRACE("batch=" + std::to_string(q.batch) + " c=" + std::to_string(q.c) + " " +
                     std::to_string(q.h) + "x" + std::to_string(q.w) + " k" + std::to_string(q.k) +
                     " s" + std::to_string(q.s) + (channels_last ? " NHWC" : " NCHW") +
                     (is_max ? " max" : " avg"));
        std::vector<uint16_t> x =
            random16(static_cast<size_t>(q.batch * q.c * q.h * q.w), f, rng, false);
        if (is_max) x[x.size() / 2] = narrow(kNaN, f);
        const size_t n = static_cast<size_t>(q.batch * q.c * ho * wo);
        const auto dx = to_device(x, stream);
        auto dy = to_device(std::vector<uint16_t>(n, poison16(f)), stream);
        dk::launch_pool16(dx.data(), q.batch, q.c, q.h, q.w, channels_last, q.k, q.s, is_max,
                          dy.data(), ho, wo, f, stream);
        const std::vector<uint16_t> y = to_host(dy, stream);
        auto at = [&](int64_t b, int64_t ch, int64_t r, int64_t col, int64_t h, int64_t w) {
          return pixel_index(channels_last, q.c, h, w, b, ch, r, col);
        };
        std::vector<uint16_t> want(n);
        size_t nans = 0;
        for (int64_t b = 0; b < q.batch; ++b)
          for (int64_t ch = 0; ch < q.c; ++ch)
            for (int64_t oy = 0; oy < ho; ++oy)
              for (int64_t ox = 0; ox < wo; ++ox) {
                float acc = is_max ? -kInf : 0.f;
                for (int64_t iy = oy * q.s; iy < oy * q.s + q.k; ++iy)
                  for (int64_t ix = ox * q.s; ix < ox * q.s + q.k; ++ix) {
                    const float v = widen(x[at(b, ch, iy, ix, q.h, q.w)], f);
                    if (!is_max)
                      acc += v;
                    else if (v > acc || std::isnan(v))
                      acc = v;
                  }
                if (!is_max) acc /= static_cast<float>(q.k * q.k);
                nans += std::isnan(acc);
                want[at(b, ch, oy, ox, ho, wo)] = narrow(acc, f);
              }
        if (is_max) {
          EXPECT_LE(nans, 4u);
        }
        expect_all(
            n, [&](size_t i) { return same16(y[i], want[i], f); },
            [&](size_t i) { return "got " + hex16(y[i]) + " want " + hex16(want[i]); });
      }
}

INSTANTIATE_TEST_SUITE_P(Formats, Storage16, ::testing::Values(Fmt16::Fp16, Fmt16::Bf16),
                         [](const ::testing::TestParamInfo<Fmt16>& info) {
                           return info.param == Fmt16::Fp16 ? std::string("Fp16")
                                                            : std::string("Bf16");
                         });

// Format-free: random bits (never the poison) move NHWC -> NCHW.
TEST(Storage16Permute, NhwcToNchw) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(1606));
  dc::Stream stream;
  const uint16_t poison = poison16(Fmt16::Fp16);
  std::uniform_int_distribution<int> any(0, 0xffff);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    const size_t n = static_cast<size_t>(s.batch * s.c * s.hw);
    std::vector<uint16_t> x(n);
    for (uint16_t& v : x) {
      do v = static_cast<uint16_t>(any(rng));
      while (v == poison);
    }
    const auto dx = to_device(x, stream);
    auto dy = to_device(std::vector<uint16_t>(n, poison), stream);
    dk::launch_nhwc_to_nchw16(dx.data(), s.batch, s.c, s.hw, dy.data(), stream);
    const std::vector<uint16_t> y = to_host(dy, stream);
    std::vector<uint16_t> want(n);
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t ch = 0; ch < s.c; ++ch)
        for (int64_t p = 0; p < s.hw; ++p)
          want[static_cast<size_t>((b * s.c + ch) * s.hw + p)] =
              x[static_cast<size_t>((b * s.hw + p) * s.c + ch)];
    expect_all(
        n, [&](size_t i) { return y[i] == want[i]; },
        [&](size_t i) { return "got " + hex16(y[i]) + " want " + hex16(want[i]); });
  }
}

// ---------------------------------------------------------------- runs everywhere

// The oracle itself: ties go to the even neighbour, past the largest finite value's
// midpoint to inf, and subnormals survive.
TEST(Storage16Reference, RoundsToNearestEven) {
  // fp16: 1 + 2^-11 is the tie between 1 (even) and 1 + 2^-10; 1 + 3 * 2^-11 between
  // 1 + 2^-10 (odd) and 1 + 2^-9 (even).
  EXPECT_EQ(narrow(1.f + std::ldexp(1.f, -11), Fmt16::Fp16), 0x3c00);
  EXPECT_EQ(narrow(1.f + 3 * std::ldexp(1.f, -11), Fmt16::Fp16), 0x3c02);
  EXPECT_EQ(narrow(65519.996f, Fmt16::Fp16), 0x7bff);
  EXPECT_EQ(narrow(65520.f, Fmt16::Fp16), 0x7c00);  // tie with 65504 (odd): inf
  EXPECT_EQ(narrow(-1e9f, Fmt16::Fp16), 0xfc00);
  EXPECT_EQ(narrow(std::ldexp(1.f, -24), Fmt16::Fp16), 0x0001);  // smallest subnormal
  EXPECT_EQ(narrow(std::ldexp(1.f, -25), Fmt16::Fp16), 0x0000);  // its half: tie to 0
  EXPECT_EQ(narrow(std::ldexp(3.f, -26), Fmt16::Fp16), 0x0001);
  // bf16: the same ties at 2^-8, overflow at the float maximum, float subnormals kept.
  EXPECT_EQ(narrow(1.f + std::ldexp(1.f, -8), Fmt16::Bf16), 0x3f80);
  EXPECT_EQ(narrow(1.f + 3 * std::ldexp(1.f, -8), Fmt16::Bf16), 0x3f82);
  EXPECT_EQ(narrow(std::numeric_limits<float>::max(), Fmt16::Bf16), 0x7f80);
  EXPECT_EQ(narrow(from_bits32(0x7f7f7fffu), Fmt16::Bf16), 0x7f7f);
  EXPECT_EQ(narrow(from_bits32(0x00018000u), Fmt16::Bf16), 0x0002);  // subnormal tie, odd
  EXPECT_EQ(narrow(from_bits32(0x00028000u), Fmt16::Bf16), 0x0002);  // subnormal tie, even
  for (Fmt16 f : {Fmt16::Fp16, Fmt16::Bf16}) {
    EXPECT_TRUE(is_nan16(narrow(kNaN, f), f));
    EXPECT_TRUE(is_nan16(poison16(f), f));
  }
}

// Argument checks come before any CUDA call, so these run without a device. The fake
// pointers are never dereferenced; a launch that slipped through would fail with a
// CUDA message, which the substring checks would reject.
TEST(Storage16Args, NegativeSizesUnknownFormatAndNullPointersThrow) {
  uint16_t h16[4] = {};
  float h32[4] = {};
  uint16_t* p16 = h16;
  float* p32 = h32;
  const Fmt16 f = Fmt16::Bf16;
  auto expect_error = [](const std::string& m, const std::string& part) {
    EXPECT_TRUE(contains(m, part)) << "message: " << m << "\nexpected to contain: " << part;
  };
  expect_error(error_message([&] { dk::launch_round_to_nhwc16(p32, -1, 1, 1, p16, f, nullptr); }),
               "round_to_nhwc16: negative batch -1");
  expect_error(
      error_message([&] { dk::launch_round_to_nhwc16(p32, 1, 1, 2, nullptr, f, nullptr); }),
      "round_to_nhwc16: y is a null pointer");
  expect_error(error_message([&] { dk::launch_widen16(p16, -3, p32, f, nullptr); }),
               "widen16: negative n -3");
  expect_error(error_message([&] { dk::launch_widen16(nullptr, 3, p32, f, nullptr); }),
               "widen16: x is a null pointer");
  expect_error(error_message([&] { dk::launch_nhwc_to_nchw16(p16, 1, -5, 1, p16, nullptr); }),
               "nhwc_to_nchw16: negative channels -5");
  expect_error(error_message([&] { dk::launch_relu16(p16, -1, f, nullptr); }),
               "relu16: negative n -1");
  expect_error(error_message([&] { dk::launch_relu16(nullptr, 4, f, nullptr); }),
               "relu16: x is a null pointer");
  expect_error(error_message([&] {
                 dk::launch_channel_scale_shift16(p16, 1, 2, -7, true, p32, p32, f, nullptr);
               }),
               "channel_scale_shift16: negative hw -7");
  expect_error(error_message([&] {
                 dk::launch_channel_scale_shift16(p16, 1, 2, 2, false, p32, nullptr, f, nullptr);
               }),
               "channel_scale_shift16: shift is a null pointer");
  expect_error(error_message([&] {
                 dk::launch_adaptive_avgpool16(p16, 1, 1, 2, 2, false, p16, 0, 1, f, nullptr);
               }),
               "adaptive_avgpool16: non-positive output height 0");
  expect_error(error_message([&] {
                 dk::launch_adaptive_avgpool16(p16, 1, 1, 2, -2, true, p16, 1, 1, f, nullptr);
               }),
               "adaptive_avgpool16: non-positive input width -2");
  expect_error(error_message([&] {
                 dk::launch_adaptive_avgpool16(nullptr, 1, 1, 2, 2, true, p16, 1, 1, f, nullptr);
               }),
               "adaptive_avgpool16: x is a null pointer");
  expect_error(error_message([&] {
                 dk::launch_pool16(p16, 1, 1, 4, 4, true, 3, 2, true, p16, 2, 2, f, nullptr);
               }),
               "pool16: the windows of a 2x2 output (kernel 3, stride 2) do not fit a 4x4 input");
  expect_error(error_message([&] {
                 dk::launch_pool16(p16, 1, 1, 4, 4, false, 0, 2, false, p16, 2, 2, f, nullptr);
               }),
               "pool16: non-positive kernel 0");
  expect_error(error_message([&] { dk::launch_relu16(p16, 4, static_cast<Fmt16>(7), nullptr); }),
               "relu16: unknown 16-bit format 7");
  const int64_t big = int64_t(1) << 40;
  expect_error(
      error_message([&] { dk::launch_round_to_nhwc16(p32, big, big, 1, p16, f, nullptr); }),
      "round_to_nhwc16: element count overflows int64");
}

// Nothing to do: no CUDA call, and null pointers (an empty DeviceBuffer's) are fine.
TEST(Storage16Args, EmptyCallsReturnAtOnce) {
  for (Fmt16 f : {Fmt16::Fp16, Fmt16::Bf16}) {
    EXPECT_NO_THROW(dk::launch_round_to_nhwc16(nullptr, 0, 5, 7, nullptr, f, nullptr));
    EXPECT_NO_THROW(dk::launch_round_to_nhwc16(nullptr, 3, 5, 0, nullptr, f, nullptr));
    EXPECT_NO_THROW(dk::launch_widen16(nullptr, 0, nullptr, f, nullptr));
    EXPECT_NO_THROW(dk::launch_relu16(nullptr, 0, f, nullptr));
    EXPECT_NO_THROW(
        dk::launch_channel_scale_shift16(nullptr, 3, 0, 7, true, nullptr, nullptr, f, nullptr));
    EXPECT_NO_THROW(
        dk::launch_adaptive_avgpool16(nullptr, 0, 5, 7, 9, false, nullptr, 3, 4, f, nullptr));
  }
  EXPECT_NO_THROW(dk::launch_nhwc_to_nchw16(nullptr, 3, 0, 7, nullptr, nullptr));
}

}  // namespace
