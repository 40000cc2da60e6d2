#include "cpu/forward.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu/dnnl_conv.hpp"
#include "cpu/forward_ops.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "io/layer_params.hpp"

namespace dalr {

template <typename T>
struct CpuForward<T>::Net {
  const Arch* arch = nullptr;         // the layers in walk order
  std::vector<const Params*> params;  // one per layer
  std::vector<size_t> key;            // the layer's index in arch_ (oneDNN's cache key)
  std::vector<size_t> first;          // arch_'s layer i starts at first[i]; size + 1
  Arch spliced;                       // with substitutions: what `arch` points to
  std::vector<Params> owned;          // with substitutions: the parts' tensors
};

template <typename T>
struct CpuForward<T>::Activations {
  std::vector<T> cur, next;
  cpu::DnnlConv::Layout layout = nullptr;  // of cur; only between two oneDNN convs
};

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
    if (t == LayerType::Conv || t == LayerType::Linear) cpu::round_all(params_[i].weight, storage_);
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
void CpuForward<T>::plain_net(Net& net) const {
  const size_t n = arch_.layers.size();
  net.arch = &arch_;
  for (size_t i = 0; i < n; ++i) net.params.push_back(&params_[i]);
  for (size_t i = 0; i <= n; ++i) net.key.push_back(i), net.first.push_back(i);
  net.key.pop_back();
}

// arch_ with each substituted layer replaced by its parts (named as a compressed file
// names them: NAME for one part, NAME.0, NAME.1, ... for several), their weights rounded
// as the constructor rounds a file's. A linear layer's parts are linear layers; a conv
// layer's are the two of a compressed conv layer (replace_conv_with_factors): NAME.0 with
// its kernel, stride, padding and dilation (part in = c_in kh kw), NAME.1 a 1x1 conv,
// run through oneDNN without its cache (their weights change from call to call).
template <typename T>
void CpuForward<T>::spliced_net(const std::vector<Substitution<T>>& subs, Net& net) const {
  std::vector<const Substitution<T>*> at(arch_.layers.size(), nullptr);
  size_t parts = 0;
  for (const Substitution<T>& sub : subs) {
    const size_t i = index_of(sub.layer);
    const LayerSpec& l = arch_.layers[i];
    if (l.type != LayerType::Linear && l.type != LayerType::Conv)
      throw Error("substitution for " + layer_label(arch_, i) + ": only linear and conv layers");
    if (at[i]) throw Error("two substitutions for layer '" + sub.layer + "'");
    if (sub.parts.empty()) throw Error("substitution for '" + sub.layer + "' has no parts");
    for (const auto& p : sub.parts)
      if (p.in < 1 || p.out < 1 || static_cast<int64_t>(p.weight.size()) != p.in * p.out ||
          (!p.bias.empty() && static_cast<int64_t>(p.bias.size()) != p.out))
        throw Error("substitution for '" + sub.layer + "': a part's weight or bias does not " +
                    "match its " + std::to_string(p.out) + " x " + std::to_string(p.in));
    if (l.type == LayerType::Conv &&
        (sub.parts.size() != 2 || sub.parts[0].in != l.in * l.kernel * l.kernel ||
         sub.parts[1].in != sub.parts[0].out))
      throw Error("substitution for conv layer '" + sub.layer + "': two parts are needed, k x " +
                  std::to_string(l.in * l.kernel * l.kernel) + " (c_in kh kw) then c_out x k");
    at[i] = &sub;
    parts += sub.parts.size();
  }
  net.owned.reserve(parts);  // net.params points into it
  net.arch = &net.spliced;
  net.spliced.input = arch_.input;
  Arch conv_pair;  // a conv substitution's two layers, as a compressed file's arch has them
  for (size_t i = 0; i < arch_.layers.size(); ++i) {
    net.first.push_back(net.spliced.layers.size());
    if (!at[i]) {
      net.spliced.layers.push_back(arch_.layers[i]);
      net.params.push_back(&params_[i]);
      net.key.push_back(i);
      continue;
    }
    const auto& sub_parts = at[i]->parts;
    const bool conv = arch_.layers[i].type == LayerType::Conv;
    if (conv) {
      conv_pair.layers = {arch_.layers[i]};
      conv_pair = replace_conv_with_factors(conv_pair, arch_.layers[i].name, sub_parts[0].out);
    }
    for (size_t q = 0; q < sub_parts.size(); ++q) {
      LayerSpec l = conv ? conv_pair.layers[q] : arch_.layers[i];
      if (!conv) {
        if (sub_parts.size() > 1) l.name += "." + std::to_string(q);
        l.in = sub_parts[q].in;
      }
      l.out = sub_parts[q].out;
      l.bias = !sub_parts[q].bias.empty();
      net.spliced.layers.push_back(l);
      net.owned.push_back({sub_parts[q].weight, sub_parts[q].bias});
      cpu::round_all(net.owned.back().weight, storage_);
      net.params.push_back(&net.owned.back());
      // Linear: no oneDNN cache; conv: oneDNN's one-off keys, one per part of the pass.
      net.key.push_back(conv ? cpu::DnnlConv::kUncached + net.spliced.layers.size()
                             : std::numeric_limits<size_t>::max());
    }
  }
  net.first.push_back(net.spliced.layers.size());
}

template <typename T>
Matrix<T> CpuForward<T>::run(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                             const std::string& stop_at_layer_input) const {
  const size_t stop =
      stop_at_layer_input.empty() ? arch_.layers.size() : index_of(stop_at_layer_input);
  Net net;
  plain_net(net);
  return walk(net, input, batch, c, h, w, stop, {}, nullptr);
}

template <typename T>
void CpuForward<T>::run_taps(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                             const std::vector<std::string>& taps, const Tap& tap) const {
  std::vector<size_t> at;
  for (const std::string& name : taps) at.push_back(index_of(name));
  if (at.empty()) return;
  Net net;
  plain_net(net);
  walk(net, input, batch, c, h, w, *std::max_element(at.begin(), at.end()), at, &tap);
}

template <typename T>
Matrix<T> CpuForward<T>::run_from(const std::string& layer, const T* input, int64_t batch,
                                  bool after, const std::vector<Substitution<T>>& subs) const {
  const size_t i = index_of(layer);
  Net net;
  if (subs.empty())
    plain_net(net);
  else
    spliced_net(subs, net);
  const size_t start = net.first[i + (after ? 1 : 0)];
  const auto& in = arch_.input;
  return walk(net, input, batch, in.channels, in.crop[0], in.crop[1], net.arch->layers.size(), {},
              nullptr, start);
}

// One layer, dispatched to its op (cpu/forward_ops.hpp). With 16-bit storage a conv or
// linear layer's product is stored (rounded) before its bias is added, as on the GPU,
// where cuDNN and cuBLAS write the 16-bit product and a kernel adds the bias in fp32.
template <typename T>
void CpuForward<T>::run_layer(const Net& net, size_t i, int64_t batch, const ActShape& s,
                              const ActShape& o, bool fuse_relu, bool keep_layout,
                              Activations& a) const {
  const LayerSpec& l = net.arch->layers[i];
  const Params& p = *net.params[i];
  const bool split_bias = storage_ != ActStorage::Fp32;
  const std::vector<T> no_bias;
  const std::vector<T>& bias = split_bias ? no_bias : p.bias;
  switch (l.type) {
    case LayerType::Conv:
      if constexpr (std::is_same_v<T, float>) {
        if (dnnl_) {
          a.layout = dnnl_->run(net.key[i], a.cur.data(), a.layout, batch, s, o, l, p.weight, bias,
                                fuse_relu, keep_layout, &a.next);
          a.cur.swap(a.next);
          if (split_bias) cpu::add_bias_to_stored(a.cur, batch, o.c, o.h * o.w, p.bias, storage_);
          return;
        }
      }
      cpu::conv(a.cur, batch, s, o, l, p.weight, bias, a.next);
      a.cur.swap(a.next);
      if (split_bias) cpu::add_bias_to_stored(a.cur, batch, o.c, o.h * o.w, p.bias, storage_);
      return;
    case LayerType::Linear:
      cpu::linear(a.cur, batch, l, p.weight, bias, a.next);
      a.cur.swap(a.next);
      if (split_bias) cpu::add_bias_to_stored(a.cur, batch, l.out, 1, p.bias, storage_);
      return;
    case LayerType::MaxPool:
      cpu::max_pool(a.cur, batch, s, o, l, a.next);
      a.cur.swap(a.next);
      return;
    case LayerType::AvgPool:
      cpu::avg_pool(a.cur, batch, s, o, l, a.next);
      a.cur.swap(a.next);
      return;
    case LayerType::AdaptiveAvgPool:
      cpu::adaptive_avg_pool(a.cur, batch, s, o, a.next);
      a.cur.swap(a.next);
      return;
    case LayerType::Relu:
      cpu::relu(a.cur);
      return;
    case LayerType::BatchNorm:
      if (static_cast<int64_t>(p.weight.size()) != s.c)
        throw Error(layer_label(*net.arch, i) + " has " + std::to_string(p.weight.size()) +
                    " channels, but its input has " + std::to_string(s.c));
      cpu::batchnorm(a.cur, batch, s, p.weight, p.bias);
      return;
    case LayerType::Flatten:  // NCHW is already C-order per sample
    case LayerType::Dropout:  // identity at inference
      return;
  }
}

template <typename T>
Matrix<T> CpuForward<T>::walk(const Net& net, const T* input, int64_t batch, int64_t c, int64_t h,
                              int64_t w, size_t stop, const std::vector<size_t>& taps,
                              const Tap* tap, size_t start) const {
  if (batch < 1) throw Error("batch size must be >= 1, got " + std::to_string(batch));
  if (!input) throw Error("CpuForward::run: input is null");
  const std::vector<LayerSpec>& layers = net.arch->layers;
  const std::vector<ActShape> shapes = layer_input_shapes(*net.arch, c, h, w);

  // From `start` on, the input is that layer's input (run_from), else the image.
  const int64_t in_size = start == 0 ? batch * c * h * w : batch * shapes[start].numel();
  Activations a;
  a.cur.assign(input, input + in_size);
  cpu::round_all(a.cur, storage_);
  const auto is_tap = [&](size_t i) {
    return std::find(taps.begin(), taps.end(), i) != taps.end();
  };
  const auto is = [&](size_t i, LayerType t) { return i < stop && layers[i].type == t; };
  // oneDNN (fp32 storage only) fuses the ReLU right after a conv into it, unless the
  // ReLU's input is wanted (a tap on it, or the pass stops there); fused[i]: layer i ran
  // inside layer i - 1. Decided before the walk, which then visits every index once.
  const bool dnnl = dnnl_ && storage_ == ActStorage::Fp32;
  std::vector<char> fused(layers.size() + 1, 0);
  for (size_t i = start; dnnl && i + 1 < stop; ++i)
    fused[i + 1] = is(i, LayerType::Conv) && is(i + 1, LayerType::Relu) && !is_tap(i + 1);
  for (size_t i = start; i < stop; ++i) {
    if (fused[i]) continue;
    if (tap && is_tap(i)) (*tap)(layers[i].name, a.cur.data(), shapes[i].numel(), batch);
    // A conv that feeds another conv directly (past its fused ReLU) hands over oneDNN's
    // own layout, saving two reorders.
    const size_t after = i + (fused[i + 1] ? 2 : 1);
    const bool keep = dnnl && is(after, LayerType::Conv) && !is_tap(after);
    run_layer(net, i, batch, shapes[i], shapes[i + 1], fused[i + 1] != 0, keep, a);
    // Each layer's output is stored in the storage format. (Layers that only select or
    // move values, such as ReLU and max pooling, keep representable values, but a
    // rounding is cheap next to the layer and keeps the rule simple.)
    cpu::round_all(a.cur, storage_);
  }
  if (tap && is_tap(stop)) (*tap)(layers[stop].name, a.cur.data(), shapes[stop].numel(), batch);
  Matrix<T> out;
  out.rows = shapes[stop].numel();
  out.cols = batch;
  out.data = std::move(a.cur);
  return out;
}

template class CpuForward<float>;
template class CpuForward<double>;

}  // namespace dalr
