#include "cpu/forward_ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cpu/lapack.hpp"
#include "io/half.hpp"

namespace dalr {

const char* act_storage_name(ActStorage s) {
  switch (s) {
    case ActStorage::Fp16:
      return "fp16";
    case ActStorage::Bf16:
      return "bf16";
    case ActStorage::Fp32:
      break;
  }
  return "fp32";
}

float round_to_storage(float x, ActStorage s) {
  switch (s) {
    case ActStorage::Fp16: {
      // Within float, without converting: fp16 keeps 10 of float's 23 mantissa bits
      // down to 2^-14, and below that multiples of 2^-24.
      uint32_t u;
      std::memcpy(&u, &x, sizeof u);
      const uint32_t a = u & 0x7fffffffu;
      if (a >= 0x7f800000u) return a > 0x7f800000u ? half_to_float(float_to_half(x)) : x;
      float r;
      if (a < 0x38800000u) {  // |x| < 2^-14: float's spacing at 0.5 is 2^-24, so the sum
        float m;              // rounds |x| to a multiple of 2^-24, to nearest even
        std::memcpy(&m, &a, sizeof m);
        volatile float sum = m + 0.5f;  // kept apart from the subtraction
        r = sum - 0.5f;
      } else {
        uint32_t v = a + 0xfffu + ((a >> 13) & 1u);
        v &= ~0x1fffu;
        std::memcpy(&r, &v, sizeof r);
        if (r >= 65520.f) r = INFINITY;  // past the largest half (65504) and its tie
      }
      return (u >> 31) ? -r : r;
    }
    case ActStorage::Bf16: {
      // float -> bf16 keeps float's exponent, so round-to-nearest-even on the bits is
      // exact (overflow carries into the exponent and gives inf, as it should); NaN is
      // kept as a NaN with the quiet bit set.
      uint32_t u;
      std::memcpy(&u, &x, sizeof u);
      if ((u & 0x7fffffffu) > 0x7f800000u)
        return bf16_to_float(static_cast<uint16_t>((u >> 16) | 0x40u));
      u += 0x7fffu + ((u >> 16) & 1u);
      return bf16_to_float(static_cast<uint16_t>(u >> 16));
    }
    case ActStorage::Fp32:
      break;
  }
  return x;
}

std::vector<float> rounded_to_storage(std::vector<float> v, ActStorage s) {
  cpu::round_all(v, s);
  return v;
}

namespace cpu {

template <typename T>
void round_all(std::vector<T>& v, ActStorage s) {
  if constexpr (std::is_same_v<T, float>) {
    if (s == ActStorage::Fp32) return;
    for (float& x : v) x = round_to_storage(x, s);
  } else {
    (void)v;
    (void)s;
  }
}

namespace {

// Caffe's im2col: for an image (C, H, W) writes the (C*k*k) x (Ho*Wo) row-major patch
// matrix, which is the column-major (Ho*Wo) x (C*k*k) matrix with leading dim Ho*Wo.
// Tap (ki, kj) of a dilated kernel reads the pixel ki*dilation, kj*dilation from the
// window's corner.
template <typename T>
void im2col(const T* src, int64_t C, int64_t H, int64_t W, const LayerSpec& l, int64_t Ho,
            int64_t Wo, T* col) {
  const int64_t k = l.kernel, d = l.dilation;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t ki = 0; ki < k; ++ki)
      for (int64_t kj = 0; kj < k; ++kj) {
        T* row = col + ((c * k + ki) * k + kj) * Ho * Wo;
        for (int64_t oy = 0; oy < Ho; ++oy) {
          const int64_t iy = oy * l.stride - l.pad + ki * d;
          T* out = row + oy * Wo;
          if (iy < 0 || iy >= H) {
            std::fill(out, out + Wo, T(0));
            continue;
          }
          const T* in = src + (c * H + iy) * W;
          for (int64_t ox = 0; ox < Wo; ++ox) {
            const int64_t ix = ox * l.stride - l.pad + kj * d;
            out[ox] = (ix >= 0 && ix < W) ? in[ix] : T(0);
          }
        }
      }
}

// v (batch blocks of channels x hw) += bias per channel.
template <typename T>
void add_channel_bias(std::vector<T>& v, int64_t batch, int64_t channels, int64_t hw,
                      const std::vector<T>& bias) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c) {
      T* p = v.data() + (b * channels + c) * hw;
      for (int64_t j = 0; j < hw; ++j) p[j] += bias[static_cast<size_t>(c)];
    }
}

// The three poolings: one (image, channel) plane at a time, the window of output (oy,
// ox) given by `window`, max (NaN kept) or mean over it.
template <typename T, typename Window>
void pool_planes(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
                 bool is_max, const Window& window, std::vector<T>& y) {
  y.assign(static_cast<size_t>(batch * o.numel()), T(0));
  for (int64_t p = 0; p < batch * s.c; ++p) {
    const T* in = x.data() + p * s.h * s.w;
    T* out = y.data() + p * o.h * o.w;
    for (int64_t oy = 0; oy < o.h; ++oy)
      for (int64_t ox = 0; ox < o.w; ++ox) {
        int64_t y0, y1, x0, x1;  // window [y0, y1) x [x0, x1)
        window(oy, ox, y0, y1, x0, x1);
        T acc = is_max ? -std::numeric_limits<T>::infinity() : T(0);
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) {
            const T v = in[iy * s.w + ix];
            acc = is_max ? (v > acc || std::isnan(v) ? v : acc) : acc + v;
          }
        out[oy * o.w + ox] = is_max ? acc : acc / T((y1 - y0) * (x1 - x0));
      }
  }
}

}  // namespace

template <typename T>
void add_bias_to_stored(std::vector<T>& v, int64_t batch, int64_t channels, int64_t hw,
                        const std::vector<T>& bias, ActStorage s) {
  if (bias.empty()) return;
  round_all(v, s);
  add_channel_bias(v, batch, channels, hw, bias);
}

template <typename T>
void relu(std::vector<T>& v) {
  for (T& x : v) x = relu_keep_nan(x);
}

template <typename T>
void conv(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
          const LayerSpec& l, const std::vector<T>& weight, const std::vector<T>& bias,
          std::vector<T>& y) {
  const int64_t in_size = s.numel(), hw = o.h * o.w, ckk = s.c * l.kernel * l.kernel;
  const bool direct = l.kernel == 1 && l.stride == 1 && l.pad == 0;  // the image is its im2col
  std::vector<T> col(direct ? 0 : static_cast<size_t>(ckk * hw));
  y.assign(static_cast<size_t>(batch * o.numel()), T(0));
  for (int64_t b = 0; b < batch; ++b) {
    const T* src = x.data() + b * in_size;
    T* dst = y.data() + b * o.numel();
    if (!direct) im2col(src, s.c, s.h, s.w, l, o.h, o.w, col.data());
    if (!bias.empty())
      for (int64_t c = 0; c < o.c; ++c) std::fill(dst + c * hw, dst + (c + 1) * hw, bias[c]);
    // Y (hw x O, col-major: the image's NCHW output) = Col (hw x ckk) * W (ckk x O), where
    // the row-major (O, C, k, k) weight is the column-major ckk x O matrix.
    cpu::gemm(CblasNoTrans, CblasNoTrans, hw, o.c, ckk, T(1), direct ? src : col.data(), hw,
              weight.data(), ckk, bias.empty() ? T(0) : T(1), dst, hw);
  }
}

template <typename T>
void linear(const std::vector<T>& x, int64_t batch, const LayerSpec& l,
            const std::vector<T>& weight, const std::vector<T>& bias, std::vector<T>& y) {
  y.assign(static_cast<size_t>(batch * l.out), T(0));
  if (!bias.empty())
    for (int64_t b = 0; b < batch; ++b) std::copy(bias.begin(), bias.end(), y.begin() + b * l.out);
  // Y (out x batch) = W X; the row-major (out, in) weight is the column-major in x out W^T.
  cpu::gemm(CblasTrans, CblasNoTrans, l.out, batch, l.in, T(1), weight.data(), l.in, x.data(), l.in,
            bias.empty() ? T(0) : T(1), y.data(), l.out);
}

// k x k windows every `stride` pixels (floor mode, no padding): max or average.
template <typename T>
void fixed_window_pool(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
                       const LayerSpec& l, bool max, std::vector<T>& y) {
  pool_planes(
      x, batch, s, o, max,
      [&](int64_t oy, int64_t ox, int64_t& y0, int64_t& y1, int64_t& x0, int64_t& x1) {
        y0 = oy * l.stride, y1 = y0 + l.kernel;
        x0 = ox * l.stride, x1 = x0 + l.kernel;
      },
      y);
}

// The generic window loop above, specialised for max: a window row at a time into the
// output row, branch-free (a data-dependent branch per pixel mispredicted half the time and
// made this loop half of a small CNN's forward time). NaN is kept as there: a window with a
// NaN gives NaN, tracked apart so that the max itself stays a plain select.
template <typename T>
void max_pool(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
              const LayerSpec& l, std::vector<T>& y) {
  y.assign(static_cast<size_t>(batch * o.numel()), -std::numeric_limits<T>::infinity());
  const int64_t k = l.kernel, stride = l.stride;
  std::vector<unsigned char> nan(static_cast<size_t>(o.w));
  for (int64_t p = 0; p < batch * s.c; ++p) {
    const T* in = x.data() + p * s.h * s.w;
    for (int64_t oy = 0; oy < o.h; ++oy) {
      T* out = y.data() + (p * o.h + oy) * o.w;
      std::fill(nan.begin(), nan.end(), 0);
      for (int64_t ki = 0; ki < k; ++ki) {
        const T* row = in + (oy * stride + ki) * s.w;
        for (int64_t ox = 0; ox < o.w; ++ox) {
          const T* win = row + ox * stride;
          T acc = out[ox];
          unsigned char bad = nan[static_cast<size_t>(ox)];
          for (int64_t kj = 0; kj < k; ++kj) {
            const T v = win[kj];
            acc = v > acc ? v : acc;
            bad |= static_cast<unsigned char>(v != v);
          }
          out[ox] = acc;
          nan[static_cast<size_t>(ox)] = bad;
        }
      }
      for (int64_t ox = 0; ox < o.w; ++ox)
        if (nan[static_cast<size_t>(ox)]) out[ox] = std::numeric_limits<T>::quiet_NaN();
    }
  }
}

template <typename T>
void avg_pool(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
              const LayerSpec& l, std::vector<T>& y) {
  fixed_window_pool(x, batch, s, o, l, false, y);
}

template <typename T>
void adaptive_avg_pool(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
                       std::vector<T>& y) {
  pool_planes(
      x, batch, s, o, false,
      [&](int64_t oy, int64_t ox, int64_t& y0, int64_t& y1, int64_t& x0, int64_t& x1) {
        y0 = oy * s.h / o.h, y1 = ((oy + 1) * s.h + o.h - 1) / o.h;
        x0 = ox * s.w / o.w, x1 = ((ox + 1) * s.w + o.w - 1) / o.w;
      },
      y);
}

template <typename T>
void batchnorm(std::vector<T>& v, int64_t batch, const ActShape& s, const std::vector<T>& scale,
               const std::vector<T>& shift) {
  const int64_t hw = s.h * s.w;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t ch = 0; ch < s.c; ++ch) {
      T* p = v.data() + (b * s.c + ch) * hw;
      for (int64_t j = 0; j < hw; ++j) p[j] = p[j] * scale[ch] + shift[ch];
    }
}

#define DALR_CPU_OPS(T)                                                                         \
  template void round_all(std::vector<T>&, ActStorage);                                         \
  template void add_bias_to_stored(std::vector<T>&, int64_t, int64_t, int64_t,                  \
                                   const std::vector<T>&, ActStorage);                          \
  template void relu(std::vector<T>&);                                                          \
  template void conv(const std::vector<T>&, int64_t, const ActShape&, const ActShape&,          \
                     const LayerSpec&, const std::vector<T>&, const std::vector<T>&,            \
                     std::vector<T>&);                                                          \
  template void linear(const std::vector<T>&, int64_t, const LayerSpec&, const std::vector<T>&, \
                       const std::vector<T>&, std::vector<T>&);                                 \
  template void max_pool(const std::vector<T>&, int64_t, const ActShape&, const ActShape&,      \
                         const LayerSpec&, std::vector<T>&);                                    \
  template void avg_pool(const std::vector<T>&, int64_t, const ActShape&, const ActShape&,      \
                         const LayerSpec&, std::vector<T>&);                                    \
  template void adaptive_avg_pool(const std::vector<T>&, int64_t, const ActShape&,              \
                                  const ActShape&, std::vector<T>&);                            \
  template void batchnorm(std::vector<T>&, int64_t, const ActShape&, const std::vector<T>&,     \
                          const std::vector<T>&);
DALR_CPU_OPS(float)
DALR_CPU_OPS(double)
#undef DALR_CPU_OPS

}  // namespace cpu
}  // namespace dalr
