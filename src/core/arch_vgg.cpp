// The built-in torchvision VGG presets (dalr/arch.hpp's vgg_preset), for a plain state
// dict without dalr.arch metadata.
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/error.hpp"

namespace dalr {
namespace {

struct VggConfig {
  const char* name;
  std::vector<int> cfg;  // 0 = maxpool
};

const std::vector<VggConfig>& vgg_configs() {
  static const std::vector<VggConfig> c = {
      {"vgg11", {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}},
      {"vgg13", {64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}},
      {"vgg16", {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0}},
      {"vgg19", {64,  64,  0,   128, 128, 0,   256, 256, 256, 256, 0,
                 512, 512, 512, 512, 0,   512, 512, 512, 512, 0}},
  };
  return c;
}

}  // namespace

std::vector<std::string> vgg_preset_names() {
  std::vector<std::string> names;
  for (const auto& c : vgg_configs()) names.push_back(c.name);
  for (const auto& c : vgg_configs()) names.push_back(std::string(c.name) + "_bn");
  return names;
}

Arch vgg_preset(const std::string& name, int64_t num_classes, int64_t input_size) {
  const VggConfig* cfg = nullptr;
  bool bn = false;
  for (const auto& c : vgg_configs()) {
    if (name == c.name) cfg = &c;
    if (name == std::string(c.name) + "_bn") cfg = &c, bn = true;
  }
  if (!cfg) {
    std::string list;
    for (const auto& n : vgg_preset_names()) list += (list.empty() ? "" : ", ") + n;
    throw Error("unknown architecture preset '" + name + "' (valid: " + list + ")");
  }
  if (num_classes < 1)
    throw Error("preset " + name + ": number of classes must be >= 1, got " +
                std::to_string(num_classes));
  // Five 2x2 poolings need 32 pixels; the cap keeps resize's arithmetic and the images
  // within the decoder's sizes.
  if (input_size < 32 || input_size > (int64_t(1) << 15))
    throw Error("preset " + name + ": --input-size must be between 32 and 32768, got " +
                std::to_string(input_size));
  Arch arch;
  auto add = [&](LayerType t, const std::string& nm) {
    LayerSpec l;
    l.type = t;
    l.name = nm;
    arch.layers.push_back(l);
    return &arch.layers.back();
  };
  int index = 0;  // torchvision counts every module of `features`
  int64_t channels = 3;
  for (int v : cfg->cfg) {
    if (v == 0) {
      LayerSpec* p = add(LayerType::MaxPool, "");
      p->kernel = p->stride = 2;
      ++index;
      continue;
    }
    LayerSpec* c = add(LayerType::Conv, "features." + std::to_string(index++));
    c->in = channels;
    c->out = v;
    c->kernel = 3;
    c->pad = 1;
    if (bn) add(LayerType::BatchNorm, "features." + std::to_string(index++));
    add(LayerType::Relu, "");
    ++index;
    channels = v;
  }
  add(LayerType::AdaptiveAvgPool, "")->out_hw = {7, 7};
  add(LayerType::Flatten, "");
  const int64_t fc_out[3] = {4096, 4096, num_classes};
  int64_t fc_in = 512 * 7 * 7;
  for (int i = 0; i < 3; ++i) {
    LayerSpec* fc = add(LayerType::Linear, "classifier." + std::to_string(3 * i));
    fc->in = fc_in;
    fc->out = fc_out[i];
    fc_in = fc_out[i];
    if (i < 2) {
      add(LayerType::Relu, "");
      add(LayerType::Dropout, "");
    }
  }
  arch.input.channels = 3;
  arch.input.resize = input_size * 256 / 224;
  arch.input.crop = {input_size, input_size};
  arch.input.scale = 1.0 / 255.0;
  arch.input.mean = {0.485, 0.456, 0.406};
  arch.input.std = {0.229, 0.224, 0.225};
  return arch;
}

}  // namespace dalr
