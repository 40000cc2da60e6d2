// CudnnForward<T> against its CPU twin CpuForward<T> (the oracle), on seeded random
// networks with odd sizes: one that has every layer type (conv with and without bias,
// pad, stride, a 1x1 conv; maxpool with a ragged edge; avgpool; adaptive avgpool with
// overlapping bins; batchnorm on images and on flat features; flatten; linear with and
// without bias; relu; dropout), and the layout of a compressed conv layer (a bias-less
// 3x3 conv with stride and padding, then a 1x1 conv with the bias and a ReLU, then a
// bias-less 1x1 conv before a ReLU). Batch 1 and 5, two input sizes (the algorithm
// cache is keyed by shape), stops at middle layers, the final output, and run_taps on
// two layers. Errors must match the CPU's word for word.
//
// Tolerances (relative Frobenius error against the CPU in the same precision, where
// only summation order and algorithms differ): fp64 1e-10; fp32 1e-4; TF32 (10-bit
// mantissa products in conv and linear layers) 1e-2. 16-bit storage, against the CPU's
// emulation of the same storage: both round every layer's output (a conv or linear
// product, then product + bias), but a value near a rounding boundary may land on either
// side (different summation orders) and the flip propagates: well under the format's
// own precision per layer, so 4 units of it: fp16 4 * 2^-11 = 2e-3, bf16 4 * 2^-8 =
// 1.6e-2. A layout bug
// (NHWC read as NCHW) gives errors of order 1. Every value the GPU hands back must also
// be representable in the format.
// GPU tests skip without a device; the no-device error runs everywhere.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cpu/forward.hpp"
#include "dalr/arch.hpp"
#include "dalr/cuda.hpp"
#include "dalr/cudnn_forward.hpp"
#include "dalr/error.hpp"
#include "dalr/forward.hpp"
#include "dalr/safetensors.hpp"
#include "gpu_test.hpp"
#include "random_model.hpp"
#include "test_util.hpp"
#include "twin.hpp"

namespace dc = dalr::cuda;
using dalr::Arch;
using dalr::CpuForward;
using dalr::Matrix;
using dalr::SafetensorsFile;
using dc::CudnnForward;

namespace {

using dalr::test::announce_seed;

// 3x23x19 -> c1 (5x23x19) -> relu -> maxpool 3/2 (5x11x9) -> c2 no bias, s2 p1 (6x6x5)
// -> bn2d -> relu -> avgpool 2/1 (6x5x4) -> c3 1x1 (7x5x4) -> adaptive [3,3] (7x3x3)
// -> flatten (63) -> bn1d -> fc1 (17) -> relu -> dropout -> fc2 no bias (9) -> relu
// -> fc3 (4). A 3x21x24 input gives c2 6x5x6, c3 7x4x5 and the same 63 features.
const char* kInput = R"({"channels":3,"crop":[23,19]})";
const char* kNet = R"([
  {"type":"conv","name":"c1","in":3,"out":5,"kernel":3,"stride":1,"pad":1},
  {"type":"relu"},
  {"type":"maxpool","kernel":3,"stride":2},
  {"type":"conv","name":"c2","in":5,"out":6,"kernel":3,"stride":2,"pad":1,"bias":false},
  {"type":"batchnorm","name":"bn2","eps":0.001},
  {"type":"relu"},
  {"type":"avgpool","kernel":2,"stride":1},
  {"type":"conv","name":"c3","in":6,"out":7,"kernel":1},
  {"type":"adaptive_avgpool","out":[3,3]},
  {"type":"flatten"},
  {"type":"batchnorm","name":"bn1"},
  {"type":"linear","name":"fc1","in":63,"out":17},
  {"type":"relu"},
  {"type":"dropout"},
  {"type":"linear","name":"fc2","in":17,"out":9,"bias":false},
  {"type":"relu"},
  {"type":"linear","name":"fc3","in":9,"out":4}])";

// A compressed conv layer as compress writes it (c2 -> c2.0, c2.1), after a conv with a
// bias: 3x13x11 -> c1 (8x13x11) -> relu -> c2.0 no bias, s2 p1 (5x7x6) -> c2.1 1x1
// (9x7x6) -> relu (fused into c2.1's bias) -> c3 1x1 no bias (4x7x6) -> relu (not
// fused) -> maxpool 2 (4x3x3) -> flatten (36) -> fc (5). A 3x14x12 input gives the
// same 36 features.
const char* kPairInput = R"({"channels":3,"crop":[13,11]})";
const char* kPairNet = R"([
  {"type":"conv","name":"c1","in":3,"out":8,"kernel":3,"pad":1},
  {"type":"relu"},
  {"type":"conv","name":"c2.0","in":8,"out":5,"kernel":3,"stride":2,"pad":1,"bias":false},
  {"type":"conv","name":"c2.1","in":5,"out":9,"kernel":1},
  {"type":"relu"},
  {"type":"conv","name":"c3","in":9,"out":4,"kernel":1,"bias":false},
  {"type":"relu"},
  {"type":"maxpool","kernel":2},
  {"type":"flatten"},
  {"type":"linear","name":"fc","in":36,"out":5}])";

// A network to compare on (3 input channels), the input sizes, where to stop, what to tap.
struct Net {
  const char* arch;
  const char* input;
  std::vector<std::array<int64_t, 2>> sizes;
  std::vector<std::string> stops, taps;
};
const Net kEveryLayer{kNet, kInput, {{23, 19}, {21, 24}}, {"", "fc2", "c2", "c1"}, {"fc2", "c2"}};
const Net kConvPair{
    kPairNet, kPairInput, {{13, 11}, {14, 12}}, {"", "c2.1", "c3", "fc"}, {"c2.1", "c3"}};

using dalr::test::randn;

template <typename T>
std::vector<T> random_input(size_t n, std::mt19937_64& rng) {
  const auto v = randn(n, rng);
  return std::vector<T>(v.begin(), v.end());
}

using dalr::test::twin::expect_close;  // relative Frobenius error, NaN-safe

using Blocks = std::map<std::string, Matrix<double>>;  // tapped blocks, widened

template <typename T, typename Fwd>
Blocks collect_taps(const Fwd& f, const std::vector<T>& x, int64_t batch, int64_t h, int64_t w,
                    const std::vector<std::string>& names) {
  Blocks out;
  f.run_taps(x.data(), batch, 3, h, w, names,
             [&](const std::string& layer, const T* p, int64_t n, int64_t b) {
               Matrix<double> m(n, b);
               for (int64_t i = 0; i < n * b; ++i) m.data[i] = p[i];
               EXPECT_EQ(out.count(layer), 0u) << layer << " tapped twice";
               out[layer] = std::move(m);
             });
  return out;
}

// Every value is what the storage format can hold (always true for fp32).
template <typename T>
void expect_representable(const Matrix<T>& m, dalr::ActStorage s, const std::string& what) {
  if (s == dalr::ActStorage::Fp32) return;
  size_t bad = 0;
  for (const T v : m.data) bad += dalr::round_to_storage(static_cast<float>(v), s) != v;
  EXPECT_EQ(bad, 0u) << what << ": values the 16-bit format cannot hold";
}

template <typename T>
void check_against_cpu(dc::Math math, double tol, dalr::ActStorage storage = dalr::ActStorage::Fp32,
                       const Net& net = kEveryLayer) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(20240917));
  dalr::test::TempDir dir;
  const Arch arch = dalr::parse_arch(net.arch, net.input);
  const std::string path = dir.file("net.safetensors");
  dalr::test::write_random_model(path, arch, rng);
  const SafetensorsFile file(path);
  const CpuForward<T> cpu(arch, file, storage);
  const CudnnForward<T> gpu(arch, file, math, 0, storage);

  for (const auto& [h, w] : net.sizes)
    for (const int64_t batch : {int64_t(1), int64_t(5)}) {
      const auto x = random_input<T>(static_cast<size_t>(batch * 3 * h * w), rng);
      const std::string at = " at batch " + std::to_string(batch) + ", input 3x" +
                             std::to_string(h) + "x" + std::to_string(w);
      for (const std::string& stop : net.stops) {
        const Matrix<T> want = cpu.run(x.data(), batch, 3, h, w, stop);
        const Matrix<T> got = gpu.run(x.data(), batch, 3, h, w, stop);
        expect_close(got, want, tol, "stop '" + stop + "'" + at);
        expect_representable(got, storage, "stop '" + stop + "'" + at);
        // Again: the cached algorithms and grown buffers give the same answer.
        const Matrix<T> again = gpu.run(x.data(), batch, 3, h, w, stop);
        expect_close(again, want, tol, "repeat, stop '" + stop + "'" + at);
      }
      const Blocks want = collect_taps<T>(cpu, x, batch, h, w, net.taps);
      const Blocks got = collect_taps<T>(gpu, x, batch, h, w, net.taps);
      ASSERT_EQ(got.size(), net.taps.size()) << at;
      for (const auto& [name, m] : want) {
        ASSERT_EQ(got.count(name), 1u) << name << at;
        expect_close(got.at(name), m, tol, "tap '" + name + "'" + at);
        expect_representable(got.at(name), storage, "tap '" + name + "'" + at);
      }
    }
}

// ------------------------------------------------------------ tests

TEST(CudnnForward, MatchesCpuFp64) {
  check_against_cpu<double>(dc::Math::Exact, 1e-10);
}

TEST(CudnnForward, MatchesCpuFp32) {
  check_against_cpu<float>(dc::Math::Exact, 1e-4);
}

TEST(CudnnForward, MatchesCpuTf32) {
  check_against_cpu<float>(dc::Math::Tf32, 1e-2);
}

TEST(CudnnForward, MatchesCpuFp16Storage) {
  check_against_cpu<float>(dc::Math::Exact, 2e-3, dalr::ActStorage::Fp16);
}

TEST(CudnnForward, MatchesCpuBf16Storage) {
  check_against_cpu<float>(dc::Math::Exact, 1.6e-2, dalr::ActStorage::Bf16);
}

TEST(CudnnForward, CompressedConvPairMatchesCpuFp64) {
  check_against_cpu<double>(dc::Math::Exact, 1e-10, dalr::ActStorage::Fp32, kConvPair);
}

TEST(CudnnForward, CompressedConvPairMatchesCpuFp32) {
  check_against_cpu<float>(dc::Math::Exact, 1e-4, dalr::ActStorage::Fp32, kConvPair);
}

TEST(CudnnForward, CompressedConvPairMatchesCpuFp16Storage) {
  check_against_cpu<float>(dc::Math::Exact, 2e-3, dalr::ActStorage::Fp16, kConvPair);
}

TEST(CudnnForward, CompressedConvPairMatchesCpuBf16Storage) {
  check_against_cpu<float>(dc::Math::Exact, 1.6e-2, dalr::ActStorage::Bf16, kConvPair);
}

TEST(CudnnForward, ErrorsMatchCpu) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(7));
  dalr::test::TempDir dir;
  const Arch arch = dalr::parse_arch(kNet, kInput);
  dalr::test::write_random_model(dir.file("net.safetensors"), arch, rng);
  const SafetensorsFile file(dir.file("net.safetensors"));
  const CpuForward<float> cpu(arch, file);
  const CudnnForward<float> gpu(arch, file);
  const auto x = random_input<float>(5 * 4 * 23 * 19, rng);

  auto both = [&](const std::function<void(const CpuForward<float>&)>& on_cpu,
                  const std::function<void(const CudnnForward<float>&)>& on_gpu,
                  const std::string& word) {
    const std::string want = dalr::test::error_message([&] { on_cpu(cpu); });
    EXPECT_NE(want.find(word), std::string::npos) << want;
    EXPECT_EQ(dalr::test::error_message([&] { on_gpu(gpu); }), want);
  };
  both([&](const auto& f) { f.run(x.data(), 2, 3, 23, 19, "nope"); },
       [&](const auto& f) { f.run(x.data(), 2, 3, 23, 19, "nope"); }, "nope");
  both([&](const auto& f) { f.run(x.data(), 2, 4, 23, 19); },
       [&](const auto& f) { f.run(x.data(), 2, 4, 23, 19); }, "c1");
  both([&](const auto& f) { f.run(x.data(), 0, 3, 23, 19); },
       [&](const auto& f) { f.run(x.data(), 0, 3, 23, 19); }, "batch");
  both([&](const auto& f) { f.run(x.data(), 2, 3, 5, 5); },
       [&](const auto& f) { f.run(x.data(), 2, 3, 5, 5); }, "layer");
  const CpuForward<float>::Tap ignore = [](const std::string&, const float*, int64_t, int64_t) {};
  both(
      [&](const auto& f) {
        f.run_taps(x.data(), 2, 3, 23, 19, {"fc1", "zz"}, ignore);
      },
      [&](const auto& f) {
        f.run_taps(x.data(), 2, 3, 23, 19, {"fc1", "zz"}, ignore);
      },
      "zz");

  // Still usable after the errors.
  expect_close(gpu.run(x.data(), 2, 3, 23, 19), cpu.run(x.data(), 2, 3, 23, 19), 1e-4,
               "after errors");
}

// Runs everywhere: a device that does not exist is a dalr::Error, not a crash.
TEST(CudnnForward, MissingDeviceThrows) {
  std::mt19937_64 rng(announce_seed(11));
  dalr::test::TempDir dir;
  const Arch arch = dalr::parse_arch(kNet, kInput);
  dalr::test::write_random_model(dir.file("net.safetensors"), arch, rng);
  const SafetensorsFile file(dir.file("net.safetensors"));
  const std::string msg = dalr::test::error_message(
      [&] { CudnnForward<float>(arch, file, dc::Math::Exact, dc::device_count()); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  if (!dc::available()) {  // and without any GPU, the default device too
    EXPECT_THROW(CudnnForward<double>(arch, file), dalr::Error);
  }
  // 16-bit storage is for the float pass; said before any device is touched.
  const std::string fp64 = dalr::test::error_message(
      [&] { CudnnForward<double>(arch, file, dc::Math::Exact, 0, dalr::ActStorage::Fp16); });
  EXPECT_NE(fp64.find("--precision fp16"), std::string::npos) << fp64;
  EXPECT_NE(fp64.find("float forward pass"), std::string::npos) << fp64;
}

}  // namespace
