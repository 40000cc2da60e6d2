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

#include "dalr/solver.hpp"
#include "dalr/stats.hpp"

namespace {

struct Args {
  int64_t m = 1024, n = 2048, p = 1500, k = 128, repeats = 3, batch = 512;
  std::string precision = "fp32", methods = "dalr,dalr-exact,svd,svd-bc,prune-mean", json;
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
    else if (k == "--repeats")
      a.repeats = std::stoll(v);
    else if (k == "--batch")
      a.batch = std::stoll(v);
    else if (k == "--precision")
      a.precision = v;
    else if (k == "--methods")
      a.methods = v;
    else if (k == "--json")
      a.json = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

template <typename F>
double median_seconds(int64_t repeats, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int64_t r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <typename T>
nlohmann::json run(const Args& a) {
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
                        {"precision", a.precision},
                        {"repeats", a.repeats},
                        {"device", "cpu"}};
  dalr::LayerStats<T> st;
  // One batch of activations reused p / batch times: the cost does not depend on values.
  const double t_stats = median_seconds(a.repeats, [&] {
    st = dalr::LayerStats<T>(a.n, a.m);
    for (int64_t done = 0; done < a.p; done += a.batch)
      st.add(x.ptr(), std::min(a.batch, a.p - done), x.ld(), &w, b.data(), done);
  });
  out["statistics_s"] = t_stats;
  out["statistics_gflops"] = (double(a.n) * a.n * a.p + 2.0 * a.m * a.n * a.p) / t_stats / 1e9;
  std::stringstream ss(a.methods);
  for (std::string name; std::getline(ss, name, ',');) {
    const dalr::Method method = dalr::method_from_name(name);
    const int64_t rank = dalr::is_pruning(method) ? dalr::units_for_rank(a.m, a.n, a.k) : a.k;
    const double lambda = dalr::default_lambda(st, 1e-3);
    out["solve_s"][name] = median_seconds(a.repeats, [&] {
      dalr::solve<T>({method, rank, lambda}, w, b, st);
    });
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  nlohmann::json r = a.precision == "fp64" ? run<double>(a) : run<float>(a);
  const std::string text = r.dump(2);
  std::printf("%s\n", text.c_str());
  if (!a.json.empty()) std::ofstream(a.json) << text << "\n";
  return 0;
}
