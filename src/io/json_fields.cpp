#include "io/json_fields.hpp"

#include <cmath>
#include <limits>

#include "dalr/error.hpp"

namespace dalr::json_fields {

json parse_json(const std::string& text, const char* what) {
  auto bounded = [&](int depth, json::parse_event_t, json&) {
    if (depth > kMaxJsonDepth)
      throw Error(std::string(what) + " is nested deeper than " + std::to_string(kMaxJsonDepth) +
                  " levels; refusing it");
    return true;
  };
  try {
    return json::parse(text, bounded);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    if (msg.size() > 300) msg = msg.substr(0, 300) + "...";
    throw Error(std::string(what) + " is not valid JSON: " + msg);
  }
}

std::string excerpt(const json& j) {
  constexpr size_t kMax = 200;
  std::string s = j.dump();
  if (s.size() > kMax) s = s.substr(0, kMax) + "...";
  return s;
}

// Field readers: `where` names the layer (or "dalr.input") in the message.
int64_t get_int(const json& o, const std::string& key, const std::string& where, int64_t min,
                const int64_t* fallback, int64_t max) {
  auto it = o.find(key);
  if (it == o.end()) {
    if (fallback) return *fallback;
    throw Error(where + ": missing field '" + key + "'");
  }
  if (!it->is_number_integer())
    throw Error(where + ": field '" + key + "' must be an integer, got " + excerpt(*it));
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX))
    throw Error(where + ": field '" + key + "' is too large: " + excerpt(*it));
  const int64_t v = it->get<int64_t>();
  if (v < min)
    throw Error(where + ": field '" + key + "' must be >= " + std::to_string(min) + ", got " +
                std::to_string(v));
  if (v > max)
    throw Error(where + ": field '" + key + "' must be <= " + std::to_string(max) + ", got " +
                std::to_string(v));
  return v;
}

double get_double(const json& o, const std::string& key, const std::string& where, double fallback,
                  bool positive) {
  auto it = o.find(key);
  if (it == o.end()) return fallback;
  if (!it->is_number())
    throw Error(where + ": field '" + key + "' must be a number, got " + excerpt(*it));
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < 0 || (positive && v == 0))
    throw Error(where + ": field '" + key + "' must be " + (positive ? "> 0" : ">= 0") +
                " and finite, got " + excerpt(*it));
  return v;
}

// [h, w] of positive integers, or one integer for both.
std::array<int64_t, 2> get_hw(const json& o, const std::string& key, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end()) throw Error(where + ": missing field '" + key + "'");
  auto bad = [&]() {
    return Error(where + ": field '" + key + "' must be [height, width] (positive integers), got " +
                 excerpt(*it));
  };
  std::array<int64_t, 2> hw{};
  if (it->is_number_integer()) {
    hw = {it->get<int64_t>(), it->get<int64_t>()};
  } else if (it->is_array() && it->size() == 2 && (*it)[0].is_number_integer() &&
             (*it)[1].is_number_integer()) {
    hw = {(*it)[0].get<int64_t>(), (*it)[1].get<int64_t>()};
  } else {
    throw bad();
  }
  if (hw[0] < 1 || hw[1] < 1) throw bad();
  if (hw[0] > kMaxSpatial || hw[1] > kMaxSpatial)
    throw Error(where + ": field '" + key + "' must be at most " + std::to_string(kMaxSpatial) +
                ", got " + excerpt(*it));
  return hw;
}

void check_keys(const json& o, const std::vector<std::string>& allowed, const std::string& where) {
  for (auto it = o.begin(); it != o.end(); ++it) {
    bool ok = false;
    for (const auto& a : allowed) ok = ok || a == it.key();
    if (!ok) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw Error(where + ": unknown field '" + it.key() + "' (allowed: " + list + ")");
    }
  }
}

}  // namespace dalr::json_fields
