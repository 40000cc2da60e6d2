// `dalr-gpu sweep` on the shipped example: every point's accuracy, agreement and error
// equal those of separate `compress` + `evaluate` runs on the same images; the output
// files exist and the plots are well-formed SVG; run_from continues a forward pass
// bit for bit; and the errors a user can make exit with code 1 and a clear message.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "cpu/forward.hpp"
#include "dalr/arch.hpp"
#include "dalr/forward.hpp"
#include "dalr/safetensors.hpp"
#include "test_util.hpp"

using namespace dalr;
using test::run_cli;
using json = nlohmann::json;

namespace {

const std::string kEx = std::string(DALR_SOURCE_DIR) + "/examples/fashion2digits/";
// Same images in every run: the first 600 training / 300 test images after a seeded
// shuffle (the folders are sorted by class, so an unshuffled prefix holds two digits).
const std::string kTrain = "--data " + kEx + "train --limit 600 --shuffle --seed 5";
const std::string kTest = "--limit 300 --shuffle --seed 5";
const std::string kCommon = "--model " + kEx + "model.bin --layer classifier.0 --device cpu -q";

json read_json(const std::string& path) {
  return json::parse(test::read_file(path));
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A small well-formedness check: every tag closes in order, attributes are quoted,
// nothing follows the root element. Enough to catch a hand-written SVG gone wrong.
std::string xml_problem(const std::string& s) {
  std::vector<std::string> open;
  size_t i = 0;
  bool root_done = false;
  if (s.compare(0, 5, "<?xml") == 0) i = s.find("?>") + 2;
  while ((i = s.find('<', i)) != std::string::npos) {
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    std::string tag = s.substr(i + 1, end - i - 1);
    if (root_done) return "content after the root element";
    if (count(tag, "\"") % 2) return "unbalanced quotes in <" + tag + ">";
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1))
        return "unexpected </" + tag.substr(1) + ">";
      open.pop_back();
      root_done = open.empty();
    } else if (tag.back() != '/') {
      open.push_back(tag.substr(0, tag.find_first_of(" \n")));
    } else if (open.empty()) {
      root_done = true;
    }
    const std::string text = s.substr(end + 1, s.find('<', end) - end - 1);
    if (text.find('&') != std::string::npos && text.find("&amp;") == std::string::npos &&
        text.find("&lt;") == std::string::npos && text.find("&gt;") == std::string::npos)
      return "unescaped & in text";
    i = end + 1;
  }
  return open.empty() ? "" : "unclosed <" + open.back() + ">";
}

class Sweep : public ::testing::Test {
 protected:
  test::TempDir dir_;
};

TEST_F(Sweep, PointsEqualCompressPlusEvaluate) {
  const std::string prefix = dir_.file("s");
  const auto r =
      run_cli("sweep " + kCommon + " " + kTrain + " --test " + kEx + "test " +
              "--test-limit 300 --methods dalr,svd-bc,prune-mean --ranks 4,16 --out " + prefix);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json s = read_json(prefix + ".json");
  ASSERT_EQ(s["points"].size(), 6u);
  EXPECT_EQ(s["train"]["samples"], 600);
  EXPECT_EQ(s["test"]["images"], 300);

  // The uncompressed network on the same test images.
  const auto base = run_cli("evaluate --model " + kEx + "model.bin --data " + kEx + "test " +
                            kTest + " --device cpu -q --report " + dir_.file("base.json"));
  ASSERT_EQ(base.exit_code, 0) << base.output;
  EXPECT_EQ(s["uncompressed"]["top1"], read_json(dir_.file("base.json"))["top1"]);

  for (const json& p : s["points"]) {
    const std::string m = p["method"], k = std::to_string(p["rank"].get<int64_t>());
    SCOPED_TRACE(m + " k=" + k);
    ASSERT_FALSE(p["skipped"].get<bool>());
    const std::string model = dir_.file(m + k + ".bin"), rep = dir_.file(m + k + ".json"),
                      ev = dir_.file(m + k + ".eval.json");
    const std::string next = m.rfind("prune", 0) == 0 ? " --next-layer classifier.3" : "";
    const auto c = run_cli("compress " + kCommon + " --acts stream " + kTrain + " --method " + m +
                           " --rank " + k + next + " --out " + model + " --report " + rep);
    ASSERT_EQ(c.exit_code, 0) << c.output;
    const auto e = run_cli("evaluate --model " + model + " --data " + kEx + "test " + kTest +
                           " --compare " + kEx + "model.bin --device cpu -q --report " + ev);
    ASSERT_EQ(e.exit_code, 0) << e.output;
    const json cr = read_json(rep), er = read_json(ev);
    // Same images, same batches, same float factors: the same predictions exactly.
    EXPECT_EQ(p["top1"], er["top1"]);
    EXPECT_EQ(p["top5"], er["top5"]);
    EXPECT_EQ(p["agreement"], er["agreement"]);
    EXPECT_EQ(p["kept"], cr["rank"]);
    EXPECT_DOUBLE_EQ(p["kept_fraction"].get<double>(),
                     cr["params"]["kept_fraction_weights"].get<double>());
    // The error from the statistics, computed by the same code on the same statistics.
    EXPECT_NEAR(p["error_train"]["rel"].get<double>(), cr["error_train"]["rel"].get<double>(),
                1e-12);
  }
}

// Issue 16: a conv layer's points too (its patch statistics, the network run with the
// conv pair substituted) equal compress + evaluate of the written model; the report has
// the layer's kind, positions and multiply-adds; pruning a conv layer is refused by name.
TEST_F(Sweep, ConvPointsEqualCompressPlusEvaluate) {
  const std::string prefix = dir_.file("c");
  const std::string layer = "--model " + kEx + "model.bin --layer features.6 --device cpu -q ";
  const auto r =
      run_cli("sweep " + layer + kTrain + " --test " + kEx +
              "test --test-limit 300 --methods dalr,svd-bc --ranks 6,300 --out " + prefix);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json s = read_json(prefix + ".json");
  EXPECT_EQ(s["layer"]["kind"], "conv");
  EXPECT_EQ(s["layer"]["m"], 64);
  EXPECT_EQ(s["layer"]["n"], 32 * 9);
  EXPECT_EQ(s["layer"]["positions"], 8 * 8);
  EXPECT_EQ(s["layer"]["flops_before"], 64 * 64 * 288);
  EXPECT_EQ(s["train"]["samples"], 600 * 64);  // a sample per patch
  ASSERT_EQ(s["points"].size(), 4u);
  for (const json& p : s["points"]) {
    const std::string m = p["method"], k = std::to_string(p["rank"].get<int64_t>());
    SCOPED_TRACE(m + " k=" + k);
    if (k == "300") {
      EXPECT_TRUE(p["skipped"].get<bool>());
      continue;
    }
    const std::string model = dir_.file(m + k + ".bin"), rep = dir_.file(m + k + ".json"),
                      ev = dir_.file(m + k + ".eval.json");
    const auto c = run_cli("compress " + layer + "--acts stream " + kTrain + " --method " + m +
                           " --rank " + k + " --out " + model + " --report " + rep);
    ASSERT_EQ(c.exit_code, 0) << c.output;
    const auto e = run_cli("evaluate --model " + model + " --data " + kEx + "test " + kTest +
                           " --device cpu -q --report " + ev);
    ASSERT_EQ(e.exit_code, 0) << e.output;
    const json cr = read_json(rep), er = read_json(ev);
    EXPECT_EQ(p["top1"], er["top1"]);
    EXPECT_EQ(p["top5"], er["top5"]);
    EXPECT_EQ(p["flops_after"], cr["flops"]["after"]);
    EXPECT_NEAR(p["error_train"]["rel"].get<double>(), cr["error_train"]["rel"].get<double>(),
                1e-12);
  }
  const auto bad = run_cli("sweep " + layer + kTrain + " --test " + kEx +
                           "test --methods dalr,prune-mean --ranks 6");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("pruning a convolution's filters is not implemented"),
            std::string::npos)
      << bad.output;
}

// With 16-bit activations (emulated on the CPU), a point still equals compress +
// evaluate at the same precision: the head rounds the compressed layers' weights and
// products as the forward pass does on the written model. One factoring and one pruning
// method.
TEST_F(Sweep, Bf16PointsEqualCompressPlusEvaluateAtBf16) {
  const std::string prefix = dir_.file("b");
  const std::string bf16 = " --precision bf16";
  const auto r = run_cli("sweep " + kCommon + bf16 + " " + kTrain + " --test " + kEx + "test " +
                         "--test-limit 300 --methods dalr,prune-mean --ranks 16 --out " + prefix);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json s = read_json(prefix + ".json");
  ASSERT_EQ(s["points"].size(), 2u);
  EXPECT_EQ(s["precision"], "bf16");
  const auto base = run_cli("evaluate --model " + kEx + "model.bin --data " + kEx + "test " +
                            kTest + bf16 + " --device cpu -q --report " + dir_.file("base.json"));
  ASSERT_EQ(base.exit_code, 0) << base.output;
  EXPECT_EQ(s["uncompressed"]["top1"], read_json(dir_.file("base.json"))["top1"]);
  for (const json& p : s["points"]) {
    const std::string m = p["method"], k = std::to_string(p["rank"].get<int64_t>());
    SCOPED_TRACE(m + " k=" + k);
    const std::string model = dir_.file(m + k + "-bf16.bin"), ev = dir_.file(m + k + ".eval.json");
    const std::string next = m.rfind("prune", 0) == 0 ? " --next-layer classifier.3" : "";
    const auto c = run_cli("compress " + kCommon + bf16 + " --acts stream " + kTrain +
                           " --method " + m + " --rank " + k + next + " --out " + model);
    ASSERT_EQ(c.exit_code, 0) << c.output;
    const auto e = run_cli("evaluate --model " + model + " --data " + kEx + "test " + kTest + bf16 +
                           " --compare " + kEx + "model.bin --device cpu -q --report " + ev);
    ASSERT_EQ(e.exit_code, 0) << e.output;
    const json er = read_json(ev);
    EXPECT_EQ(p["top1"], er["top1"]);
    EXPECT_EQ(p["top5"], er["top5"]);
    EXPECT_EQ(p["agreement"], er["agreement"]);
  }
}

TEST_F(Sweep, WritesFilesAndWellFormedPlots) {
  const std::string prefix = dir_.file("out/run");
  std::filesystem::create_directories(dir_.file("out"));
  const auto r =
      run_cli("sweep --model " + kEx + "model.bin --layer classifier.0 --device cpu --data " + kEx +
              "train --limit 200 --test " + kEx +
              "test --test-limit 100 --methods svd,dalr,prune-max --ranks 8,300 --out " + prefix);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The table on stdout: a row per method, a column per kept rank, the skipped one noted.
  EXPECT_NE(r.output.find("| method | k=8 (3.9%) |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| prune-max |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("k=300 skipped: rank 300 exceeds min(m, n) = 256"), std::string::npos)
      << r.output;
  for (const char* ext : {".csv", ".md", ".json", ".svg", "-spectrum.svg"})
    EXPECT_TRUE(test::file_exists(prefix + ext)) << prefix << ext;
  const json s = read_json(prefix + ".json");
  ASSERT_EQ(s["points"].size(), 6u);
  EXPECT_TRUE(s["points"][1]["skipped"].get<bool>());
  EXPECT_EQ(count(test::read_file(prefix + ".csv"), "\n"), 7u);  // header + 6 points

  const std::string svg = test::read_file(prefix + ".svg");
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(count(svg, "<polyline"), 3u);         // one per method
  EXPECT_EQ(count(svg, "stroke-dasharray"), 2u);  // the uncompressed line and its legend
  for (const char* label : {">svd<", ">dalr<", ">prune-max<", "kept (%)", "accuracy (%)"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  const std::string spec = test::read_file(prefix + "-spectrum.svg");
  EXPECT_EQ(xml_problem(spec), "");
  EXPECT_EQ(count(spec, "<polyline"), 2u);  // svd and dalr; pruning has no spectrum
}

TEST_F(Sweep, StatsFileGivesTheSamePoints) {
  const std::string stats = dir_.file("st.safetensors");
  ASSERT_EQ(run_cli("compress " + kCommon + " --acts stream " + kTrain + " --rank 4 --out " +
                    dir_.file("x.bin") + " --save-stats " + stats)
                .exit_code,
            0);
  const std::string args = kCommon + " --test " + kEx + "test --test-limit 300 " +
                           "--methods dalr,prune-max --ranks 4 --shuffle --seed 5 --out ";
  ASSERT_EQ(
      run_cli("sweep " + args + dir_.file("a") + " --limit 600 --data " + kEx + "train").exit_code,
      0);
  const auto r = run_cli("sweep " + args + dir_.file("b") + " --stats " + stats);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json a = read_json(dir_.file("a.json")), b = read_json(dir_.file("b.json"));
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a["points"][i]["top1"], b["points"][i]["top1"]);
    EXPECT_EQ(a["points"][i]["error_train"], b["points"][i]["error_train"]);
  }
}

TEST(SweepErrors, BadInputExitsWithOne) {
  const std::string base = "sweep " + kCommon + " --data " + kEx + "train --limit 10 ";
  const std::string test = "--test " + kEx + "test --test-limit 10 ";
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {base + test + "--methods dalr,bogus --ranks 4", "unknown method 'bogus'"},
      {base + test + "--methods dalr", "--ranks is required"},
      {base + test + "--methods dalr --ranks 4,0", "rank 0 is out of range"},
      {base + test + "--methods dalr --ranks 4,x", "'x' is not a whole number"},
      {base + "--methods dalr --ranks 4", "--test DIR is required"},
      {base + test + "--ranks 4", "--methods is required"},
      {"sweep " + kCommon + " " + test + "--methods dalr --ranks 4", "--data DIR"},
      {base + test + "--methods dalr --ranks 4 --layer classifier.6 --methods prune-mean",
       "needs a following linear layer"},
      // Issue 12: each limit and count named as given, checked before any data is read.
      {base + "--test " + kEx + "test --test-limit -1 --methods dalr --ranks 4",
       "--test-limit must be >= 0"},
      {base + test + "--methods dalr --ranks 4 --batch 9223372036854775807",
       "--batch must be at most"},
      {base + test + "--methods dalr --ranks 4 --workers 40000", "--workers must be between"},
      // Issue 12: a folder as --out (PREFIX.csv would be hidden files in it), and ranks
      // that are all skipped (an empty table after both passes), refused up front.
      {base + test + "--methods dalr --ranks 4 --out /tmp/", "names a folder"},
      {base + test + "--methods dalr,svd --ranks 300,205", "give ranks up to 204"},
  };
  for (const auto& c : cases) {
    const auto r = run_cli(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace

namespace {

// A linear or conv layer of the compressed file `fc`, as a substitution part (a conv
// weight k x c_in x kh x kw is k x (c_in kh kw)).
Substitution<float>::Part part_of(const SafetensorsFile& fc, const std::string& name) {
  const TensorInfo& t = fc.at(name + ".weight");
  int64_t in = 1;
  for (size_t d = 1; d < t.shape.size(); ++d) in *= t.shape[d];
  Substitution<float>::Part p{in, t.shape[0], fc.read<float>(name + ".weight"), {}};
  if (fc.find(name + ".bias")) p.bias = fc.read<float>(name + ".bias");
  return p;
}

// What the sweep's and the joint search's scores rely on: the original network run from a
// layer's input with the compressed file's tensors substituted (run_from) gives the
// compressed model's output bit for bit, in fp32 and with 16-bit activations, for a
// factorisation, a pruning with its next layer, two factored layers with a relu and a
// dropout between them, and (issue 16) two factored conv layers with a relu and a pool
// between them (oneDNN's convolutions on the substituted pairs, uncached, as the written
// model's cached ones).
TEST(RunFrom, SubstitutionsGiveTheCompressedModelsBits) {
  test::TempDir dir;
  struct Case {
    std::string args;
    std::vector<std::pair<std::string, std::vector<std::string>>> subs;  // layer, parts
  };
  const std::vector<Case> cases = {
      {"--method dalr --rank 16", {{"classifier.0", {"classifier.0.0", "classifier.0.1"}}}},
      {"--method prune-mean --rank 40 --next-layer classifier.3",
       {{"classifier.0", {"classifier.0"}}, {"classifier.3", {"classifier.3"}}}},
      {"--layer classifier.0,classifier.3 --method svd --rank 12",
       {{"classifier.0", {"classifier.0.0", "classifier.0.1"}},
        {"classifier.3", {"classifier.3.0", "classifier.3.1"}}}},
      {"--layer features.3,features.6 --independent --method dalr --rank 6",
       {{"features.3", {"features.3.0", "features.3.1"}},
        {"features.6", {"features.6.0", "features.6.1"}}}},
  };
  SafetensorsFile f(kEx + "model.bin");
  const Arch arch = load_arch(f, "");
  std::mt19937_64 rng(test::test_seed(12));
  std::normal_distribution<float> nd;
  std::vector<float> img(7 * 32 * 32);
  for (auto& v : img) v = nd(rng);
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    SCOPED_TRACE(c.args);
    const std::string out = dir.file("c" + std::to_string(ci) + ".bin");
    const auto r = run_cli("compress " + kCommon + " --acts stream --data " + kEx +
                           "train --limit 200 " + c.args + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    SafetensorsFile fc(out);
    const Arch arch_c = load_arch(fc, "");
    std::vector<Substitution<float>> subs;
    for (const auto& [layer, parts] : c.subs) {
      subs.push_back({layer, {}});
      for (const auto& name : parts) subs.back().parts.push_back(part_of(fc, name));
    }
    for (ActStorage s : {ActStorage::Fp32, ActStorage::Bf16, ActStorage::Fp16}) {
      SCOPED_TRACE(act_storage_name(s));
      const CpuForward<float> orig(arch, f, s), comp(arch_c, fc, s);
      const Matrix<float> want = comp.run(img.data(), 7, 1, 32, 32);
      const bool conv = c.subs.front().first == "features.3";
      if (!conv) {  // the conv case changes classifier.0's input
        const Matrix<float> x = orig.run(img.data(), 7, 1, 32, 32, "classifier.0");
        EXPECT_EQ(orig.run_from("classifier.0", x.ptr(), 7, false, subs).data, want.data);
      } else {  // and twice: the uncached primitives are rebuilt with the same result
        const Matrix<float> x0 = orig.run(img.data(), 7, 1, 32, 32, "features.0");
        EXPECT_EQ(orig.run_from("features.0", x0.ptr(), 7, false, subs).data, want.data);
        EXPECT_EQ(orig.run_from("features.0", x0.ptr(), 7, false, subs).data, want.data);
        EXPECT_NE(orig.run(img.data(), 7, 1, 32, 32).data, want.data);
      }
      // From further up (a conv layer's input), through the same substitutions.
      const Matrix<float> x3 = orig.run(img.data(), 7, 1, 32, 32, "features.3");
      EXPECT_EQ(orig.run_from("features.3", x3.ptr(), 7, false, subs).data, want.data);
    }
  }
}

TEST(RunFrom, RefusesBadSubstitutions) {
  SafetensorsFile f(kEx + "model.bin");
  const Arch arch = load_arch(f, "");
  const CpuForward<float> fwd(arch, f);
  std::mt19937_64 rng(test::test_seed(13));
  std::normal_distribution<float> nd;
  std::vector<float> x(1024 * 3);
  for (auto& v : x) v = nd(rng);
  auto part = [&](int64_t in, int64_t out, bool bias) {
    Substitution<float>::Part p{in, out, std::vector<float>(static_cast<size_t>(in * out)), {}};
    for (auto& v : p.weight) v = nd(rng);
    if (bias) p.bias.assign(static_cast<size_t>(out), 0.5f);
    return p;
  };
  using Subs = std::vector<Substitution<float>>;
  const Subs good = {{"classifier.0", {part(1024, 5, false), part(5, 256, true)}}};
  EXPECT_EQ(fwd.run_from("classifier.0", x.data(), 3, false, good).rows, 10);
  const std::vector<std::pair<Subs, std::string>> bad = {
      {{{"features.0", {part(1024, 256, true)}}}, "two parts are needed, k x 9 (c_in kh kw)"},
      {{{"features.0", {part(9, 4, false), part(5, 16, true)}}}, "two parts are needed"},
      {{{"nope", {part(1024, 256, true)}}}, "no layer named 'nope'"},
      {{{"classifier.0", {}}}, "no parts"},
      {{good[0], good[0]}, "two substitutions"},
      {{{"classifier.0", {part(1024, 5, false), part(6, 256, true)}}}, "classifier.0.1"},
      {{{"classifier.0", {part(1024, 255, true)}}}, "classifier.3"},
      {{{"classifier.0", {{1024, 5, std::vector<float>(7), {}}}}}, "does not match"},
  };
  for (const auto& [subs, msg] : bad) {
    try {
      fwd.run_from("classifier.0", x.data(), 3, false, subs);
      ADD_FAILURE() << "no error, expected one with: " << msg;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(msg), std::string::npos) << e.what();
    }
  }
}

}  // namespace
