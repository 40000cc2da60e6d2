#pragma once
// bench_forward's plan: which layers are factorised and at which rank, the arch edit a
// compressed model file makes, multiply-add counts, and the small archs that time one
// layer (or its replacement pair) alone.
//
// A factorised conv NAME (out x in x kh x kw) becomes, as compress writes it
// (replace_conv_with_factors),
//   NAME.0: conv in -> k, the original kernel, stride, padding and dilation, no bias;
//   NAME.1: conv k -> out, 1 x 1, with a bias (the original's);
// a factorised linear NAME the NAME.0 (n -> k, no bias) / NAME.1 (k -> m) pair.
// Multiply-adds per output position: out in kh kw before, k (in kh kw + out) after.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/split_list.hpp"
#include "dalr/arch.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"

namespace dalr::bench {

// The layer every timed pass ends at: a 1 x 1 conv (or a linear layer on a flat input)
// with one output, appended to the arch and tapped, never run. Tapping the first layer's
// input and this one's times the layers in between only (no upload, no download).
inline const std::string kProbe = "bench.probe";

// The multiply-adds of one conv or linear layer for one image (0 for other layers),
// given its input and output shapes.
inline int64_t layer_macs(const LayerSpec& l, const ActShape& out) {
  if (l.type == LayerType::Conv) return out.h * out.w * l.out * l.in * l.kernel * l.kernel;
  if (l.type == LayerType::Linear) return l.out * l.in;
  return 0;
}

// The multiply-adds of the whole arch for one image of its input (the probe excluded).
inline int64_t arch_macs(const Arch& a) {
  const auto s = layer_input_shapes(a, a.input.channels, a.input.crop[0], a.input.crop[1]);
  int64_t total = 0;
  for (size_t i = 0; i < a.layers.size(); ++i)
    if (a.layers[i].name != kProbe) total += layer_macs(a.layers[i], s[i + 1]);
  return total;
}

inline size_t layer_index(const Arch& a, const std::string& name) {
  for (size_t i = 0; i < a.layers.size(); ++i)
    if (a.layers[i].name == name) return i;
  std::string names;
  for (const auto& l : a.layers)
    if (l.type == LayerType::Conv || l.type == LayerType::Linear)
      names += (names.empty() ? "" : ", ") + l.name;
  throw Error("no layer named '" + name + "' (conv and linear layers: " + names + ")");
}

// The layer's weight seen as a matrix: rows x cols = out x (in kh kw) for a conv.
inline int64_t weight_rows(const LayerSpec& l) {
  return l.out;
}
inline int64_t weight_cols(const LayerSpec& l) {
  return l.type == LayerType::Conv ? l.in * l.kernel * l.kernel : l.in;
}

// The largest rank whose pair costs at most half the layer's multiply-adds:
// k (rows + cols) <= rows cols / 2.
inline int64_t half_flops_rank(const LayerSpec& l) {
  const int64_t m = weight_rows(l), n = weight_cols(l);
  return std::max<int64_t>(1, m * n / (2 * (m + n)));
}

struct FactorSpec {
  std::string layer;
  int64_t requested = 0;  // the rank asked for ("half": half_flops_rank)
  int64_t rank = 0;       // after --round-rank
};

// --factor "NAME:K[,NAME:K...]": K a rank or "half" (the rank at which the layer's
// multiply-adds halve), rounded up to a multiple of round_rank (> 1) as compress's
// --round-rank does, never past min(rows, cols).
inline std::vector<FactorSpec> parse_factors(const Arch& arch, const std::string& list,
                                             int64_t round_rank) {
  std::vector<FactorSpec> out;
  for (const std::string& item : split_list(list)) {
    const size_t colon = item.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == item.size())
      throw Error("--factor: '" + item + "' is not NAME:K (e.g. features.28:128 or " +
                  "features.28:half)");
    FactorSpec f;
    f.layer = item.substr(0, colon);
    const std::string k = item.substr(colon + 1);
    const LayerSpec& l = arch.layers[layer_index(arch, f.layer)];
    if (l.type != LayerType::Conv && l.type != LayerType::Linear)
      throw Error("--factor: '" + f.layer + "' is a " + layer_type_name(l.type) +
                  " layer; only conv and linear layers are factorised");
    for (const auto& g : out)
      if (g.layer == f.layer) throw Error("--factor: '" + f.layer + "' is listed twice");
    if (k == "half") {
      f.requested = half_flops_rank(l);
    } else {
      size_t used = 0;
      try {
        f.requested = std::stoll(k, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != k.size() || f.requested < 1)
        throw Error("--factor: the rank in '" + item + "' must be an integer >= 1 or 'half'");
    }
    const int64_t cap = std::min(weight_rows(l), weight_cols(l));
    f.rank = f.requested;
    if (round_rank > 1)
      f.rank = std::min(cap, (f.requested + round_rank - 1) / round_rank * round_rank);
    out.push_back(f);
  }
  if (out.empty()) throw Error("--factor lists no layer");
  return out;
}

// arch with each listed layer replaced by its NAME.0 / NAME.1 pair, as compress writes it
// (replace_conv_with_factors, replace_linear_with_factors).
inline Arch factorised_arch(const Arch& arch, const std::vector<FactorSpec>& factors) {
  Arch out = arch;
  for (const FactorSpec& f : factors)
    out = out.layers[layer_index(out, f.layer)].type == LayerType::Conv
              ? replace_conv_with_factors(out, f.layer, f.rank)
              : replace_linear_with_factors(out, f.layer, f.rank);
  return out;
}

// Random tensors for a factorised layer's pair (the values do not change the timing:
// normal, variance 1 / fan-in, so activations stay of the same order). NAME.1's bias is
// the original's, `bias`, or zeros where the original had none (a conv's NAME.1 always
// has one, as compress writes it).
inline std::vector<TensorOut> random_pair_tensors(const std::vector<LayerSpec>& pair,
                                                  const std::vector<float>& bias, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TensorOut> out;
  for (const LayerSpec& l : pair) {
    const int64_t fan_in = weight_cols(l);
    std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(static_cast<float>(fan_in)));
    std::vector<float> w(static_cast<size_t>(l.out * fan_in));
    for (auto& v : w) v = nd(rng);
    std::vector<int64_t> shape = {l.out, l.in};
    if (l.type == LayerType::Conv) shape.insert(shape.end(), {l.kernel, l.kernel});
    out.push_back(TensorOut::f32(l.name + ".weight", shape, w));
    if (l.bias)
      out.push_back(
          TensorOut::f32(l.name + ".bias", {l.out},
                         bias.empty() ? std::vector<float>(static_cast<size_t>(l.out)) : bias));
  }
  return out;
}

// A factorised layer as found in the original and the compressed arch.
struct LayerPair {
  std::string layer;
  size_t original = 0;           // index in the original arch
  std::vector<size_t> replaced;  // indices of NAME.0, NAME.1 in the compressed arch
  int64_t rank = 0;
};

// The layers the compressed arch replaces by a NAME.0 / NAME.1 pair of the same type.
inline std::vector<LayerPair> factorised_layers(const Arch& original, const Arch& compressed) {
  const auto find = [&](const std::string& name) {
    for (size_t i = 0; i < compressed.layers.size(); ++i)
      if (compressed.layers[i].name == name) return i;
    return compressed.layers.size();
  };
  const size_t none = compressed.layers.size();
  std::vector<LayerPair> out;
  for (size_t i = 0; i < original.layers.size(); ++i) {
    const LayerSpec& l = original.layers[i];
    if (l.type != LayerType::Conv && l.type != LayerType::Linear) continue;
    const size_t a = find(l.name + ".0"), b = find(l.name + ".1");
    if (find(l.name) != none || a == none || b != a + 1) continue;
    if (compressed.layers[a].type != l.type || compressed.layers[b].type != l.type) continue;
    out.push_back({l.name, i, {a, b}, compressed.layers[a].out});
  }
  return out;
}

// An arch holding `layers` alone on an input of shape s (a flatten first when the input
// is flat), followed by the probe; its input spec is s (no preprocessing).
inline Arch single_arch(const std::vector<LayerSpec>& layers, const ActShape& s) {
  Arch a;
  a.input = InputSpec{};
  a.input.channels = s.c;
  a.input.crop = {s.h, s.w};
  if (s.flat) a.layers.push_back(LayerSpec{LayerType::Flatten});
  a.layers.insert(a.layers.end(), layers.begin(), layers.end());
  return a;
}

// `a` with the probe appended, and the probe's weight (ones: never run, only checked).
inline Arch with_probe(const Arch& a, TensorOut* probe_weight) {
  const auto s = layer_input_shapes(a, a.input.channels, a.input.crop[0], a.input.crop[1]);
  const ActShape& o = s.back();
  LayerSpec p;
  p.name = kProbe;
  p.out = 1;
  p.bias = false;
  if (o.flat) {
    p.type = LayerType::Linear;
    p.in = o.numel();
    *probe_weight = TensorOut::f32(kProbe + ".weight", {1, p.in},
                                   std::vector<float>(static_cast<size_t>(p.in), 1.0f));
  } else {
    p.type = LayerType::Conv;
    p.in = o.c;
    p.kernel = 1;
    *probe_weight = TensorOut::f32(kProbe + ".weight", {1, p.in, 1, 1},
                                   std::vector<float>(static_cast<size_t>(p.in), 1.0f));
  }
  Arch out = a;
  out.layers.push_back(p);
  return out;
}

// The first named layer: where a timed pass starts (its input is tapped).
inline std::string first_named(const Arch& a) {
  for (const auto& l : a.layers)
    if (!l.name.empty()) return l.name;
  throw Error("the network has no named layer to start timing at");
}

}  // namespace dalr::bench
