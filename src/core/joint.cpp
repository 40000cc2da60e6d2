#include "dalr/joint.hpp"

#include <cmath>

#include "dalr/error.hpp"

namespace dalr {

int64_t joint_next_rank(int64_t k, double shrink) {
  if (k <= 1) return 0;
  const int64_t next = static_cast<int64_t>(std::floor(double(k) * shrink));
  return std::max<int64_t>(1, std::min(next, k - 1));
}

JointSearchResult greedy_joint_search(
    const std::vector<int64_t>& full, double base, double max_drop, double shrink,
    const std::function<double(const std::vector<int64_t>&)>& accuracy) {
  if (!(shrink > 0 && shrink < 1))
    throw Error("the joint search's shrink factor must be in (0, 1)");
  if (!(max_drop >= 0)) throw Error("--max-drop must be at least 0 (percentage points)");
  JointSearchResult r;
  r.ranks = full;
  r.accuracy = base;
  // A small tolerance so that a loss of exactly max_drop points is accepted.
  const double floor_acc = base - max_drop / 100.0 - 1e-12;
  for (;;) {
    JointStep step;
    double best = -1;
    for (size_t i = 0; i < r.ranks.size(); ++i) {
      const int64_t next = joint_next_rank(r.ranks[i], shrink);
      if (next == 0) continue;
      std::vector<int64_t> option = r.ranks;
      option[i] = next;
      const double acc = accuracy(option);
      ++r.evaluations;
      step.tried.push_back(option);
      step.accuracy.push_back(acc);
      if (acc >= floor_acc && acc > best) {
        best = acc;
        step.choice = static_cast<int>(step.tried.size()) - 1;
      }
    }
    if (step.tried.empty()) break;  // every layer at rank 1
    r.steps.push_back(step);
    if (step.choice < 0) break;
    r.ranks = step.tried[static_cast<size_t>(step.choice)];
    r.accuracy = best;
  }
  return r;
}

}  // namespace dalr
