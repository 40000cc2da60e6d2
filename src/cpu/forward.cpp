#include "cpu/forward.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cpu/dnnl_conv.hpp"
#include "cpu/lapack.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "io/half.hpp"
#include "io/layer_params.hpp"

namespace dalr {
namespace {

// Rounds every value of v to the storage format in place (see ActStorage).
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

// Caffe's im2col: for an image (C, H, W) writes the (C*k*k) x (Ho*Wo) row-major patch
// matrix, which is the column-major (Ho*Wo) x (C*k*k) matrix with leading dim Ho*Wo.
template <typename T>
void im2col(const T* src, int64_t C, int64_t H, int64_t W, const LayerSpec& l, int64_t Ho,
            int64_t Wo, T* col) {
  const int64_t k = l.kernel;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t ki = 0; ki < k; ++ki)
      for (int64_t kj = 0; kj < k; ++kj) {
        T* row = col + ((c * k + ki) * k + kj) * Ho * Wo;
        for (int64_t oy = 0; oy < Ho; ++oy) {
          const int64_t iy = oy * l.stride - l.pad + ki;
          T* out = row + oy * Wo;
          if (iy < 0 || iy >= H) {
            std::fill(out, out + Wo, T(0));
            continue;
          }
          const T* in = src + (c * H + iy) * W;
          for (int64_t ox = 0; ox < Wo; ++ox) {
            const int64_t ix = ox * l.stride - l.pad + kj;
            out[ox] = (ix >= 0 && ix < W) ? in[ix] : T(0);
          }
        }
      }
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

// 16-bit storage's rule for a conv or linear layer with a bias: its product v is stored
// (rounded) before the bias is added; the sum is rounded with the layer's output.
template <typename T>
void add_bias_to_stored(std::vector<T>& v, int64_t batch, int64_t channels, int64_t hw,
                        const std::vector<T>& bias, ActStorage s) {
  if (bias.empty()) return;
  round_all(v, s);
  add_channel_bias(v, batch, channels, hw, bias);
}

template <typename T>
void pool(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
          const LayerSpec& l, std::vector<T>& y) {
  y.assign(static_cast<size_t>(batch * o.numel()), T(0));
  const bool is_max = l.type == LayerType::MaxPool;
  const bool adaptive = l.type == LayerType::AdaptiveAvgPool;
  for (int64_t p = 0; p < batch * s.c; ++p) {  // one (image, channel) plane at a time
    const T* in = x.data() + p * s.h * s.w;
    T* out = y.data() + p * o.h * o.w;
    for (int64_t oy = 0; oy < o.h; ++oy)
      for (int64_t ox = 0; ox < o.w; ++ox) {
        int64_t y0, y1, x0, x1;  // window [y0, y1) x [x0, x1)
        if (adaptive) {
          y0 = oy * s.h / o.h, y1 = ((oy + 1) * s.h + o.h - 1) / o.h;
          x0 = ox * s.w / o.w, x1 = ((ox + 1) * s.w + o.w - 1) / o.w;
        } else {
          y0 = oy * l.stride, y1 = y0 + l.kernel;
          x0 = ox * l.stride, x1 = x0 + l.kernel;
        }
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

}  // namespace

ActStorage act_storage_for(const std::string& precision) {
  if (precision == "fp16") return ActStorage::Fp16;
  if (precision == "bf16") return ActStorage::Bf16;
  return ActStorage::Fp32;
}

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

template <typename T>
CpuForward<T>::CpuForward(const Arch& arch, const SafetensorsFile& weights, ActStorage storage)
    : arch_(arch), storage_(storage) {
  if (!std::is_same_v<T, float> && storage != ActStorage::Fp32)
    throw Error(std::string("--precision ") + act_storage_name(storage) +
                " stores activations in 16 bits: it needs the float forward pass, not fp64");
  check_weights(arch_, weights);
  params_.resize(arch_.layers.size());
  for (size_t i = 0; i < arch_.layers.size(); ++i) {
    load_layer_params(arch_.layers[i], weights, &params_[i].weight, &params_[i].bias);
    // 16-bit storage holds the conv and linear weights in 16 bits too (the GPU's
    // tensor cores read them so); biases and batchnorm's folded scale and shift stay fp32.
    const LayerType t = arch_.layers[i].type;
    if (t == LayerType::Conv || t == LayerType::Linear) round_all(params_[i].weight, storage_);
  }
  if constexpr (std::is_same_v<T, float>) dnnl_ = cpu::DnnlConv::create();
}

template <typename T>
size_t CpuForward<T>::index_of(const std::string& name) const {
  std::string names;
  for (size_t i = 0; i < arch_.layers.size(); ++i) {
    if (arch_.layers[i].name == name) return i;
    if (!arch_.layers[i].name.empty()) names += (names.empty() ? "" : ", ") + arch_.layers[i].name;
  }
  throw Error("no layer named '" + name + "' (named layers: " + names + ")");
}

template <typename T>
Matrix<T> CpuForward<T>::run(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                             const std::string& stop_at_layer_input) const {
  const size_t stop =
      stop_at_layer_input.empty() ? arch_.layers.size() : index_of(stop_at_layer_input);
  return walk(input, batch, c, h, w, stop, {}, nullptr);
}

template <typename T>
void CpuForward<T>::run_taps(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                             const std::vector<std::string>& taps, const Tap& tap) const {
  std::vector<size_t> at;
  for (const std::string& name : taps) at.push_back(index_of(name));
  if (at.empty()) return;
  walk(input, batch, c, h, w, *std::max_element(at.begin(), at.end()), at, &tap);
}

template <typename T>
Matrix<T> CpuForward<T>::run_from(const std::string& layer, const T* input, int64_t batch,
                                  bool after) const {
  const size_t start = index_of(layer) + (after ? 1 : 0);
  const auto& in = arch_.input;
  return walk(input, batch, in.channels, in.crop[0], in.crop[1], arch_.layers.size(), {}, nullptr,
              start);
}

std::vector<float> rounded_to_storage(std::vector<float> v, ActStorage s) {
  round_all(v, s);
  return v;
}

template <typename T>
Matrix<T> apply_linear(const std::vector<T>& weight, const std::vector<T>& bias, int64_t in,
                       int64_t out, const T* x, int64_t batch, ActStorage storage) {
  if (static_cast<int64_t>(weight.size()) != in * out ||
      (!bias.empty() && static_cast<int64_t>(bias.size()) != out))
    throw Error("apply_linear: weight or bias does not match " + std::to_string(out) + " x " +
                std::to_string(in));
  LayerSpec l;
  l.type = LayerType::Linear;
  l.in = in;
  l.out = out;
  if (storage != ActStorage::Fp32 && !std::is_same_v<T, float>)
    throw Error("apply_linear: 16-bit storage needs float data");
  std::vector<T> xs(x, x + in * batch), y;
  if (storage != ActStorage::Fp32) {
    // CpuForward's rule for a 16-bit linear layer (see walk): product, then + bias.
    linear(xs, batch, l, weight, std::vector<T>{}, y);
    add_bias_to_stored(y, batch, out, 1, bias, storage);
    round_all(y, storage);
  } else {
    linear(xs, batch, l, weight, bias, y);
  }
  Matrix<T> m;
  m.rows = out;
  m.cols = batch;
  m.data = std::move(y);
  return m;
}

template Matrix<float> apply_linear(const std::vector<float>&, const std::vector<float>&, int64_t,
                                    int64_t, const float*, int64_t, ActStorage);
template Matrix<double> apply_linear(const std::vector<double>&, const std::vector<double>&,
                                     int64_t, int64_t, const double*, int64_t, ActStorage);

template <typename T>
Matrix<T> CpuForward<T>::walk(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                              size_t stop, const std::vector<size_t>& taps, const Tap* tap,
                              size_t start) const {
  if (batch < 1) throw Error("batch size must be >= 1, got " + std::to_string(batch));
  if (!input) throw Error("CpuForward::run: input is null");
  const std::vector<ActShape> shapes = layer_input_shapes(arch_, c, h, w);

  // From `start` on, the input is that layer's input (run_from), else the image.
  const int64_t in_size = start == 0 ? batch * c * h * w : batch * shapes[start].numel();
  std::vector<T> cur(input, input + in_size), next;
  round_all(cur, storage_);
  const auto is_tap = [&](size_t i) {
    return std::find(taps.begin(), taps.end(), i) != taps.end();
  };
  [[maybe_unused]] cpu::DnnlConv::Layout layout = nullptr;  // of cur; only between two convs
  // 16-bit storage: a conv or linear layer's product is stored (rounded) before its bias
  // is added, as on the GPU, where cuDNN and cuBLAS write the 16-bit product and a kernel
  // adds the bias in fp32 and rounds again.
  const bool split_bias = storage_ != ActStorage::Fp32;
  const std::vector<T> no_bias;
  for (size_t i = start; i < stop; ++i) {
    if (tap && std::find(taps.begin(), taps.end(), i) != taps.end())
      (*tap)(arch_.layers[i].name, cur.data(), shapes[i].numel(), batch);
    const LayerSpec& l = arch_.layers[i];
    const ActShape &s = shapes[i], &o = shapes[i + 1];
    const Params& p = params_[i];
    switch (l.type) {
      case LayerType::Conv:
        if constexpr (std::is_same_v<T, float>) {
          if (dnnl_) {
            // The ReLU right after fuses into the conv, unless its input is wanted (a tap
            // on it, or the pass stops there). A conv that feeds another conv directly
            // hands over its own layout, saving two reorders.
            const bool relu = !split_bias && i + 1 < stop &&
                              arch_.layers[i + 1].type == LayerType::Relu && !is_tap(i + 1);
            const size_t j = i + (relu ? 2 : 1);
            const bool keep =
                !split_bias && j < stop && arch_.layers[j].type == LayerType::Conv && !is_tap(j);
            layout = dnnl_->run(i, cur.data(), layout, batch, s, o, l, p.weight,
                                split_bias ? no_bias : p.bias, relu, keep, &next);
            cur.swap(next);
            if (split_bias) add_bias_to_stored(cur, batch, o.c, o.h * o.w, p.bias, storage_);
            if (relu) ++i;
            break;
          }
        }
        conv(cur, batch, s, o, l, p.weight, split_bias ? no_bias : p.bias, next);
        cur.swap(next);
        if (split_bias) add_bias_to_stored(cur, batch, o.c, o.h * o.w, p.bias, storage_);
        break;
      case LayerType::MaxPool:
      case LayerType::AvgPool:
      case LayerType::AdaptiveAvgPool:
        pool(cur, batch, s, o, l, next);
        cur.swap(next);
        break;
      case LayerType::Linear:
        linear(cur, batch, l, p.weight, split_bias ? no_bias : p.bias, next);
        cur.swap(next);
        if (split_bias) add_bias_to_stored(cur, batch, l.out, 1, p.bias, storage_);
        break;
      case LayerType::Relu:
        for (T& v : cur) v = v > T(0) ? v : (v == v ? T(0) : v);  // NaN stays NaN, as torch
        break;
      case LayerType::BatchNorm: {
        if (static_cast<int64_t>(p.weight.size()) != s.c)
          throw Error(layer_label(arch_, i) + " has " + std::to_string(p.weight.size()) +
                      " channels, but its input has " + std::to_string(s.c));
        const int64_t hw = s.h * s.w;
        for (int64_t b = 0; b < batch; ++b)
          for (int64_t ch = 0; ch < s.c; ++ch) {
            T* v = cur.data() + (b * s.c + ch) * hw;
            for (int64_t j = 0; j < hw; ++j) v[j] = v[j] * p.weight[ch] + p.bias[ch];
          }
        break;
      }
      case LayerType::Flatten:  // NCHW is already C-order per sample
      case LayerType::Dropout:  // identity at inference
        break;
    }
    // Each layer's output is stored in the storage format. (Layers that only select or
    // move values, such as ReLU and max pooling, keep representable values, but a
    // rounding is cheap next to the layer and keeps the rule simple.)
    round_all(cur, storage_);
  }
  if (tap && std::find(taps.begin(), taps.end(), stop) != taps.end())
    (*tap)(arch_.layers[stop].name, cur.data(), shapes[stop].numel(), batch);
  Matrix<T> out;
  out.rows = shapes[stop].numel();
  out.cols = batch;
  out.data = std::move(cur);
  return out;
}

template class CpuForward<float>;
template class CpuForward<double>;

}  // namespace dalr
