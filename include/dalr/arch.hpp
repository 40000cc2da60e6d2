#pragma once
// Network architecture: the ordered layer list a model file carries in its safetensors
// metadata (`dalr.arch`, a JSON array) plus the image preprocessing (`dalr.input`),
// or a built-in torchvision VGG preset for a plain state dict without metadata.
//
// dalr.arch layers (fields in brackets are optional, with their defaults):
//   {"type":"conv","name":N,"in":C,"out":O,"kernel":K,["stride":1],["pad":0],["dilation":1],
//    ["bias":true]}   (PyTorch's Conv2d, square; "dilation" is written only when not 1)
//   {"type":"relu"}  {"type":"dropout"} (identity)  {"type":"flatten"} (C order)
//   {"type":"maxpool","kernel":K,["stride":K]}  {"type":"avgpool","kernel":K,["stride":K]}
//       (PyTorch semantics: floor mode, no padding)
//   {"type":"adaptive_avgpool","out":[H,W]}   (bin i covers [floor(i*H/out), ceil((i+1)*H/out)))
//   {"type":"batchnorm","name":N,["eps":1e-5]}  (inference, running statistics)
//   {"type":"linear","name":N,"in":n,"out":m,["bias":true]}
// Tensors are named as torchvision names them: N.weight, N.bias (N.running_mean,
// N.running_var for batchnorm). "bias":false (an extension of the format) marks
// a layer without a bias tensor: the first factor N.0 of a compressed linear layer.
//
// dalr.input: InputSpec (dalr/input_spec.hpp).
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dalr/conv_geometry.hpp"
#include "dalr/input_spec.hpp"

namespace dalr {

class SafetensorsFile;

enum class LayerType {
  Conv,
  Relu,
  MaxPool,
  AvgPool,
  AdaptiveAvgPool,
  BatchNorm,
  Flatten,
  Linear,
  Dropout
};

const char* layer_type_name(LayerType t);  // "conv", "relu", ... as in the JSON

struct LayerSpec {
  LayerType type = LayerType::Relu;
  std::string name;  // conv, batchnorm, linear: the tensor prefix; empty otherwise
  int64_t in = 0;    // conv: input channels; linear: input features
  int64_t out = 0;   // conv: output channels; linear: output features
  int64_t kernel = 0;
  int64_t stride = 1;
  int64_t pad = 0;
  int64_t dilation = 1;             // conv: the kernel's taps are this far apart
  double eps = 1e-5;                // batchnorm
  std::array<int64_t, 2> out_hw{};  // adaptive_avgpool
  bool bias = true;                 // conv, linear
};

struct Arch {
  std::vector<LayerSpec> layers;
  InputSpec input;
};

// Parses the two metadata values. Throws dalr::Error naming the layer (index, type,
// name) and the field on any problem: bad JSON, unknown type or field, missing field,
// wrong JSON type, a value out of range, duplicate names, or channel/feature counts
// that contradict each other where they can be known without an image.
Arch parse_arch(const std::string& arch_json, const std::string& input_json);

// The inverse of parse_arch: parse_arch(arch_to_json(a), input_to_json(a.input)) == a
// (input_to_json: dalr/input_spec.hpp).
std::string arch_to_json(const Arch& arch);
// Both keys ({"dalr.arch": ..., "dalr.input": ...}) for write_safetensors.
std::map<std::string, std::string> arch_metadata(const Arch& arch);

// torchvision VGG: vgg11, vgg13, vgg16, vgg19 and their _bn variants, ImageNet's
// preprocessing (mean, std) at `input_size` (the square crop, >= 32: 224 is ImageNet's),
// resized first to input_size * 256/224 (truncated; 256 for 224).
std::vector<std::string> vgg_preset_names();
Arch vgg_preset(const std::string& name, int64_t num_classes, int64_t input_size = 224);

// The file's dalr.arch / dalr.input metadata if present, else the preset (its classes
// taken from classifier.6.weight) at `input_size` (0: 224; --input-size, refused for a
// file with dalr.arch), else an error asking for --arch. The weights are checked
// against the result (check_weights).
Arch load_arch(const SafetensorsFile& file, const std::string& preset, int64_t input_size = 0);

// A copy with linear layer `name` (m x n) replaced by `name.0` (n -> rank, no bias)
// and `name.1` (rank -> m, with the original bias), the layout of a compressed model.
Arch replace_linear_with_factors(const Arch& arch, const std::string& name, int64_t rank);

// A copy with conv layer `name` (c_out x c_in x kh x kw) replaced by `name.0` (c_in ->
// rank, the original kernel, stride, padding and dilation, no bias) and `name.1` (a 1x1
// conv rank -> c_out with a bias), the layout of a compressed conv layer. `name.1` has a
// bias even when the original had none: compress always writes NAME.1.bias (svd-bc
// corrects it; the other methods write the original's, or zeros).
Arch replace_conv_with_factors(const Arch& arch, const std::string& name, int64_t rank);

// Every named layer's tensors exist, are floating point and have the shapes the arch
// implies; the message names the tensor, the expected and the found shape.
void check_weights(const Arch& arch, const SafetensorsFile& file);

// The activation shape entering each layer (index i) and, at index layers.size(), the
// network's output, for a c x h x w input: after a flatten (or a linear) the tensor is
// flat, c is the feature count and h = w = 1. Throws dalr::Error naming the layer when
// the data cannot flow: channel counts that disagree, a kernel larger than its input,
// a conv or pool after flatten, a linear on an unflattened input, or a flatten whose
// size is not the next linear's `in`.
struct ActShape {
  int64_t c = 0, h = 0, w = 0;
  bool flat = false;
  int64_t numel() const { return c * h * w; }
};
std::vector<ActShape> layer_input_shapes(const Arch& arch, int64_t c, int64_t h, int64_t w);

// The geometry of conv layer `index` (dalr/conv_geometry.hpp: its input feature map, kernel,
// stride, padding and dilation) when the network's input is c x h x w. Throws dalr::Error
// when that layer is not a conv or the data cannot flow (layer_input_shapes).
ConvGeometry conv_geometry(const Arch& arch, size_t index, int64_t c, int64_t h, int64_t w);

// "layer 3 (conv 'features.0')", as errors name a layer.
std::string layer_label(const Arch& arch, size_t index);

bool operator==(const LayerSpec& a, const LayerSpec& b);
bool operator==(const Arch& a, const Arch& b);

}  // namespace dalr
