// CPU benchmark of the statistics and solve stages for one fc layer shape: random
// weights and activations, warm-up, median of repeats, JSON out. Timings belong here,
// never in the tests.
//   bench_solve [--m 4096 --n 25088 --p 5994 --k 256 --repeats 3 --precision fp32
//                --methods dalr,svd --json out.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "cpu/blas_core.hpp"
#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

namespace {

template <typename T>
nlohmann::json run(const dalr::bench::Options& a, const std::string& precision) {
  std::mt19937_64 rng(1);
  std::normal_distribution<double> nd;
  dalr::Matrix<T> w(a.m, a.n), x(a.n, a.batch);
  for (auto& v : w.data) v = static_cast<T>(nd(rng) / 100);
  for (auto& v : x.data) v = static_cast<T>(std::abs(nd(rng)));
  std::vector<T> b(static_cast<size_t>(a.m), T(0));
  nlohmann::json out = {{"m", a.m},
                        {"n", a.n},
                        {"p", a.p},
                        {"k", a.k},
                        {"precision", precision},
                        {"repeats", a.repeats},
                        {"device", "cpu"}};
  dalr::LayerStats<T> st;
  // One batch of activations reused p / batch times: the cost does not depend on values.
  const double t_stats = dalr::bench::wall_median(a.repeats, [&] {
    st = dalr::LayerStats<T>(a.n, a.m);
    for (int64_t done = 0; done < a.p; done += a.batch)
      st.add(x.ptr(), std::min(a.batch, a.p - done), x.ld(), &w, b.data(), done);
  });
  out["statistics_s"] = t_stats;
  out["statistics_gflops"] = (double(a.n) * a.n * a.p + 2.0 * a.m * a.n * a.p) / t_stats / 1e9;
  for (const std::string& name : dalr::bench::split(a.methods)) {
    const dalr::Method method = dalr::method_from_name(name);
    const int64_t rank = dalr::is_pruning(method) ? dalr::units_for_rank(a.m, a.n, a.k) : a.k;
    const double lambda = dalr::default_lambda(st, 1e-3);
    out["solve_s"][name] = dalr::bench::wall_median(a.repeats, [&] {
      dalr::solve<T>({method, rank, lambda}, w, b, st);
    });
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  dalr::cpu::use_best_openblas_kernels(argv);  // may start this program again
  CLI::App app{"CPU timing of the statistics pass and each method's solve for one layer shape"};
  dalr::bench::Options a;
  a.m = 1024, a.n = 2048, a.p = 1500, a.k = 128;
  a.methods = "dalr,dalr-exact,svd,svd-bc,prune-mean";
  std::string precision = "fp32";
  dalr::bench::add_options(app, a);
  app.add_option("--precision", precision, "fp32 | fp64")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  nlohmann::json r = precision == "fp64" ? run<double>(a, precision) : run<float>(a, precision);
  const std::string text = r.dump(2);
  std::printf("%s\n", text.c_str());
  if (!a.json.empty()) std::ofstream(a.json) << text << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_solve: %s\n", e.what());
  return 1;
}
