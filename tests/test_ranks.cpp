// The rank policy (src/core/ranks.cpp): ranks from a kept fraction, pruning's units at
// a rank's parameter budget, and ranks allocated across layers from their spectra.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "arch_nets.hpp"
#include "dalr/error.hpp"
#include "dalr/solver.hpp"
#include "test_util.hpp"

using namespace dalr;

namespace {

TEST(Ranks, RankBudgetArithmetic) {
  // VGG19 fc6: 4096 x 25088.
  EXPECT_EQ(rank_for_keep(Method::Dalr, 4096, 25088, 0.5), 1760);
  EXPECT_EQ(rank_for_keep(Method::PruneMean, 4096, 25088, 0.25), 1024);
  EXPECT_EQ(units_for_rank(4096, 25088, 64), 74);
  EXPECT_EQ(params_after(Method::Svd, 4096, 25088, 64), 64 * 25088 + 4096 * 64 + 4096);
  EXPECT_THROW(rank_for_keep(Method::Svd, 10, 10, 1.5), Error);
}

TEST(Budget, NeverExceedsItAndLeavesNoRoom) {
  std::mt19937_64 rng(test::test_seed(123));
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{37, 61}, {23, 37}, {11, 23}};
  std::vector<std::vector<double>> spectra;
  for (const auto& [m, n] : shapes) {
    std::vector<double> s;
    std::exponential_distribution<double> e(1.0);
    for (int64_t i = 0; i < std::min(m, n); ++i) s.push_back(e(rng) * std::pow(0.8, double(i)));
    std::sort(s.rbegin(), s.rend());
    spectra.push_back(s);
  }
  double total = 0;
  for (const auto& [m, n] : shapes) total += double(m * n);
  for (double budget : {0.08, 0.2, 0.35, 0.7, 1.0}) {
    SCOPED_TRACE("budget " + std::to_string(budget));
    const std::vector<int64_t> k = allocate_ranks(shapes, spectra, budget);
    double used = 0;
    for (size_t i = 0; i < k.size(); ++i) {
      EXPECT_GE(k[i], 1);
      EXPECT_LE(k[i], std::min(shapes[i].first, shapes[i].second));
      used += double(k[i] * (shapes[i].first + shapes[i].second));
    }
    EXPECT_LE(used, budget * total);
    // Maximal: no layer could take one more rank within the budget.
    for (size_t i = 0; i < k.size(); ++i)
      if (k[i] < std::min(shapes[i].first, shapes[i].second))
        EXPECT_GT(used + double(shapes[i].first + shapes[i].second), budget * total) << i;
  }
  // A flat spectrum earns more rank than a steep one of the same shape.
  const std::vector<int64_t> k = allocate_ranks({{30, 30}, {30, 30}},
                                                {std::vector<double>(30, 1.0),
                                                 [] {
                                                   std::vector<double> s;
                                                   for (int i = 0; i < 30; ++i)
                                                     s.push_back(std::pow(0.5, i));
                                                   return s;
                                                 }()},
                                                0.4);
  EXPECT_GT(k[0], k[1]);
  EXPECT_THROW(allocate_ranks(shapes, spectra, 0.001), Error);
  EXPECT_THROW(allocate_ranks(shapes, spectra, 1.5), Error);
}

// The value the allocation maximises: each layer's kept share of its spectrum.
double kept_share(const std::vector<std::vector<double>>& spectra, const std::vector<int64_t>& k) {
  double v = 0;
  for (size_t i = 0; i < k.size(); ++i) {
    double total = 0, kept = 0;
    for (size_t r = 0; r < spectra[i].size(); ++r) {
      total += spectra[i][r];
      if (int64_t(r) < k[i]) kept += spectra[i][r];
    }
    v += kept / total;
  }
  return v;
}

// Issue 16: the allocation under per-layer costs (weights: m + n per rank; multiply-adds
// per image: positions (m + n)) against brute-force enumeration of every rank vector. The
// greedy takes the best share per cost until the next best does not fit, so what it keeps
// is at least the best any allocation keeps within the budget less one rank's largest cost
// (the fractional knapsack bound), it stays within the budget, and no layer could take one
// more rank.
TEST(Budget, PerLayerCostsAgainstBruteForce) {
  std::mt19937_64 rng(test::test_seed(1616));
  // Two conv layers (m = c_out, n = c_in kh kw, positions) and an fc layer (positions 1).
  struct Shape {
    int64_t m, n, positions;
  };
  const std::vector<Shape> shapes = {{7, 27, 49}, {9, 63, 9}, {6, 11, 1}};
  for (int trial = 0; trial < 6; ++trial) {
    std::vector<std::vector<double>> spectra;
    for (const Shape& s : shapes) {
      std::vector<double> v;
      std::exponential_distribution<double> e(1.0);
      for (int64_t i = 0; i < std::min(s.m, s.n); ++i)
        v.push_back(0.01 + e(rng) * std::pow(0.7, double(i)));
      std::sort(v.rbegin(), v.rend());
      spectra.push_back(v);
    }
    for (const bool by_flops : {false, true}) {
      std::vector<RankCost> costs;
      double dense = 0, largest = 0;
      for (const Shape& s : shapes) {
        const double pos = by_flops ? double(s.positions) : 1.0;
        costs.push_back({std::min(s.m, s.n), pos * double(s.m + s.n), pos * double(s.m * s.n)});
        dense += costs.back().dense;
        largest = std::max(largest, costs.back().per_rank);
      }
      for (double budget : {0.15, 0.3, 0.55, 0.9}) {
        SCOPED_TRACE("trial " + std::to_string(trial) + (by_flops ? " flops" : " params") +
                     " budget " + std::to_string(budget));
        const double limit = budget * dense;
        std::vector<int64_t> k;
        try {
          k = allocate_ranks(costs, spectra, budget, "units");
        } catch (const Error&) {
          double one = 0;
          for (const RankCost& c : costs) one += c.per_rank;
          EXPECT_GT(one, limit);  // refused only when rank 1 everywhere does not fit
          continue;
        }
        auto cost_of = [&](const std::vector<int64_t>& r) {
          double c = 0;
          for (size_t i = 0; i < r.size(); ++i) c += double(r[i]) * costs[i].per_rank;
          return c;
        };
        EXPECT_LE(cost_of(k), limit);
        for (size_t i = 0; i < k.size(); ++i) {
          ASSERT_GE(k[i], 1);
          ASSERT_LE(k[i], costs[i].max_rank);
          if (k[i] < costs[i].max_rank) EXPECT_GT(cost_of(k) + costs[i].per_rank, limit) << i;
        }
        // Brute force: the best share within limit - largest (and within limit: the
        // greedy cannot beat it).
        double best_inner = 0, best = 0;
        std::vector<int64_t> r(3);
        for (r[0] = 1; r[0] <= costs[0].max_rank; ++r[0])
          for (r[1] = 1; r[1] <= costs[1].max_rank; ++r[1])
            for (r[2] = 1; r[2] <= costs[2].max_rank; ++r[2]) {
              const double c = cost_of(r), v = kept_share(spectra, r);
              if (c <= limit) best = std::max(best, v);
              if (c <= limit - largest) best_inner = std::max(best_inner, v);
            }
        const double got = kept_share(spectra, k);
        EXPECT_GE(got, best_inner - 1e-12);
        EXPECT_LE(got, best + 1e-12);
      }
    }
  }
  // Counting multiply-adds moves rank away from the layer with many positions.
  std::vector<std::vector<double>> flat = {std::vector<double>(7, 1.0),
                                           std::vector<double>(9, 1.0)};
  const std::vector<RankCost> params = {{7, 34, 7 * 27}, {9, 72, 9 * 63}};
  const std::vector<RankCost> flops = {{7, 49.0 * 34, 49.0 * 7 * 27}, {9, 9.0 * 72, 9.0 * 9 * 63}};
  const std::vector<int64_t> kp = allocate_ranks(params, flat, 0.5, "weights");
  const std::vector<int64_t> kf = allocate_ranks(flops, flat, 0.5, "multiply-adds");
  EXPECT_LT(kf[0], kp[0]);
  EXPECT_GT(kf[1], kp[1]);
  // The fc-shaped overload is the weight model.
  EXPECT_EQ(allocate_ranks({{7, 27}, {9, 63}}, flat, 0.5), kp);
}

// Issue 12: the default lambda names what is wrong with the statistics (a negative or
// non-finite trace of C) or with --lambda-rel, never "lambda must be >= 0" for a lambda
// the user did not give.
TEST(Ranks, DefaultLambdaNamesTheStatisticsProblem) {
  const int64_t n = 5;
  auto stats_with_diagonal = [&](double d) {
    Matrix<double> c(n, n);
    for (int64_t i = 0; i < n; ++i) c(i, i) = d;
    return LayerStats<double>::from_parts(7, c, std::vector<double>(n, 0.5),
                                          std::vector<double>(n, 1.0), {}, {});
  };
  EXPECT_DOUBLE_EQ(default_lambda(stats_with_diagonal(2.0), 0.1), 0.1 * 2.0);
  test::expect_error([&] { default_lambda(stats_with_diagonal(-3.0), 1e-3); },
                     {"trace(C)", "is negative", "statistics file"});
  test::expect_error([&] { default_lambda(stats_with_diagonal(2.0), -1.0); },
                     {"--lambda-rel must be a finite number >= 0", "-1"});
}

}  // namespace
