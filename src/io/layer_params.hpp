#pragma once
// A layer's parameters read from a model file, as both forward passes hold them.
#include <vector>

#include "dalr/arch.hpp"

namespace dalr {

class SafetensorsFile;

// A layer's parameters in T, as both forward passes use them: conv/linear weight and
// bias as stored; batchnorm folded (in double) into a per-channel scale (weight) and
// shift (bias). Empty for layers without tensors.
template <typename T>
void load_layer_params(const LayerSpec& l, const SafetensorsFile& weights, std::vector<T>* weight,
                       std::vector<T>* bias);

}  // namespace dalr
