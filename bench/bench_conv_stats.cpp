// Conv patch statistics (Backend::conv_stats): images/s for a VGG-like conv layer
// (--channels 512 in and a 3x3 kernel with padding 1: n = 4608 patch units) at each of
// --sizes (14: VGG's conv5 block, 28: conv4), on the GPU from feature maps already on the
// device (as the forward pass's device tap hands them over), on the GPU from host maps,
// and on the CPU twin (the CPU backend's host PatchAccumulator). Each run streams the
// images in batches and ends with finish(); the accumulator is made outside the timing.
// Also the GPU's free memory before the first and after the last batch (the statistics
// must not grow with the images), and the achieved TFLOP/s of the Gram (n^2 per patch,
// SYRK's useful flops).
//   bench_conv_stats [--channels 512 --sizes 14,28 --images 256 --cpu-images 8 --batch 32
//                     --tile 4096 --m 0 --repeats 3 --json out.json]
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "cpu/blas_core.hpp"
#include "cuda/context.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/backend.hpp"
#include "dalr/cuda.hpp"

using json = nlohmann::json;

namespace {

struct Args {
  int64_t channels = 512, images = 256, cpu_images = 8, batch = 32, tile = 4096, m = 0;
  int64_t repeats = 3;
  std::string sizes = "14,28", json;
};

enum class Feed { Device, Host };

double free_mib() {
  size_t free_b = 0, total_b = 0;
  dalr::cuda::Context::memory(&free_b, &total_b);
  return static_cast<double>(free_b) / (1 << 20);
}

// Seconds to stream `images` images through a fresh accumulator and finish (median of
// repeats after a warm-up); *growth_mib: the free device memory lost between the first
// and the last batch of the first timed run (GPU only).
double time_stream(dalr::Backend& backend, const dalr::ConvGeometry& g, const Args& a,
                   int64_t images, Feed feed, const std::vector<float>& maps, const float* dmaps,
                   cudaStream_t producer, const dalr::Matrix<float>* w, const std::vector<float>* b,
                   double* growth_mib) {
  std::vector<double> t;
  double first_free = -1, last_free = -1;
  for (int64_t r = 0; r <= std::max<int64_t>(a.repeats, 1); ++r) {
    auto acc = backend.conv_stats(g, a.m, w, b, a.tile);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t done = 0; done < images; done += a.batch) {
      const int64_t cols = std::min(a.batch, images - done);
      if (feed == Feed::Device)
        acc->add_device(dmaps, cols, g.map_size(), done, producer);
      else
        acc->add(maps.data(), cols, g.map_size(), done);
      if (growth_mib && r == 1 && done == 0) first_free = free_mib();
    }
    if (growth_mib && r == 1) last_free = free_mib();  // before finish() hands C over
    acc->finish();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (growth_mib) *growth_mib = first_free - last_free;
  t.erase(t.begin());  // the warm-up
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  dalr::cpu::use_best_openblas_kernels(argv);  // may start this program again
  CLI::App app{"Images/s of conv patch statistics: GPU (device and host maps) vs the CPU twin"};
  Args a;
  app.add_option("--channels", a.channels, "Input channels (3x3 kernel, padding 1)")
      ->capture_default_str();
  app.add_option("--sizes", a.sizes, "Comma-separated input sizes (square)")->capture_default_str();
  app.add_option("--images", a.images, "Images per GPU run")->capture_default_str();
  app.add_option("--cpu-images", a.cpu_images, "Images per CPU run (0: no CPU run)")
      ->capture_default_str();
  app.add_option("--batch", a.batch, "Images per add call")->capture_default_str();
  app.add_option("--tile", a.tile, "Patches per tile (conv_stats' tile_cols)")
      ->capture_default_str();
  app.add_option("--m", a.m, "Output channels whose statistics are kept too (0: none)")
      ->capture_default_str();
  app.add_option("--repeats", a.repeats, "Timed repeats after one warm-up")->capture_default_str();
  app.add_option("--json", a.json, "Also write the JSON result to this file");
  CLI11_PARSE(app, argc, argv);
  if (!dalr::cuda::available()) {
    std::fprintf(stderr, "bench_conv_stats: no CUDA device\n");
    return 2;
  }
  auto gpu = dalr::cuda::make_backend(0, dalr::Precision::Fp32);
  auto cpu = dalr::make_cpu_backend(dalr::Precision::Fp32);
  json out = {{"channels", a.channels},
              {"kernel", 3},
              {"tile", a.tile},
              {"batch", a.batch},
              {"m", a.m},
              {"precision", "fp32"},
              {"card", dalr::cuda::device_name(0)},
              {"cpu", dalr::cpu_kernel_family()}};
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0.3f, 1.0f);
  const dalr::cuda::Stream producer;
  for (const std::string& size : dalr::bench::split(a.sizes)) {
    dalr::ConvGeometry g;
    g.channels = a.channels;
    g.height = g.width = std::stoll(size);
    g.kernel_h = g.kernel_w = 3;
    g.pad = 1;
    const int64_t n = g.patch_size();
    std::vector<float> maps(static_cast<size_t>(g.map_size() * a.batch));
    for (auto& v : maps) v = std::max(0.0f, nd(rng));  // post-ReLU
    dalr::cuda::DeviceBuffer<float> dmaps(maps.size());
    dmaps.upload(maps.data(), maps.size(), producer);
    producer.synchronize();
    dalr::Matrix<float> w(a.m, n);
    for (auto& v : w.data) v = nd(rng) / 64;
    const std::vector<float> b(static_cast<size_t>(a.m), 0.1f);
    const dalr::Matrix<float>* wp = a.m > 0 ? &w : nullptr;
    const std::vector<float>* bp = a.m > 0 ? &b : nullptr;

    const double flops_per_image = double(n) * n * g.positions();
    json r = {{"n", n}, {"positions", g.positions()}, {"gflop_per_image", flops_per_image / 1e9}};
    double growth = 0;
    const double td = time_stream(*gpu, g, a, a.images, Feed::Device, maps, dmaps.data(), producer,
                                  wp, bp, &growth);
    const double th =
        time_stream(*gpu, g, a, a.images, Feed::Host, maps, nullptr, nullptr, wp, bp, nullptr);
    r["gpu_device_images_per_s"] = a.images / td;
    r["gpu_device_tflops"] = a.images * flops_per_image / td / 1e12;
    r["gpu_host_images_per_s"] = a.images / th;
    r["gpu_memory_growth_mib"] = growth;
    if (a.cpu_images > 0) {
      Args once = a;
      once.repeats = 1;
      const double tc = time_stream(*cpu, g, once, a.cpu_images, Feed::Host, maps, nullptr, nullptr,
                                    wp, bp, nullptr);
      r["cpu_images_per_s"] = a.cpu_images / tc;
      r["gpu_device_vs_cpu"] = r["gpu_device_images_per_s"].get<double>() / (a.cpu_images / tc);
    }
    out["sizes"][size] = r;
    char line[256];
    std::snprintf(line, sizeof line,
                  "%lld ch %sx%s (n %lld): GPU %.0f img/s device maps (%.1f TFLOP/s), %.0f host "
                  "maps; CPU %.1f img/s; memory growth %.0f MiB",
                  static_cast<long long>(a.channels), size.c_str(), size.c_str(),
                  static_cast<long long>(n), r["gpu_device_images_per_s"].get<double>(),
                  r["gpu_device_tflops"].get<double>(), r["gpu_host_images_per_s"].get<double>(),
                  r.value("cpu_images_per_s", -1.0), growth);
    out["summary"]["conv stats " + size + "x" + size] = line;
  }
  const std::string text = out.dump(2);
  std::printf("%s\n", text.c_str());
  if (!a.json.empty()) std::ofstream(a.json) << text << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_conv_stats: error: %s\n", e.what());
  return 1;
}
