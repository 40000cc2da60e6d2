// GPU benchmark for one fc layer shape (default: VGG19 fc6, m = 4096, n = 25088, with
// p = 5994 random activations as CUB-200's training split): the streamed Gram
// accumulation (GpuStats), SYRK against the equivalent GEMM, and each method's solve,
// on the GPU and (optionally) the CPU; achieved TFLOP/s against the card's measured
// fp32 GEMM peak. Warm-up, median of repeats, device events; JSON out.
//   bench_gpu [--m 4096 --n 25088 --p 5994 --k 256 --batch 512 --repeats 3
//              --methods dalr,dalr-exact,svd --cpu 0|1 --json out.json]
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

#include "cuda/context.hpp"
#include "dalr/cuda.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

using dalr::Matrix;
using json = nlohmann::json;

namespace {

struct Args {
  int64_t m = 4096, n = 25088, p = 5994, k = 256, batch = 512, repeats = 3;
  std::string methods = "dalr,dalr-exact,svd";
  bool cpu = false;
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--m")
      a.m = std::stoll(v);
    else if (k == "--n")
      a.n = std::stoll(v);
    else if (k == "--p")
      a.p = std::stoll(v);
    else if (k == "--k")
      a.k = std::stoll(v);
    else if (k == "--batch")
      a.batch = std::stoll(v);
    else if (k == "--repeats")
      a.repeats = std::stoll(v);
    else if (k == "--methods")
      a.methods = v;
    else if (k == "--cpu")
      a.cpu = v == "1";
    else if (k == "--json")
      a.json = v;
    else
      throw dalr::Error("unknown option " + k);
  }
  return a;
}

double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Wall-clock seconds of f (which must synchronise), median of repeats after a warm-up.
double wall(int64_t repeats, const std::function<void()>& f) {
  f();
  std::vector<double> t;
  for (int64_t r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(t);
}

// Device seconds of work enqueued by f on `stream`, timed with events.
double device(int64_t repeats, cudaStream_t stream, const std::function<void()>& f) {
  dalr::cuda::Event start, stop;
  f();
  std::vector<double> t;
  for (int64_t r = 0; r < repeats; ++r) {
    start.record(stream);
    f();
    stop.record(stream);
    stop.synchronize();
    t.push_back(stop.elapsed_ms_since(start) / 1e3);
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
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
    const double t = device(a.repeats, ctx.stream(), [&] {
      cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, s, s, s, &one, A.data(), s, B.data(), s,
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
    const double ts = device(a.repeats, ctx.stream(), [&] {
      cublasSsyrk(ctx.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, a.n, a.batch, &one, X.data(),
                  a.n, &one, C.data(), a.n);
    });
    const double tg = device(a.repeats, ctx.stream(), [&] {
      cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, a.n, a.n, a.batch, &one, X.data(), a.n,
                  X.data(), a.n, &one, C.data(), a.n);
    });
    out["syrk_batch_s"] = ts;
    out["gemm_batch_s"] = tg;
    out["syrk_tflops_useful"] = flops / ts / 1e12;
    out["gemm_tflops_useful"] = flops / tg / 1e12;
  }
  // Streamed statistics, host batches in (the real job's shape), end to end.
  dalr::LayerStats<float> st;
  out["gpu_statistics_s"] = wall(a.repeats, [&] {
    dalr::cuda::GpuStats<float> gs(a.n, a.m, &w, &b, a.batch);
    for (int64_t done = 0; done < a.p; done += a.batch)
      gs.add(x.ptr(), std::min(a.batch, a.p - done), a.n, done);
    st = gs.result();
  });
  const double stat_flops = double(a.n) * a.n * a.p + 2.0 * a.m * a.n * a.p;
  out["gpu_statistics_tflops"] = stat_flops / out["gpu_statistics_s"].get<double>() / 1e12;
  const double lambda = dalr::default_lambda(st, 1e-3);
  std::stringstream ss(a.methods);
  for (std::string name; std::getline(ss, name, ',');) {
    const dalr::Method method = dalr::method_from_name(name);
    out["gpu_solve_s"][name] = wall(a.repeats, [&] {
      dalr::cuda::solve<float>({method, a.k, lambda}, w, b, st);
    });
    if (a.cpu)
      out["cpu_solve_s"][name] = wall(1, [&] {
        dalr::solve<float>({method, a.k, lambda}, w, b, st);
      });
  }
  if (a.cpu)
    out["cpu_statistics_s"] = wall(1, [&] {
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
