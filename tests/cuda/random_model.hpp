#pragma once
// A model file of random weights for any arch (the shapes check_weights expects, stored
// as f64): the GPU forward-pass tests build their networks with it.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/safetensors.hpp"

namespace dalr::test {

inline std::vector<double> randn(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Conv/linear weights scaled by 1/sqrt(fan-in), biases N(0, 0.25), batchnorm with
// random scale, shift, mean and a variance of at least 0.2.
inline void write_random_model(const std::string& path, const Arch& arch, std::mt19937_64& rng) {
  const auto shapes =
      layer_input_shapes(arch, arch.input.channels, arch.input.crop[0], arch.input.crop[1]);
  std::vector<TensorOut> outs;
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    const LayerSpec& l = arch.layers[i];
    if (l.type == LayerType::Conv || l.type == LayerType::Linear) {
      const bool conv = l.type == LayerType::Conv;
      const int64_t k2 = conv ? l.kernel * l.kernel : 1;
      std::vector<int64_t> shape = conv ? std::vector<int64_t>{l.out, l.in, l.kernel, l.kernel}
                                        : std::vector<int64_t>{l.out, l.in};
      outs.push_back(TensorOut::f64(l.name + ".weight", shape,
                                    randn(l.out * l.in * k2, rng, 1.0 / std::sqrt(l.in * k2))));
      if (l.bias) outs.push_back(TensorOut::f64(l.name + ".bias", {l.out}, randn(l.out, rng, 0.5)));
    } else if (l.type == LayerType::BatchNorm) {
      const int64_t c = shapes[i].c;
      auto var = randn(c, rng);
      for (auto& v : var) v = 0.2 + v * v;
      outs.push_back(TensorOut::f64(l.name + ".weight", {c}, randn(c, rng)));
      outs.push_back(TensorOut::f64(l.name + ".bias", {c}, randn(c, rng)));
      outs.push_back(TensorOut::f64(l.name + ".running_mean", {c}, randn(c, rng, 0.3)));
      outs.push_back(TensorOut::f64(l.name + ".running_var", {c}, var));
    }
  }
  write_safetensors(path, outs, arch_metadata(arch));
}

}  // namespace dalr::test
