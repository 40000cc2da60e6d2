#pragma once
// The small networks and random model files the arch and forward tests share
// (tests/test_arch.cpp, tests/test_forward.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <initializer_list>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"

namespace dalr::test {

// Runs `f`, expects a dalr::Error whose message contains every word.
inline void expect_error(const std::function<void()>& f, std::initializer_list<std::string> words) {
  try {
    f();
    ADD_FAILURE() << "expected a dalr::Error containing '" << *words.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& w : words)
      EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' missing from: " << msg;
  }
}

inline constexpr const char* kInput = R"({"channels":3,"crop":[11,13]})";

// The issue's tiny network with odd sizes: 3x11x13 -> conv 3->5 k3 p1 -> relu ->
// maxpool 2/2 (5x5x6) -> conv 5->4 k3 s2 (4x2x2) -> batchnorm -> relu ->
// adaptive_avgpool [2,3] -> flatten (24) -> linear 24->7 -> relu -> dropout -> 7->3.
inline constexpr const char* kNet1 = R"([
  {"type":"conv","name":"c1","in":3,"out":5,"kernel":3,"stride":1,"pad":1},
  {"type":"relu"},
  {"type":"maxpool","kernel":2,"stride":2},
  {"type":"conv","name":"c2","in":5,"out":4,"kernel":3,"stride":2,"pad":0},
  {"type":"batchnorm","name":"bn","eps":0.001},
  {"type":"relu"},
  {"type":"adaptive_avgpool","out":[2,3]},
  {"type":"flatten"},
  {"type":"linear","name":"fc1","in":24,"out":7},
  {"type":"relu"},
  {"type":"dropout"},
  {"type":"linear","name":"fc2","in":7,"out":3}])";

// Covers the rest: a 1x1 conv (no im2col), avgpool k2 s1, adaptive 5x5 -> 3x3 (bins
// that overlap), maxpool k3 s2 with a ragged edge, batchnorm on flat features, a
// linear without bias.
inline constexpr const char* kInput2 =
    R"({"channels":2,"crop":[6,6],"scale":0.5,"mean":[0.1,0.2],"std":[1,2]})";
inline constexpr const char* kNet2 = R"([
  {"type":"conv","name":"p","in":2,"out":3,"kernel":1},
  {"type":"avgpool","kernel":2,"stride":1},
  {"type":"adaptive_avgpool","out":[3,3]},
  {"type":"flatten"},
  {"type":"batchnorm","name":"bn1d"},
  {"type":"linear","name":"head","in":27,"out":4,"bias":false}])";

using Tensors = std::map<std::string, std::vector<double>>;

inline std::vector<double> randn(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Random tensors of the shapes check_weights expects (running_var positive).
inline Tensors random_weights(const Arch& arch, std::mt19937_64& rng) {
  Tensors t;
  const auto shapes =
      layer_input_shapes(arch, arch.input.channels, arch.input.crop[0], arch.input.crop[1]);
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    const LayerSpec& l = arch.layers[i];
    if (l.type == LayerType::Conv || l.type == LayerType::Linear) {
      const int64_t k2 = l.type == LayerType::Conv ? l.kernel * l.kernel : 1;
      t[l.name + ".weight"] = randn(l.out * l.in * k2, rng, 1.0 / std::sqrt(double(l.in * k2)));
      if (l.bias) t[l.name + ".bias"] = randn(l.out, rng, 0.5);
    } else if (l.type == LayerType::BatchNorm) {
      const size_t c = shapes[i].c;
      t[l.name + ".weight"] = randn(c, rng);
      t[l.name + ".bias"] = randn(c, rng);
      t[l.name + ".running_mean"] = randn(c, rng, 0.3);
      auto var = randn(c, rng);
      for (auto& v : var) v = 0.2 + v * v;
      t[l.name + ".running_var"] = var;
    }
  }
  return t;
}

inline std::vector<int64_t> shape_for(const Arch& arch, const std::string& tensor,
                                      const std::vector<double>& v) {
  for (const LayerSpec& l : arch.layers) {
    if (tensor == l.name + ".weight" && l.type == LayerType::Conv)
      return {l.out, l.in, l.kernel, l.kernel};
    if (tensor == l.name + ".weight" && l.type == LayerType::Linear) return {l.out, l.in};
  }
  return {static_cast<int64_t>(v.size())};
}

inline void write_model(const std::string& path, const Arch& arch, const Tensors& t,
                        bool metadata = true) {
  std::vector<TensorOut> outs;
  for (const auto& [name, v] : t) outs.push_back(TensorOut::f64(name, shape_for(arch, name, v), v));
  write_safetensors(path, outs,
                    metadata ? arch_metadata(arch) : std::map<std::string, std::string>{});
}

}  // namespace dalr::test
