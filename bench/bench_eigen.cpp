// CPU timing of the eigensolvers the dalr solves can use for G's top k eigenvectors: the
// full decomposition (?syevd), the index range (cpu::syev_range, eigenpairs m-k+1..m) and
// the Chebyshev-filtered subspace iteration (cpu::top_eigenpairs_subspace, where its block
// fits; its steps and the relative difference of its top-k sum from the index range's), on a
// symmetric PSD matrix shaped like G = W C W^T (a Gram of random activations with a decaying scale,
// so the spectrum decays as real layers' do). The auto rule's threshold
// (dalr::topk_eigensolver_pays) comes from these numbers (bench/RESULTS.md). Warm-up, median of
// repeats, JSON out. Timings never live in tests.
//   bench_eigen [--sizes 512,1024,2048 --fractions 0.01,0.05,0.1,0.2,0.3,0.5
//                --precision fp32 --repeats 3 --json out.json]
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "cpu/blas_core.hpp"
#include "cpu/lapack.hpp"
#include "cpu/subspace_eig.hpp"
#include "dalr/matrix.hpp"

namespace {

// A = X X^T / p for X (m x 2m) with row i scaled by 1 / sqrt(1 + i): a decaying spectrum.
template <typename T>
dalr::Matrix<T> gram_like(int64_t m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  const int64_t p = 2 * m;
  dalr::Matrix<T> x(m, p), a(m, m);
  for (int64_t j = 0; j < p; ++j)
    for (int64_t i = 0; i < m; ++i) x(i, j) = static_cast<T>(nd(rng) / std::sqrt(1.0 + i));
  dalr::cpu::syrk(CblasLower, CblasNoTrans, m, p, T(1) / T(p), x.ptr(), x.ld(), T(0), a.ptr(),
                  a.ld());
  return a;
}

template <typename T>
nlohmann::json run(const std::vector<int64_t>& sizes, const std::vector<double>& fractions,
                   int64_t repeats) {
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t m : sizes) {
    const dalr::Matrix<T> a0 = gram_like<T>(m, 7);
    std::vector<T> w(static_cast<size_t>(m));
    const double full = dalr::bench::wall_median(repeats, [&] {
      dalr::Matrix<T> a = a0;
      dalr::cpu::syevd('V', 'L', m, a.ptr(), a.ld(), w.data());
    });
    for (double f : fractions) {
      const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::lround(f * m)));
      dalr::Matrix<T> z(m, k);
      const double topk = dalr::bench::wall_median(repeats, [&] {
        dalr::Matrix<T> a = a0;
        dalr::cpu::syev_range('L', m, a.ptr(), a.ld(), m - k + 1, m, w.data(), z.ptr(), z.ld());
      });
      nlohmann::json row = {{"m", m},         {"k", k},         {"k_over_m", double(k) / m},
                            {"full_s", full}, {"topk_s", topk}, {"speedup", full / topk}};
      double top_sum = 0;  // the top k's sum from the index-range solve (w ascending)
      for (int64_t i = 0; i < k; ++i) top_sum += double(w[static_cast<size_t>(i)]);
      std::string sub_text = "subspace: block does not fit";
      if (dalr::subspace_block(m, k) > 0) {
        dalr::Matrix<T> v;
        std::vector<double> sw;
        dalr::cpu::SubspaceResult res;
        const double sub = dalr::bench::wall_median(
            repeats, [&] { res = dalr::cpu::top_eigenpairs_subspace(a0, k, &v, &sw); });
        double sub_sum = 0;
        for (double x : sw) sub_sum += x;
        row["subspace_s"] = sub;
        row["subspace_converged"] = res.converged;
        row["subspace_steps"] = res.iterations;
        row["subspace_vs_topk"] = topk / sub;
        row["subspace_energy_rel_diff"] =
            res.converged ? std::abs(sub_sum - top_sum) / std::abs(top_sum) : 1.0;
        char buf[160];
        std::snprintf(buf, sizeof buf, "subspace %.3f s (%s, %d steps), %.2fx top-k", sub,
                      res.converged ? "converged" : "NOT converged", res.iterations, topk / sub);
        sub_text = buf;
      }
      rows.push_back(row);
      std::fprintf(stderr, "m %5lld k %5lld (k/m %.3f): full %.3f s, top-k %.3f s, %.2fx; %s\n",
                   static_cast<long long>(m), static_cast<long long>(k), double(k) / m, full, topk,
                   full / topk, sub_text.c_str());
    }
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) try {
  dalr::cpu::use_best_openblas_kernels(argv);  // may start this program again
  CLI::App app{"CPU timing of the full against the top-k (index range) eigensolver"};
  std::string sizes = "512,1024,2048", fractions = "0.01,0.05,0.1,0.2,0.3,0.5", precision = "fp32",
              json;
  int64_t repeats = 3;
  app.add_option("--sizes", sizes, "Comma-separated m")->capture_default_str();
  app.add_option("--fractions", fractions, "Comma-separated k / m")->capture_default_str();
  app.add_option("--precision", precision, "fp32 | fp64")->capture_default_str();
  app.add_option("--repeats", repeats, "Timed repeats after one warm-up")->capture_default_str();
  app.add_option("--json", json, "Also write the JSON result to this file");
  CLI11_PARSE(app, argc, argv);
  std::vector<int64_t> ms;
  for (const std::string& s : dalr::bench::split(sizes)) ms.push_back(std::stoll(s));
  std::vector<double> fs;
  for (const std::string& s : dalr::bench::split(fractions)) fs.push_back(std::stod(s));
  const nlohmann::json rows =
      precision == "fp64" ? run<double>(ms, fs, repeats) : run<float>(ms, fs, repeats);
  const nlohmann::json r = {{"precision", precision},
                            {"repeats", repeats},
                            {"device", "cpu"},
                            {"openblas_core", dalr::cpu::openblas_core()},
                            {"rows", rows}};
  const std::string text = r.dump(2);
  std::printf("%s\n", text.c_str());
  if (!json.empty()) std::ofstream(json) << text << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_eigen: %s\n", e.what());
  return 1;
}
