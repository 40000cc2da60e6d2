// Statistics bound to the network they were collected on (stats_binding.hpp).
#include "core/stats_binding.hpp"

#include "common/hash64.hpp"
#include "dalr/error.hpp"
#include "dalr/input_spec.hpp"

namespace dalr {

namespace {

void add_tensor(Hash64& h, const SafetensorsFile& model, const TensorInfo& t) {
  h.add(t.name);
  h.add(std::string(dtype_name(t.dtype)));
  for (int64_t d : t.shape) h.add_u64(static_cast<uint64_t>(d));
  h.add(model.raw(t), static_cast<size_t>(t.end - t.begin));
}

std::string value(const std::map<std::string, std::string>& meta, const char* key) {
  auto it = meta.find(key);
  return it == meta.end() ? std::string() : it->second;
}

}  // namespace

std::string layer_hash(const SafetensorsFile& model, const std::string& layer) {
  Hash64 h;
  add_tensor(h, model, model.at(layer + ".weight"));
  if (const TensorInfo* b = model.find(layer + ".bias")) add_tensor(h, model, *b);
  return h.hex();
}

std::string upstream_hash(const SafetensorsFile& model, const Arch& arch,
                          const std::string& layer) {
  size_t at = 0;
  while (at < arch.layers.size() && arch.layers[at].name != layer) ++at;
  if (at == arch.layers.size()) throw Error("layer '" + layer + "' is not in the architecture");
  Arch before;
  before.input = arch.input;
  before.layers.assign(arch.layers.begin(), arch.layers.begin() + static_cast<long>(at));
  Hash64 h;
  h.add(input_to_json(arch.input));
  h.add(arch_to_json(before));
  for (const LayerSpec& l : before.layers) {
    if (l.name.empty()) continue;
    const std::string prefix = l.name + ".";
    for (const TensorInfo& t : model.tensors())  // file order: stable for one file
      if (t.name.compare(0, prefix.size(), prefix) == 0) add_tensor(h, model, t);
  }
  return h.hex();
}

void check_stats_binding(const std::map<std::string, std::string>& meta, const std::string& path,
                         const SafetensorsFile& model, const Arch* arch, const std::string& layer,
                         std::vector<std::string>& warnings) {
  const std::string saved_layer = value(meta, "dalr.layer_hash");
  const std::string saved_up = value(meta, "dalr.upstream_hash");
  const std::string from = value(meta, "dalr.model");
  const std::string where = from.empty() ? std::string() : " (saved from " + from + ")";
  if (saved_layer.empty()) {
    warnings.push_back("statistics file " + path +
                       " does not record the weights it was collected with (an older "
                       "dalr-gpu, or Python's dalr.Stats): it cannot be checked that it "
                       "belongs to this model");
    return;
  }
  if (saved_layer != layer_hash(model, layer))
    throw Error("statistics file " + path + where + " was collected with other weights for '" +
                layer + "' than " + model.path() +
                " has (same name and shape, different values): they belong to another "
                "model; collect them again on this one");
  if (!saved_up.empty() && arch && saved_up != upstream_hash(model, *arch, layer))
    throw Error("statistics file " + path + where + " was collected through other layers before '" +
                layer + "' (or another input preprocessing) than " + model.path() +
                " has: its activations are another network's; collect them again on this one");
}

}  // namespace dalr
