// Writes a small generated example until the shipped real example exists: a PyTorch
// style state dict of a two-layer MLP head (fc1: 120 x 200, fc2: 10 x 120, no
// metadata, as torch + safetensors save it) and the target domain's input
// activations of fc1 (train and test splits). The target activations live near a
// 12-dimensional subspace unrelated to fc1's dominant directions, as after a domain
// shift, so the data-aware methods have something to find.
//   usage: make_example OUT_DIR [SEED]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "dalr/error.hpp"
#include "dalr/matrix.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"

namespace {

constexpr int64_t kIn = 200, kHidden = 120, kClasses = 10, kLatent = 12;

std::vector<float> normal(std::mt19937_64& rng, int64_t count, double scale) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& x : v) x = static_cast<float>(nd(rng));
  return v;
}

// p samples (row-major p x kIn): relu(basis z + 0.05 noise), z ~ N(0, decaying).
std::vector<float> activations(std::mt19937_64& rng, const std::vector<float>& basis, int64_t p) {
  std::normal_distribution<double> nd;
  std::vector<float> x(static_cast<size_t>(p * kIn));
  std::vector<double> z(kLatent);
  for (int64_t s = 0; s < p; ++s) {
    for (int64_t l = 0; l < kLatent; ++l) z[l] = nd(rng) * std::pow(0.85, double(l));
    for (int64_t i = 0; i < kIn; ++i) {
      double v = 0.3 + 0.05 * nd(rng);
      for (int64_t l = 0; l < kLatent; ++l) v += basis[i * kLatent + l] * z[l];
      x[s * kIn + i] = static_cast<float>(std::max(v, 0.0));
    }
  }
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [SEED]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::mt19937_64 rng(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 2017);
  try {
    std::filesystem::create_directories(dir);
    // fc1 with a decaying spectrum (a trained layer is far from white).
    std::vector<float> w1 = normal(rng, kHidden * kIn, 1.0 / std::sqrt(double(kIn)));
    for (int64_t i = 0; i < kHidden; ++i)
      for (int64_t j = 0; j < kIn; ++j) w1[i * kIn + j] *= float(0.2 + std::exp(-double(j) / 40));
    const std::vector<float> b1 = normal(rng, kHidden, 0.1);
    const std::vector<float> w2 = normal(rng, kClasses * kHidden, 1.0 / std::sqrt(double(kHidden)));
    const std::vector<float> b2 = normal(rng, kClasses, 0.1);
    const std::vector<float> basis = normal(rng, kIn * kLatent, 1.0 / std::sqrt(double(kLatent)));

    dalr::write_safetensors(dir + "/mlp.safetensors",
                            {dalr::TensorOut::f32("fc1.weight", {kHidden, kIn}, w1),
                             dalr::TensorOut::f32("fc1.bias", {kHidden}, b1),
                             dalr::TensorOut::f32("fc2.weight", {kClasses, kHidden}, w2),
                             dalr::TensorOut::f32("fc2.bias", {kClasses}, b2)},
                            {});
    const std::vector<float> train = activations(rng, basis, 600);
    const std::vector<float> test = activations(rng, basis, 300);
    dalr::write_npy(dir + "/acts_train.npy", train.data(), 600, kIn);
    dalr::write_npy(dir + "/acts_test.npy", test.data(), 300, kIn);
  } catch (const dalr::Error& e) {
    std::fprintf(stderr, "make_example: error: %s\n", e.what());
    return 1;
  }
  std::printf("wrote %s/{mlp.safetensors, acts_train.npy, acts_test.npy}\n", dir.c_str());
  return 0;
}
