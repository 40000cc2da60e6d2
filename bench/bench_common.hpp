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

// The median of each f's own measurement (each returns the seconds it measured), after
// one warm-up of each. Within a repeat the fs run in turn, so a change in the machine's
// load (a shared build machine) falls on all of them alike.
inline std::vector<double> interleaved_medians(int64_t repeats,
                                               const std::vector<std::function<double()>>& fs) {
  for (const auto& f : fs) f();
  std::vector<std::vector<double>> t(fs.size());
  for (int64_t r = 0; r < std::max<int64_t>(repeats, 1); ++r)
    for (size_t i = 0; i < fs.size(); ++i) t[i].push_back(fs[i]());
  std::vector<double> out;
  for (auto& ti : t) {
    std::sort(ti.begin(), ti.end());
    out.push_back(ti[ti.size() / 2]);
  }
  return out;
}

}  // namespace dalr::bench
