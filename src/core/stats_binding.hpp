#pragma once
// Statistics bound to the network they were collected on (--save-stats writes, --stats
// checks). A statistics file holds
//   dalr.layer_hash     the hash of the layer's weight and bias (its output statistics,
//                       which pruning ranks by, depend on them);
//   dalr.upstream_hash  for streamed statistics: the hash of the input preprocessing, the
//                       layers before it and their tensors (its input statistics depend
//                       on them).
// Loading them for another model's layer (same name and shape, other weights) is refused
// with a message saying which part differs; a file without the keys (an older version,
// Python's dalr.Stats) is accepted with a warning that it cannot be checked.
#include <map>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/safetensors.hpp"

namespace dalr {

// The hash of NAME.weight and NAME.bias (when present) as stored in `model`.
std::string layer_hash(const SafetensorsFile& model, const std::string& layer);
// The hash of everything before `layer` in `arch`: the input spec, the layers' types and
// fields, and their tensors in `model`. Throws when `layer` is not in `arch`.
std::string upstream_hash(const SafetensorsFile& model, const Arch& arch, const std::string& layer);

// Checks the binding of statistics file `path` (its metadata `meta`) against `layer` of
// `model`; `arch` is null when the model has none (then the upstream part is unchecked).
// Throws dalr::Error on a mismatch; appends a warning when the file has no binding.
void check_stats_binding(const std::map<std::string, std::string>& meta, const std::string& path,
                         const SafetensorsFile& model, const Arch* arch, const std::string& layer,
                         std::vector<std::string>& warnings);

}  // namespace dalr
