// compress on conv layers, end to end through the command line, on a small network with
// odd sizes, stride 2, padding and dilation: the written pair reproduces the layer at full
// rank and A (B patches) + b at a lower one; the streamed patch statistics equal those of
// explicit patches; sequential compression runs each layer through the network with the
// earlier ones compressed (and equals doing it by hand, layer by layer); a compressed conv
// layer compresses again; and what does not apply to conv layers is refused by name.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <tuple>

#include "arch_nets.hpp"
#include "cpu/forward.hpp"
#include "dalr/arch.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/stats.hpp"
#include "io/atomic_file.hpp"
#include "oracle.hpp"
#include "patch_oracle.hpp"
#include "test_util.hpp"

using namespace dalr;
using test::rel_diff;
using test::run_cli;

namespace {

// 2x9x11 -> c1 conv 2->5 k3 p1 (5x9x11) -> relu -> c2 conv 5->7 k3 s2 p2 d2 (7x5x6) ->
// c3 conv 7->6 k2 (6x4x5, fed by c2 directly) -> relu -> flatten (120) -> fc 120->4 ->
// relu -> out 4->3.
const char* kInput = R"({"channels":2,"crop":[9,11]})";
const char* kArch = R"([
  {"type":"conv","name":"c1","in":2,"out":5,"kernel":3,"stride":1,"pad":1},
  {"type":"relu"},
  {"type":"conv","name":"c2","in":5,"out":7,"kernel":3,"stride":2,"pad":2,"dilation":2},
  {"type":"conv","name":"c3","in":7,"out":6,"kernel":2},
  {"type":"relu"},
  {"type":"flatten"},
  {"type":"linear","name":"fc","in":120,"out":4},
  {"type":"relu"},
  {"type":"linear","name":"out","in":4,"out":3}])";
constexpr int64_t kImages = 23, kC = 2, kH = 9, kW = 11;

using json = nlohmann::json;

class ConvCompress : public ::testing::Test {
 protected:
  void SetUp() override {
    const uint64_t seed = test::test_seed(161);
    std::mt19937_64 rng(seed);
    std::cerr << "seed " << seed << "\n";
    arch_ = parse_arch(kArch, kInput);
    test::write_model(model(), arch_, test::random_weights(arch_, rng));
    std::normal_distribution<double> nd;
    images_.resize(static_cast<size_t>(kImages * kC * kH * kW));
    for (float& v : images_) v = static_cast<float>(nd(rng));
    test::write_images_npy(images(), images_, kImages, kC, kH, kW);
  }
  std::string model() const { return dir_.file("model.bin"); }
  std::string images() const { return dir_.file("images.npy"); }
  std::string file(const std::string& name) const { return dir_.file(name); }
  // compress on the CPU in fp64 from the images; `args` adds --layer, --rank, --out, ...
  test::CommandResult compress(const std::string& args, const std::string& from = "") const {
    return run_cli("compress --model " + (from.empty() ? model() : from) +
                   " --acts stream --data " + images() + " --device cpu --precision fp64 -q " +
                   args);
  }
  void compress_ok(const std::string& args, const std::string& from = "") const {
    const test::CommandResult r = compress(args, from);
    ASSERT_EQ(r.exit_code, 0) << args << "\n" << r.output;
  }
  // The network of `path` (fp64) on the images: the input of `layer`, or ("") the output.
  Matrix<double> run(const std::string& path, const std::string& layer = "") const {
    const SafetensorsFile f(path);
    const CpuForward<double> fwd(load_arch(f, ""), f);
    const std::vector<double> in(images_.begin(), images_.end());
    return fwd.run(in.data(), kImages, kC, kH, kW, layer);
  }
  // c2's geometry on these images.
  ConvGeometry c2() const { return conv_geometry(arch_, 2, kC, kH, kW); }
  static Matrix<double> weight(const SafetensorsFile& f, const std::string& layer, int64_t m) {
    const std::vector<double> w = f.read_f64(layer + ".weight");
    return from_row_major(w.data(), m, static_cast<int64_t>(w.size()) / m);
  }
  static json report(const std::string& path) { return json::parse(test::read_file(path)); }

  test::TempDir dir_;
  Arch arch_;
  std::vector<float> images_;
};

double gram_diff(const LayerStats<double>& a, const LayerStats<double>& b) {
  return rel_diff(a.gram().data, b.gram().data);
}

TEST_F(ConvCompress, FullRankPairReproducesTheNetwork) {
  // svd at k = min(m, n) = 7: A B = W up to the float32 the factors are stored in.
  compress_ok("--layer c2 --method svd --rank 7 --out " + file("full.bin"));
  const SafetensorsFile f(file("full.bin"));
  EXPECT_EQ(f.find("c2.weight"), nullptr);
  EXPECT_EQ(f.find("c2.bias"), nullptr);
  EXPECT_EQ(f.find("c2.0.bias"), nullptr);
  EXPECT_EQ(f.at("c2.0.weight").shape, (std::vector<int64_t>{7, 5, 3, 3}));
  EXPECT_EQ(f.at("c2.1.weight").shape, (std::vector<int64_t>{7, 7, 1, 1}));
  EXPECT_EQ(f.at("c2.1.bias").shape, (std::vector<int64_t>{7}));
  const Arch a = load_arch(f, "");
  ASSERT_EQ(a.layers.size(), arch_.layers.size() + 1);
  EXPECT_EQ(a.layers[2].name, "c2.0");
  EXPECT_EQ(a.layers[2].dilation, 2);
  EXPECT_EQ(a.layers[2].stride, 2);
  EXPECT_EQ(a.layers[2].pad, 2);
  EXPECT_FALSE(a.layers[2].bias);
  EXPECT_EQ(a.layers[3].name, "c2.1");
  EXPECT_EQ(a.layers[3].kernel, 1);
  EXPECT_LT(rel_diff(run(file("full.bin")).data, run(model()).data), 1e-6);
  EXPECT_LT(rel_diff(run(file("full.bin"), "c3").data, run(model(), "c3").data), 1e-6);
  // evaluate and inspect take the result.
  test::CommandResult e = run_cli("evaluate --model " + file("full.bin") + " --data " + images() +
                                  " --compare " + model() + " --device cpu -q");
  EXPECT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("agreement with"), std::string::npos) << e.output;
  test::CommandResult i = run_cli("inspect --model " + file("full.bin"));
  EXPECT_NE(i.output.find("conv layers (--layer): c1 (5x2x3x3) c2.0 (7x5x3x3) c2.1 (7x7x1x1)"),
            std::string::npos)
      << i.output;
}

// At rank 3 the compressed network's c2 output (c3's input) is A (B p) + b at every
// patch p of c2's input, computed here from the written tensors and brute-force patches.
TEST_F(ConvCompress, LowRankPairIsAOfBPatchesPlusBias) {
  compress_ok("--layer c2 --method dalr --rank 3 --out " + file("low.bin") + " --report " +
              file("low.json"));
  const SafetensorsFile f(file("low.bin"));
  const ConvGeometry g = c2();
  const int64_t m = 7, n = g.patch_size(), k = 3, P = g.positions();
  ASSERT_EQ(n, 45);
  ASSERT_EQ(P, 30);
  const Matrix<double> B = weight(f, "c2.0", k), A = weight(f, "c2.1", m);
  const std::vector<double> bias = f.read_f64("c2.1.bias");
  ASSERT_EQ(B.cols, n);
  ASSERT_EQ(A.cols, k);
  const Matrix<double> maps = run(model(), "c2");  // c2's input: c1 is unchanged
  const Matrix<double> got = run(file("low.bin"), "c3");
  ASSERT_EQ(got.rows, m * P);
  std::vector<double> want(static_cast<size_t>(m * P * kImages));
  for (int64_t img = 0; img < kImages; ++img) {
    const std::vector<double> p = test::patches_of(g, maps.ptr() + img * maps.rows);
    for (int64_t q = 0; q < P; ++q)
      for (int64_t o = 0; o < m; ++o) {
        double y = bias[static_cast<size_t>(o)];
        for (int64_t r = 0; r < k; ++r) {
          double z = 0;
          for (int64_t j = 0; j < n; ++j) z += B(r, j) * p[static_cast<size_t>(q * n + j)];
          y += A(o, r) * z;
        }
        want[static_cast<size_t>(img * m * P + o * P + q)] = y;  // NCHW per image
      }
  }
  EXPECT_LT(rel_diff(got.data, want), 1e-12);
  // The report: a conv layer, its multiply-adds per image and its parameters.
  const json r = report(file("low.json"));
  EXPECT_EQ(r["kind"], "conv");
  EXPECT_EQ(r["layer"]["conv"]["dilation"], 2);
  EXPECT_EQ(r["layer"]["conv"]["output"], (std::vector<int64_t>{7, 5, 6}));
  EXPECT_EQ(r["flops"]["positions"], P);
  EXPECT_EQ(r["flops"]["before"], P * m * n);
  EXPECT_EQ(r["flops"]["after"], P * k * (m + n));
  EXPECT_EQ(r["params"]["before"], m * n + m);
  EXPECT_EQ(r["params"]["after"], k * (m + n) + m);
  EXPECT_EQ(r["samples"], kImages * P);
  EXPECT_FALSE(r.contains("sequential"));
}

// --save-stats of a streamed conv layer: LayerStats of the explicit patch matrix (brute
// force), with c2's outputs relu(W p + b).
TEST_F(ConvCompress, StreamedStatisticsEqualThoseOfExplicitPatches) {
  compress_ok("--layer c2 --method svd --rank 2 --out " + file("o.bin") + " --save-stats " +
              file("st.safetensors"));
  const LayerStats<double> got = LayerStats<double>::load(file("st.safetensors"));
  const SafetensorsFile f(model());
  const ConvGeometry g = c2();
  const int64_t n = g.patch_size(), P = g.positions();
  const Matrix<double> w = weight(f, "c2", 7);
  const std::vector<double> b = f.read_f64("c2.bias");
  const Matrix<double> maps = run(model(), "c2");
  LayerStats<double> want(n, 7);
  for (int64_t img = 0; img < kImages; ++img) {
    const std::vector<double> p = test::patches_of(g, maps.ptr() + img * maps.rows);
    want.add(p.data(), P, n, &w, b.data(), img * P);
  }
  test::expect_stats_equal(got, want, 1e-10);
}

// Sequential (the default): c1, then c2 through the network with c1 compressed, then fc
// through c1 and c2 compressed, whatever the order of --layer. The same as compressing
// one layer at a time by hand, each run on the previous one's output; and unlike
// --independent, whose passes all run the original network.
TEST_F(ConvCompress, SequentialRunsThroughTheCompressedUpstream) {
  const std::string opts = " --method dalr --rank 3 --lambda-rel 0.01";
  // The by-hand chain fits each layer to its own input alone: --sequential symmetric.
  compress_ok("--layer fc,c2,c1 --sequential symmetric --out " + file("seq.bin") +
              " --save-stats " + file("seq.safetensors") + " --report " + file("seq.json") + opts);
  compress_ok("--layer c2,c1,fc --independent --out " + file("ind.bin") + " --save-stats " +
              file("ind.safetensors") + opts);
  compress_ok("--layer c1 --out " + file("h1.bin") + opts);
  compress_ok(
      "--layer c2 --out " + file("h2.bin") + " --save-stats " + file("h2.safetensors") + opts,
      file("h1.bin"));
  compress_ok(
      "--layer fc --out " + file("h3.bin") + " --save-stats " + file("h3.safetensors") + opts,
      file("h2.bin"));
  auto load = [&](const std::string& name) { return LayerStats<double>::load(file(name)); };
  // c1 sees the original network both ways.
  EXPECT_LT(gram_diff(load("seq.c1.safetensors"), load("ind.c1.safetensors")), 1e-13);
  // c2 and fc: the by-hand statistics, not the independent ones.
  for (const auto& [seq, hand, ind] :
       {std::tuple{"seq.c2.safetensors", "h2.safetensors", "ind.c2.safetensors"},
        std::tuple{"seq.fc.safetensors", "h3.safetensors", "ind.fc.safetensors"}}) {
    SCOPED_TRACE(seq);
    test::expect_stats_equal(load(seq), load(hand), 1e-12);
    EXPECT_GT(gram_diff(load(seq), load(ind)), 1e-3);
  }
  // So the sequential model is the by-hand chain's (factors stored in float32).
  const SafetensorsFile s(file("seq.bin")), h(file("h3.bin"));
  ASSERT_EQ(s.tensors().size(), h.tensors().size());
  for (const TensorInfo& t : s.tensors()) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.shape, h.at(t.name).shape);
    EXPECT_LT(rel_diff(s.read_f64(t.name), h.read_f64(t.name)), 1e-6);
  }
  EXPECT_TRUE(load_arch(s, "") == load_arch(h, ""));
  const json r = report(file("seq.json"));
  ASSERT_EQ(r["sequential"]["passes"].size(), 3u);
  EXPECT_EQ(r["sequential"]["passes"][0]["layers"], std::vector<std::string>{"c1"});
  EXPECT_EQ(r["sequential"]["passes"][2]["through_compressed"],
            (std::vector<std::string>{"c1", "c2"}));
  EXPECT_EQ(r["layers"][0]["layer"]["name"], "fc");  // --layer's order
  EXPECT_EQ(r["layers"][0]["kind"], "fc");
  EXPECT_EQ(r["layers"][0]["statistics_through"], (std::vector<std::string>{"c1", "c2"}));
  // The saved statistics are bound to the network they came through: c1 compressed.
  const std::string more = " --layer c2 --rank 3 --device cpu -q --out " + file("x.bin");
  test::CommandResult ok = run_cli("compress --model " + file("h1.bin") + " --stats " +
                                   file("seq.c2.safetensors") + more);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  test::CommandResult bad =
      run_cli("compress --model " + model() + " --stats " + file("seq.c2.safetensors") + more);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("other layers before 'c2'"), std::string::npos) << bad.output;
  // No temporary network is left beside --out.
  for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
    EXPECT_EQ(e.path().string().find(kTempMarker), std::string::npos) << e.path();
}

// Asymmetric (the default for dalr and dalr-exact): c2 through the network with c1
// compressed, fitted to the ORIGINAL c2's outputs. Its factors are brute force from the
// explicit patches X (original network) and X^ (the written model, whose c1 is the one
// the pass ran), its training error the one measured by running both networks (c3 takes
// c2's output before any activation), and its statistics are those of X^.
TEST_F(ConvCompress, AsymmetricFitsTheOriginalOutputsFromTheCompressedInputs) {
  const ConvGeometry g = c2();
  const int64_t m = 7, n = g.patch_size(), P = g.positions(), k = 3;
  const SafetensorsFile orig(model());
  const Matrix<double> w = weight(orig, "c2", m);
  const Matrix<double> y = run(model(), "c3");
  auto patches = [&](const Matrix<double>& maps) {
    Matrix<double> x(n, kImages * P);
    for (int64_t img = 0; img < kImages; ++img) {
      const std::vector<double> p = test::patches_of(g, maps.ptr() + img * maps.rows);
      std::copy(p.begin(), p.end(), x.ptr() + img * P * n);
    }
    return x;
  };
  const Matrix<double> x = patches(run(model(), "c2"));
  for (const std::string method : {"dalr", "dalr-exact"}) {
    SCOPED_TRACE(method);
    const std::string out = file(method + ".bin"), rep = file(method + ".json");
    compress_ok("--layer c2,c1 --method " + method + " --rank 3 --lambda-rel 0.01 --out " + out +
                " --report " + rep + " --save-stats " + file(method + ".safetensors"));
    const Matrix<double> xh = patches(run(out, "c2.0"));  // c2.0 takes c2's input
    double trace = 0;
    for (int64_t s = 0; s < xh.size(); ++s) trace += xh.data[s] * xh.data[s];
    const double lambda = 0.01 * trace / n;
    const SafetensorsFile f(out);
    const Matrix<double> a = weight(f, "c2.1", m), b = weight(f, "c2.0", k);
    const Matrix<double> want = oracle::asymmetric_ab(w, x, xh, k, lambda, method == "dalr-exact");
    EXPECT_LT(oracle::rel_diff(oracle::mul(a, b), want), 1e-5);  // factors stored in float32
    EXPECT_LT(rel_diff(f.read_f64("c2.1.bias"), orig.read_f64("c2.bias")), 1e-7);  // float32
    const json r = report(rep);
    EXPECT_EQ(r["sequential"]["mode"], "asymmetric");
    EXPECT_EQ(r["sequential"]["passes"][0]["fit"], "symmetric");  // c1: the original network
    EXPECT_EQ(r["sequential"]["passes"][1]["fit"], "asymmetric");
    const json& e = r["layers"][0]["error_train"];  // --layer's order: c2 first
    EXPECT_EQ(e["reference"], "original outputs");
    EXPECT_EQ(e["samples"], kImages * P);
    const double measured = rel_diff(run(out, "c3").data, y.data);
    EXPECT_NEAR(e["rel"].get<double>(), measured, 1e-5);
    EXPECT_GT(measured, 1e-3);
    EXPECT_NEAR(r["layers"][0]["lambda"].get<double>(), lambda, 1e-9 * lambda);
    // --save-stats keeps C^: the statistics of X^.
    LayerStats<double> hat(n, 0);
    hat.add(xh.ptr(), xh.cols, n, nullptr, nullptr);
    EXPECT_LT(gram_diff(LayerStats<double>::load(file(method + ".c2.safetensors")), hat), 1e-12);
  }
}

// The fc layers' last pass is asymmetric too: fc's inputs in the original network (X) and
// in the written one, whose c1 is the one the pass ran through (X^), give its factors.
TEST_F(ConvCompress, TheFcPassThroughCompressedConvLayersIsAsymmetric) {
  compress_ok("--layer c1,fc --method dalr --rank 2 --lambda-rel 0.01 --out " + file("f.bin") +
              " --report " + file("f.json"));
  const Matrix<double> x = run(model(), "fc"), xh = run(file("f.bin"), "fc.0");
  ASSERT_EQ(x.rows, 120);
  double trace = 0;
  for (double v : xh.data) trace += v * v;
  const double lambda = 0.01 * trace / 120;
  const SafetensorsFile orig(model()), f(file("f.bin"));
  const Matrix<double> want = oracle::asymmetric_ab(weight(orig, "fc", 4), x, xh, 2, lambda, false);
  const Matrix<double> a = weight(f, "fc.1", 4), b = weight(f, "fc.0", 2);
  EXPECT_LT(oracle::rel_diff(oracle::mul(a, b), want), 1e-5);  // float32 factors
  EXPECT_GT(oracle::rel_diff(x, xh), 1e-3);                    // c1 really changed fc's inputs
  const json r = report(file("f.json"));
  EXPECT_EQ(r["sequential"]["passes"][1]["fit"], "asymmetric");
  EXPECT_EQ(r["layers"][1]["error_train"]["reference"], "original outputs");
}

// A compressed conv layer's factors are conv layers too: NAME.0 (with the original
// kernel, stride, padding and dilation) and the 1x1 NAME.1 compress again.
TEST_F(ConvCompress, ACompressedConvLayerCompressesAgain) {
  compress_ok("--layer c2 --method svd --rank 4 --out " + file("a.bin"));
  compress_ok(
      "--layer c2.0 --method dalr --rank 2 --out " + file("b.bin") + " --report " + file("b.json"),
      file("a.bin"));
  const SafetensorsFile b(file("b.bin"));
  EXPECT_EQ(b.at("c2.0.0.weight").shape, (std::vector<int64_t>{2, 5, 3, 3}));
  EXPECT_EQ(b.at("c2.0.1.weight").shape, (std::vector<int64_t>{4, 2, 1, 1}));
  EXPECT_EQ(b.at("c2.1.weight").shape, (std::vector<int64_t>{7, 4, 1, 1}));
  const Arch a = load_arch(b, "");
  EXPECT_EQ(a.layers[2].name, "c2.0.0");
  EXPECT_EQ(a.layers[2].dilation, 2);
  EXPECT_TRUE(a.layers[3].bias);
  EXPECT_EQ(report(file("b.json"))["layer"]["had_bias"], false);
  EXPECT_EQ(run(file("b.bin")).rows, 3);
  // At full rank (4 = min(4, 45)) it is the same network again; the 1x1 NAME.1 too.
  compress_ok("--layer c2.0 --method svd --rank 4 --out " + file("c.bin"), file("a.bin"));
  EXPECT_LT(rel_diff(run(file("c.bin")).data, run(file("a.bin")).data), 1e-6);
  compress_ok("--layer c2.1 --method svd-bc --rank 2 --out " + file("d.bin"), file("a.bin"));
  EXPECT_EQ(SafetensorsFile(file("d.bin")).at("c2.1.0.weight").shape,
            (std::vector<int64_t>{2, 4, 1, 1}));
}

TEST_F(ConvCompress, KeepAndRoundRankCountParameters) {
  // --keep 0.5 of c2's 7 x 45 weights: k (7 + 45) <= 157.5, k = 3; --round-rank 2: 4.
  compress_ok("--layer c2 --keep 0.5 --round-rank 2 --out " + file("k.bin") + " --report " +
              file("k.json"));
  const json r = report(file("k.json"));
  EXPECT_EQ(r["round_rank"]["rank_requested"], 3);
  EXPECT_EQ(r["rank"], 4);
  // --budget allocates ranks by parameters over one pass of the original network.
  compress_ok("--layer c1,c2 --budget 0.5 --independent --out " + file("b.bin"));
}

// --budget in sequential mode (issue 16): the ranks come from the spectra of one pass of
// the original network (so they are --independent's), by weights or by multiply-adds per
// image (a conv layer's weights times its output positions: c1 99, c2 30, fc 1), then the
// sequential passes fit the layers at those ranks: the by-hand chain at the same ranks.
TEST_F(ConvCompress, BudgetRanksFromTheOriginalSpectraThenSequentialPasses) {
  const std::string opts = " --layer c1,c2,fc --budget 0.4 --lambda-rel 0.01";
  struct Cost {
    int64_t m, n, positions;
  };
  const std::vector<Cost> shapes = {{5, 18, 9 * 11}, {7, 45, 5 * 6}, {4, 120, 1}};
  std::vector<int64_t> by_params, by_flops;
  for (const std::string by : {"params", "flops"}) {
    SCOPED_TRACE(by);
    compress_ok(opts + " --budget-by " + by + " --out " + file(by + ".bin") + " --report " +
                file(by + ".json"));
    compress_ok(opts + " --budget-by " + by + " --independent --out " + file(by + "i.bin") +
                " --report " + file(by + "i.json"));
    const json r = report(file(by + ".json")), ri = report(file(by + "i.json"));
    EXPECT_EQ(r["budget"]["by"], by);
    EXPECT_EQ(r["budget"]["spectra"], "independent");
    EXPECT_FALSE(ri["budget"].contains("spectra"));
    const auto k = r["budget"]["ranks"].get<std::vector<int64_t>>();
    EXPECT_EQ(k, ri["budget"]["ranks"].get<std::vector<int64_t>>());
    ASSERT_EQ(k.size(), 3u);
    double kept = 0, dense = 0;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(r["layers"][i]["rank"], k[i]);
      const double pos = by == "flops" ? double(shapes[i].positions) : 1.0;
      kept += pos * double(k[i] * (shapes[i].m + shapes[i].n));
      dense += pos * double(shapes[i].m * shapes[i].n);
    }
    EXPECT_LE(kept, 0.4 * dense);
    EXPECT_NEAR(r["budget"]["kept_fraction"].get<double>(), kept / dense, 1e-12);
    EXPECT_EQ(r["sequential"]["passes"].size(), 3u);
    (by == "flops" ? by_flops : by_params) = k;
    // The by-hand chain at those ranks.
    const std::string lam = " --lambda-rel 0.01 --out ";
    compress_ok("--layer c1 --rank " + std::to_string(k[0]) + lam + file("h1.bin"));
    compress_ok("--layer c2 --rank " + std::to_string(k[1]) + lam + file("h2.bin"), file("h1.bin"));
    compress_ok("--layer fc --rank " + std::to_string(k[2]) + lam + file("h3.bin"), file("h2.bin"));
    // Each by-hand step sees only the model it is given: the symmetric fit. The default
    // (asymmetric) passes use the same ranks but fit to the original network's outputs.
    compress_ok(opts + " --budget-by " + by + " --sequential symmetric --out " +
                file(by + "s.bin") + " --report " + file(by + "s.json"));
    EXPECT_EQ(r["sequential"]["mode"], "asymmetric");
    EXPECT_EQ(report(file(by + "s.json"))["budget"]["ranks"].get<std::vector<int64_t>>(), k);
    const SafetensorsFile s(file(by + "s.bin")), h(file("h3.bin"));
    ASSERT_EQ(s.tensors().size(), h.tensors().size());
    for (const TensorInfo& t : s.tensors())
      EXPECT_LT(rel_diff(s.read_f64(t.name), h.read_f64(t.name)), 1e-6) << t.name;
  }
  // Counting multiply-adds gives c1 (99 positions) less of the budget than counting weights.
  EXPECT_NE(by_params, by_flops);
  EXPECT_LE(by_flops[0], by_params[0]);
}

TEST_F(ConvCompress, WhatDoesNotApplyIsRefusedByName) {
  auto fail = [&](const std::string& args, const std::string& words) {
    SCOPED_TRACE(args);
    const test::CommandResult r = compress(args + " --out " + file("no.bin"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << "want '" << words << "' in " << r.output;
    EXPECT_FALSE(test::file_exists(file("no.bin")));
  };
  fail("--layer c2 --rank 3 --method prune-mean", "pruning a convolution's filters");
  fail("--layer c2 --rank 8", "between 1 and 7 for a 7 x 45 layer ('c2', conv 7x5x3x3");
  fail("--layer c2 --rank 2 --lambda auto", "neighbouring patches overlap");
  fail("--layer c1,c2 --rank 2 --lambda-rel 0", "needs lambda > 0");
  fail("--layer c1,c2 --rank 2 --lambda 0", "--sequential symmetric");
  fail("--layer c1,c2 --rank 2 --budget-by flops", "--budget-by is used with --budget");
  fail("--layer c1,c2 --budget 0.5 --budget-by macs", "--budget-by must be params or flops");
  std::vector<double> acts(45 * 4, 0.5);
  write_npy(file("acts.npy"), acts.data(), 4, 45);
  const std::string file_args = "compress --model " + model() + " --layer c2 --rank 2 --out " +
                                file("no.bin") + " --device cpu -q";
  test::CommandResult r = run_cli(file_args + " --acts " + file("acts.npy"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("activation file (--acts FILE) does not hold"), std::string::npos)
      << r.output;
  // Without dalr.arch the stride, padding and input size are unknown.
  const SafetensorsFile f(model());
  std::vector<TensorOut> ts;
  for (const TensorInfo& t : f.tensors()) ts.push_back(TensorOut::borrow(f, t));
  write_safetensors(file("plain.bin"), ts, {});
  compress_ok("--layer c2 --rank 2 --out " + file("o.bin") + " --save-stats " +
              file("st.safetensors"));
  r = run_cli("compress --model " + file("plain.bin") + " --stats " + file("st.safetensors") +
              " --layer c2 --rank 2 --out " + file("no.bin") + " --device cpu -q");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("has no dalr.arch metadata"), std::string::npos) << r.output;
  EXPECT_FALSE(test::file_exists(file("no.bin")));
}

}  // namespace
