// Rank policy of the jobs: ranks from a kept fraction, pruning budgets, parameter counts,
// the allocation of one budget over several layers, and the default ridge.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "dalr/error.hpp"
#include "dalr/solver.hpp"

namespace dalr {

int64_t rank_for_keep(Method method, int64_t m, int64_t n, double keep) {
  if (!(keep > 0 && keep <= 1)) throw Error("--keep must be a fraction in (0, 1]");
  const double r =
      is_pruning(method) ? keep * double(m) : keep * double(m) * double(n) / double(m + n);
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(r)));
}

int64_t units_for_rank(int64_t m, int64_t n, int64_t k) {
  return std::clamp<int64_t>(k * (m + n) / n, 1, m);
}

int64_t params_after(Method method, int64_t m, int64_t n, int64_t rank) {
  return is_pruning(method) ? rank * n + rank : rank * n + m * rank + m;
}

std::vector<int64_t> allocate_ranks(const std::vector<RankCost>& layers,
                                    const std::vector<std::vector<double>>& spectra, double budget,
                                    const std::string& unit) {
  if (!(budget > 0 && budget <= 1)) throw Error("--budget must be a fraction in (0, 1]");
  if (layers.size() != spectra.size() || layers.empty())
    throw Error("allocate_ranks: one spectrum per layer is needed");
  double total = 0;
  for (const RankCost& c : layers) {
    if (!(c.per_rank > 0) || c.max_rank < 1)
      throw Error("allocate_ranks: a layer's cost per rank must be > 0, its maximum rank >= 1");
    total += c.dense;
  }
  const double limit = budget * total;
  std::vector<int64_t> k(layers.size(), 1);
  std::vector<double> energy(layers.size(), 0);
  double used = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    used += layers[i].per_rank;
    for (double v : spectra[i]) energy[i] += std::max(v, 0.0);
  }
  if (used > limit)
    throw Error("--budget " + std::to_string(budget) + " is too small: rank 1 in every layer " +
                "already needs " + std::to_string(static_cast<int64_t>(used)) + " " + unit +
                " of the " + std::to_string(static_cast<int64_t>(limit)) + " it allows");
  for (;;) {
    size_t best = layers.size();
    double best_gain = -1;
    for (size_t i = 0; i < layers.size(); ++i) {
      const double cost = layers[i].per_rank;
      if (k[i] >= layers[i].max_rank || used + cost > limit) continue;
      const size_t next = static_cast<size_t>(k[i]);
      const double v = next < spectra[i].size() ? std::max(spectra[i][next], 0.0) : 0.0;
      const double gain = (energy[i] > 0 ? v / energy[i] : 0.0) / cost;
      if (gain > best_gain) best_gain = gain, best = i;
    }
    if (best == layers.size()) return k;
    ++k[best];
    used += layers[best].per_rank;
  }
}

std::vector<int64_t> allocate_ranks(const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                    const std::vector<std::vector<double>>& spectra,
                                    double budget) {
  std::vector<RankCost> layers;
  for (const auto& [m, n] : shapes)
    layers.push_back({std::min(m, n), double(m + n), double(m) * double(n)});
  return allocate_ranks(layers, spectra, budget, "weights");
}

void check_lambda_rel(double rel) {
  if (!(rel >= 0) || !std::isfinite(rel))
    throw Error("--lambda-rel must be a finite number >= 0 (got " + std::to_string(rel) + ")");
}

template <typename T>
double default_lambda(const LayerStats<T>& stats, double rel) {
  check_lambda_rel(rel);
  const double trace = stats.gram_trace();
  // Not the user's lambda: say what is wrong with the statistics it is computed from.
  if (!std::isfinite(trace))
    throw Error(
        "the default lambda (lambda_rel * trace(C) / n) cannot be computed: trace(C) "
        "is not finite, the activations overflowed (use --precision fp64 or scale "
        "them down)");
  if (trace < 0)
    throw Error("the default lambda (lambda_rel * trace(C) / n) cannot be computed: trace(C) = " +
                std::to_string(trace) +
                " is negative, so C is not a Gram matrix (is the statistics file damaged?)");
  return rel * trace / static_cast<double>(stats.n());
}

template double default_lambda(const LayerStats<float>&, double);
template double default_lambda(const LayerStats<double>&, double);

}  // namespace dalr
