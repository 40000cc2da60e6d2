#include "cli/inspect.hpp"

#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dalr/safetensors.hpp"

namespace dalr::cli {

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
}  // namespace

std::string inspect_text(const std::string& path, bool as_json) {
  SafetensorsFile f(path);
  int64_t total = 0;
  nlohmann::json j;
  j["path"] = path;
  j["metadata"] = f.metadata();
  j["tensors"] = nlohmann::json::array();
  j["fc_layers"] = nlohmann::json::array();
  j["conv_layers"] = nlohmann::json::array();
  std::ostringstream os;
  os << path << "\n\n"
     << std::left << std::setw(40) << "tensor" << std::setw(6) << "dtype" << std::setw(20)
     << "shape" << std::right << std::setw(14) << "parameters"
     << "\n";
  for (const TensorInfo& t : f.tensors()) {
    total += t.numel();
    j["tensors"].push_back({{"name", t.name},
                            {"dtype", dtype_name(t.dtype)},
                            {"shape", t.shape},
                            {"params", t.numel()}});
    os << std::left << std::setw(40) << t.name << std::setw(6) << dtype_name(t.dtype)
       << std::setw(20) << shape_str(t.shape) << std::right << std::setw(14) << t.numel() << "\n";
    if (t.shape.size() == 2 && ends_with(t.name, ".weight"))
      j["fc_layers"].push_back(
          {{"name", t.name.substr(0, t.name.size() - 7)}, {"out", t.shape[0]}, {"in", t.shape[1]}});
    if (t.shape.size() == 4 && ends_with(t.name, ".weight"))
      j["conv_layers"].push_back({{"name", t.name.substr(0, t.name.size() - 7)},
                                  {"out", t.shape[0]},
                                  {"in", t.shape[1]},
                                  {"kernel", {t.shape[2], t.shape[3]}}});
  }
  j["total_params"] = total;
  if (as_json) return j.dump(2) + "\n";
  os << "\ntotal parameters: " << total << "\n";
  os << "fully connected layers (--layer):";
  if (j["fc_layers"].empty()) os << " none";
  for (const auto& l : j["fc_layers"])
    os << " " << l["name"].get<std::string>() << " (" << l["out"] << "x" << l["in"] << ")";
  os << "\nconv layers (--layer):";
  if (j["conv_layers"].empty()) os << " none";
  for (const auto& l : j["conv_layers"])
    os << " " << l["name"].get<std::string>() << " (" << l["out"] << "x" << l["in"] << "x"
       << l["kernel"][0] << "x" << l["kernel"][1] << ")";
  os << "\n";
  if (!f.metadata().empty()) {
    os << "\nmetadata:\n";
    for (const auto& [k, v] : f.metadata())
      os << "  " << k << " = " << (v.size() > 200 ? v.substr(0, 200) + "..." : v) << "\n";
  }
  return os.str();
}

}  // namespace dalr::cli
