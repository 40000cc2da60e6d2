// The machine's measured peaks, the floor the benchmark harness (bench/run.py) compares
// every stage against: dense GEMM throughput in each precision and memory bandwidth.
//   CPU:  OpenBLAS sgemm (fp32) and dgemm (fp64) at --size, memcpy of --bytes.
//   GPU:  cuBLAS GEMM at --size in fp32 (pedantic, no TF32), tf32, fp16 and bf16 (fp32
//         accumulation, tensor cores), device-to-device copy, pinned and pageable
//         host-to-device copy; device events.
// Warm-up, then the median of --repeats. JSON out (--json), a short table on stdout.
//   bench_peak [--device cpu|cuda] [--size 4096] [--bytes 268435456] [--repeats 5]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.hpp"
#include "cpu/blas_core.hpp"
#include "cpu/lapack.hpp"
#include "dalr/error.hpp"
#ifdef DALR_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bench_cuda.hpp"
#include "cuda/blas.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/device_buffer.hpp"
#include "dalr/cuda.hpp"
#endif

using json = nlohmann::json;

namespace {

json cpu_peaks(int64_t s, int64_t bytes, int64_t repeats) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> ud(-1, 1);
  json r;
  {
    std::vector<float> a(static_cast<size_t>(s * s)), b(a.size()), c(a.size());
    for (auto& v : a) v = static_cast<float>(ud(rng));
    for (auto& v : b) v = static_cast<float>(ud(rng));
    const double t = dalr::bench::wall_median(repeats, [&] {
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, s, s, s, 1.0f, a.data(), s, b.data(),
                  s, 0.0f, c.data(), s);
    });
    r["gemm_tflops"]["fp32"] = 2.0 * s * s * s / t / 1e12;
  }
  {
    const int64_t sd = s / 2;  // fp64 is slower: a quarter of the work
    std::vector<double> a(static_cast<size_t>(sd * sd)), b(a.size()), c(a.size());
    for (auto& v : a) v = ud(rng);
    for (auto& v : b) v = ud(rng);
    const double t = dalr::bench::wall_median(repeats, [&] {
      cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, sd, sd, sd, 1.0, a.data(), sd,
                  b.data(), sd, 0.0, c.data(), sd);
    });
    r["gemm_tflops"]["fp64"] = 2.0 * sd * sd * sd / t / 1e12;
  }
  {
    std::vector<char> src(static_cast<size_t>(bytes), 1), dst(src.size(), 0);
    const double t =
        dalr::bench::wall_median(repeats, [&] { std::memcpy(dst.data(), src.data(), src.size()); });
    // A copy reads and writes every byte.
    r["copy_gbps"] = 2.0 * static_cast<double>(bytes) / t / 1e9;
  }
  r["threads"] = std::thread::hardware_concurrency();
  r["openblas_core"] = dalr::cpu::openblas_core();
  return r;
}

#ifdef DALR_HAVE_CUDA
namespace cu = dalr::cuda;
namespace blas = dalr::cuda::blas;

using dalr::bench::device_median;

json gpu_peaks(int64_t s, int64_t bytes, int64_t repeats) {
  json r;
  r["name"] = cu::device_name(0);
  cu::Stream stream;
  cublasHandle_t h = nullptr;
  DALR_CUBLAS_CHECK(cublasCreate(&h));
  struct Handle {
    cublasHandle_t h;
    ~Handle() { cublasDestroy(h); }
  } guard{h};
  DALR_CUBLAS_CHECK(cublasSetStream(h, stream.get()));
  // Inputs of 2-byte types reuse the same buffers (their contents do not matter for the
  // time; they are zero-initialised so no NaN or denormal slows anything).
  const size_t elems = static_cast<size_t>(s * s);
  cu::DeviceBuffer<float> a(elems), b(elems), c(elems);
  DALR_CUDA_CHECK(cudaMemsetAsync(a.data(), 0, elems * sizeof(float), stream.get()));
  DALR_CUDA_CHECK(cudaMemsetAsync(b.data(), 0, elems * sizeof(float), stream.get()));
  struct Case {
    const char* name;
    cudaDataType_t in;
    cublasComputeType_t compute;
  };
  const Case cases[] = {{"fp32", CUDA_R_32F, CUBLAS_COMPUTE_32F_PEDANTIC},
                        {"tf32", CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32},
                        {"fp16", CUDA_R_16F, CUBLAS_COMPUTE_32F},
                        {"bf16", CUDA_R_16BF, CUBLAS_COMPUTE_32F}};
  const float one = 1.0f, zero = 0.0f;
  for (const auto& k : cases) {
    const cudaDataType_t out = k.in;  // fp16/bf16 outputs, as a network's layers write them
    const double t = device_median(repeats, stream.get(), [&] {
      DALR_CUBLAS_CHECK(blas::gemm_ex(h, CUBLAS_OP_N, CUBLAS_OP_N, s, s, s, &one, a.data(), k.in, s,
                                      b.data(), k.in, s, &zero, c.data(), out, s, k.compute,
                                      CUBLAS_GEMM_DEFAULT));
    });
    r["gemm_tflops"][k.name] = 2.0 * s * s * s / t / 1e12;
  }
  {
    const size_t n = static_cast<size_t>(bytes) / sizeof(float);
    cu::DeviceBuffer<float> src(n), dst(n);
    DALR_CUDA_CHECK(cudaMemsetAsync(src.data(), 0, n * sizeof(float), stream.get()));
    const double t = device_median(repeats, stream.get(), [&] {
      DALR_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), n * sizeof(float),
                                      cudaMemcpyDeviceToDevice, stream.get()));
    });
    r["copy_gbps"] = 2.0 * static_cast<double>(n * sizeof(float)) / t / 1e9;  // read + write
    cu::PinnedBuffer<float> host(n);
    std::fill(host.data(), host.data() + n, 0.0f);
    const double tp = device_median(repeats, stream.get(), [&] {
      DALR_CUDA_CHECK(cudaMemcpyAsync(dst.data(), host.data(), n * sizeof(float),
                                      cudaMemcpyHostToDevice, stream.get()));
    });
    r["h2d_pinned_gbps"] = static_cast<double>(n * sizeof(float)) / tp / 1e9;
    std::vector<float> pageable(n, 0.0f);
    const double tq = device_median(repeats, stream.get(), [&] {
      DALR_CUDA_CHECK(cudaMemcpyAsync(dst.data(), pageable.data(), n * sizeof(float),
                                      cudaMemcpyHostToDevice, stream.get()));
    });
    r["h2d_pageable_gbps"] = static_cast<double>(n * sizeof(float)) / tq / 1e9;
  }
  return r;
}
#endif

}  // namespace

int main(int argc, char** argv) try {
  dalr::cpu::use_best_openblas_kernels(argv);  // may start this program again
  CLI::App app{"Measured peaks: dense GEMM per precision and memory bandwidth (CPU or GPU)"};
  std::string device = "cpu", out;
  int64_t size = 4096, bytes = int64_t{256} << 20, repeats = 5;
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--size", size, "GEMM size (square)")->capture_default_str();
  app.add_option("--bytes", bytes, "Bytes per copy")->capture_default_str();
  app.add_option("--repeats", repeats, "Timed repeats after one warm-up")->capture_default_str();
  app.add_option("--json", out, "Also write the JSON result to this file");
  CLI11_PARSE(app, argc, argv);
  if (size < 16 || bytes < 1024 || repeats < 1)
    throw dalr::Error("--size must be >= 16, --bytes >= 1024, --repeats >= 1");
  json r = {{"device", device}, {"size", size}, {"bytes", bytes}, {"repeats", repeats}};
  if (device == "cpu") {
    r.update(cpu_peaks(size, bytes, repeats));
  } else if (device == "cuda") {
#ifdef DALR_HAVE_CUDA
    if (!dalr::cuda::available()) {
      std::fprintf(stderr, "bench_peak: no CUDA device\n");
      return 2;
    }
    r.update(gpu_peaks(size, bytes, repeats));
#else
    throw dalr::Error("--device cuda: this build has no CUDA backend");
#endif
  } else {
    throw dalr::Error("--device must be cpu or cuda, not '" + device + "'");
  }
  std::printf("bench_peak (%s%s):", device.c_str(),
              r.contains("name") ? (", " + r["name"].get<std::string>()).c_str() : "");
  for (const auto& [k, v] : r["gemm_tflops"].items())
    std::printf(" %s GEMM %.3f TFLOP/s,", k.c_str(), v.get<double>());
  std::printf(" copy %.1f GB/s\n", r["copy_gbps"].get<double>());
  if (!out.empty()) std::ofstream(out) << r.dump(2) << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_peak: %s\n", e.what());
  return 1;
}
