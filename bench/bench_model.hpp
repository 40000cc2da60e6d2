#pragma once
// What the model-level benchmarks (bench_stream, bench_forward) share: a temporary
// folder, the backend for --device/--precision, and VGG19 with random He-initialised
// weights of the real shapes (the vgg19 preset), optionally at a smaller crop.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/backend.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#ifdef DALR_HAVE_CUDA
#include "dalr/cuda.hpp"
#endif

namespace dalr::bench {

// Removed on every exit path of main, exceptions included.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "dalr-bench-XXXXXX").string();
    if (!mkdtemp(t.data())) throw Error("cannot create a temporary folder in " + t);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// precision: fp32 | tf32 (CUDA) | fp16 | bf16 (16-bit activations; statistics fp32), as
// dalr-gpu's --precision for a float job.
inline std::unique_ptr<Backend> make_backend(const std::string& device,
                                             const std::string& precision) {
  const Precision p = parse_precision(precision, device == "cpu");
  if (uses_double(p))
    throw Error("--precision must be fp32, tf32, fp16 or bf16 (got '" + precision + "')");
  if (device == "cpu") return make_cpu_backend(p);
#ifdef DALR_HAVE_CUDA
  if (device == "cuda") return cuda::make_backend(0, p);
#endif
  throw Error("--device " + device + " is not available in this build (cpu or cuda)");
}

inline std::string default_device() {
#ifdef DALR_HAVE_CUDA
  if (cuda::available()) return "cuda";
#endif
  return "cpu";
}

// With size > 0, size x size crops after resizing to size * 256 / 224 (VGG's 224 / 256).
inline void use_crop(Arch& arch, int64_t size) {
  if (size <= 0) return;
  arch.input.resize = (size * 256 + 112) / 224;
  arch.input.crop = {size, size};
}

// The conv and linear tensors of `arch` with He-initialised weights (normal, variance
// 2 / fan-in; seeded) and zero biases.
inline std::vector<TensorOut> he_tensors(const Arch& arch, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TensorOut> tensors;
  for (const auto& l : arch.layers) {
    if (l.type != LayerType::Conv && l.type != LayerType::Linear) continue;
    const int64_t fan_in = l.type == LayerType::Conv ? l.in * l.kernel * l.kernel : l.in;
    std::vector<int64_t> shape = {l.out, l.in};
    if (l.type == LayerType::Conv) shape.insert(shape.end(), {l.kernel, l.kernel});
    std::normal_distribution<float> nd(0.0f, std::sqrt(2.0f / static_cast<float>(fan_in)));
    std::vector<float> w(static_cast<size_t>(l.out * fan_in));
    for (auto& v : w) v = nd(rng);
    tensors.push_back(TensorOut::f32(l.name + ".weight", shape, w));
    if (l.bias)
      tensors.push_back(TensorOut::f32(l.name + ".bias", {l.out},
                                       std::vector<float>(static_cast<size_t>(l.out))));
  }
  return tensors;
}

// The vgg19 preset's tensors with He-initialised weights (seed 19, zero biases), as a
// model file. With size > 0 its dalr.input asks for size x size crops (resize size *
// 256 / 224).
inline void write_vgg19(const std::string& path, int64_t size = 0) {
  Arch arch = vgg_preset("vgg19", 1000);
  use_crop(arch, size);
  write_safetensors(path, he_tensors(arch, 19), arch_metadata(arch));
}

}  // namespace dalr::bench
