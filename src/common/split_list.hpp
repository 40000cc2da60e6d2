#pragma once
// The one rule for the command line's lists (--layer, --methods, --ranks, the benches'
// --methods): items are separated by commas or whitespace (space, tab, newline), and
// empty items are skipped, so "a,b", "a, b", "a b" and "a,,b," all give {"a", "b"}.
// (A name holding a comma or whitespace cannot be listed.)
#include <string>
#include <vector>

namespace dalr {

inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s + ",") {
    const bool sep =
        c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
    if (!sep) {
      cur += c;
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  return out;
}

// The items with `sep` between them (split_list's inverse for sep ",").
inline std::string join_list(const std::vector<std::string>& items, const std::string& sep = ",") {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : std::string()) + items[i];
  return out;
}

}  // namespace dalr
