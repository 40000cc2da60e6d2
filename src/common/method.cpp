// The method table's checks and look-ups (the table is dalr/solver.hpp's kMethodTable):
// checked at compile time against the enum's order, so a method added to the enum
// without a row (or out of order) does not build.
#include <algorithm>
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "dalr/error.hpp"
#include "dalr/solver.hpp"

namespace dalr {

namespace {

constexpr const auto& kMethods = kMethodTable;

constexpr bool rows_in_enum_order() {
  for (size_t i = 0; i < kMethods.size(); ++i)
    if (static_cast<size_t>(kMethods[i].method) != i) return false;
  return true;
}
static_assert(rows_in_enum_order(), "kMethodTable must list every Method in the enum's order");
static_assert(static_cast<size_t>(Method::PruneMax) + 1 == kMethods.size(),
              "a Method was added without a row in kMethodTable (or is not the last)");

const std::vector<std::string>& names() {
  static const std::vector<std::string> all = [] {
    std::vector<std::string> v;
    for (const MethodInfo& r : kMethods) v.emplace_back(r.name);
    return v;
  }();
  return all;
}

// m itself when it is a value of the enum; throws naming the value otherwise.
Method method_from_index(Method m) {
  const auto i = static_cast<size_t>(m);
  if (i >= kMethods.size())
    throw Error("unknown method (enum value " + std::to_string(static_cast<int>(m)) + ")");
  return m;
}

}  // namespace

Method method_from_name(const std::string& name) {
  for (const MethodInfo& r : kMethods)
    if (name == r.name) return r.method;
  std::string all;
  for (const auto& s : names()) all += (all.empty() ? "" : ", ") + s;
  throw Error("unknown method '" + name + "' (valid: " + all + ")");
}

const char* method_name(Method m) {
  return kMethods[static_cast<size_t>(method_from_index(m))].name;
}
const std::vector<std::string>& method_names() {
  return names();
}
bool is_pruning(Method m) {
  return kMethods[static_cast<size_t>(method_from_index(m))].pruning;
}
bool needs_gram(Method m) {
  return kMethods[static_cast<size_t>(method_from_index(m))].gram;
}

Eigensolver eigensolver_from_name(const std::string& name) {
  for (Eigensolver e :
       {Eigensolver::Auto, Eigensolver::Full, Eigensolver::TopK, Eigensolver::Subspace})
    if (name == eigensolver_name(e)) return e;
  throw Error("unknown eigensolver '" + name + "' (valid: auto, full, topk, subspace)");
}

const char* eigensolver_name(Eigensolver e) {
  switch (e) {
    case Eigensolver::Auto:
      return "auto";
    case Eigensolver::Full:
      return "full";
    case Eigensolver::TopK:
      return "topk";
    case Eigensolver::Subspace:
      return "subspace";
  }
  throw Error("unknown eigensolver (enum value " + std::to_string(static_cast<int>(e)) + ")");
}

bool use_topk_eigensolver(Eigensolver e, int64_t m, int64_t k) {
  // Measured by bench_eigen on the 2-core build machine (bench/RESULTS.md): below m = 512
  // the full solve takes milliseconds and wins; above, the top-k solve wins up to k/m of
  // about a quarter, by 2-4x at small k/m. A fifth leaves room for machine noise.
  constexpr int64_t kMinSize = 512;
  constexpr int64_t kMaxFractionInverse = 5;
  switch (e) {
    case Eigensolver::Full:
      return false;
    case Eigensolver::TopK:
    case Eigensolver::Subspace:
      return true;
    case Eigensolver::Auto:
      return m >= kMinSize && k * kMaxFractionInverse <= m;
  }
  throw Error("unknown eigensolver (enum value " + std::to_string(static_cast<int>(e)) + ")");
}

int64_t subspace_block(int64_t m, int64_t k) {
  if (k < 1) return 0;
  const int64_t l = k + std::max<int64_t>(k / 2, 32);
  return 2 * l <= m ? l : 0;
}

bool use_subspace_eigensolver(Eigensolver e, int64_t m, int64_t k) {
  // The block (subspace_block) must fit in half of m. Measured by
  // bench_eigen on the 2-core build machine (bench/RESULTS.md), fp32, against the index-range
  // solver: 2.2x at m = 4096, k = 256; 1.1x at k = m / 8, 0.64x at m / 5; 1.26x at m = 1024,
  // k = 128.
  const bool fits = subspace_block(m, k) > 0;
  switch (e) {
    case Eigensolver::Full:
    case Eigensolver::TopK:
      return false;
    case Eigensolver::Subspace:
      return fits;
    case Eigensolver::Auto:
      return fits && m >= 1024 && k * 8 <= m;
  }
  throw Error("unknown eigensolver (enum value " + std::to_string(static_cast<int>(e)) + ")");
}

}  // namespace dalr
