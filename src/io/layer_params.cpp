#include "io/layer_params.hpp"

#include <cmath>
#include <string>

#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"

namespace dalr {

template <typename T>
void load_layer_params(const LayerSpec& l, const SafetensorsFile& weights, std::vector<T>* weight,
                       std::vector<T>* bias) {
  weight->clear();
  bias->clear();
  if (l.type == LayerType::Conv || l.type == LayerType::Linear) {
    *weight = weights.read<T>(l.name + ".weight");
    if (l.bias) *bias = weights.read<T>(l.name + ".bias");
  } else if (l.type == LayerType::BatchNorm) {
    // Folded once in double: y = x * scale + shift, scale = weight / sqrt(var + eps).
    const auto g = weights.read<double>(l.name + ".weight");
    const auto b = weights.read<double>(l.name + ".bias");
    const auto mean = weights.read<double>(l.name + ".running_mean");
    const auto var = weights.read<double>(l.name + ".running_var");
    for (size_t c = 0; c < g.size(); ++c) {
      if (!(var[c] + l.eps > 0))
        throw Error(weights.path() + ": " + l.name + ".running_var[" + std::to_string(c) +
                    "] + eps is not positive");
      const double scale = g[c] / std::sqrt(var[c] + l.eps);
      weight->push_back(static_cast<T>(scale));
      bias->push_back(static_cast<T>(b[c] - mean[c] * scale));
    }
  }
}

template void load_layer_params(const LayerSpec&, const SafetensorsFile&, std::vector<float>*,
                                std::vector<float>*);
template void load_layer_params(const LayerSpec&, const SafetensorsFile&, std::vector<double>*,
                                std::vector<double>*);

}  // namespace dalr
