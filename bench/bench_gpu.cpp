// GPU benchmark for one fc layer shape (default: VGG19 fc6, m = 4096, n = 25088, with
// p = 5994 random activations as CUB-200's training split): the streamed Gram
// accumulation (GpuStats), SYRK against the equivalent GEMM, and each method's solve,
// on the GPU and (optionally) the CPU; achieved TFLOP/s against the card's measured
// fp32 GEMM peak. Warm-up, median of repeats, device events; JSON out.
//   bench_gpu [--m 4096 --n 25088 --p 5994 --k 256 --batch 512 --repeats 3
//              --methods dalr,dalr-exact,svd --cpu --json out.json]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "bench_cuda.hpp"
#include "cpu/blas_core.hpp"
#include "cuda/blas.hpp"
#include "cuda/context.hpp"
#include "dalr/cuda.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

using dalr::Matrix;
using json = nlohmann::json;

using dalr::bench::device_median;
namespace blas = dalr::cuda::blas;

int main(int argc, char** argv) try {
  dalr::cpu::use_best_openblas_kernels(argv);  // may start this program again
  CLI::App app{"GPU timing of the streamed statistics, SYRK vs GEMM, and each method's solve"};
  dalr::bench::Options a;
  bool cpu = false;
  dalr::bench::add_options(app, a);
  app.add_flag("--cpu", cpu, "Also time the CPU statistics and solves (slow at fc6's shape)");
  CLI11_PARSE(app, argc, argv);
  if (!dalr::cuda::available()) {
    std::fprintf(stderr, "bench_gpu: no CUDA device\n");
    return 2;
  }
  json out = {{"m", a.m},
              {"n", a.n},
              {"p", a.p},
              {"k", a.k},
              {"batch", a.batch},
              {"precision", "fp32"},
              {"card", dalr::cuda::device_name(0)}};
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd;
  Matrix<float> w(a.m, a.n), x(a.n, a.batch);
  for (auto& v : w.data) v = nd(rng) / 100;
  for (auto& v : x.data) v = std::abs(nd(rng));
  std::vector<float> b(static_cast<size_t>(a.m), 0.0f);

  // Peak reference: a large fp32 GEMM in the same math mode (pedantic fp32).
  dalr::cuda::Context ctx(0);
  {
    const int64_t s = 8192;
    dalr::cuda::DeviceBuffer<float> A(s * s), B(s * s), C(s * s);
    cudaMemsetAsync(A.data(), 0, A.bytes(), ctx.stream());
    cudaMemsetAsync(B.data(), 0, B.bytes(), ctx.stream());
    const float one = 1, zero = 0;
    const double t = device_median(a.repeats, ctx.stream(), [&] {
      blas::gemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, s, s, s, &one, A.data(), s, B.data(), s,
                 &zero, C.data(), s);
    });
    out["peak_fp32_gemm_tflops"] = 2.0 * s * s * s / t / 1e12;
  }
  // SYRK against the equivalent GEMM for one batch: C += X X^T (n x n).
  {
    dalr::cuda::DeviceBuffer<float> X(a.n * a.batch), C(a.n * a.n);
    X.upload(x.ptr(), x.data.size(), ctx.stream());
    const float one = 1;
    const double flops = double(a.n) * a.n * a.batch;  // SYRK: half of GEMM's 2 n^2 p
    const double ts = device_median(a.repeats, ctx.stream(), [&] {
      blas::syrk(ctx.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, a.n, a.batch, &one, X.data(),
                 a.n, &one, C.data(), a.n);
    });
    const double tg = device_median(a.repeats, ctx.stream(), [&] {
      blas::gemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, a.n, a.n, a.batch, &one, X.data(), a.n,
                 X.data(), a.n, &one, C.data(), a.n);
    });
    out["syrk_batch_s"] = ts;
    out["gemm_batch_s"] = tg;
    out["syrk_tflops_useful"] = flops / ts / 1e12;
    out["gemm_tflops_useful"] = flops / tg / 1e12;
  }
  // Streamed statistics, host batches in (the real job's shape), end to end.
  dalr::LayerStats<float> st;
  out["gpu_statistics_s"] = dalr::bench::wall_median(a.repeats, [&] {
    dalr::cuda::GpuStats<float> gs(a.n, a.m, &w, &b, a.batch);
    for (int64_t done = 0; done < a.p; done += a.batch)
      gs.add(x.ptr(), std::min(a.batch, a.p - done), a.n, done);
    st = gs.result();
  });
  const double stat_flops = double(a.n) * a.n * a.p + 2.0 * a.m * a.n * a.p;
  out["gpu_statistics_tflops"] = stat_flops / out["gpu_statistics_s"].get<double>() / 1e12;
  const double lambda = dalr::default_lambda(st, 1e-3);
  for (const std::string& name : dalr::bench::split(a.methods)) {
    const dalr::Method method = dalr::method_from_name(name);
    out["gpu_solve_s"][name] = dalr::bench::wall_median(a.repeats, [&] {
      dalr::cuda::solve<float>({method, a.k, lambda}, w, b, st);
    });
    if (cpu)
      out["cpu_solve_s"][name] = dalr::bench::wall_median(1, [&] {
        dalr::solve<float>({method, a.k, lambda}, w, b, st);
      });
  }
  if (cpu)
    out["cpu_statistics_s"] = dalr::bench::wall_median(1, [&] {
      dalr::LayerStats<float> cs(a.n, a.m);
      for (int64_t done = 0; done < a.p; done += a.batch)
        cs.add(x.ptr(), std::min(a.batch, a.p - done), a.n, &w, b.data(), done);
    });
  out["summary"] = {
      {"card", out["card"]},
      {"fp32 GEMM peak (TFLOP/s)", out["peak_fp32_gemm_tflops"]},
      {"SYRK vs GEMM time (batch)",
       out["syrk_batch_s"].get<double>() / out["gemm_batch_s"].get<double>()},
      {"statistics (s, GPU)", out["gpu_statistics_s"]},
      {"statistics (% of fp32 peak)", 100 * out["gpu_statistics_tflops"].get<double>() /
                                          out["peak_fp32_gemm_tflops"].get<double>()},
      {"dalr solve (s, GPU)", out["gpu_solve_s"].value("dalr", -1.0)}};
  const std::string text = out.dump(2);
  std::printf("%s\n", text.c_str());
  if (!a.json.empty()) std::ofstream(a.json) << text << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_gpu: error: %s\n", e.what());
  return 1;
}
