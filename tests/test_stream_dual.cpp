// --solve dual|auto with --acts stream: the samples kept while fewer than n
// (SampleKeeper) give the primal's layers to rounding; the switch to C when they pass n
// gives exactly the primal's statistics (the same batches replayed); several layers at
// once, one dual and one switching; where the dual cannot run it is refused (asked for) or
// skipped (auto) with the reason. Factors compared by their product A B (fp64).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/compress_plan.hpp"
#include "core/sample_keeper.hpp"
#include "cpu/recon.hpp"
#include "dalr/backend.hpp"
#include "dalr/communicator.hpp"
#include "stream_net.hpp"

using namespace dalr;
using StreamDual = test::StreamNet;
using test::kImages;

namespace {

class StreamDualCli : public test::StreamNet {
 protected:
  // compress on the streamed images at fp64; the report, or the failed run's output.
  nlohmann::json run(const std::string& name, const std::string& args) {
    const test::CommandResult r =
        test::run_cli("compress --model " + model() + " --acts stream --data " + images() +
                      " --out " + dir_.file(name + ".bin") + " --report " +
                      dir_.file(name + ".json") + " --device cpu --precision fp64 -q " + args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.exit_code == 0 ? nlohmann::json::parse(test::read_file(dir_.file(name + ".json")))
                            : nlohmann::json();
  }
  test::CommandResult fail(const std::string& args) {
    return test::run_cli("compress --model " + model() + " --acts stream --data " + images() +
                         " --out " + dir_.file("x.bin") + " --device cpu -q " + args);
  }
  std::string tensor_bytes(const std::string& file, const std::string& tensor) const {
    SafetensorsFile f(dir_.file(file + ".bin"));
    const TensorInfo& t = f.at(tensor);
    return std::string(reinterpret_cast<const char*>(f.raw(t)), size_t(t.end - t.begin));
  }
  double ab_diff(const std::string& a, const std::string& b, const std::string& layer) const {
    SafetensorsFile fa(dir_.file(a + ".bin")), fb(dir_.file(b + ".bin"));
    return oracle::rel_diff(product(fa, layer), product(fb, layer));
  }
};

const char* kLayers = "--layer classifier.0,classifier.3 ";

TEST_F(StreamDualCli, DualEqualsPrimalWhileSamplesAreFewerThanN) {
  // 15 images: fewer than either layer's n (36, 17).
  for (const std::string method : {"dalr", "dalr-exact"})
    for (const std::string lambda : {"", "--lambda 0 "}) {
      SCOPED_TRACE(method + " " + lambda);
      const std::string common =
          kLayers + std::string("--limit 15 --batch 4 --rank 4 --method ") + method + " " + lambda;
      const auto p = run("primal", common + "--solve primal");
      const auto d = run("dual", common + "--solve dual");
      const auto a = run("auto", common);
      ASSERT_FALSE(p.is_null() || d.is_null() || a.is_null());
      for (int i = 0; i < 2; ++i) {
        const std::string layer = i == 0 ? "classifier.0" : "classifier.3";
        const auto &lp = p["layers"][i], &ld = d["layers"][i];
        EXPECT_EQ(lp["solve"], "primal");
        EXPECT_EQ(ld["solve"], "dual");
        EXPECT_EQ(a["layers"][i]["solve"], "dual") << a["layers"][i]["solve_reason"];
        EXPECT_EQ(ld["samples"], 15);
        EXPECT_LT(ab_diff("primal", "dual", layer), 1e-8) << layer;
        // The dual's error over the kept samples, the primal's from C: the same number.
        const double pe = lp["error_train"]["abs"], de = ld["error_train"]["abs"];
        EXPECT_NEAR(de, pe, 1e-8 * pe) << layer;
        EXPECT_EQ(ld["error_train"]["samples"], 15);
        EXPECT_NEAR(ld["lambda"].get<double>(), lp["lambda"].get<double>(),
                    1e-12 * (1 + lp["lambda"].get<double>()));
      }
      EXPECT_EQ(tensor_bytes("dual", "classifier.0.0.weight"),
                tensor_bytes("auto", "classifier.0.0.weight"));
    }
}

TEST_F(StreamDualCli, SwitchToCGivesExactlyThePrimal) {
  // All 45 images in batches of 8: both layers pass n and form C from what they kept, by
  // replaying the same batches, so the statistics and the model are the primal's to the bit.
  const std::string common = kLayers + std::string("--batch 8 --rank 4 ");
  const auto p = run("primal", common + "--solve primal");
  const auto d = run("dual", common + "--solve dual");
  ASSERT_FALSE(p.is_null() || d.is_null());
  EXPECT_EQ(test::read_file(dir_.file("primal.bin")), test::read_file(dir_.file("dual.bin")));
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(d["layers"][i]["solve"], "primal");
    const std::string why = d["layers"][i]["solve_reason"];
    EXPECT_NE(why.find("C was formed from the kept ones"), std::string::npos) << why;
    EXPECT_EQ(d["layers"][i]["error_train"], p["layers"][i]["error_train"]);
    EXPECT_EQ(d["layers"][i]["samples"], kImages);
  }
}

TEST_F(StreamDualCli, OneLayerKeepsItsSamplesTheOtherSwitches) {
  // 30 images in batches of 7: classifier.0 (n = 36) stays dual; classifier.3 (n = 17)
  // keeps 14 samples, and the third batch would pass 16: it switches.
  const std::string common = kLayers + std::string("--limit 30 --batch 7 --rank 4 ");
  const auto p = run("primal", common + "--solve primal");
  const auto d = run("dual", common + "--solve dual");
  const auto a = run("auto", common);
  ASSERT_FALSE(p.is_null() || d.is_null() || a.is_null());
  EXPECT_EQ(d["layers"][0]["solve"], "dual");
  EXPECT_EQ(d["layers"][1]["solve"], "primal");
  const std::string why = d["layers"][1]["solve_reason"];
  EXPECT_NE(why.find("at 14 samples the next batch would pass 16"), std::string::npos) << why;
  EXPECT_LT(ab_diff("primal", "dual", "classifier.0"), 1e-8);
  for (const char* t : {"classifier.3.0.weight", "classifier.3.1.weight", "classifier.3.1.bias"})
    EXPECT_EQ(tensor_bytes("primal", t), tensor_bytes("dual", t)) << t;
  // auto: classifier.3 is primal from the start (p >= n), so it keeps nothing.
  EXPECT_EQ(a["layers"][0]["solve"], "dual");
  EXPECT_EQ(a["layers"][1]["solve"], "primal");
  EXPECT_EQ(a["layers"][1]["solve_reason"], "auto: p = 30 samples >= n = 17 inputs");
  for (const char* t : {"classifier.3.0.weight", "classifier.3.1.weight"})
    EXPECT_EQ(tensor_bytes("primal", t), tensor_bytes("auto", t)) << t;
}

TEST_F(StreamDualCli, RefusedWhenAskedWhereItCannotRunAndPrimalUnderAuto) {
  const std::string base = kLayers + std::string("--limit 15 ");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--rank 4 --lambda auto", "--lambda auto is not implemented for it"},
      {"--rank 4 --save-stats " + dir_.file("s.safetensors"), "--save-stats saves C"},
      {"--budget 0.5", "--budget is not implemented for it"},
      {"--rank 4 --method svd-bc", "it applies to dalr and dalr-exact only"}};
  for (const auto& [args, why] : cases) {
    SCOPED_TRACE(args);
    const test::CommandResult r = fail(base + args + " --solve dual");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("--solve dual cannot be used here: " + why), std::string::npos)
        << r.output;
    const auto a = run("auto", base + args);
    ASSERT_FALSE(a.is_null());
    for (const auto& l : a["layers"]) {
      EXPECT_EQ(l["solve"], "primal");
      EXPECT_NE(l["solve_reason"].get<std::string>().find(why), std::string::npos)
          << l["solve_reason"];
    }
  }
}

TEST_F(StreamDualCli, ConvLayersStayPrimal) {
  // A conv layer's samples are every patch of every image: not kept; the fc layer is.
  const std::string args = "--layer features.0,classifier.0 --independent --limit 15 --rank 2 ";
  const test::CommandResult r = fail(args + "--solve dual");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--solve dual cannot be used here: conv layer 'features.0'"),
            std::string::npos)
      << r.output;
  const auto a = run("auto", args);
  ASSERT_FALSE(a.is_null());
  EXPECT_EQ(a["layers"][0]["solve"], "primal");
  EXPECT_NE(a["layers"][0]["solve_reason"].get<std::string>().find("patches"), std::string::npos);
  EXPECT_EQ(a["layers"][1]["solve"], "dual");
}

// Several processes share statistics, not samples: asked for, the dual is refused; auto
// stays primal. (The plan alone: a communicator that says there are two ranks.)
class TwoRanks final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  void sum_to_root(double*, int64_t) override {}
  void sum_to_root(float*, int64_t) override {}
  void sum_to_root(int64_t*, int64_t) override {}
  void max_to_root(double*, int64_t) override {}
};

TEST_F(StreamDual, SeveralProcessesStayPrimal) {
  TwoRanks two;
  CompressOptions o;
  o.model = model();
  o.layer = "classifier.0,classifier.3";
  o.acts = "stream";
  o.data = images();
  o.out = dir_.file("x.bin");
  o.rank = 4;
  o.comm = &two;
  o.solve = "dual";
  EXPECT_NE(test::error_message([&] {
              compress_job::make_plan(o, Precision::Fp64);
            }).find("several processes (mpirun) share statistics, not samples"),
            std::string::npos);
  o.solve = "auto";
  const compress_job::Plan p = compress_job::make_plan(o, Precision::Fp64);
  for (const auto& l : p.layers) {
    EXPECT_FALSE(l.dual);
    EXPECT_NE(l.solve_why.find("several processes"), std::string::npos) << l.solve_why;
  }
}

// ---- SampleKeeper against the CPU's accumulator, batch by batch ----

template <typename T>
std::vector<Matrix<T>> batches(int64_t n, const std::vector<int64_t>& cols, std::mt19937_64& rng) {
  std::vector<Matrix<T>> out;
  for (int64_t c : cols) out.push_back(test::random_matrix<T>(n, c, rng));
  return out;
}

TEST(SampleKeeper, KeepsTheSamplesWithThePrimalsSumsAndMaxima) {
  std::mt19937_64 rng(test::test_seed(31));
  const int64_t n = 13, m = 5;
  auto backend = make_cpu_backend(Precision::Fp64);
  const Matrix<double> w = test::random_matrix<double>(m, n, rng);
  const std::vector<double> b(m, 0.1);
  const auto xs = batches<double>(n, {3, 1, 4, 2}, rng);  // 10 samples < cap 12
  SampleKeeper<double> keep(n, 12, 10, [&] { return backend->stats(n, m, &w, &b, 4); });
  auto plain = backend->stats(n, m, &w, &b, 4);
  int64_t at = 0;
  for (const auto& x : xs) {
    keep.add(x.ptr(), x.cols, x.ld(), at);
    plain->add(x.ptr(), x.cols, x.ld(), at);
    at += x.cols;
  }
  const LayerStats<double> ks = keep.finish(), ps = plain->finish();
  ASSERT_TRUE(keep.keeping());
  EXPECT_EQ(keep.switched_at(), 0);
  EXPECT_EQ(ks.count(), 10);
  EXPECT_EQ(ks.sum_x(), ps.sum_x());  // bit for bit: row_sum_max in the same order
  EXPECT_EQ(ks.max_x(), ps.max_x());
  EXPECT_NEAR(ks.gram_trace(), ps.gram_trace(), 1e-12 * ps.gram_trace());
  const auto x = keep.samples();
  ASSERT_TRUE(x);
  ASSERT_EQ(x->rows, n);
  ASSERT_EQ(x->cols, 10);
  at = 0;
  for (const auto& xb : xs)
    for (int64_t j = 0; j < xb.cols; ++j, ++at)
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ((*x)(i, at), xb(i, j));
}

TEST(SampleKeeper, SwitchReplaysTheBatchesIntoTheOrdinaryAccumulator) {
  std::mt19937_64 rng(test::test_seed(32));
  const int64_t n = 11, m = 3;
  for (const bool via_merge : {false, true}) {
    auto backend = make_cpu_backend(Precision::Fp32);
    const Matrix<float> w = test::random_matrix<float>(m, n, rng);
    const std::vector<float> b(m, 0.2f);
    const auto xs = batches<float>(n, {4, 3, 5, 2}, rng);  // passes cap 10 at the third
    SampleKeeper<float> keep(n, 10, 0, [&] { return backend->stats(n, m, &w, &b, 5); });
    auto plain = backend->stats(n, m, &w, &b, 5);
    LayerStats<float> earlier(n, m);
    const Matrix<float> e = test::random_matrix<float>(n, 2, rng);
    earlier.add(e.ptr(), e.cols, e.ld(), &w, b.data(), 0);
    int64_t at = 0;
    for (const auto& x : xs) {
      if (via_merge && at == 7) {  // a merge needs C: it switches too
        keep.merge(earlier);
        plain->merge(earlier);
      }
      keep.add(x.ptr(), x.cols, x.ld(), at);
      plain->add(x.ptr(), x.cols, x.ld(), at);
      at += x.cols;
    }
    EXPECT_FALSE(keep.keeping());
    EXPECT_EQ(keep.switched_at(), 7);
    const LayerStats<float> ks = keep.finish(), ps = plain->finish();
    EXPECT_FALSE(keep.samples());
    EXPECT_EQ(ks.count(), ps.count());
    EXPECT_EQ(ks.gram().data, ps.gram().data);
    EXPECT_EQ(ks.sum_x(), ps.sum_x());
    EXPECT_EQ(ks.max_x(), ps.max_x());
    EXPECT_EQ(ks.sum_y(), ps.sum_y());
    EXPECT_EQ(ks.max_y(), ps.max_y());
  }
}

TEST(SampleKeeper, NanIsRejectedAsTheAccumulatorRejectsIt) {
  const int64_t n = 4;
  Matrix<double> x(n, 3, 1.0);
  x(2, 1) = std::numeric_limits<double>::quiet_NaN();
  auto backend = make_cpu_backend(Precision::Fp64);
  SampleKeeper<double> keep(n, 100, 0, [&] {
    return backend->stats(n, 0, static_cast<const Matrix<double>*>(nullptr), nullptr, 8);
  });
  LayerStats<double> st(n, 0);
  const std::string kept = test::error_message([&] { keep.add(x.ptr(), 3, n, 20); });
  EXPECT_EQ(kept, test::error_message([&] { st.add(x.ptr(), 3, n, nullptr, nullptr, 20); }));
  EXPECT_NE(kept.find("21"), std::string::npos) << kept;  // sample 20 + 1
}

TEST(SampleKeeper, ErrorOverKeptSamplesEqualsTheFilesError) {
  std::mt19937_64 rng(test::test_seed(33));
  const int64_t m = 6, n = 9, p = 23, k = 2;
  const Matrix<double> w = test::random_matrix<double>(m, n, rng);
  const std::vector<double> b(m, -0.3);
  const Matrix<double> x = test::random_matrix<double>(n, p, rng);
  LayerStats<double> st(n, 0);
  st.add(x.ptr(), p, n, nullptr, nullptr, 0);
  const Factors<double> f = solve<double>({Method::Dalr, k, 0.5}, w, b, st);
  test::TempDir dir;
  write_npy(dir.file("x.npy"), x.ptr(), p, n);  // (p, n) rows: the samples
  NpyReader r(dir.file("x.npy"));
  const ReconError from_file = reconstruction_error(r, w, b, f, 5);
  const ReconError kept = reconstruction_error(x, w, b, f, 5);
  EXPECT_EQ(kept.abs, from_file.abs);  // the same chunks through the same code
  EXPECT_EQ(kept.ref, from_file.ref);
  EXPECT_EQ(kept.samples, p);
  EXPECT_NEAR(kept.abs, reconstruction_error(st, w, b, f).abs, 1e-9 * kept.abs);
}

}  // namespace
