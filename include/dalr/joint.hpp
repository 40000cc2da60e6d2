#pragma once
// Joint compression of several layers under an accuracy budget (the paper's greedy
// search, Table 10): starting from the uncompressed layers, each step tries shrinking
// each layer's rank a little (the others kept), measures the accuracy of every option,
// and keeps the best one; it stops when every option loses more than `max_drop`
// percentage points against the uncompressed accuracy.
#include <cstdint>
#include <functional>
#include <vector>

namespace dalr {

struct JointStep {
  std::vector<std::vector<int64_t>> tried;  // the ranks of each option
  std::vector<double> accuracy;             // each option's accuracy (a fraction)
  int choice = -1;                          // the option kept; -1: none (the search stopped)
};

struct JointSearchResult {
  std::vector<int64_t> ranks;  // the last accepted ranks (the start when none was)
  double accuracy = 0;         // their accuracy (the uncompressed one when none was)
  std::vector<JointStep> steps;
  int64_t evaluations = 0;  // calls of the accuracy function
};

// The next rank of the search: floor(k * shrink), at least 1 less than k, at least 1;
// 0 when k is already 1 (the layer cannot shrink).
int64_t joint_next_rank(int64_t k, double shrink);

// The greedy search. `full` holds each layer's starting rank (min(m, n): uncompressed),
// `base` the uncompressed accuracy, `max_drop` the allowed loss in percentage points
// (accuracies are fractions: a loss of 0.01 is 1 point), `shrink` the factor in (0, 1).
// `accuracy(ranks)` evaluates one option. Ties go to the earlier layer.
JointSearchResult greedy_joint_search(
    const std::vector<int64_t>& full, double base, double max_drop, double shrink,
    const std::function<double(const std::vector<int64_t>&)>& accuracy);

}  // namespace dalr
