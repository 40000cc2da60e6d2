#include "dalr/arch.hpp"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "io/json_fields.hpp"

namespace dalr {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;
using json_fields::check_keys;
using json_fields::get_double;
using json_fields::get_hw;
using json_fields::get_int;
using json_fields::parse_json;

struct TypeInfo {
  LayerType type;
  const char* name;
  std::vector<std::string> fields;  // allowed keys besides "type" and "name"
  bool named;                       // "name" required (the layer has tensors)
};

const std::vector<TypeInfo>& type_table() {
  static const std::vector<TypeInfo> table = {
      {LayerType::Conv, "conv", {"in", "out", "kernel", "stride", "pad", "bias"}, true},
      {LayerType::Relu, "relu", {}, false},
      {LayerType::MaxPool, "maxpool", {"kernel", "stride"}, false},
      {LayerType::AvgPool, "avgpool", {"kernel", "stride"}, false},
      {LayerType::AdaptiveAvgPool, "adaptive_avgpool", {"out"}, false},
      {LayerType::BatchNorm, "batchnorm", {"eps"}, true},
      {LayerType::Flatten, "flatten", {}, false},
      {LayerType::Linear, "linear", {"in", "out", "bias"}, true},
      {LayerType::Dropout, "dropout", {}, false},
  };
  return table;
}

const TypeInfo& info_of(LayerType t) {
  for (const auto& i : type_table())
    if (i.type == t) return i;
  throw Error("internal: unknown layer type");
}

std::string type_list() {
  std::string s;
  for (const auto& i : type_table()) s += (s.empty() ? "" : ", ") + std::string(i.name);
  return s;
}

std::string label(size_t index, const std::string& type, const std::string& name) {
  std::string s = "layer " + std::to_string(index) + " (" + type;
  if (!name.empty()) s += " '" + name + "'";
  return s + ")";
}

LayerSpec parse_layer(const json& o, size_t index) {
  const std::string at = "dalr.arch layer " + std::to_string(index);
  if (!o.is_object()) throw Error(at + ": must be a JSON object, got " + o.dump());
  auto t = o.find("type");
  if (t == o.end()) throw Error(at + ": missing field 'type'");
  if (!t->is_string()) throw Error(at + ": field 'type' must be a string, got " + t->dump());
  const TypeInfo* info = nullptr;
  for (const auto& i : type_table())
    if (t->get<std::string>() == i.name) info = &i;
  if (!info)
    throw Error(at + ": unknown layer type '" + t->get<std::string>() + "' (known: " + type_list() +
                ")");

  LayerSpec l;
  l.type = info->type;
  auto n = o.find("name");
  if (n != o.end()) {
    if (!n->is_string() || n->get<std::string>().empty())
      throw Error(at + " (" + info->name + "): field 'name' must be a non-empty string, got " +
                  n->dump());
    l.name = n->get<std::string>();
  } else if (info->named) {
    throw Error(at + " (" + info->name + "): missing field 'name'");
  }
  const std::string where = "dalr.arch " + label(index, info->name, l.name);
  std::vector<std::string> allowed = info->fields;
  allowed.insert(allowed.begin(), {"type", "name"});
  check_keys(o, allowed, where);

  const int64_t one = 1, zero = 0;
  auto get_bias = [&]() {
    auto b = o.find("bias");
    if (b == o.end()) return true;
    if (!b->is_boolean()) throw Error(where + ": field 'bias' must be true or false");
    return b->get<bool>();
  };
  switch (l.type) {
    case LayerType::Conv:
      l.in = get_int(o, "in", where, 1, nullptr);
      l.out = get_int(o, "out", where, 1, nullptr);
      l.kernel = get_int(o, "kernel", where, 1, nullptr);
      l.stride = get_int(o, "stride", where, 1, &one);
      l.pad = get_int(o, "pad", where, 0, &zero);
      l.bias = get_bias();
      break;
    case LayerType::MaxPool:
    case LayerType::AvgPool:
      l.kernel = get_int(o, "kernel", where, 1, nullptr);
      l.stride = get_int(o, "stride", where, 1, &l.kernel);  // PyTorch: stride defaults to kernel
      break;
    case LayerType::AdaptiveAvgPool:
      l.out_hw = get_hw(o, "out", where);
      break;
    case LayerType::BatchNorm:
      l.eps = get_double(o, "eps", where, 1e-5, false);
      break;
    case LayerType::Linear:
      l.in = get_int(o, "in", where, 1, nullptr);
      l.out = get_int(o, "out", where, 1, nullptr);
      l.bias = get_bias();
      break;
    case LayerType::Relu:
    case LayerType::Flatten:
    case LayerType::Dropout:
      break;
  }
  return l;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

void expect_tensor(const SafetensorsFile& f, const std::string& tensor, const std::string& layer,
                   const std::vector<int64_t>& shape) {
  const TensorInfo* t = f.find(tensor);
  if (!t)
    throw Error(f.path() + ": " + layer + " needs tensor '" + tensor + "' of shape " +
                shape_str(shape) + ", which is missing");
  if (!dtype_is_float(t->dtype))
    throw Error(f.path() + ": tensor '" + tensor + "' has dtype " + dtype_name(t->dtype) +
                ", expected a floating-point type");
  if (t->shape != shape)
    throw Error(f.path() + ": tensor '" + tensor + "' has shape " + shape_str(t->shape) + ", but " +
                layer + " expects " + shape_str(shape));
}

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

const char* layer_type_name(LayerType t) {
  return info_of(t).name;
}

std::string layer_label(const Arch& arch, size_t index) {
  const LayerSpec& l = arch.layers.at(index);
  return label(index, layer_type_name(l.type), l.name);
}

std::vector<ActShape> layer_input_shapes(const Arch& arch, int64_t c, int64_t h, int64_t w) {
  if (c < 1 || h < 1 || w < 1)
    throw Error("input shape " + std::to_string(c) + "x" + std::to_string(h) + "x" +
                std::to_string(w) + " must be positive");
  std::vector<ActShape> shapes;
  ActShape s{c, h, w, false};
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    shapes.push_back(s);
    const LayerSpec& l = arch.layers[i];
    const std::string where = layer_label(arch, i);
    const std::string dims =
        std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
    auto spatial = [&](int64_t pad) {
      if (s.flat)
        throw Error(where + " needs an image-shaped input, but it comes after a flatten/linear");
      if (s.h + 2 * pad < l.kernel || s.w + 2 * pad < l.kernel)
        throw Error(where + ": kernel " + std::to_string(l.kernel) + " is larger than its input " +
                    dims + (pad ? " (padded by " + std::to_string(pad) + ")" : ""));
      s.h = (s.h + 2 * pad - l.kernel) / l.stride + 1;
      s.w = (s.w + 2 * pad - l.kernel) / l.stride + 1;
    };
    switch (l.type) {
      case LayerType::Conv:
        if (!s.flat && s.c != l.in)
          throw Error(where + " expects " + std::to_string(l.in) +
                      " input channels, but its input is " + dims);
        spatial(l.pad);
        s.c = l.out;
        break;
      case LayerType::MaxPool:
      case LayerType::AvgPool:
        spatial(0);
        break;
      case LayerType::AdaptiveAvgPool:
        if (s.flat)
          throw Error(where + " needs an image-shaped input, but it comes after a flatten/linear");
        s.h = l.out_hw[0];
        s.w = l.out_hw[1];
        break;
      case LayerType::Flatten:
        s = ActShape{s.numel(), 1, 1, true};
        break;
      case LayerType::Linear:
        if (!s.flat)
          throw Error(where + " needs a flat input, but its input is " + dims +
                      " (add a flatten layer before it)");
        if (s.c != l.in) {
          const bool after_flatten = i > 0 && arch.layers[i - 1].type == LayerType::Flatten;
          const std::string what = after_flatten
                                       ? "the flatten before it gives " + std::to_string(s.c) +
                                             " features (" + std::to_string(shapes[i - 1].c) + "x" +
                                             std::to_string(shapes[i - 1].h) + "x" +
                                             std::to_string(shapes[i - 1].w) + ")"
                                       : "its input has " + std::to_string(s.c) + " features";
          throw Error(where + " expects in = " + std::to_string(l.in) + " features, but " + what);
        }
        s.c = l.out;
        break;
      case LayerType::Relu:
      case LayerType::BatchNorm:
      case LayerType::Dropout:
        break;
    }
  }
  shapes.push_back(s);
  return shapes;
}

Arch parse_arch(const std::string& arch_json, const std::string& input_json) {
  Arch arch;
  const json a = parse_json(arch_json, "dalr.arch");
  if (!a.is_array() || a.empty())
    throw Error("dalr.arch must be a non-empty JSON array of layers, got " +
                a.dump().substr(0, 200));
  std::set<std::string> names;
  for (size_t i = 0; i < a.size(); ++i) {
    arch.layers.push_back(parse_layer(a[i], i));
    const std::string& name = arch.layers.back().name;
    if (!name.empty() && !names.insert(name).second)
      throw Error("dalr.arch " + layer_label(arch, i) + ": duplicate layer name '" + name + "'");
  }
  arch.input = parse_input_spec(input_json);
  try {
    layer_input_shapes(arch, arch.input.channels, arch.input.crop[0], arch.input.crop[1]);
  } catch (const Error& e) {
    throw Error(std::string("dalr.arch does not fit the declared input (") +
                std::to_string(arch.input.channels) + "x" + std::to_string(arch.input.crop[0]) +
                "x" + std::to_string(arch.input.crop[1]) + "): " + e.what());
  }
  return arch;
}

std::string arch_to_json(const Arch& arch) {
  ojson a = ojson::array();
  for (const LayerSpec& l : arch.layers) {
    ojson o;
    o["type"] = layer_type_name(l.type);
    if (!l.name.empty()) o["name"] = l.name;
    switch (l.type) {
      case LayerType::Conv:
        o["in"] = l.in;
        o["out"] = l.out;
        o["kernel"] = l.kernel;
        o["stride"] = l.stride;
        o["pad"] = l.pad;
        if (!l.bias) o["bias"] = false;
        break;
      case LayerType::MaxPool:
      case LayerType::AvgPool:
        o["kernel"] = l.kernel;
        o["stride"] = l.stride;
        break;
      case LayerType::AdaptiveAvgPool:
        o["out"] = {l.out_hw[0], l.out_hw[1]};
        break;
      case LayerType::BatchNorm:
        o["eps"] = l.eps;
        break;
      case LayerType::Linear:
        o["in"] = l.in;
        o["out"] = l.out;
        if (!l.bias) o["bias"] = false;
        break;
      case LayerType::Relu:
      case LayerType::Flatten:
      case LayerType::Dropout:
        break;
    }
    a.push_back(o);
  }
  return a.dump();
}

std::map<std::string, std::string> arch_metadata(const Arch& arch) {
  return {{"dalr.arch", arch_to_json(arch)}, {"dalr.input", input_to_json(arch.input)}};
}

std::vector<std::string> vgg_preset_names() {
  std::vector<std::string> names;
  for (const auto& c : vgg_configs()) names.push_back(c.name);
  for (const auto& c : vgg_configs()) names.push_back(std::string(c.name) + "_bn");
  return names;
}

Arch vgg_preset(const std::string& name, int64_t num_classes) {
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
  arch.input.resize = 256;
  arch.input.crop = {224, 224};
  arch.input.scale = 1.0 / 255.0;
  arch.input.mean = {0.485, 0.456, 0.406};
  arch.input.std = {0.229, 0.224, 0.225};
  return arch;
}

Arch load_arch(const SafetensorsFile& file, const std::string& preset) {
  const auto& md = file.metadata();
  const auto a = md.find("dalr.arch");
  Arch arch;
  if (a != md.end()) {
    const auto in = md.find("dalr.input");
    if (in == md.end())
      throw Error(file.path() +
                  ": metadata has 'dalr.arch' but no 'dalr.input' (the input "
                  "preprocessing)");
    try {
      arch = parse_arch(a->second, in->second);
    } catch (const Error& e) {
      throw Error(file.path() + ": " + e.what());
    }
  } else if (!preset.empty()) {
    vgg_preset(preset, 1);  // an unknown name fails here, listing the valid ones
    const TensorInfo* t = file.find("classifier.6.weight");
    if (!t || t->shape.size() != 2)
      throw Error(file.path() + ": preset '" + preset +
                  "' needs tensor 'classifier.6.weight' (classes x 4096) to know the number of "
                  "classes; " +
                  (t ? "it has shape " + shape_str(t->shape) : std::string("it is missing")));
    arch = vgg_preset(preset, t->shape[0]);
  } else {
    std::string list;
    for (const auto& n : vgg_preset_names()) list += (list.empty() ? "" : "|") + n;
    throw Error(file.path() +
                " has no architecture in its metadata ('dalr.arch'); for a plain torchvision "
                "state dict pass --arch " +
                list);
  }
  check_weights(arch, file);
  return arch;
}

Arch replace_linear_with_factors(const Arch& arch, const std::string& name, int64_t rank) {
  size_t found = arch.layers.size();
  std::string linears;
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    const LayerSpec& l = arch.layers[i];
    if (l.type != LayerType::Linear) continue;
    linears += (linears.empty() ? "" : ", ") + l.name;
    if (l.name == name) found = i;
  }
  if (found == arch.layers.size())
    throw Error("no linear layer named '" + name + "' (linear layers: " + linears + ")");
  if (rank < 1) throw Error("rank for '" + name + "' must be >= 1, got " + std::to_string(rank));
  for (const LayerSpec& l : arch.layers)
    if (l.name == name + ".0" || l.name == name + ".1")
      throw Error("cannot factor '" + name + "': a layer named '" + l.name + "' already exists");
  Arch out = arch;
  LayerSpec first = arch.layers[found], second = arch.layers[found];
  first.name = name + ".0";
  first.out = rank;
  first.bias = false;
  second.name = name + ".1";
  second.in = rank;
  out.layers[found] = first;
  out.layers.insert(out.layers.begin() + static_cast<std::ptrdiff_t>(found) + 1, second);
  return out;
}

void check_weights(const Arch& arch, const SafetensorsFile& file) {
  const std::vector<ActShape> shapes =
      layer_input_shapes(arch, arch.input.channels, arch.input.crop[0], arch.input.crop[1]);
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    const LayerSpec& l = arch.layers[i];
    const std::string where = layer_label(arch, i);
    switch (l.type) {
      case LayerType::Conv:
        expect_tensor(file, l.name + ".weight", where, {l.out, l.in, l.kernel, l.kernel});
        if (l.bias) expect_tensor(file, l.name + ".bias", where, {l.out});
        break;
      case LayerType::Linear:
        expect_tensor(file, l.name + ".weight", where, {l.out, l.in});
        if (l.bias) expect_tensor(file, l.name + ".bias", where, {l.out});
        break;
      case LayerType::BatchNorm:
        for (const char* t : {".weight", ".bias", ".running_mean", ".running_var"})
          expect_tensor(file, l.name + t, where, {shapes[i].c});
        break;
      default:
        break;
    }
  }
}

bool operator==(const LayerSpec& a, const LayerSpec& b) {
  return a.type == b.type && a.name == b.name && a.in == b.in && a.out == b.out &&
         a.kernel == b.kernel && a.stride == b.stride && a.pad == b.pad && a.eps == b.eps &&
         a.out_hw == b.out_hw && a.bias == b.bias;
}

bool operator==(const Arch& a, const Arch& b) {
  return a.layers == b.layers && a.input == b.input;
}

}  // namespace dalr
