// evaluate's labels and --predictions: class folders map to the model's outputs by the
// names in its metadata (dalr.classes) or, without them, by sorted position (refused
// when there are more folders than outputs, with a warning otherwise); sweep --test and
// compress --val read folders by the same rule. On the shipped example.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "dalr/images.hpp"
#include "dalr/safetensors.hpp"
#include "test_util.hpp"

namespace dalr {
namespace {

namespace fs = std::filesystem;
using test::run_cli;
using test::TempDir;

const std::string kEx = std::string(DALR_SOURCE_DIR) + "/examples/fashion2digits/";

template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  const std::string msg = test::error_message(f);
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
}

// ---------------------------------------------------------------- the rule

TEST(ClassMap, ByNameAcceptsASubsetInAnyOrder) {
  const ModelClasses m{{"cat", "dog", "10", "2", "1"}, 5};
  const ClassMap c = map_class_folders("D", {"1", "10", "dog"}, m);
  EXPECT_EQ(c.label, (std::vector<int64_t>{4, 2, 1}));
  EXPECT_EQ(c.names, m.names);
  EXPECT_TRUE(c.warning.empty());
}

TEST(ClassMap, ByNameRefusesAFolderThatIsNotAClass) {
  const ModelClasses m{{"0", "1", "2"}, 3};
  expect_error(
      [&] {
        map_class_folders("DIR", {"0", "seven"}, m);
      },
      {"DIR", "'seven'", "not one of the model's classes", "'0', '1', '2'"});
}

TEST(ClassMap, ByPositionWarnsAndRefusesMoreFoldersThanOutputs) {
  // Folders sorted as strings: "10" before "2", as list_image_folder lists them.
  const ClassMap c = map_class_folders("D", {"1", "10", "2"}, ModelClasses{{}, 10});
  EXPECT_EQ(c.label, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(c.names, (std::vector<std::string>{"1", "10", "2"}));
  EXPECT_NE(c.warning.find("'10' -> 1"), std::string::npos) << c.warning;
  std::vector<std::string> fifteen;
  for (int i = 0; i < 15; ++i) fifteen.push_back("c" + std::to_string(i));
  expect_error(
      [&] {
        map_class_folders("DIR", fifteen, ModelClasses{{}, 10});
      },
      {"DIR", "15 class folders", "only 10 outputs", "dalr.classes"});
  EXPECT_EQ(map_class_folders("D", fifteen, ModelClasses{{}, 15}).label.size(), 15u);
}

TEST(ClassMap, ClassNamesAreCheckedOnLoad) {
  EXPECT_EQ(parse_class_names(R"(["a","b"])", 2, "M"), (std::vector<std::string>{"a", "b"}));
  expect_error([] { parse_class_names(R"(["a","b"])", 3, "M"); },
               {"M", "names 2 classes", "3 outputs"});
  expect_error([] { parse_class_names(R"(["a","a"])", 2, "M"); }, {"M", "'a' is named twice"});
  expect_error([] { parse_class_names(R"(["a",""])", 2, "M"); }, {"entry 1", "non-empty"});
  expect_error([] { parse_class_names(R"(["a",3])", 2, "M"); }, {"entry 1", "string"});
  expect_error([] { parse_class_names(R"({"a":1})", 1, "M"); }, {"JSON array"});
  expect_error([] { parse_class_names("[", 1, "M"); }, {"M", "not valid JSON"});
}

// ---------------------------------------------------------------- the CLI

// The shipped model with its metadata edited (`classes` empty: dalr.classes removed).
std::string model_with_classes(const TempDir& d, const std::string& name,
                               const std::vector<std::string>& classes) {
  SafetensorsFile f(kEx + "model.bin");
  std::vector<TensorOut> t;
  for (const TensorInfo& i : f.tensors()) t.push_back(TensorOut::borrow(f, i));
  std::map<std::string, std::string> meta = f.metadata();
  meta.erase("dalr.classes");
  if (!classes.empty()) {
    std::string j = "[";
    for (const auto& c : classes) j += (j.size() > 1 ? ",\"" : "\"") + c + "\"";
    meta["dalr.classes"] = j + "]";
  }
  write_safetensors(d.file(name), t, meta);
  return d.file(name);
}

// A folder DIR/<name> -> the example's test/<digit> for each (name, digit).
std::string link_folders(const TempDir& d, const std::string& dir,
                         const std::vector<std::pair<std::string, int>>& folders) {
  fs::create_directories(d.file(dir));
  for (const auto& [name, digit] : folders)
    fs::create_directory_symlink(kEx + "test/" + std::to_string(digit), d.file(dir + "/" + name));
  return d.file(dir);
}

struct Row {
  std::string path, true_class, true_index, predicted_index, predicted_class, probability;
};

// The CSV as rows keyed by the image's file (digit/NNNN.png, independent of the folder).
std::map<std::string, Row> read_predictions(const std::string& path, std::string* header) {
  std::istringstream in(test::read_file(path));
  std::string line;
  std::getline(in, line);
  *header = line;
  std::map<std::string, Row> rows;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    EXPECT_EQ(f.size(), 6u) << line;
    if (f.size() != 6) continue;
    const fs::path p(f[0]);
    rows[(p.parent_path().filename() / p.filename()).string()] = {f[0], f[1], f[2],
                                                                  f[3], f[4], f[5]};
  }
  return rows;
}

const char* const kHeader =
    "path,true_class,true_index,predicted_index,predicted_class,softmax_probability";

class Evaluate : public ::testing::Test {
 protected:
  TempDir dir_;
};

// A folder holding only classes 3, 4, 5 scores each image as the full model does.
TEST_F(Evaluate, ASubsetOfTheClassesScoresAsTheFullModelDoes) {
  const std::string full = dir_.file("full.csv"), sub = dir_.file("sub.csv");
  auto r = run_cli("evaluate --model " + kEx + "model.bin --data " + kEx +
                   "test --device cpu -q --predictions " + full);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;
  const std::string data = link_folders(dir_, "sub", {{"3", 3}, {"4", 4}, {"5", 5}});
  r = run_cli("evaluate --model " + kEx + "model.bin --data " + data +
              " --device cpu -q --predictions " + sub + " --report " + dir_.file("sub.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  std::string h1, h2;
  const auto all = read_predictions(full, &h1), part = read_predictions(sub, &h2);
  EXPECT_EQ(h1, kHeader);
  EXPECT_EQ(h2, kHeader);
  ASSERT_EQ(all.size(), 2000u);
  ASSERT_EQ(part.size(), 600u);
  int64_t hits = 0;
  for (const auto& [key, row] : part) {
    SCOPED_TRACE(key);
    ASSERT_TRUE(all.count(key));
    const Row& ref = all.at(key);
    EXPECT_EQ(row.true_class, key.substr(0, 1));
    EXPECT_EQ(row.true_index, row.true_class);  // classes "0".."9" are outputs 0..9
    EXPECT_EQ(row.true_index, ref.true_index);
    EXPECT_EQ(row.predicted_index, ref.predicted_index);
    EXPECT_EQ(row.predicted_class, ref.predicted_index);
    EXPECT_EQ(row.probability, ref.probability);
    const double p = std::stod(row.probability);
    EXPECT_TRUE(p >= 0.1 && p <= 1.0) << p;  // the best of 10 classes: at least 1/10
    hits += row.predicted_index == row.true_index;
  }
  // The summary's accuracy is the rows' (a position rule would give ~0%, not ~95%).
  const std::string rep = test::read_file(dir_.file("sub.json"));
  const double top1 = std::stod(rep.substr(rep.find("\"top1\": ") + 8));
  EXPECT_DOUBLE_EQ(top1, double(hits) / 600.0);
  EXPECT_GT(top1, 0.9);
}

TEST_F(Evaluate, MoreFoldersThanOutputsIsRefusedWithoutClassNames) {
  const std::string model = model_with_classes(dir_, "nocls.bin", {});
  std::vector<std::pair<std::string, int>> folders;
  for (int i = 0; i < 15; ++i) folders.push_back({"c" + std::to_string(i + 10), i % 10});
  const std::string data = link_folders(dir_, "many", folders);
  const auto r = run_cli("evaluate --model " + model + " --data " + data + " --device cpu -q");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("15 class folders but the model has only 10 outputs"), std::string::npos)
      << r.output;
}

TEST_F(Evaluate, WithoutClassNamesFoldersMapBySortedNameWithOneWarning) {
  const std::string model = model_with_classes(dir_, "nocls.bin", {});
  const std::string data = link_folders(dir_, "d", {{"a", 0}, {"b", 1}});
  const auto r = run_cli("evaluate --model " + model + " --data " + data +
                         " --device cpu -q --report " + dir_.file("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t w = r.output.find("warning: the model has no class names");
  ASSERT_NE(w, std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("warning", w + 1), std::string::npos) << "warned twice: " << r.output;
  EXPECT_NE(r.output.find("'a' -> 0, 'b' -> 1"), std::string::npos) << r.output;
  EXPECT_NE(test::read_file(dir_.file("r.json")).find("\"warnings\""), std::string::npos);
  EXPECT_NE(r.output.find("top-1 9"), std::string::npos) << r.output;  // a, b are 0, 1
}

TEST_F(Evaluate, AFolderThatIsNotAClassIsRefusedEverywhere) {
  const std::string data = link_folders(dir_, "bad", {{"3", 3}, {"seven", 7}});
  const std::string what = "class folder 'seven' is not one of the model's classes";
  auto r = run_cli("evaluate --model " + kEx + "model.bin --data " + data + " --device cpu -q");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(what), std::string::npos) << r.output;
  // sweep --test and compress --val read the folder by the same rule.
  r = run_cli("sweep --model " + kEx + "model.bin --layer classifier.0 --data " + kEx +
              "train --limit 50 --test " + data + " --methods svd --ranks 4 --out " +
              dir_.file("s") + " --device cpu -q");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(what), std::string::npos) << r.output;
  r = run_cli("compress --model " + kEx + "model.bin --acts stream --data " + kEx +
              "train --limit 50 --layer classifier.0 --max-drop 1 --val " + data + " --out " +
              dir_.file("j.bin") + " --device cpu -q");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(what), std::string::npos) << r.output;
  // The statistics pass reads no label: any folder names are fine there.
  r = run_cli("compress --model " + kEx + "model.bin --acts stream --data " + data +
              " --limit 20 --layer classifier.0 --rank 4 --out " + dir_.file("c.bin") +
              " --device cpu -q");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(Evaluate, ClassNamesThatContradictTheModelAreRefused) {
  const std::string model = model_with_classes(dir_, "three.bin", {"a", "b", "c"});
  const auto r = run_cli("evaluate --model " + model + " --data " + kEx + "test --device cpu -q");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("names 3 classes but the model has 10 outputs"), std::string::npos)
      << r.output;
}

// Paths are quoted when they need it; the file is written whole or not at all.
TEST_F(Evaluate, PredictionsAreACsvOfEveryImage) {
  const std::string data = link_folders(dir_, "a,\"b\"", {{"2", 2}});
  const std::string csv = dir_.file("p.csv");
  auto r = run_cli("evaluate --model " + kEx + "model.bin --data '" + data +
                   "' --limit 7 --batch 3 --device cpu -q --predictions " + csv);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream in(test::read_file(csv));
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, kHeader);
  int rows = 0;
  while (std::getline(in, line)) {
    ++rows;
    EXPECT_EQ(line.rfind("\"" + dir_.path() + "/a,\"\"b\"\"/2/", 0), 0u) << line;
    EXPECT_NE(line.find(".png\",2,2,"), std::string::npos) << line;
  }
  EXPECT_EQ(rows, 7);
  // An output over an input is refused before anything is written.
  r = run_cli("evaluate --model " + kEx + "model.bin --data " + kEx +
              "test --device cpu -q --predictions " + kEx + "model.bin");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("is an input"), std::string::npos) << r.output;
  // A failed run leaves no CSV and no temporary behind.
  const std::string none = dir_.file("none.csv");
  r = run_cli("evaluate --model " + kEx + "model.bin --data " + dir_.file("missing") +
              " --device cpu -q --predictions " + none);
  EXPECT_EQ(r.exit_code, 1);
  for (const auto& e : fs::directory_iterator(dir_.path()))
    EXPECT_EQ(e.path().filename().string().find("none.csv"), std::string::npos) << e.path();
}

// A .npy has no labels: rows name the array's rows, with index -1 and no class.
TEST_F(Evaluate, PredictionsOfANpyNameItsRows) {
  // 3 preprocessed images: the reference inputs' first rows are not images, so write some.
  std::vector<float> x(3 * 32 * 32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 50.f - 1.f;
  const std::string npy = dir_.file("x.npy");
  {
    std::string hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1, 32, 32), }";
    hdr.append(117 - hdr.size(), ' ');  // 10 + 118 bytes: the data starts 64-aligned
    hdr += '\n';
    std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
    bytes += static_cast<char>(hdr.size() & 0xff);
    bytes += static_cast<char>(hdr.size() >> 8);
    bytes += hdr;
    bytes.append(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
    test::write_file(npy, bytes);
  }
  const std::string csv = dir_.file("p.csv");
  const auto r = run_cli("evaluate --model " + kEx + "model.bin --data " + npy +
                         " --device cpu -q --predictions " + csv);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream in(test::read_file(csv));
  std::string line;
  std::getline(in, line);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(std::getline(in, line));
    EXPECT_EQ(line.rfind(npy + "[" + std::to_string(i) + "],,-1,", 0), 0u) << line;
  }
  EXPECT_FALSE(std::getline(in, line));
}

// --input-size sizes an --arch preset's input and nothing else.
TEST_F(Evaluate, InputSizeIsForPresetsOnly) {
  auto r = run_cli("evaluate --model " + kEx + "model.bin --data " + kEx +
                   "test --input-size 64 --device cpu -q");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("has its own input size in dalr.input"), std::string::npos) << r.output;
  r = run_cli("compress --model " + kEx + "model.bin --acts " + kEx +
              "acts_train.npy --layer classifier.3 --rank 4 --input-size 64 --out " +
              dir_.file("o.bin") + " --device cpu -q");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--input-size"), std::string::npos) << r.output;
  r = run_cli("evaluate --help");
  EXPECT_NE(r.output.find("--input-size"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace dalr
