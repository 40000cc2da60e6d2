#pragma once
#include <string>

namespace dalr::cli {

// A model's tensors, metadata, parameter counts and fully connected layers, as a
// table or as JSON.
std::string inspect_text(const std::string& path, bool as_json);

}  // namespace dalr::cli
