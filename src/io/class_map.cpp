// Class folders to model outputs (dalr/images.hpp's map_class_folders): by the model's
// class names (dalr.classes) when it has them, else by sorted position with a warning.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dalr/error.hpp"
#include "dalr/images.hpp"
#include "io/json_fields.hpp"

namespace dalr {

namespace {

// "'a', 'b', 'c', ... (12 in all)": a list for a message, at most `max` items.
std::string quoted_list(const std::vector<std::string>& v, size_t max = 12) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < max; ++i)
    s += (i ? ", '" : "'") + v[i].substr(0, 64) + "'";
  if (v.size() > max) s += ", ... (" + std::to_string(v.size()) + " in all)";
  return s;
}

}  // namespace

std::vector<std::string> parse_class_names(const std::string& text, int64_t outputs,
                                           const std::string& where) {
  const std::string what = where + ": metadata 'dalr.classes'";
  json_fields::json j;
  try {
    j = json_fields::parse_json(text, "dalr.classes");
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
  if (!j.is_array())
    throw Error(what + " must be a JSON array of class names, got " + json_fields::excerpt(j));
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_string() || j[i].get<std::string>().empty())
      throw Error(what + ": entry " + std::to_string(i) + " must be a non-empty string, got " +
                  json_fields::excerpt(j[i]));
    names.push_back(j[i].get<std::string>());
    if (!seen.insert(names.back()).second)
      throw Error(what + ": class '" + names.back() + "' is named twice");
  }
  if (outputs > 0 && static_cast<int64_t>(names.size()) != outputs)
    throw Error(what + " names " + std::to_string(names.size()) + " classes but the model has " +
                std::to_string(outputs) + " outputs");
  return names;
}

ClassMap map_class_folders(const std::string& dir, const std::vector<std::string>& folders,
                           const ModelClasses& model) {
  ClassMap m;
  if (!model.names.empty()) {
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < model.names.size(); ++i) index[model.names[i]] = static_cast<int64_t>(i);
    for (const std::string& f : folders) {
      const auto it = index.find(f);
      if (it == index.end())
        throw Error(dir + ": class folder '" + f +
                    "' is not one of the model's classes (its dalr.classes: " +
                    quoted_list(model.names) + ")");
      m.label.push_back(it->second);
    }
    m.names = model.names;
    return m;
  }
  const int64_t n = static_cast<int64_t>(folders.size());
  if (model.outputs > 0 && n > model.outputs)
    throw Error(dir + " has " + std::to_string(n) + " class folders but the model has only " +
                std::to_string(model.outputs) +
                " outputs (without class names in the model, dalr.classes, folder i in sorted "
                "order is output i): give a folder of the model's classes");
  std::string pairs;
  for (int64_t i = 0; i < n; ++i) {
    m.label.push_back(i);
    if (i < 4)
      pairs += (i ? ", '" : "'") + folders[static_cast<size_t>(i)] + "' -> " + std::to_string(i);
  }
  if (n > 4) pairs += ", ...";
  m.names = folders;
  m.warning = "the model has no class names (metadata dalr.classes), so the class folders of " +
              dir + " are mapped to outputs by sorted folder name (" + pairs +
              "); check that this is the model's class order";
  return m;
}

}  // namespace dalr
