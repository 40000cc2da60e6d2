#pragma once
// What the benchmarks share: the layer shape and run options, and wall-clock timing
// (warm-up, then the median of repeats).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/job_common.hpp"

namespace dalr::bench {

struct Options {
  int64_t m = 4096, n = 25088, p = 5994, k = 256, batch = 512, repeats = 3;
  std::string methods = "dalr,dalr-exact,svd";
  std::string json;  // write the result here too
};

inline void add_options(CLI::App& app, Options& o) {
  app.add_option("--m", o.m, "Layer outputs")->capture_default_str();
  app.add_option("--n", o.n, "Layer inputs")->capture_default_str();
  app.add_option("--p", o.p, "Activation samples")->capture_default_str();
  app.add_option("--k", o.k, "Rank")->capture_default_str();
  app.add_option("--batch", o.batch, "Samples per streamed batch")->capture_default_str();
  app.add_option("--repeats", o.repeats, "Timed repeats after one warm-up")->capture_default_str();
  app.add_option("--methods", o.methods, "Comma-separated methods")->capture_default_str();
  app.add_option("--json", o.json, "Also write the JSON result to this file");
}

inline std::vector<std::string> split(const std::string& s) {
  return split_list(s);
}

// Seconds of f (which must finish its work, synchronising if needed), median of repeats.
inline double wall_median(int64_t repeats, const std::function<void()>& f) {
  f();
  std::vector<double> t;
  for (int64_t r = 0; r < std::max<int64_t>(repeats, 1); ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Interleaved timing: each f returns its measurements of one run (e.g. wall and CPU
// seconds); after one warm-up of each, the fs run in turn within every repeat, so a
// change in the machine's load (a shared build machine) falls on all of them alike.
// Returns, per f, the median of each measurement.
inline std::vector<std::vector<double>> interleaved_medians(
    int64_t repeats, const std::vector<std::function<std::vector<double>()>>& fs) {
  for (const auto& f : fs) f();
  std::vector<std::vector<std::vector<double>>> t(fs.size());  // [f][measurement][repeat]
  for (int64_t r = 0; r < std::max<int64_t>(repeats, 1); ++r)
    for (size_t i = 0; i < fs.size(); ++i) {
      const std::vector<double> m = fs[i]();
      t[i].resize(m.size());
      for (size_t j = 0; j < m.size(); ++j) t[i][j].push_back(m[j]);
    }
  std::vector<std::vector<double>> out(fs.size());
  for (size_t i = 0; i < fs.size(); ++i)
    for (auto& tj : t[i]) {
      std::sort(tj.begin(), tj.end());
      out[i].push_back(tj[tj.size() / 2]);
    }
  return out;
}

}  // namespace dalr::bench
