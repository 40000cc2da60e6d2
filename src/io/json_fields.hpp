#pragma once
// Readers for the fields of the model file's JSON metadata (dalr.arch, dalr.input):
// each checks the JSON type and range and throws dalr::Error naming `where` (a layer,
// or "dalr.input") and the field.
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dalr::json_fields {

using json = nlohmann::json;

// `text` parsed; "<what> is not valid JSON: ..." otherwise.
json parse_json(const std::string& text, const char* what);

// An integer >= min; absent: *fallback, or an error when fallback is null.
int64_t get_int(const json& o, const std::string& key, const std::string& where, int64_t min,
                const int64_t* fallback);

// A finite number >= 0 (> 0 with `positive`); absent: fallback.
double get_double(const json& o, const std::string& key, const std::string& where, double fallback,
                  bool positive);

// [h, w] of positive integers, or one integer for both; required.
std::array<int64_t, 2> get_hw(const json& o, const std::string& key, const std::string& where);

// Every key of `o` is in `allowed`.
void check_keys(const json& o, const std::vector<std::string>& allowed, const std::string& where);

}  // namespace dalr::json_fields
