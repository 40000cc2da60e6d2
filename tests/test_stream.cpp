// --acts stream end to end on a tiny network: the statistics collected while images
// stream through the forward pass equal those of the same activations read from a file;
// several layers in one pass; the compressed model's architecture runs again;
// evaluate; and the errors a user can make.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cpu/forward.hpp"
#include "dalr/arch.hpp"
#include "dalr/forward.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "oracle.hpp"
#include "stream_net.hpp"
#include "test_util.hpp"

using namespace dalr;
using test::run_cli;

namespace {

using Stream = test::StreamNet;
using test::kImages;

TEST_F(Stream, ImagesNpyIsReadable) {
  NpyReader r(images());
  EXPECT_EQ(r.shape(), (std::vector<int64_t>{kImages, 2, 6, 6}));
}

TEST_F(Stream, StreamedStatisticsEqualTheActivationFile) {
  const std::string common =
      " --layer classifier.0 --method dalr-exact --rank 5 --lambda 0.5 "
      "--device cpu --precision fp64 -q --model " +
      model();
  test::CommandResult s = run_cli("compress --acts stream --data " + images() + " --out " +
                                  dir_.file("s.bin") + " --report " + dir_.file("s.json") + common);
  ASSERT_EQ(s.exit_code, 0) << s.output;
  test::CommandResult a = run_cli("compress --acts " + dir_.file("classifier.0.npy") + " --out " +
                                  dir_.file("a.bin") + " --report " + dir_.file("a.json") + common);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  SafetensorsFile fs(dir_.file("s.bin")), fa(dir_.file("a.bin"));
  EXPECT_LT(oracle::rel_diff(product(fs, "classifier.0"), product(fa, "classifier.0")), 1e-9);
  // The streamed run computes the error from the statistics, the file run from the
  // samples: two independent ways to the same number.
  auto js = nlohmann::json::parse(test::read_file(dir_.file("s.json")));
  auto ja = nlohmann::json::parse(test::read_file(dir_.file("a.json")));
  EXPECT_EQ(js["samples"], kImages);
  EXPECT_NEAR(js["error_train"]["abs"].get<double>(), ja["error_train"]["abs"].get<double>(),
              1e-7 * ja["error_train"]["abs"].get<double>());
  EXPECT_NEAR(js["error_train"]["ref_norm"].get<double>(),
              ja["error_train"]["ref_norm"].get<double>(),
              1e-7 * ja["error_train"]["ref_norm"].get<double>());
  // The compressed model carries its new architecture and runs again.
  const Arch out = load_arch(fs, "");
  ASSERT_NO_THROW(CpuForward<double>(out, fs));
  test::CommandResult e = run_cli("evaluate --model " + dir_.file("s.bin") + " --data " + images() +
                                  " --compare " + model() + " -q");
  EXPECT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("agreement with"), std::string::npos) << e.output;
}

TEST_F(Stream, SeveralLayersInOnePass) {
  const std::string common = " --method svd-bc --rank 3 --device cpu --precision fp64 -q ";
  ASSERT_EQ(
      run_cli("compress --model " + model() + " --acts stream --data " + images() +
              " --layer classifier.0,classifier.3 --out " + dir_.file("both.bin") + " --report " +
              dir_.file("both.json") + " --save-stats " + dir_.file("st.safetensors") + common)
          .exit_code,
      0);
  SafetensorsFile both(dir_.file("both.bin"));
  for (const char* layer : {"classifier.0", "classifier.3"}) {
    SCOPED_TRACE(layer);
    const std::string one = dir_.file(std::string(layer) + ".bin");
    ASSERT_EQ(run_cli("compress --model " + model() + " --acts " +
                      dir_.file(std::string(layer) + ".npy") + " --layer " + layer + " --out " +
                      one + common)
                  .exit_code,
              0);
    SafetensorsFile f(one);
    EXPECT_LT(oracle::rel_diff(product(both, layer), product(f, layer)), 1e-9);
    EXPECT_LT(
        oracle::rel_diff(
            oracle::to_double(from_row_major(both.read_f64(std::string(layer) + ".1.bias").data(),
                                             1, both.at(std::string(layer) + ".1.bias").shape[0])),
            oracle::to_double(from_row_major(f.read_f64(std::string(layer) + ".1.bias").data(), 1,
                                             f.at(std::string(layer) + ".1.bias").shape[0]))),
        1e-9);
    EXPECT_TRUE(test::file_exists(dir_.file(std::string("st.") + layer + ".safetensors")));
  }
  auto rep = nlohmann::json::parse(test::read_file(dir_.file("both.json")));
  EXPECT_EQ(rep["layers"].size(), 2u);
  ASSERT_NO_THROW(CpuForward<float>(load_arch(both, ""), both));
}

// --precision bf16 / fp16 on the CPU: the forward pass rounds every layer's output to
// 16 bits (the GPU's tensor-core storage, emulated) and the statistics and solve run in
// fp32. The result equals an fp32 run on an activation file of the same rounded
// activations, and differs from the fp32 stream by about the format's precision.
TEST_F(Stream, SixteenBitStreamEqualsItsRoundedActivations) {
  const std::string common =
      " --layer classifier.0 --method dalr-exact --rank 5 --lambda 0.5 --device cpu -q "
      "--model " +
      model();
  SafetensorsFile f(model());
  const Arch arch = load_arch(f, "");
  std::vector<float> in(images_.begin(), images_.end());
  test::CommandResult plain = run_cli("compress --acts stream --data " + images() +
                                      " --precision fp32 --out " + dir_.file("f32.bin") + common);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  for (const auto& [name, storage] :
       {std::pair<std::string, ActStorage>{"bf16", ActStorage::Bf16}, {"fp16", ActStorage::Fp16}}) {
    SCOPED_TRACE(name);
    const Matrix<float> x =
        CpuForward<float>(arch, f, storage).run(in.data(), kImages, 2, 6, 6, "classifier.0");
    write_npy(dir_.file(name + ".npy"), x.ptr(), kImages, x.rows);
    const std::string s_out = dir_.file(name + "-s.bin"), a_out = dir_.file(name + "-a.bin");
    test::CommandResult s =
        run_cli("compress --acts stream --data " + images() + " --precision " + name + " --out " +
                s_out + " --report " + dir_.file(name + ".json") + common);
    ASSERT_EQ(s.exit_code, 0) << s.output;
    test::CommandResult a = run_cli("compress --acts " + dir_.file(name + ".npy") +
                                    " --precision fp32 --out " + a_out + common);
    ASSERT_EQ(a.exit_code, 0) << a.output;
    SafetensorsFile fs(s_out), fa(a_out), f32(dir_.file("f32.bin"));
    // Same activations, both fp32 statistics and solves: summation order only.
    EXPECT_LT(oracle::rel_diff(product(fs, "classifier.0"), product(fa, "classifier.0")), 1e-4);
    const double moved =
        oracle::rel_diff(product(fs, "classifier.0"), product(f32, "classifier.0"));
    EXPECT_GT(moved, storage == ActStorage::Bf16 ? 1e-4 : 1e-5);
    EXPECT_LT(moved, 0.1);
    auto rep = nlohmann::json::parse(test::read_file(dir_.file(name + ".json")));
    EXPECT_EQ(rep["precision"], name);
  }
  // Images 1e5 times larger overflow fp16 (its largest value is 65504) but not bf16:
  // the error names the cause.
  std::vector<float> big = images_;
  for (float& v : big) v *= 1e5f;
  write_images(dir_.file("big.npy"), big);
  test::CommandResult h = run_cli("compress --acts stream --data " + dir_.file("big.npy") +
                                  " --precision fp16 --out " + dir_.file("big16.bin") + common);
  EXPECT_NE(h.exit_code, 0);
  EXPECT_NE(h.output.find("must be finite"), std::string::npos) << h.output;
  EXPECT_NE(h.output.find("try --precision bf16"), std::string::npos) << h.output;
  EXPECT_FALSE(test::file_exists(dir_.file("big16.bin")));
  test::CommandResult hb = run_cli("compress --acts stream --data " + dir_.file("big.npy") +
                                   " --precision bf16 --out " + dir_.file("big-bf.bin") + common);
  EXPECT_EQ(hb.exit_code, 0) << hb.output;
  // evaluate refuses non-finite scores (the ranking would be meaningless), with the hint.
  test::CommandResult e16 = run_cli("evaluate --model " + model() + " --data " +
                                    dir_.file("big.npy") + " --precision fp16 --device cpu -q");
  EXPECT_NE(e16.exit_code, 0);
  EXPECT_NE(e16.output.find("output sample 0"), std::string::npos) << e16.output;
  EXPECT_NE(e16.output.find("try --precision bf16"), std::string::npos) << e16.output;
  EXPECT_EQ(run_cli("evaluate --model " + model() + " --data " + dir_.file("big.npy") +
                    " --precision bf16 --device cpu -q")
                .exit_code,
            0);
  // An unknown precision names the choices.
  test::CommandResult bad = run_cli("compress --acts stream --data " + images() +
                                    " --precision fp8 --out " + dir_.file("x.bin") + common);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("fp64, fp32, tf32, fp16 or bf16"), std::string::npos) << bad.output;
}

TEST_F(Stream, PresetForAPlainStateDictAndErrors) {
  auto fail = [&](const std::string& args, const std::string& words) {
    test::CommandResult r = run_cli(args + " --device cpu -q");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << "want '" << words << "' in " << r.output;
  };
  const std::string out = " --rank 2 --out " + dir_.file("o.bin");
  fail("compress --model " + plain() + " --acts stream --data " + images() +
           " --layer classifier.0" + out,
       "pass --arch");
  fail("compress --model " + model() + " --acts stream --layer classifier.0" + out, "--data");
  fail("compress --model " + model() + " --acts stream --data " + images() +
           " --layer features.0 --method prune-max" + out,
       "pruning a convolution's filters is not implemented");
  fail("compress --model " + model() + " --acts " + dir_.file("classifier.0.npy") +
           " --layer classifier.0,classifier.3" + out,
       "need --acts stream");
  fail("compress --model " + plain() + " --acts stream --data " + images() +
           " --layer classifier.0 --arch vgg16" + out,
       "features.0.weight");
  EXPECT_FALSE(test::file_exists(dir_.file("o.bin")));
}

}  // namespace

namespace {

// Unreadable files in an image folder are reported and skipped with a count; a folder
// where nothing can be read is an error.
TEST(StreamImages, UnreadableImagesAreSkippedAndCounted) {
  test::TempDir dir;
  const std::string ex = std::string(DALR_SOURCE_DIR) + "/examples/fashion2digits/";
  // Named as the model's classes (dalr.classes), which evaluate maps them by.
  for (const char* cls : {"0", "1"}) std::filesystem::create_directories(dir.file(cls));
  std::filesystem::copy_file(ex + "test/0/0000.png", dir.file("0/0.png"));
  std::filesystem::copy_file(ex + "test/1/0000.png", dir.file("1/1.png"));
  std::filesystem::copy_file(ex + "test/2/0000.png", dir.file("1/2.png"));
  test::write_file(dir.file("0/broken.png"), "\x89PNG\r\n\x1a\n not really");
  test::write_file(dir.file("1/text.jpg"), "plain text, not a JPEG");
  const std::string out = dir.file("o.bin");
  test::CommandResult r = run_cli("compress --model " + ex + "model.bin --acts stream --data " +
                                  dir.path() + " --layer classifier.3 --rank 2 --out " + out +
                                  " --report " + dir.file("r.json") + " --device cpu -q");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: skipped 2 of 5 images that could not be read"),
            std::string::npos)
      << r.output;
  auto rep = nlohmann::json::parse(test::read_file(dir.file("r.json")));
  EXPECT_EQ(rep["data"]["skipped"], 2);
  EXPECT_EQ(rep["samples"], 3);
  test::CommandResult e = run_cli("evaluate --model " + out + " --data " + dir.path() + " -q");
  EXPECT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("on 3 images"), std::string::npos) << e.output;
  EXPECT_NE(e.output.find("skipped 2 images"), std::string::npos) << e.output;

  std::filesystem::remove(dir.file("0/0.png"));
  std::filesystem::remove(dir.file("1/1.png"));
  std::filesystem::remove(dir.file("1/2.png"));
  std::filesystem::remove(out);
  test::CommandResult n =
      run_cli("compress --model " + ex + "model.bin --acts stream --data " + dir.path() +
              " --layer classifier.3 --rank 2 --out " + out + " --device cpu -q");
  EXPECT_EQ(n.exit_code, 1) << n.output;
  EXPECT_NE(n.output.find("none of the 2 images could be read"), std::string::npos) << n.output;
  EXPECT_FALSE(test::file_exists(out));
}

}  // namespace

namespace {

TEST_F(Stream, BudgetAllocatesRanksAcrossLayers) {
  test::CommandResult r = run_cli(
      "compress --model " + model() + " --acts stream --data " + images() +
      " --layer classifier.0,classifier.3 --budget 0.3 --method dalr --device cpu -q --out " +
      dir_.file("b.bin") + " --report " + dir_.file("b.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto rep = nlohmann::json::parse(test::read_file(dir_.file("b.json")));
  const auto ranks = rep["budget"]["ranks"].get<std::vector<int64_t>>();
  ASSERT_EQ(ranks.size(), 2u);
  const int64_t weights = ranks[0] * (17 + 36) + ranks[1] * (9 + 17);
  EXPECT_EQ(rep["budget"]["weights_kept"], weights);
  EXPECT_LE(weights, 0.3 * (17 * 36 + 9 * 17));
  SafetensorsFile f(dir_.file("b.bin"));
  EXPECT_EQ(f.at("classifier.0.0.weight").shape[0], ranks[0]);
  EXPECT_EQ(f.at("classifier.3.0.weight").shape[0], ranks[1]);
}

}  // namespace

// Streamed statistics are bound to the network they came from (core/stats_binding.hpp):
// --stats with a model whose classifier.3 is the same but whose earlier layers differ is
// refused; with the same model it resumes; sweep checks the same way.
TEST_F(Stream, StatisticsOfAnotherNetworkAreRefused) {
  const std::string stats = dir_.file("st.safetensors");
  const std::string common = " --layer classifier.3 --method dalr --rank 3 --device cpu -q ";
  ASSERT_EQ(run_cli("compress --model " + model() + " --acts stream --data " + images() +
                    " --out " + dir_.file("a.bin") + " --save-stats " + stats + common)
                .exit_code,
            0);
  SafetensorsFile f(model());
  EXPECT_EQ(f.metadata().count("dalr.arch"), 1u);
  SafetensorsFile st(stats);
  EXPECT_EQ(st.metadata().at("dalr.layer_hash").size(), 16u);
  EXPECT_EQ(st.metadata().at("dalr.upstream_hash").size(), 16u);
  // The same model: resumes.
  test::CommandResult same = run_cli("compress --model " + model() + " --stats " + stats +
                                     " --out " + dir_.file("b.bin") + common);
  EXPECT_EQ(same.exit_code, 0) << same.output;
  // features.0.bias changed by one ulp-sized step, everything else the same bytes.
  auto copy_with = [&](const std::string& path, const std::string& changed) {
    std::vector<TensorOut> ts;
    std::vector<std::vector<float>> keep;
    keep.reserve(f.tensors().size());
    for (const TensorInfo& t : f.tensors()) {
      keep.push_back(f.read_f32(t.name));
      if (t.name == changed) keep.back()[0] = std::nextafter(keep.back()[0], 1e30f);
      ts.push_back(TensorOut::f32(t.name, t.shape, keep.back()));
    }
    write_safetensors(path, ts, f.metadata());
  };
  copy_with(dir_.file("up.bin"), "features.0.bias");
  test::CommandResult up = run_cli("compress --model " + dir_.file("up.bin") + " --stats " + stats +
                                   " --out " + dir_.file("c.bin") + common);
  EXPECT_EQ(up.exit_code, 1) << up.output;
  EXPECT_NE(up.output.find("collected through other layers before 'classifier.3'"),
            std::string::npos)
      << up.output;
  EXPECT_FALSE(test::file_exists(dir_.file("c.bin")));
  copy_with(dir_.file("own.bin"), "classifier.3.bias");
  test::CommandResult own = run_cli("compress --model " + dir_.file("own.bin") + " --stats " +
                                    stats + " --out " + dir_.file("c.bin") + common);
  EXPECT_EQ(own.exit_code, 1) << own.output;
  EXPECT_NE(own.output.find("collected with other weights for 'classifier.3'"), std::string::npos)
      << own.output;
  // A later layer changed: the statistics of classifier.3 still belong to this network.
  copy_with(dir_.file("later.bin"), "classifier.6.weight");
  EXPECT_EQ(run_cli("compress --model " + dir_.file("later.bin") + " --stats " + stats + " --out " +
                    dir_.file("c.bin") + common)
                .exit_code,
            0);
  // sweep checks too.
  test::CommandResult sw =
      run_cli("sweep --model " + dir_.file("up.bin") + " --layer classifier.3 --stats " + stats +
              " --test " + images() + " --methods dalr --ranks 2 --out " + dir_.file("sw") + " -q");
  EXPECT_EQ(sw.exit_code, 1) << sw.output;
  EXPECT_NE(sw.output.find("collected through other layers"), std::string::npos) << sw.output;
}
