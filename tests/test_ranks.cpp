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
