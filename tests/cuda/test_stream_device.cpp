// --acts stream on the GPU's device path: stream_statistics with CudnnForward's
// run_taps_device handing device blocks to GpuStats::add_device, against the CPU path
// (CpuForward + LayerStats, the oracle) on a small random VGG-like network with two
// taps (with output statistics) and batches of 5, 5, 5, 5, 3 (then 1 and 8: many passes
// through the two input stages, and stages that grow while passes are queued). The
// GPU's own host path (the same accumulators with their device path hidden) must give
// the same bits: the same kernels run on the same activations, only the route differs.
// Also run_taps_device alone (input reusable on return, blocks read in stream order,
// passes queued without waiting), NaN in an image on the device path, and which route
// stream_statistics takes.
//
// Tolerances against the CPU, in the same precision (relative Frobenius error of C,
// relative 2-norm error of the mean and max vectors; the forward pass's rounding carried
// into the statistics, test_cudnn_forward allowing 1e-4 on the activations): fp64
// 1e-10, fp32 2e-4. Counts are exact. GPU tests skip without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/stream.hpp"
#include "cpu/forward.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/backend.hpp"
#include "dalr/cuda.hpp"
#include "dalr/cudnn_forward.hpp"
#include "dalr/error.hpp"
#include "dalr/forward.hpp"
#include "dalr/images.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/stats.hpp"
#include "gpu_test.hpp"
#include "io/layer_params.hpp"
#include "oracle.hpp"
#include "random_model.hpp"
#include "test_util.hpp"
#include "twin.hpp"

namespace dc = dalr::cuda;
using dalr::Arch;
using dalr::Backend;
using dalr::CpuForward;
using dalr::Forward;
using dalr::LayerStats;
using dalr::Matrix;
using dalr::SafetensorsFile;
using dalr::StatsAccumulator;

namespace {

using dalr::test::announce_seed;
using dalr::test::contains;

// 3x12x10 -> c1 (6x12x10) -> relu -> maxpool 2/2 (6x6x5) -> c2 (8x6x5) -> relu
// -> maxpool 2/2 (8x3x2) -> flatten (48) -> fc6 (20) -> relu -> dropout -> fc7 (12)
// -> relu -> fc8 (5).
const char* kInput = R"({"channels":3,"crop":[12,10]})";
const char* kNet = R"([
  {"type":"conv","name":"c1","in":3,"out":6,"kernel":3,"stride":1,"pad":1},
  {"type":"relu"},
  {"type":"maxpool","kernel":2,"stride":2},
  {"type":"conv","name":"c2","in":6,"out":8,"kernel":3,"stride":1,"pad":1},
  {"type":"relu"},
  {"type":"maxpool","kernel":2,"stride":2},
  {"type":"flatten"},
  {"type":"linear","name":"fc6","in":48,"out":20},
  {"type":"relu"},
  {"type":"dropout"},
  {"type":"linear","name":"fc7","in":20,"out":12},
  {"type":"relu"},
  {"type":"linear","name":"fc8","in":12,"out":5}])";
constexpr int64_t kC = 3, kH = 12, kW = 10, kPer = kC * kH * kW;
constexpr int64_t kImages = 23;
const std::vector<std::string> kTaps{"fc7", "fc6"};  // not in network order on purpose

// Images held in memory, handed out in order.
class MemorySource final : public dalr::BatchSource {
 public:
  explicit MemorySource(std::vector<float> images) : images_(std::move(images)) {}
  int64_t size() const override { return static_cast<int64_t>(images_.size()) / kPer; }
  int64_t next(float* out, int64_t max_batch, std::vector<int64_t>* labels) override {
    const int64_t got = std::min(max_batch, size() - pos_);
    std::copy_n(images_.begin() + pos_ * kPer, got * kPer, out);
    if (labels) labels->assign(static_cast<size_t>(got), -1);
    pos_ += got;
    return got;
  }
  int64_t channels() const override { return kC; }
  int64_t height() const override { return kH; }
  int64_t width() const override { return kW; }

 private:
  std::vector<float> images_;
  int64_t pos_ = 0;
};

// Passes everything to `inner`, counting the route stream_statistics takes.
template <typename T>
class CountingForward final : public Forward<T> {
 public:
  using Tap = typename Forward<T>::Tap;
  using DeviceTap = typename Forward<T>::DeviceTap;
  explicit CountingForward(const Forward<T>& inner) : inner_(inner) {}
  const Arch& arch() const override { return inner_.arch(); }
  Matrix<T> run(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                const std::string& stop) const override {
    return inner_.run(input, batch, c, h, w, stop);
  }
  void run_taps(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                const std::vector<std::string>& taps, const Tap& tap) const override {
    ++host_passes;
    inner_.run_taps(input, batch, c, h, w, taps, tap);
  }
  bool supports_device_taps() const override { return inner_.supports_device_taps(); }
  void run_taps_device(const T* input, int64_t batch, int64_t c, int64_t h, int64_t w,
                       const std::vector<std::string>& taps, const DeviceTap& tap) const override {
    ++device_passes;
    inner_.run_taps_device(input, batch, c, h, w, taps, tap);
  }
  mutable int host_passes = 0, device_passes = 0;

 private:
  const Forward<T>& inner_;
};

// Hides an accumulator's device path: stream_statistics must then take the host route.
template <typename T>
class HostOnly final : public StatsAccumulator<T> {
 public:
  explicit HostOnly(std::unique_ptr<StatsAccumulator<T>> inner) : inner_(std::move(inner)) {}
  void add(const T* x, int64_t cols, int64_t ldx, int64_t first_index) override {
    inner_->add(x, cols, ldx, first_index);
  }
  void merge(const LayerStats<T>& earlier) override { inner_->merge(earlier); }
  LayerStats<T> result() override { return inner_->result(); }

 private:
  std::unique_ptr<StatsAccumulator<T>> inner_;
};

// A tapped layer and its weight (for the output statistics).
template <typename T>
struct Target {
  std::string name;
  Matrix<T> w;
  std::vector<T> b;
};

struct Net {
  dalr::test::TempDir dir;
  Arch arch = dalr::parse_arch(kNet, kInput);
  std::unique_ptr<SafetensorsFile> file;
  std::vector<float> images;  // kImages NCHW images, N(0, 1)

  explicit Net(std::mt19937_64& rng) {
    dalr::test::write_random_model(dir.file("net.safetensors"), arch, rng);
    file = std::make_unique<SafetensorsFile>(dir.file("net.safetensors"));
    const auto v = dalr::test::randn(static_cast<size_t>(kImages * kPer), rng);
    images.assign(v.begin(), v.end());
  }

  template <typename T>
  std::vector<Target<T>> targets(const std::vector<std::string>& names) const {
    std::vector<Target<T>> out;
    for (const std::string& name : names)
      for (const dalr::LayerSpec& l : arch.layers)
        if (l.name == name) {
          std::vector<T> w, b;
          dalr::load_layer_params(l, *file, &w, &b);
          out.push_back({name, dalr::from_row_major(w.data(), l.out, l.in), b});
        }
    return out;
  }
};

// One stream_statistics pass over `images`; the statistics of each target, in order.
template <typename T>
std::vector<LayerStats<T>> run_stream(const Forward<T>& fwd, Backend& backend,
                                      const std::vector<Target<T>>& targets,
                                      const std::vector<float>& images, int64_t batch,
                                      bool hide_device = false) {
  std::vector<std::unique_ptr<StatsAccumulator<T>>> accs;
  std::vector<StatsAccumulator<T>*> raw;
  std::vector<std::string> names;
  for (const Target<T>& t : targets) {
    auto a = backend.stats(t.w.cols, t.w.rows, &t.w, &t.b, batch);
    if (hide_device) a = std::make_unique<HostOnly<T>>(std::move(a));
    accs.push_back(std::move(a));
    raw.push_back(accs.back().get());
    names.push_back(t.name);
  }
  MemorySource src(images);
  dalr::DataOptions o;
  o.batch = batch;
  o.quiet = true;
  dalr::stream_statistics(fwd, src, names, raw, o);
  std::vector<LayerStats<T>> out;
  for (auto& a : accs) out.push_back(a->finish());
  return out;
}

using dalr::test::twin::expect_stats_close;

template <typename T>
void expect_same(const LayerStats<T>& got, const LayerStats<T>& want, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(got.count(), want.count());
  EXPECT_TRUE(got.gram().data == want.gram().data)
      << "C differs (relative error " << dalr::test::twin::gram_error(got, want) << ")";
  EXPECT_TRUE(got.sum_x() == want.sum_x()) << "sum_x differs";
  EXPECT_TRUE(got.max_x() == want.max_x()) << "max_x differs";
  EXPECT_TRUE(got.sum_y() == want.sum_y()) << "sum_y differs";
  EXPECT_TRUE(got.max_y() == want.max_y()) << "max_y differs";
}

template <typename T>
void device_path_matches_cpu(double tol, dalr::Precision precision = dalr::Precision::Fp32) {
  const dalr::ActStorage storage = dalr::act_storage(precision);
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(20250301));
  const Net net(rng);
  const auto targets = net.targets<T>(kTaps);
  ASSERT_EQ(targets.size(), 2u);
  const std::unique_ptr<Backend> cpu = dalr::make_cpu_backend(precision);
  const std::unique_ptr<Backend> gpu = dc::make_backend(0, precision);
  const CpuForward<T> cpu_fwd(net.arch, *net.file, storage);
  const std::unique_ptr<Forward<T>> gpu_fwd = dalr::make_forward<T>(*gpu, net.arch, *net.file);
  CountingForward<T> fwd(*gpu_fwd);

  const auto want = run_stream<T>(cpu_fwd, *cpu, targets, net.images, 5);
  const auto on_device = run_stream<T>(fwd, *gpu, targets, net.images, 5);
  EXPECT_EQ(fwd.device_passes, 5);  // 5, 5, 5, 5, 3
  EXPECT_EQ(fwd.host_passes, 0);
  const auto on_host = run_stream<T>(fwd, *gpu, targets, net.images, 5, /*hide_device=*/true);
  EXPECT_EQ(fwd.device_passes, 5);
  EXPECT_EQ(fwd.host_passes, 5);
  for (size_t i = 0; i < targets.size(); ++i) {
    expect_stats_close(on_device[i], want[i], tol, "device path, tap " + targets[i].name);
    expect_same(on_device[i], on_host[i], "device vs host path, tap " + targets[i].name);
  }
  // Batch 1: 23 passes through the two stages; batch 8: the stages grow with passes queued.
  for (const int64_t batch : {int64_t(1), int64_t(8)}) {
    const auto got = run_stream<T>(fwd, *gpu, targets, net.images, batch);
    for (size_t i = 0; i < targets.size(); ++i)
      expect_stats_close(got[i], want[i], tol,
                         "batch " + std::to_string(batch) + ", tap " + targets[i].name);
  }
  EXPECT_EQ(fwd.host_passes, 5);
}

// ------------------------------------------------------------ runs everywhere

TEST(StreamDevice, CpuBackendTakesTheHostPath) {
  std::mt19937_64 rng(announce_seed(5));
  const Net net(rng);
  const auto targets = net.targets<float>(kTaps);
  const std::unique_ptr<Backend> cpu = dalr::make_cpu_backend();
  const CpuForward<float> cpu_fwd(net.arch, *net.file);
  CountingForward<float> fwd(cpu_fwd);
  const auto got = run_stream<float>(fwd, *cpu, targets, net.images, 5);
  EXPECT_EQ(fwd.host_passes, 5);
  EXPECT_EQ(fwd.device_passes, 0);
  EXPECT_EQ(got[0].count(), kImages);

  EXPECT_FALSE(cpu_fwd.supports_device_taps());
  const std::string m = dalr::test::error_message([&] {
    cpu_fwd.run_taps_device(net.images.data(), 1, kC, kH, kW, kTaps,
                            [](const std::string&, const float*, int64_t, int64_t, void*) {});
  });
  EXPECT_TRUE(contains(m, "device taps are not supported")) << m;
  const auto acc = cpu->stats(48, 0, static_cast<const Matrix<float>*>(nullptr),
                              static_cast<const std::vector<float>*>(nullptr), 5);
  EXPECT_FALSE(acc->supports_device_add());
  const std::string a =
      dalr::test::error_message([&] { acc->add_device(net.images.data(), 1, 48, 0, nullptr); });
  EXPECT_TRUE(contains(a, "device batches are not supported")) << a;
}

// ------------------------------------------------------------ needs a GPU

TEST(StreamDevice, DevicePathMatchesCpuFp64) {
  device_path_matches_cpu<double>(1e-10);
}

TEST(StreamDevice, DevicePathMatchesCpuFp32) {
  device_path_matches_cpu<float>(2e-4);
}

// 16-bit activations (widened at the taps), statistics in fp32, against the CPU's
// emulation of the same storage; tolerances as in test_cudnn_forward.cpp.
TEST(StreamDevice, DevicePathMatchesCpuBf16Storage) {
  device_path_matches_cpu<float>(1.6e-2, dalr::Precision::Bf16);
}

TEST(StreamDevice, DevicePathMatchesCpuFp16Storage) {
  device_path_matches_cpu<float>(2e-3, dalr::Precision::Fp16);
}

// run_taps_device's contract, without the statistics: the input is reusable when the
// call returns (it is poisoned at once), the tap's block is read on the given stream
// (copied into a buffer of the test's), and four passes of different sizes are queued
// with no wait in between. The tap of c1 is the input itself: bit for bit.
TEST(StreamDevice, RunTapsDeviceQueuesPassesInStreamOrder) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(31));
  const Net net(rng);
  const CpuForward<float> cpu(net.arch, *net.file);
  const dc::CudnnForward<float> gpu(net.arch, *net.file);
  const std::vector<int64_t> batches{5, 3, 5, 2};
  const std::vector<std::string> taps{"fc6", "c1"};
  const int64_t widths[2] = {48, kPer};

  // Preallocated, so that no cudaMalloc in the loop synchronises by accident.
  std::vector<dc::DeviceBuffer<float>> blocks;
  for (size_t k = 0; k < batches.size() * 2; ++k)
    blocks.emplace_back(static_cast<size_t>(kPer * 5));
  std::vector<int> seen(blocks.size(), 0);
  int64_t first = 0;
  for (size_t k = 0; k < batches.size(); ++k) {
    const int64_t b = batches[k];
    std::vector<float> x(net.images.begin() + first * kPer,
                         net.images.begin() + (first + b) * kPer);
    gpu.run_taps_device(
        x.data(), b, kC, kH, kW, taps,
        [&](const std::string& layer, const float* dx, int64_t n, int64_t batch, void* stream) {
          const size_t t = layer == "fc6" ? 0 : 1;
          ASSERT_EQ(n, widths[t]) << layer;
          ASSERT_EQ(batch, b);
          ++seen[2 * k + t];
          DALR_CUDA_CHECK(cudaMemcpyAsync(
              blocks[2 * k + t].data(), dx, static_cast<size_t>(n * batch) * sizeof(float),
              cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)));
        });
    std::fill(x.begin(), x.end(), std::numeric_limits<float>::quiet_NaN());
    first += b;
  }
  DALR_CUDA_CHECK(cudaDeviceSynchronize());

  first = 0;
  for (size_t k = 0; k < batches.size(); ++k) {
    const int64_t b = batches[k];
    const float* images = net.images.data() + first * kPer;
    for (size_t t = 0; t < 2; ++t) {
      SCOPED_TRACE("pass " + std::to_string(k) + ", tap " + taps[t]);
      ASSERT_EQ(seen[2 * k + t], 1);
      Matrix<float> got(widths[t], b);
      blocks[2 * k + t].download(got.ptr(), got.data.size(), nullptr);
      DALR_CUDA_CHECK(cudaDeviceSynchronize());
      const Matrix<float> want = cpu.run(images, b, kC, kH, kW, taps[t]);
      if (t == 1) {
        EXPECT_TRUE(got.data == want.data) << "the input block is not the image batch";
      } else {
        EXPECT_LE(dalr::test::twin::matrix_error(got, want), 1e-4);
      }
    }
    first += b;
  }
}

// A NaN pixel of image 7 on the device path. The CPU path throws at once, naming the
// sample and unit (the tap of c1 is the image itself: unit = the pixel's index). The
// device path reports it later: perhaps from stream_statistics (a later add_device, if
// the GPU had caught up), surely from finish(), with the CPU's message for c1 and the
// same sample for fc6 (the NaN reaches it through the convolutions).
TEST(StreamDevice, NanImageIsReportedOnTheDevicePath) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(41));
  Net net(rng);
  const int64_t pixel = 1 * kH * kW + 4 * kW + 3;  // channel 1, row 4, column 3
  net.images[static_cast<size_t>(7 * kPer + pixel)] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<std::string> taps{"c1", "fc6"};
  dalr::DataOptions o;
  o.batch = 5;
  o.quiet = true;

  const std::unique_ptr<Backend> cpu = dalr::make_cpu_backend();
  const CpuForward<float> cpu_fwd(net.arch, *net.file);
  const Matrix<float>* no_w = nullptr;  // input statistics only
  const std::vector<float>* no_b = nullptr;
  auto cpu_c1 = cpu->stats(kPer, 0, no_w, no_b, 5);
  auto cpu_fc6 = cpu->stats(48, 0, no_w, no_b, 5);
  MemorySource cpu_src(net.images);
  const std::string want = dalr::test::error_message([&] {
    dalr::stream_statistics<float>(cpu_fwd, cpu_src, taps, {cpu_c1.get(), cpu_fc6.get()}, o);
  });
  EXPECT_TRUE(contains(want, "activation sample 7, unit " + std::to_string(pixel) + " is NaN"))
      << want;

  const std::unique_ptr<Backend> gpu = dc::make_backend();
  const std::unique_ptr<Forward<float>> gpu_fwd = gpu->forward_f32(net.arch, *net.file);
  auto c1 = gpu->stats(kPer, 0, no_w, no_b, 5);
  auto fc6 = gpu->stats(48, 0, no_w, no_b, 5);
  ASSERT_TRUE(c1->supports_device_add() && gpu_fwd->supports_device_taps());
  MemorySource src(net.images);
  const std::string early = dalr::test::error_message([&] {
    dalr::stream_statistics<float>(*gpu_fwd, src, taps, {c1.get(), fc6.get()}, o);
  });
  if (early != "<no throw>") {
    EXPECT_TRUE(contains(early, "activation sample 7, unit ") && contains(early, " is NaN"))
        << early;
  }
  EXPECT_EQ(dalr::test::error_message([&] { c1->finish(); }), want);
  EXPECT_EQ(dalr::test::error_message([&] { c1->result(); }), want);  // and every time after
  const std::string m = dalr::test::error_message([&] { fc6->finish(); });
  EXPECT_TRUE(contains(m, "activation sample 7, unit ") && contains(m, " is NaN")) << m;
}

}  // namespace
