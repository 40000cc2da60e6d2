// The architecture description: dalr.arch / dalr.input parsing and JSON, the VGG
// presets, loading and checking a model's weights against its arch, factoring a linear
// layer. (The forward pass that runs an arch is tested in test_forward.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "arch_nets.hpp"
#include "cpu/forward.hpp"
#include "dalr/arch.hpp"
#include "dalr/error.hpp"
#include "dalr/safetensors.hpp"
#include "test_util.hpp"

using namespace dalr;

namespace {

using test::expect_error;
using test::kInput;
using test::kInput2;
using test::kNet1;
using test::kNet2;
using test::random_weights;
using test::Tensors;
using test::write_model;

// ------------------------------------------------------------ arch JSON

TEST(Arch, ParsesTheIssueExample) {
  const Arch a = parse_arch(kNet1, kInput);
  ASSERT_EQ(a.layers.size(), 12u);
  EXPECT_EQ(a.layers[0].type, LayerType::Conv);
  EXPECT_EQ(a.layers[0].name, "c1");
  EXPECT_EQ(a.layers[3].stride, 2);
  EXPECT_EQ(a.layers[4].eps, 0.001);
  EXPECT_EQ(a.layers[6].out_hw, (std::array<int64_t, 2>{2, 3}));
  EXPECT_EQ(a.layers[11].out, 3);
  EXPECT_TRUE(a.layers[11].bias);
  EXPECT_EQ(a.input.channels, 3);
  EXPECT_EQ(a.input.scale, 1.0);
  EXPECT_TRUE(a.input.mean.empty());
  const auto shapes = layer_input_shapes(a, 3, 11, 13);
  EXPECT_EQ(shapes[3].h, 5);
  EXPECT_EQ(shapes[3].w, 6);
  EXPECT_EQ(shapes[8].c, 24);
  EXPECT_TRUE(shapes[8].flat);
  EXPECT_EQ(shapes.back().c, 3);
}

// The layer table has a row for every LayerType, and writes each type's fields in the
// documented order (defaults written out, bias only when false).
TEST(Arch, EveryLayerTypeHasATableRowAndItsJson) {
  std::set<std::string> names;
  for (int t = 0; t <= static_cast<int>(LayerType::Dropout); ++t)
    names.insert(layer_type_name(static_cast<LayerType>(t)));
  EXPECT_EQ(names.size(), 9u);
  const std::string in =
      R"([{"type":"conv","name":"c","in":2,"out":5,"kernel":3,"pad":2,"bias":false},)"
      R"({"type":"batchnorm","name":"bn"},{"type":"relu"},{"type":"maxpool","kernel":3},)"
      R"({"type":"avgpool","kernel":2,"stride":1},{"type":"adaptive_avgpool","out":[3,2]},)"
      R"({"type":"flatten"},{"type":"dropout"},{"type":"linear","name":"l","in":30,"out":7}])";
  const Arch a = parse_arch(in, R"({"channels":2,"crop":[13,11]})");
  EXPECT_EQ(arch_to_json(a),
            R"([{"type":"conv","name":"c","in":2,"out":5,"kernel":3,"stride":1,"pad":2,)"
            R"("bias":false},{"type":"batchnorm","name":"bn","eps":1e-05},{"type":"relu"},)"
            R"({"type":"maxpool","kernel":3,"stride":3},{"type":"avgpool","kernel":2,"stride":1},)"
            R"({"type":"adaptive_avgpool","out":[3,2]},{"type":"flatten"},{"type":"dropout"},)"
            R"({"type":"linear","name":"l","in":30,"out":7}])");
  const auto shapes = layer_input_shapes(a, 2, 13, 11);
  EXPECT_EQ(shapes[3].h, 15);  // (13 + 4 - 3) / 1 + 1
  EXPECT_EQ(shapes[4].h, 5);   // maxpool 3, stride 3
  EXPECT_EQ(shapes[4].w, 4);
  EXPECT_EQ(shapes[8].c, 30);
  EXPECT_EQ(shapes[9].c, 7);
}

TEST(Arch, JsonRoundTrip) {
  for (const auto& [arch_json, input_json] :
       {std::pair{kNet1, kInput}, std::pair{kNet2, kInput2}}) {
    const Arch a = parse_arch(arch_json, input_json);
    const Arch b = parse_arch(arch_to_json(a), input_to_json(a.input));
    EXPECT_TRUE(a == b) << arch_to_json(a);
    EXPECT_EQ(arch_to_json(a), arch_to_json(b));
  }
  for (const std::string& name : vgg_preset_names()) {
    const Arch a = vgg_preset(name, 17);
    const auto md = arch_metadata(a);
    EXPECT_TRUE(parse_arch(md.at("dalr.arch"), md.at("dalr.input")) == a) << name;
  }
  // Defaults: pool stride = kernel, conv stride 1 pad 0, eps 1e-5, bias true.
  const Arch d = parse_arch(
      R"([{"type":"conv","name":"c","in":1,"out":2,"kernel":3},{"type":"maxpool","kernel":2},
          {"type":"batchnorm","name":"b"}])",
      R"({"channels":1,"crop":8})");
  EXPECT_EQ(d.layers[0].stride, 1);
  EXPECT_EQ(d.layers[0].pad, 0);
  EXPECT_EQ(d.layers[1].stride, 2);
  EXPECT_EQ(d.layers[2].eps, 1e-5);
  EXPECT_EQ(d.input.crop, (std::array<int64_t, 2>{8, 8}));
  EXPECT_EQ(d.layers[0].dilation, 1);
  // dilation: parsed, compared, and written only when it is not 1 (files written before
  // the field existed keep their dalr.arch, and the hashes bound to it).
  EXPECT_EQ(arch_to_json(d).find("dilation"), std::string::npos) << arch_to_json(d);
  const Arch dil =
      parse_arch(R"([{"type":"conv","name":"c","in":1,"out":2,"kernel":3,"pad":1,"dilation":3}])",
                 R"({"channels":1,"crop":[8,9]})");
  EXPECT_EQ(dil.layers[0].dilation, 3);
  EXPECT_NE(arch_to_json(dil).find(R"("pad":1,"dilation":3})"), std::string::npos)
      << arch_to_json(dil);
  EXPECT_TRUE(parse_arch(arch_to_json(dil), input_to_json(dil.input)) == dil);
  Arch undilated = dil;
  undilated.layers[0].dilation = 1;
  EXPECT_FALSE(undilated == dil);
  // Its kernel spans 7 pixels: 8 + 2 - 7 + 1 = 4 rows, 5 columns.
  const auto shapes = layer_input_shapes(dil, 1, 8, 9);
  EXPECT_EQ(shapes[1].h, 4);
  EXPECT_EQ(shapes[1].w, 5);
  EXPECT_EQ(layer_input_shapes(dil, 1, 5, 5)[1].h, 1);  // 5 + 2 - 7 + 1
}

TEST(Arch, BadArchErrors) {
  const std::string in = R"({"channels":3,"crop":[8,8]})";
  auto arch_err = [&](const std::string& a, std::initializer_list<std::string> words) {
    SCOPED_TRACE(a);
    expect_error([&] { parse_arch(a, in); }, words);
  };
  const std::string conv = R"("type":"conv","name":"c","in":3,"out":4)";
  arch_err("[{", {"dalr.arch is not valid JSON"});
  arch_err("{}", {"non-empty JSON array"});
  arch_err("[]", {"non-empty JSON array"});
  arch_err("[3]", {"layer 0", "JSON object"});
  arch_err(R"([{"name":"x"}])", {"layer 0", "missing field 'type'"});
  arch_err(R"([{"type":7}])", {"'type' must be a string"});
  arch_err(R"([{"type":"relu"},{"type":"softmax"}])",
           {"layer 1", "unknown layer type 'softmax'", "conv", "adaptive_avgpool"});
  arch_err(R"([{"type":"conv","in":3,"out":4,"kernel":3}])", {"conv", "missing field 'name'"});
  arch_err(R"([{"type":"linear","name":"","in":3,"out":4}])", {"non-empty string"});
  arch_err("[{" + conv + "}]", {"conv 'c'", "missing field 'kernel'"});
  arch_err(R"([{"type":"linear","name":"f","out":4}])", {"linear 'f'", "missing field 'in'"});
  arch_err(R"([{"type":"maxpool"}])", {"maxpool", "missing field 'kernel'"});
  arch_err(R"([{"type":"adaptive_avgpool"}])", {"missing field 'out'"});
  arch_err("[{" + conv + R"(,"kernel":"3"}])", {"'kernel' must be an integer", "\"3\""});
  arch_err("[{" + conv + R"(,"kernel":2.5}])", {"'kernel' must be an integer"});
  arch_err("[{" + conv + R"(,"kernel":0}])", {"'kernel' must be >= 1, got 0"});
  arch_err("[{" + conv + R"(,"kernel":3,"stride":0}])", {"'stride' must be >= 1"});
  arch_err("[{" + conv + R"(,"kernel":3,"pad":-1}])", {"'pad' must be >= 0, got -1"});
  arch_err("[{" + conv + R"(,"kernel":3,"bias":1}])", {"'bias' must be true or false"});
  arch_err("[{" + conv + R"(,"kernel":3,"dilation":0}])", {"'dilation' must be >= 1, got 0"});
  arch_err("[{" + conv + R"(,"kernel":3,"dilation":4}])",
           {"conv 'c'", "kernel 3 (dilation 4: it spans 9) is larger than its input 3x8x8"});
  arch_err(R"([{"type":"maxpool","kernel":2,"dilation":2}])", {"unknown field 'dilation'"});
  arch_err("[{" + conv + R"(,"kernel":3,"groups":2}])", {"unknown field 'groups'", "allowed"});
  arch_err(R"([{"type":"relu","inplace":true}])", {"relu", "unknown field 'inplace'"});
  arch_err(R"([{"type":"conv","name":"c","in":3,"out":0,"kernel":1}])", {"'out' must be >= 1"});
  arch_err(R"([{"type":"batchnorm","name":"b","eps":-1}])", {"'eps' must be >= 0"});
  arch_err(R"([{"type":"batchnorm","name":"b","eps":"x"}])", {"'eps' must be a number"});
  arch_err(R"([{"type":"adaptive_avgpool","out":[7]}])", {"[height, width]"});
  arch_err(R"([{"type":"adaptive_avgpool","out":[7,0]}])", {"[height, width]"});
  arch_err("[{" + conv + R"(,"kernel":1},{"type":"conv","name":"c","in":4,"out":4,"kernel":1}])",
           {"layer 1", "duplicate layer name 'c'"});
  // Shapes that cannot flow for the declared 3x8x8 input.
  arch_err(R"([{"type":"conv","name":"c","in":4,"out":4,"kernel":3}])",
           {"declared input (3x8x8)", "conv 'c'", "expects 4 input channels", "3x8x8"});
  arch_err("[{" + conv +
               R"(,"kernel":3},{"type":"flatten"},{"type":"linear","name":"f","in":99,"out":2}])",
           {"linear 'f'", "expects in = 99", "flatten before it gives 144 features (4x6x6)"});
  arch_err("[{" + conv + R"(,"kernel":3},{"type":"linear","name":"f","in":144,"out":2}])",
           {"linear 'f'", "needs a flat input", "add a flatten"});
  arch_err(R"([{"type":"flatten"},{"type":"maxpool","kernel":2}])", {"maxpool", "after a flatten"});
  arch_err(R"([{"type":"maxpool","kernel":9}])", {"kernel 9 is larger than its input 3x8x8"});
  arch_err(R"([{"type":"flatten"},{"type":"linear","name":"a","in":192,"out":5},
               {"type":"linear","name":"b","in":6,"out":2}])",
           {"linear 'b'", "expects in = 6", "its input has 5 features"});
}

TEST(Arch, BadInputErrors) {
  const std::string a = R"([{"type":"relu"}])";
  auto in_err = [&](const std::string& in, std::initializer_list<std::string> words) {
    SCOPED_TRACE(in);
    expect_error([&] { parse_arch(a, in); }, words);
  };
  in_err("nope", {"dalr.input is not valid JSON"});
  in_err("[1]", {"dalr.input must be a JSON object"});
  in_err(R"({"crop":[2,2]})", {"dalr.input", "missing field 'channels'"});
  in_err(R"({"channels":3})", {"missing field 'crop'"});
  in_err(R"({"channels":0,"crop":[2,2]})", {"'channels' must be >= 1"});
  in_err(R"({"channels":3,"crop":[2,2],"scale":0})", {"'scale' must be > 0"});
  in_err(R"({"channels":3,"crop":[2,2],"resize":-5})", {"'resize' must be >= 0"});
  in_err(R"({"channels":3,"crop":[2,2],"mean":[0.5]})", {"'mean' must be an array of 3"});
  in_err(R"({"channels":1,"crop":[2,2],"std":[0]})", {"'std' has a bad value 0", "> 0"});
  in_err(R"({"channels":1,"crop":[2,2],"size":3})", {"unknown field 'size'"});
}

// ------------------------------------------------------------ presets

std::vector<std::string> names_of(const Arch& a, LayerType t) {
  std::vector<std::string> n;
  for (const auto& l : a.layers)
    if (l.type == t) n.push_back(l.name);
  return n;
}

TEST(Arch, Vgg16Preset) {
  const Arch a = vgg_preset("vgg16", 1000);
  const std::vector<std::string> convs = {
      "features.0",  "features.2",  "features.5",  "features.7",  "features.10",
      "features.12", "features.14", "features.17", "features.19", "features.21",
      "features.24", "features.26", "features.28"};
  EXPECT_EQ(names_of(a, LayerType::Conv), convs);
  EXPECT_EQ(names_of(a, LayerType::Linear),
            (std::vector<std::string>{"classifier.0", "classifier.3", "classifier.6"}));
  EXPECT_EQ(names_of(a, LayerType::MaxPool).size(), 5u);
  EXPECT_TRUE(names_of(a, LayerType::BatchNorm).empty());
  for (const auto& l : a.layers)
    if (l.type == LayerType::Conv) {
      EXPECT_EQ(l.kernel, 3);
      EXPECT_EQ(l.pad, 1);
      EXPECT_EQ(l.stride, 1);
    }
  EXPECT_EQ(a.layers[0].in, 3);
  const auto shapes = layer_input_shapes(a, 3, 224, 224);
  size_t fc6 = 0;
  while (a.layers[fc6].name != "classifier.0") ++fc6;
  EXPECT_EQ(a.layers[fc6 - 1].type, LayerType::Flatten);
  EXPECT_EQ(a.layers[fc6 - 2].type, LayerType::AdaptiveAvgPool);
  EXPECT_EQ(shapes[fc6 - 2].h, 7);  // the features end at 512x7x7 for 224x224
  EXPECT_EQ(shapes[fc6].c, 25088);
  EXPECT_EQ(a.layers[fc6].out, 4096);
  EXPECT_EQ(a.layers[fc6 + 1].type, LayerType::Relu);
  EXPECT_EQ(a.layers[fc6 + 2].type, LayerType::Dropout);
  EXPECT_EQ(a.layers.back().name, "classifier.6");
  EXPECT_EQ(a.layers.back().out, 1000);
  EXPECT_EQ(shapes.back().c, 1000);
  // Adaptive pooling lets other input sizes through.
  EXPECT_EQ(layer_input_shapes(a, 3, 64, 96)[fc6].c, 25088);
  EXPECT_EQ(a.input.crop, (std::array<int64_t, 2>{224, 224}));
  EXPECT_EQ(a.input.resize, 256);
  EXPECT_NEAR(a.input.scale, 1.0 / 255, 1e-15);
  EXPECT_EQ(a.input.std, (std::vector<double>{0.229, 0.224, 0.225}));

  EXPECT_EQ(names_of(vgg_preset("vgg19", 5), LayerType::Conv).size(), 16u);
  EXPECT_EQ(names_of(vgg_preset("vgg19", 5), LayerType::Conv).back(), "features.34");
  EXPECT_EQ(names_of(vgg_preset("vgg13", 5), LayerType::Conv).back(), "features.22");
  EXPECT_EQ(vgg_preset("vgg19", 5).layers.back().out, 5);
}

TEST(Arch, Vgg11BnPreset) {
  const Arch a = vgg_preset("vgg11_bn", 10);
  EXPECT_EQ(names_of(a, LayerType::Conv),
            (std::vector<std::string>{"features.0", "features.4", "features.8", "features.11",
                                      "features.15", "features.18", "features.22", "features.25"}));
  EXPECT_EQ(names_of(a, LayerType::BatchNorm),
            (std::vector<std::string>{"features.1", "features.5", "features.9", "features.12",
                                      "features.16", "features.19", "features.23", "features.26"}));
  // conv, bn, relu, pool: torchvision's module order.
  EXPECT_EQ(a.layers[1].type, LayerType::BatchNorm);
  EXPECT_EQ(a.layers[2].type, LayerType::Relu);
  EXPECT_EQ(a.layers[3].type, LayerType::MaxPool);
  EXPECT_EQ(a.layers[3].kernel, 2);
  EXPECT_EQ(a.layers[3].stride, 2);
  EXPECT_EQ(names_of(vgg_preset("vgg16_bn", 3), LayerType::Conv).back(), "features.40");
}

TEST(Arch, PresetErrors) {
  expect_error([] { vgg_preset("vgg17", 10); },
               {"unknown architecture preset 'vgg17'", "vgg11", "vgg19_bn"});
  expect_error([] { vgg_preset("vgg16", 0); }, {"classes must be >= 1"});
  expect_error([] { vgg_preset("vgg16", 10, 31); }, {"--input-size", "32", "got 31"});
}

// --input-size: the crop, and the resize in ImageNet's ratio 256/224 (truncated); the
// network runs at that size (the adaptive pool makes 7x7 of any size >= 32).
TEST(Arch, PresetInputSize) {
  const Arch d = vgg_preset("vgg11", 10);
  EXPECT_EQ(d.input.crop, (std::array<int64_t, 2>{224, 224}));
  EXPECT_EQ(d.input.resize, 256);
  for (const int64_t n : {32, 33, 64, 100, 299}) {
    const Arch a = vgg_preset("vgg11", 10, n);
    EXPECT_EQ(a.input.crop, (std::array<int64_t, 2>{n, n}));
    EXPECT_EQ(a.input.resize, static_cast<int64_t>(std::floor(n * 256.0 / 224.0)));
    EXPECT_EQ(a.input.mean, d.input.mean);
    const auto shapes = layer_input_shapes(a, 3, n, n);
    EXPECT_EQ(shapes.back().numel(), 10);
  }
  EXPECT_EQ(vgg_preset("vgg11", 10, 64).input.resize, 73);  // 64 * 256 / 224 = 73.14
}

// ------------------------------------------------------------ loading, weights, factoring

TEST(Arch, LoadAndCheckWeights) {
  test::TempDir dir;
  std::mt19937_64 rng(7);
  const Arch a = parse_arch(kNet1, kInput);
  Tensors t = random_weights(a, rng);

  write_model(dir.file("meta.safetensors"), a, t);
  EXPECT_TRUE(load_arch(SafetensorsFile(dir.file("meta.safetensors")), "") == a);
  EXPECT_TRUE(load_arch(SafetensorsFile(dir.file("meta.safetensors")), "vgg16") == a);

  write_model(dir.file("plain.safetensors"), a, t, false);
  SafetensorsFile plain(dir.file("plain.safetensors"));
  expect_error([&] { load_arch(plain, ""); },
               {"plain.safetensors", "no architecture", "--arch", "vgg16_bn"});
  expect_error([&] { load_arch(plain, "vggx"); }, {"unknown architecture preset 'vggx'"});
  expect_error([&] { load_arch(plain, "vgg16"); }, {"needs tensor 'classifier.6.weight'"});
  // --input-size only with a preset, never over a file's own dalr.input.
  expect_error([&] { load_arch(SafetensorsFile(dir.file("meta.safetensors")), "vgg16", 64); },
               {"--input-size", "has its own input size in dalr.input"});
  expect_error([&] { load_arch(plain, "", 64); }, {"--input-size", "needs --arch"});

  // A preset takes its classes from classifier.6.weight, then checks every tensor.
  write_safetensors(dir.file("head.safetensors"),
                    {TensorOut::f32("classifier.6.weight", {10, 4096}, std::vector<float>(40960))},
                    {});
  expect_error([&] { load_arch(SafetensorsFile(dir.file("head.safetensors")), "vgg11"); },
               {"conv 'features.0'", "'features.0.weight' of shape [64, 3, 3, 3]", "missing"});

  // Metadata without dalr.input; metadata that does not parse.
  write_safetensors(dir.file("half.safetensors"), {}, {{"dalr.arch", kNet1}});
  expect_error([&] { load_arch(SafetensorsFile(dir.file("half.safetensors")), ""); },
               {"no 'dalr.input'"});
  write_safetensors(dir.file("bad.safetensors"), {},
                    {{"dalr.arch", R"([{"type":"gelu"}])"}, {"dalr.input", kInput}});
  expect_error([&] { load_arch(SafetensorsFile(dir.file("bad.safetensors")), ""); },
               {"bad.safetensors", "unknown layer type 'gelu'"});

  // check_weights: missing, wrong shape, batchnorm length.
  auto broken = [&](const std::function<void(Tensors&)>& edit) {
    Tensors u = t;
    edit(u);
    write_model(dir.file("w.safetensors"), a, u);
    return dir.file("w.safetensors");
  };
  std::string p = broken([](Tensors& u) { u.erase("fc1.bias"); });
  expect_error([&] { check_weights(a, SafetensorsFile(p)); },
               {"linear 'fc1'", "'fc1.bias' of shape [7]", "missing"});
  p = broken([](Tensors& u) { u["fc2.bias"].push_back(1); });
  expect_error([&] { check_weights(a, SafetensorsFile(p)); },
               {"'fc2.bias' has shape [4]", "expects [3]"});
  p = broken([](Tensors& u) { u["bn.running_var"].pop_back(); });
  expect_error([&] { CpuForward<double>(a, SafetensorsFile(p)); },
               {"'bn.running_var' has shape [3]", "batchnorm 'bn'", "expects [4]"});
  Arch wrong = a;
  wrong.layers[0].kernel = 5;  // the file holds 3x3 kernels
  expect_error([&] { check_weights(wrong, SafetensorsFile(dir.file("meta.safetensors"))); },
               {"'c1.weight' has shape [5, 3, 3, 3]", "expects [5, 3, 5, 5]"});
}

TEST(Arch, ReplaceLinearWithFactors) {
  const Arch a = parse_arch(kNet1, kInput);
  const Arch f = replace_linear_with_factors(a, "fc1", 2);
  ASSERT_EQ(f.layers.size(), a.layers.size() + 1);
  const LayerSpec &f0 = f.layers[8], &f1 = f.layers[9];
  EXPECT_EQ(f0.name, "fc1.0");
  EXPECT_EQ(f0.in, 24);
  EXPECT_EQ(f0.out, 2);
  EXPECT_FALSE(f0.bias);
  EXPECT_EQ(f1.name, "fc1.1");
  EXPECT_EQ(f1.in, 2);
  EXPECT_EQ(f1.out, 7);
  EXPECT_TRUE(f1.bias);
  EXPECT_EQ(f.layers[10].type, LayerType::Relu);
  EXPECT_NE(arch_to_json(f).find(R"("name":"fc1.0","in":24,"out":2,"bias":false)"),
            std::string::npos)
      << arch_to_json(f);
  EXPECT_TRUE(parse_arch(arch_to_json(f), input_to_json(f.input)) == f);
  EXPECT_TRUE(a == parse_arch(kNet1, kInput));  // the input arch is unchanged

  expect_error([&] { replace_linear_with_factors(a, "fc9", 2); },
               {"no linear layer named 'fc9'", "fc1, fc2"});
  expect_error([&] { replace_linear_with_factors(a, "c1", 2); }, {"no linear layer named 'c1'"});
  expect_error([&] { replace_linear_with_factors(a, "fc1", 0); }, {"rank", ">= 1"});
  EXPECT_NO_THROW(replace_linear_with_factors(f, "fc1.1", 1));  // fc1.1.0, fc1.1.1: no clash
  // Factoring the bias-free first factor again: its second part has a bias, as compress
  // writes NAME.1.bias for every factorisation (svd-bc's correction is not lost).
  const Arch ff = replace_linear_with_factors(f, "fc1.0", 1);
  EXPECT_FALSE(ff.layers[8].bias);
  EXPECT_EQ(ff.layers[9].name, "fc1.0.1");
  EXPECT_TRUE(ff.layers[9].bias);
  // A layer already named NAME.0 blocks factoring NAME.
  Arch clash = a;
  clash.layers[11].name = "fc1.0";
  expect_error([&] { replace_linear_with_factors(clash, "fc1", 2); },
               {"cannot factor 'fc1'", "'fc1.0' already exists"});
}

TEST(Arch, ReplaceConvWithFactors) {
  const Arch a = parse_arch(
      R"([{"type":"conv","name":"c","in":3,"out":6,"kernel":3,"stride":2,"pad":2,"dilation":2,
           "bias":false},
          {"type":"relu"},{"type":"flatten"},{"type":"linear","name":"fc","in":96,"out":2}])",
      R"({"channels":3,"crop":[8,7]})");
  const Arch f = replace_conv_with_factors(a, "c", 4);
  ASSERT_EQ(f.layers.size(), a.layers.size() + 1);
  // c.0: the original's kernel, stride, padding and dilation, k outputs, no bias; c.1: a
  // 1x1 conv k -> 6 with a bias (compress writes c.1.bias whatever the original had).
  LayerSpec want0 = a.layers[0], want1 = a.layers[0];
  want0.name = "c.0";
  want0.out = 4;
  want1.name = "c.1";
  want1.in = 4;
  want1.kernel = want1.stride = want1.dilation = 1;
  want1.pad = 0;
  want1.bias = true;
  EXPECT_EQ(a.layers[0].dilation, 2);
  EXPECT_TRUE(f.layers[0] == want0) << arch_to_json(f);
  EXPECT_TRUE(f.layers[1] == want1) << arch_to_json(f);
  EXPECT_EQ(f.layers[2].type, LayerType::Relu);
  // The same activation shapes after the pair as after the original.
  const auto sa = layer_input_shapes(a, 3, 8, 7), sf = layer_input_shapes(f, 3, 8, 7);
  EXPECT_EQ(sf[1].c, 4);
  EXPECT_EQ(sf[2].numel(), sa[1].numel());
  EXPECT_EQ(sf.back().numel(), sa.back().numel());
  EXPECT_TRUE(parse_arch(arch_to_json(f), input_to_json(f.input)) == f);
  EXPECT_NO_THROW(replace_conv_with_factors(f, "c.0", 2));  // compresses again
  expect_error([&] { replace_conv_with_factors(a, "fc", 2); }, {"no conv layer named 'fc'", "c"});
  expect_error([&] { replace_conv_with_factors(a, "c", 0); }, {"rank", ">= 1"});
}

}  // namespace
