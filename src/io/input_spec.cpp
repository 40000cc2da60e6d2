#include "dalr/input_spec.hpp"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dalr/error.hpp"
#include "io/json_fields.hpp"

namespace dalr {

namespace {
const char* const kWhere = "dalr.input";

std::string number(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}
}  // namespace

void validate(const InputSpec& in) {
  const std::string where = kWhere;
  if (in.channels < 1)
    throw Error(where + ": field 'channels' must be >= 1, got " + std::to_string(in.channels));
  if (in.resize < 0)
    throw Error(where + ": field 'resize' must be >= 0 (0: no resize), got " +
                std::to_string(in.resize));
  if (in.crop[0] < 1 || in.crop[1] < 1)
    throw Error(where + ": field 'crop' must be [height, width] (positive integers), got [" +
                std::to_string(in.crop[0]) + "," + std::to_string(in.crop[1]) + "]");
  if (!std::isfinite(in.scale) || in.scale <= 0)
    throw Error(where + ": field 'scale' must be > 0 and finite, got " + number(in.scale));
  for (const char* key : {"mean", "std"}) {
    const bool is_std = std::string(key) == "std";
    const std::vector<double>& v = is_std ? in.std : in.mean;
    if (!v.empty() && static_cast<int64_t>(v.size()) != in.channels)
      throw Error(where + ": field '" + key + "' must be an array of " +
                  std::to_string(in.channels) + " numbers (one per channel), got " +
                  std::to_string(v.size()) + " (mean and std need 0 or " +
                  std::to_string(in.channels) + " values)");
    for (double x : v)
      if (!std::isfinite(x) || (is_std && x <= 0))
        throw Error(where + ": field '" + key + "' has a bad value " + number(x) +
                    (is_std ? " (must be > 0)" : ""));
  }
}

InputSpec parse_input_spec(const std::string& text) {
  using namespace json_fields;
  const std::string where = kWhere;
  const json o = parse_json(text, kWhere);
  if (!o.is_object()) throw Error(where + " must be a JSON object, got " + excerpt(o));
  check_keys(o, {"channels", "resize", "crop", "scale", "mean", "std"}, where);
  InputSpec in;
  const int64_t zero = 0;
  in.channels = get_int(o, "channels", where, 1, nullptr);
  in.resize = get_int(o, "resize", where, 0, &zero, kMaxSpatial);
  in.crop = get_hw(o, "crop", where);
  in.scale = get_double(o, "scale", where, 1.0, true);
  for (const char* key : {"mean", "std"}) {
    auto it = o.find(key);
    if (it == o.end()) continue;
    if (!it->is_array())
      throw Error(where + ": field '" + key + "' must be an array of " +
                  std::to_string(in.channels) + " numbers (one per channel), got " + excerpt(*it));
    std::vector<double>& v = std::string(key) == "mean" ? in.mean : in.std;
    for (const auto& x : *it) {
      if (!x.is_number())
        throw Error(where + ": field '" + key + "' has a bad value " + excerpt(x));
      v.push_back(x.get<double>());
    }
  }
  validate(in);  // the counts, and the values' ranges
  return in;
}

std::string input_to_json(const InputSpec& in) {
  nlohmann::ordered_json o;
  o["channels"] = in.channels;
  o["resize"] = in.resize;
  o["crop"] = {in.crop[0], in.crop[1]};
  o["scale"] = in.scale;
  if (!in.mean.empty()) o["mean"] = in.mean;
  if (!in.std.empty()) o["std"] = in.std;
  return o.dump();
}

bool operator==(const InputSpec& a, const InputSpec& b) {
  return a.channels == b.channels && a.resize == b.resize && a.crop == b.crop &&
         a.scale == b.scale && a.mean == b.mean && a.std == b.std;
}

}  // namespace dalr
