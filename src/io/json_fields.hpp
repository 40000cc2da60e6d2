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

// Deepest nesting parse_json accepts: dalr.arch needs 3 levels (array, layer, [h, w]).
constexpr int kMaxJsonDepth = 16;

// `text` parsed; "<what> is not valid JSON: ..." otherwise, and an error when it nests
// deeper than kMaxJsonDepth (a hostile file must not exhaust the stack later).
json parse_json(const std::string& text, const char* what);

// `j` as JSON text for a message: at most ~200 characters, cut with "...".
std::string excerpt(const json& j);

// Largest integer field: channels and features (2^24 is 16 million).
constexpr int64_t kMaxCount = int64_t(1) << 24;
// Largest spatial field: kernel, stride, pad, image and pooled sizes.
constexpr int64_t kMaxSpatial = int64_t(1) << 16;

// An integer in [min, max]; absent: *fallback, or an error when fallback is null.
int64_t get_int(const json& o, const std::string& key, const std::string& where, int64_t min,
                const int64_t* fallback, int64_t max = kMaxCount);

// A finite number >= 0 (> 0 with `positive`); absent: fallback.
double get_double(const json& o, const std::string& key, const std::string& where, double fallback,
                  bool positive);

// [h, w] of integers in [1, kMaxSpatial], or one integer for both; required.
std::array<int64_t, 2> get_hw(const json& o, const std::string& key, const std::string& where);

// Every key of `o` is in `allowed`.
void check_keys(const json& o, const std::vector<std::string>& allowed, const std::string& where);

}  // namespace dalr::json_fields
