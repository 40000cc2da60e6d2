#include "dalr/arch.hpp"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/checked.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "io/json_fields.hpp"

namespace dalr {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;
using json_fields::check_keys;
using json_fields::excerpt;
using json_fields::get_double;
using json_fields::get_hw;
using json_fields::get_int;
using json_fields::parse_json;

std::string label(size_t index, const std::string& type, const std::string& name) {
  std::string s = "layer " + std::to_string(index) + " (" + type;
  if (!name.empty()) s += " '" + name + "'";
  return s + ")";
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

// ---- The layer table: one row per LayerType drives parsing, JSON, shapes and tensors.

// A field of a layer's JSON object and where LayerSpec keeps it. Written back in this
// order: integers, [h, w] and reals always (an integer marked omit_default only when it is
// not its default), a bool only when it is not its default.
struct Field {
  enum Kind { Int, Bool, Hw, Real } kind;
  const char* key;
  int64_t LayerSpec::*i = nullptr;       // Int
  int64_t min = 0;                       // Int: the smallest valid value
  int64_t max = json_fields::kMaxCount;  // Int: the largest
  bool required = true;                  // Int: else the default below (or default_from's value)
  int64_t fallback = 0;
  bool omit_default = false;  // Int: not written when it equals `fallback` (a newer field)
  int64_t LayerSpec::*default_from = nullptr;
  bool LayerSpec::*b = nullptr;                     // Bool (default true)
  std::array<int64_t, 2> LayerSpec::*hw = nullptr;  // Hw (required, positive)
  double LayerSpec::*d = nullptr;                   // Real (>= 0, finite; default below)
  double real_fallback = 0;
};

Field int_field(const char* key, int64_t LayerSpec::*m, int64_t min) {
  Field f{Field::Int, key};
  f.i = m;
  f.min = min;
  return f;
}
Field int_field(const char* key, int64_t LayerSpec::*m, int64_t min, int64_t fallback) {
  Field f = int_field(key, m, min);
  f.required = false;
  f.fallback = fallback;
  return f;
}
Field int_field_like(const char* key, int64_t LayerSpec::*m, int64_t min,
                     int64_t LayerSpec::*from) {  // defaults to the value of `from`
  Field f = int_field(key, m, min);
  f.required = false;
  f.default_from = from;
  return f;
}
// A field added after files were written without it: absent when it has its default,
// so that those files' dalr.arch (and the hashes of statistics bound to it) stay the same.
Field newer_int_field(const char* key, int64_t LayerSpec::*m, int64_t min, int64_t fallback) {
  Field f = int_field(key, m, min, fallback);
  f.omit_default = true;
  return f;
}
Field spatial(Field f) {  // kernel, stride, pad, dilation: a smaller maximum
  f.max = json_fields::kMaxSpatial;
  return f;
}
Field bool_field(const char* key, bool LayerSpec::*m) {
  Field f{Field::Bool, key};
  f.b = m;
  return f;
}
Field hw_field(const char* key, std::array<int64_t, 2> LayerSpec::*m) {
  Field f{Field::Hw, key};
  f.hw = m;
  return f;
}
Field real_field(const char* key, double LayerSpec::*m, double fallback) {
  Field f{Field::Real, key};
  f.d = m;
  f.real_fallback = fallback;
  return f;
}

// What a layer's shape rule gets: its name for messages, and the layer before it.
struct ShapeContext {
  std::string where;
  const LayerSpec* before = nullptr;    // the previous layer, if any
  const ActShape* before_in = nullptr;  // its input shape
};
using TensorList = std::vector<std::pair<std::string, std::vector<int64_t>>>;  // suffix, shape

struct LayerRow {
  LayerType type;
  const char* name;
  bool named;  // "name" required (the layer has tensors)
  std::vector<Field> fields;
  ActShape (*shape)(const LayerSpec& l, const ActShape& in, const ShapeContext& c);
  TensorList (*tensors)(const LayerSpec& l, const ActShape& in);  // nullptr: none
};

std::string dims_of(const ActShape& s) {
  return std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
}

// Largest activation of one sample (elements): 2^32 floats are 16 GiB per image.
constexpr int64_t kMaxActivation = int64_t(1) << 32;

// c * h * w computed without overflow and within kMaxActivation; `what` names the tensor.
void check_size(const ActShape& s, const std::string& what) {
  const int64_t n = checked_mul(checked_mul(s.c, s.h, what), s.w, what);
  if (n > kMaxActivation)
    throw Error(what + " has " + dims_of(s) + " = " + std::to_string(n) +
                " values per sample, more than the " + std::to_string(kMaxActivation) +
                " a layer may have");
}

void need_image(const ActShape& s, const ShapeContext& c) {
  if (s.flat)
    throw Error(c.where + " needs an image-shaped input, but it comes after a flatten/linear");
}

// A sliding window (conv, pools): the output's height and width. A dilated kernel spans
// dilation (kernel - 1) + 1 pixels (pools have dilation 1).
ActShape window(const LayerSpec& l, ActShape s, int64_t pad, const ShapeContext& c) {
  need_image(s, c);
  const int64_t span = l.dilation * (l.kernel - 1) + 1;
  if (s.h + 2 * pad < span || s.w + 2 * pad < span)
    throw Error(c.where + ": kernel " + std::to_string(l.kernel) +
                (l.dilation > 1 ? " (dilation " + std::to_string(l.dilation) + ": it spans " +
                                      std::to_string(span) + ")"
                                : std::string()) +
                " is larger than its input " + dims_of(s) +
                (pad ? " (padded by " + std::to_string(pad) + ")" : ""));
  s.h = (s.h + 2 * pad - span) / l.stride + 1;
  s.w = (s.w + 2 * pad - span) / l.stride + 1;
  return s;
}

ActShape same_shape(const LayerSpec&, const ActShape& s, const ShapeContext&) {
  return s;
}

ActShape conv_shape(const LayerSpec& l, const ActShape& s, const ShapeContext& c) {
  if (!s.flat && s.c != l.in)
    throw Error(c.where + " expects " + std::to_string(l.in) +
                " input channels, but its input is " + dims_of(s));
  ActShape o = window(l, s, l.pad, c);
  o.c = l.out;
  return o;
}

ActShape pool_shape(const LayerSpec& l, const ActShape& s, const ShapeContext& c) {
  return window(l, s, 0, c);
}

ActShape adaptive_shape(const LayerSpec& l, const ActShape& s, const ShapeContext& c) {
  need_image(s, c);
  return ActShape{s.c, l.out_hw[0], l.out_hw[1], false};
}

ActShape flatten_shape(const LayerSpec&, const ActShape& s, const ShapeContext&) {
  return ActShape{s.numel(), 1, 1, true};
}

ActShape linear_shape(const LayerSpec& l, const ActShape& s, const ShapeContext& c) {
  if (!s.flat)
    throw Error(c.where + " needs a flat input, but its input is " + dims_of(s) +
                " (add a flatten layer before it)");
  if (s.c != l.in) {
    const bool after_flatten = c.before && c.before->type == LayerType::Flatten;
    const std::string what = after_flatten ? "the flatten before it gives " + std::to_string(s.c) +
                                                 " features (" + dims_of(*c.before_in) + ")"
                                           : "its input has " + std::to_string(s.c) + " features";
    throw Error(c.where + " expects in = " + std::to_string(l.in) + " features, but " + what);
  }
  return ActShape{l.out, 1, 1, true};
}

TensorList weight_and_bias(const LayerSpec& l, std::vector<int64_t> weight_shape) {
  TensorList t = {{".weight", std::move(weight_shape)}};
  if (l.bias) t.push_back({".bias", {l.out}});
  return t;
}

const std::vector<LayerRow>& layer_table() {
  using L = LayerSpec;
  // PyTorch: a pool's stride defaults to its kernel.
  static const std::vector<Field> pool_fields = {
      spatial(int_field("kernel", &L::kernel, 1)),
      spatial(int_field_like("stride", &L::stride, 1, &L::kernel))};
  static const std::vector<LayerRow> table = {
      {LayerType::Conv,
       "conv",
       true,
       {int_field("in", &L::in, 1), int_field("out", &L::out, 1),
        spatial(int_field("kernel", &L::kernel, 1)), spatial(int_field("stride", &L::stride, 1, 1)),
        spatial(int_field("pad", &L::pad, 0, 0)),
        spatial(newer_int_field("dilation", &L::dilation, 1, 1)), bool_field("bias", &L::bias)},
       conv_shape,
       [](const L& l, const ActShape&) {
         return weight_and_bias(l, {l.out, l.in, l.kernel, l.kernel});
       }},
      {LayerType::Relu, "relu", false, {}, same_shape, nullptr},
      {LayerType::MaxPool, "maxpool", false, pool_fields, pool_shape, nullptr},
      {LayerType::AvgPool, "avgpool", false, pool_fields, pool_shape, nullptr},
      {LayerType::AdaptiveAvgPool,
       "adaptive_avgpool",
       false,
       {hw_field("out", &L::out_hw)},
       adaptive_shape,
       nullptr},
      {LayerType::BatchNorm,
       "batchnorm",
       true,
       {real_field("eps", &L::eps, 1e-5)},
       same_shape,
       [](const L&, const ActShape& in) {
         TensorList t;
         for (const char* s : {".weight", ".bias", ".running_mean", ".running_var"})
           t.push_back({s, {in.c}});
         return t;
       }},
      {LayerType::Flatten, "flatten", false, {}, flatten_shape, nullptr},
      {LayerType::Linear,
       "linear",
       true,
       {int_field("in", &L::in, 1), int_field("out", &L::out, 1), bool_field("bias", &L::bias)},
       linear_shape,
       [](const L& l, const ActShape&) {
         return weight_and_bias(l, {l.out, l.in});
       }},
      {LayerType::Dropout, "dropout", false, {}, same_shape, nullptr},
  };
  return table;
}

// Rows are in the enum's order, so a row is found by index; checked on every look-up.
const LayerRow& row_of(LayerType t) {
  const auto& table = layer_table();
  const size_t i = static_cast<size_t>(t);
  if (i >= table.size() || table[i].type != t) throw Error("internal: layer table out of order");
  return table[i];
}

std::string type_list() {
  std::string s;
  for (const auto& r : layer_table()) s += (s.empty() ? "" : ", ") + std::string(r.name);
  return s;
}

void read_field(const Field& f, const json& o, const std::string& where, LayerSpec& l) {
  switch (f.kind) {
    case Field::Int: {
      const int64_t fallback = f.default_from ? l.*f.default_from : f.fallback;
      l.*f.i = get_int(o, f.key, where, f.min, f.required ? nullptr : &fallback, f.max);
      return;
    }
    case Field::Bool: {
      auto it = o.find(f.key);
      if (it == o.end()) return;  // LayerSpec's default: true
      if (!it->is_boolean()) throw Error(where + ": field '" + f.key + "' must be true or false");
      l.*f.b = it->get<bool>();
      return;
    }
    case Field::Hw:
      l.*f.hw = get_hw(o, f.key, where);
      return;
    case Field::Real:
      l.*f.d = get_double(o, f.key, where, f.real_fallback, false);
      return;
  }
}

void write_field(const Field& f, const LayerSpec& l, ojson& o) {
  switch (f.kind) {
    case Field::Int:
      if (!f.omit_default || l.*f.i != f.fallback) o[f.key] = l.*f.i;
      return;
    case Field::Bool:
      if (!(l.*f.b)) o[f.key] = false;
      return;
    case Field::Hw:
      o[f.key] = {(l.*f.hw)[0], (l.*f.hw)[1]};
      return;
    case Field::Real:
      o[f.key] = l.*f.d;
      return;
  }
}

LayerSpec parse_layer(const json& o, size_t index) {
  const std::string at = "dalr.arch layer " + std::to_string(index);
  if (!o.is_object()) throw Error(at + ": must be a JSON object, got " + excerpt(o));
  auto t = o.find("type");
  if (t == o.end()) throw Error(at + ": missing field 'type'");
  if (!t->is_string()) throw Error(at + ": field 'type' must be a string, got " + excerpt(*t));
  const LayerRow* row = nullptr;
  for (const auto& r : layer_table())
    if (t->get<std::string>() == r.name) row = &r;
  if (!row)
    throw Error(at + ": unknown layer type '" + t->get<std::string>() + "' (known: " + type_list() +
                ")");

  LayerSpec l;
  l.type = row->type;
  auto n = o.find("name");
  if (n != o.end()) {
    if (!n->is_string() || n->get<std::string>().empty())
      throw Error(at + " (" + row->name + "): field 'name' must be a non-empty string, got " +
                  excerpt(*n));
    l.name = n->get<std::string>();
  } else if (row->named) {
    throw Error(at + " (" + row->name + "): missing field 'name'");
  }
  const std::string where = "dalr.arch " + label(index, row->name, l.name);
  std::vector<std::string> allowed = {"type", "name"};
  for (const Field& f : row->fields) allowed.push_back(f.key);
  check_keys(o, allowed, where);
  for (const Field& f : row->fields) read_field(f, o, where, l);
  return l;
}

}  // namespace

const char* layer_type_name(LayerType t) {
  return row_of(t).name;
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
  check_size(s, "the input");
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    shapes.push_back(s);
    const LayerSpec& l = arch.layers[i];
    ShapeContext ctx{layer_label(arch, i)};
    if (i > 0) ctx.before = &arch.layers[i - 1], ctx.before_in = &shapes[i - 1];
    s = row_of(l.type).shape(l, s, ctx);
    check_size(s, "the output of " + ctx.where);
  }
  shapes.push_back(s);
  return shapes;
}

ConvGeometry conv_geometry(const Arch& arch, size_t index, int64_t c, int64_t h, int64_t w) {
  if (index >= arch.layers.size() || arch.layers[index].type != LayerType::Conv)
    throw Error("internal: layer " + std::to_string(index) + " is not a conv layer");
  const LayerSpec& l = arch.layers[index];
  const ActShape s = layer_input_shapes(arch, c, h, w)[index];
  ConvGeometry g;
  g.channels = s.c, g.height = s.h, g.width = s.w;
  g.kernel_h = g.kernel_w = l.kernel;
  g.stride = l.stride, g.pad = l.pad, g.dilation = l.dilation;
  return g;
}

Arch parse_arch(const std::string& arch_json, const std::string& input_json) {
  Arch arch;
  const json a = parse_json(arch_json, "dalr.arch");
  if (!a.is_array() || a.empty())
    throw Error("dalr.arch must be a non-empty JSON array of layers, got " + excerpt(a));
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
    for (const Field& f : row_of(l.type).fields) write_field(f, l, o);
    a.push_back(o);
  }
  return a.dump();
}

std::map<std::string, std::string> arch_metadata(const Arch& arch) {
  return {{"dalr.arch", arch_to_json(arch)}, {"dalr.input", input_to_json(arch.input)}};
}

Arch load_arch(const SafetensorsFile& file, const std::string& preset, int64_t input_size) {
  const auto& md = file.metadata();
  const auto a = md.find("dalr.arch");
  Arch arch;
  if (input_size != 0 && (a != md.end() || preset.empty()))
    throw Error("--input-size applies to an --arch preset, for a state dict without dalr.arch; " +
                file.path() +
                (a != md.end() ? " has its own input size in dalr.input" : " needs --arch"));
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
    arch = vgg_preset(preset, t->shape[0], input_size ? input_size : 224);
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

namespace {

// Layer `name` of type `type` replaced by name.0 (rank outputs, no bias) and name.1
// (rank inputs), both copies of it otherwise; the caller adjusts name.1's other fields.
Arch split_in_two(const Arch& arch, const std::string& name, int64_t rank, LayerType type,
                  size_t* second) {
  size_t found = arch.layers.size();
  std::string names;
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    const LayerSpec& l = arch.layers[i];
    if (l.type != type) continue;
    names += (names.empty() ? "" : ", ") + l.name;
    if (l.name == name) found = i;
  }
  const std::string kind = type == LayerType::Conv ? "conv" : "linear";
  if (found == arch.layers.size())
    throw Error("no " + kind + " layer named '" + name + "' (" + kind + " layers: " + names + ")");
  if (rank < 1) throw Error("rank for '" + name + "' must be >= 1, got " + std::to_string(rank));
  for (const LayerSpec& l : arch.layers)
    if (l.name == name + ".0" || l.name == name + ".1")
      throw Error("cannot factor '" + name + "': a layer named '" + l.name + "' already exists");
  Arch out = arch;
  LayerSpec first = arch.layers[found], two = arch.layers[found];
  first.name = name + ".0";
  first.out = rank;
  first.bias = false;
  two.name = name + ".1";
  two.in = rank;
  two.bias = true;  // compress always writes NAME.1.bias (svd-bc corrects it even from none)
  out.layers[found] = first;
  out.layers.insert(out.layers.begin() + static_cast<std::ptrdiff_t>(found) + 1, two);
  *second = found + 1;
  return out;
}

}  // namespace

Arch replace_linear_with_factors(const Arch& arch, const std::string& name, int64_t rank) {
  size_t second = 0;
  return split_in_two(arch, name, rank, LayerType::Linear, &second);
}

Arch replace_conv_with_factors(const Arch& arch, const std::string& name, int64_t rank) {
  size_t at = 0;
  Arch out = split_in_two(arch, name, rank, LayerType::Conv, &at);
  LayerSpec& second = out.layers[at];  // a 1x1 conv on the first's output, position by position
  second.kernel = 1;
  second.stride = 1;
  second.pad = 0;
  second.dilation = 1;
  return out;
}

void check_weights(const Arch& arch, const SafetensorsFile& file) {
  const std::vector<ActShape> shapes =
      layer_input_shapes(arch, arch.input.channels, arch.input.crop[0], arch.input.crop[1]);
  for (size_t i = 0; i < arch.layers.size(); ++i) {
    const LayerSpec& l = arch.layers[i];
    const LayerRow& row = row_of(l.type);
    if (!row.tensors) continue;
    for (const auto& [suffix, shape] : row.tensors(l, shapes[i]))
      expect_tensor(file, l.name + suffix, layer_label(arch, i), shape);
  }
}

bool operator==(const LayerSpec& a, const LayerSpec& b) {
  return a.type == b.type && a.name == b.name && a.in == b.in && a.out == b.out &&
         a.kernel == b.kernel && a.stride == b.stride && a.pad == b.pad &&
         a.dilation == b.dilation && a.eps == b.eps && a.out_hw == b.out_hw && a.bias == b.bias;
}

bool operator==(const Arch& a, const Arch& b) {
  return a.layers == b.layers && a.input == b.input;
}

}  // namespace dalr
