// The method table: one row per Method, checked at compile time against the enum's
// order, so a method added to the enum without a row (or out of order) does not build.
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "dalr/error.hpp"
#include "dalr/solver.hpp"

namespace dalr {

namespace {

struct MethodRow {
  Method method;
  const char* name;
};

constexpr std::array<MethodRow, 6> kMethods{{{Method::Dalr, "dalr"},
                                             {Method::DalrExact, "dalr-exact"},
                                             {Method::Svd, "svd"},
                                             {Method::SvdBc, "svd-bc"},
                                             {Method::PruneMean, "prune-mean"},
                                             {Method::PruneMax, "prune-max"}}};

constexpr bool rows_in_enum_order() {
  for (size_t i = 0; i < kMethods.size(); ++i)
    if (static_cast<size_t>(kMethods[i].method) != i) return false;
  return true;
}
static_assert(rows_in_enum_order(), "kMethods must list every Method in the enum's order");
static_assert(static_cast<size_t>(Method::PruneMax) + 1 == kMethods.size(),
              "a Method was added without a row in kMethods");

const std::vector<std::string>& names() {
  static const std::vector<std::string> all = [] {
    std::vector<std::string> v;
    for (const MethodRow& r : kMethods) v.emplace_back(r.name);
    return v;
  }();
  return all;
}

}  // namespace

Method method_from_name(const std::string& name) {
  for (const MethodRow& r : kMethods)
    if (name == r.name) return r.method;
  std::string all;
  for (const auto& s : names()) all += (all.empty() ? "" : ", ") + s;
  throw Error("unknown method '" + name + "' (valid: " + all + ")");
}

const char* method_name(Method m) {
  const auto i = static_cast<size_t>(m);
  if (i >= kMethods.size())
    throw Error("unknown method (enum value " + std::to_string(i) + ")");
  return kMethods[i].name;
}
const std::vector<std::string>& method_names() {
  return names();
}
bool is_pruning(Method m) {
  return m == Method::PruneMean || m == Method::PruneMax;
}
bool needs_gram(Method m) {
  return m == Method::Dalr || m == Method::DalrExact;
}


}  // namespace dalr
