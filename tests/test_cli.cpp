// The dalr-gpu command line end to end: the output contract for every method, the
// report, resuming statistics, and one clear error (and no output left behind) for
// every kind of bad input.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/split_list.hpp"
#include "cpu/blas_core.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/stats.hpp"
#include "io/atomic_file.hpp"
#include "oracle.hpp"
#include "test_util.hpp"

using namespace dalr;
using test::run_cli;

namespace {

constexpr int64_t kM = 13, kN = 21, kNext = 5, kP = 40;

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(test::test_seed(31));
    auto vec = [&](int64_t count) {
      std::normal_distribution<double> nd;
      std::vector<float> v(static_cast<size_t>(count));
      for (auto& x : v) x = static_cast<float>(nd(rng));
      return v;
    };
    // A PyTorch state dict: fc, a following layer, and an int64 buffer (as BatchNorm's
    // num_batches_tracked) that must pass through untouched.
    std::vector<int64_t> steps = {7};
    TensorOut buf;
    buf.name = "bn.num_batches_tracked";
    buf.dtype = DType::I64;
    buf.shape = {};
    buf.owned = std::make_shared<std::vector<uint8_t>>(8);
    std::memcpy(buf.owned->data(), steps.data(), 8);
    buf.data = buf.owned->data();
    buf.nbytes = 8;
    write_safetensors(model(),
                      {TensorOut::f32("fc.weight", {kM, kN}, vec(kM * kN)),
                       TensorOut::f32("fc.bias", {kM}, vec(kM)), buf,
                       TensorOut::f32("head.weight", {kNext, kM}, vec(kNext * kM)),
                       TensorOut::f32("head.bias", {kNext}, vec(kNext))},
                      {{"origin", "test"}});
    acts_ = vec(kP * kN);
    for (auto& v : acts_) v = std::abs(v);
    write_npy(acts(), acts_.data(), kP, kN);
    write_npy(dir_.file("half1.npy"), acts_.data(), kP / 2, kN);
    write_npy(dir_.file("half2.npy"), acts_.data() + kP / 2 * kN, kP / 2, kN);
  }
  std::string model() const { return dir_.file("model.safetensors"); }
  std::string acts() const { return dir_.file("acts.npy"); }
  std::string out() const { return dir_.file("out.safetensors"); }
  std::string base(const std::string& method, const std::string& rank = "--rank 4") const {
    return "compress --model " + model() + " --layer fc --acts " + acts() + " --method " + method +
           " " + rank + " --out " + out();
  }
  // Runs a command that must fail: exit code 1, the words in the message, no output.
  void expect_failure(const std::string& args, const std::string& words) {
    test::CommandResult r = run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos)
        << "expected '" << words << "' in: " << r.output;
    EXPECT_NE(r.output.find("dalr-gpu: error: "), std::string::npos) << r.output;
    EXPECT_FALSE(test::file_exists(out())) << "a failed run left " << out();
    for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
      EXPECT_EQ(e.path().string().find(kTempMarker), std::string::npos) << "left " << e.path();
  }
  test::TempDir dir_;
  std::vector<float> acts_;
};

// Issue 12, finding 1, end to end: outputs never destroy what the paths name.
TEST_F(Cli, OutputPathsAreNotDestroyed) {
  // A read-only --out is refused before any work, and kept.
  test::write_file(out(), "precious");
  ASSERT_EQ(::chmod(out().c_str(), 0444), 0);
  test::CommandResult r = run_cli(base("svd"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("read-only"), std::string::npos) << r.output;
  EXPECT_EQ(test::read_file(out()), "precious");
  std::filesystem::remove(out());
  // --out through a symlink replaces its target and keeps the link; a 0600 file stays
  // 0600; --report to /dev/null leaves the device alone.
  const std::string target = dir_.file("real.safetensors"), link = out();
  test::write_file(target, "old");
  ASSERT_EQ(::chmod(target.c_str(), 0600), 0);
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  r = run_cli(base("svd") + " --report /dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  struct stat st;
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_NO_THROW(SafetensorsFile f(target));
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  std::filesystem::remove(link);
}

TEST_F(Cli, FactorisedOutputFollowsTheContract) {
  for (const char* method : {"dalr", "dalr-exact", "svd", "svd-bc"}) {
    SCOPED_TRACE(method);
    std::filesystem::remove(out());
    test::CommandResult r = run_cli(base(method) + " --report " + dir_.file("r.json"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    SafetensorsFile in(model()), f(out());
    EXPECT_EQ(f.find("fc.weight"), nullptr);
    EXPECT_EQ(f.find("fc.bias"), nullptr);
    EXPECT_EQ(f.at("fc.0.weight").shape, (std::vector<int64_t>{4, kN}));
    EXPECT_EQ(f.find("fc.0.bias"), nullptr);
    EXPECT_EQ(f.at("fc.1.weight").shape, (std::vector<int64_t>{kM, 4}));
    EXPECT_EQ(f.at("fc.1.bias").shape, (std::vector<int64_t>{kM}));
    for (const char* name : {"head.weight", "head.bias", "bn.num_batches_tracked"}) {
      const TensorInfo& a = in.at(name);
      const TensorInfo& b = f.at(name);
      EXPECT_EQ(a.dtype, b.dtype);
      EXPECT_EQ(a.shape, b.shape);
      EXPECT_EQ(std::memcmp(in.raw(a), f.raw(b), a.end - a.begin), 0) << name;
    }
    EXPECT_EQ(f.metadata().at("dalr.method"), method);
    EXPECT_EQ(f.metadata().at("dalr.rank"), "4");
    EXPECT_EQ(f.metadata().at("dalr.layer"), "fc");
    EXPECT_EQ(f.metadata().at("origin"), "test");  // the input's metadata is kept
    EXPECT_TRUE(f.metadata().count("dalr.lambda"));
    EXPECT_TRUE(f.metadata().count("dalr.source"));

    auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
    EXPECT_EQ(rep["params"]["before"], kM * kN + kM);
    EXPECT_EQ(rep["params"]["after"], 4 * kN + kM * 4 + kM);
    EXPECT_GT(rep["error_train"]["abs"].get<double>(), 0);
    EXPECT_LT(rep["error_train"]["rel"].get<double>(), 1);
    EXPECT_EQ(rep["error_train"]["samples"], kP);
    EXPECT_TRUE(rep["timing_s"].contains("solve"));
    EXPECT_TRUE(rep["energy_kept"].is_number());
    EXPECT_NE(r.output.find("reconstruction error (train)"), std::string::npos);
  }
}

TEST_F(Cli, NoErrorSkipsOnlyTheTrainingError) {
  // Same factors with and without --no-error; the report's error_train is null, the
  // held-out error is still computed.
  ASSERT_EQ(run_cli(base("dalr") + " --report " + dir_.file("a.json")).exit_code, 0);
  const std::vector<double> first = SafetensorsFile(out()).read_f64("fc.0.weight");
  test::CommandResult r = run_cli(base("dalr") + " --no-error --acts-test " +
                                  dir_.file("half2.npy") + " --report " + dir_.file("b.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("reconstruction error (train)"), std::string::npos);
  EXPECT_NE(r.output.find("reconstruction error (test)"), std::string::npos);
  auto a = nlohmann::json::parse(test::read_file(dir_.file("a.json")));
  auto b = nlohmann::json::parse(test::read_file(dir_.file("b.json")));
  EXPECT_TRUE(a["error_train"].is_object());
  EXPECT_TRUE(b["error_train"].is_null());
  EXPECT_TRUE(b["error_test"]["rel"].is_number());
  EXPECT_EQ(SafetensorsFile(out()).read_f64("fc.0.weight"), first);
}

TEST_F(Cli, ReconstructionErrorInTheReportIsRight) {
  ASSERT_EQ(run_cli(base("svd-bc") + " --acts-test " + dir_.file("half2.npy") + " --report " +
                    dir_.file("r.json"))
                .exit_code,
            0);
  SafetensorsFile in(model()), f(out());
  auto mat = [](const SafetensorsFile& s, const std::string& name) {
    const TensorInfo& t = s.at(name);
    return oracle::to_double(from_row_major(s.read_f64(name).data(), t.shape[0], t.shape[1]));
  };
  const Matrix<double> w = mat(in, "fc.weight");
  const Matrix<double> ab = oracle::mul(mat(f, "fc.1.weight"), mat(f, "fc.0.weight"));
  const std::vector<double> b = in.read_f64("fc.bias"), bh = f.read_f64("fc.1.bias");
  double err2 = 0, ref2 = 0;  // on the second half of the samples
  for (int64_t s = kP / 2; s < kP; ++s)
    for (int64_t i = 0; i < kM; ++i) {
      double y = b[i], yh = bh[i];
      for (int64_t j = 0; j < kN; ++j) {
        y += w(i, j) * acts_[s * kN + j];
        yh += ab(i, j) * acts_[s * kN + j];
      }
      err2 += (y - yh) * (y - yh);
      ref2 += y * y;
    }
  auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
  EXPECT_NEAR(rep["error_test"]["abs"].get<double>(), std::sqrt(err2), 1e-5 * std::sqrt(err2));
  EXPECT_NEAR(rep["error_test"]["rel"].get<double>(), std::sqrt(err2 / ref2), 1e-5);
}

TEST_F(Cli, PruningShrinksTheLayerAndTheNextOne) {
  for (const char* method : {"prune-mean", "prune-max"}) {
    std::filesystem::remove(out());
    test::CommandResult r =
        run_cli(base(method, "--keep 0.5") + " --next-layer head --report " + dir_.file("r.json"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    SafetensorsFile in(model()), f(out());
    const int64_t kept = kM / 2;
    EXPECT_EQ(f.at("fc.weight").shape, (std::vector<int64_t>{kept, kN}));
    EXPECT_EQ(f.at("fc.bias").shape, (std::vector<int64_t>{kept}));
    EXPECT_EQ(f.at("head.weight").shape, (std::vector<int64_t>{kNext, kept}));
    auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
    const auto units = rep["kept_units"].get<std::vector<int64_t>>();
    ASSERT_EQ(static_cast<int64_t>(units.size()), kept);
    const std::vector<float> w = in.read_f32("fc.weight"), wk = f.read_f32("fc.weight");
    const std::vector<float> h = in.read_f32("head.weight"), hk = f.read_f32("head.weight");
    for (int64_t r2 = 0; r2 < kept; ++r2) {
      for (int64_t j = 0; j < kN; ++j) EXPECT_EQ(wk[r2 * kN + j], w[units[r2] * kN + j]);
      for (int64_t i = 0; i < kNext; ++i) EXPECT_EQ(hk[i * kept + r2], h[i * kM + units[r2]]);
    }
  }
}

TEST_F(Cli, VerbMayBeOmittedAndKeepSetsTheRank) {
  test::CommandResult r =
      run_cli("--model " + model() + " --layer fc --acts " + acts() + " --keep 0.3 --out " + out() +
              " --report " + dir_.file("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
  EXPECT_EQ(rep["rank"], static_cast<int64_t>(0.3 * kM * kN / (kM + kN)));
  EXPECT_EQ(rep["method"], "dalr");
  EXPECT_NEAR(rep["lambda"].get<double>() / rep["lambda_rel"].get<double>(), 0, 1e9);
}

TEST_F(Cli, ResumedStatisticsEqualOnePass) {
  const std::string s1 = dir_.file("s1.safetensors");
  ASSERT_EQ(run_cli("compress --model " + model() + " --layer fc --acts " + dir_.file("half1.npy") +
                    " --rank 3 --out " + dir_.file("tmp.safetensors") + " --save-stats " + s1)
                .exit_code,
            0);
  const std::string common = " --model " + model() + " --layer fc --rank 3 --lambda 0.5 ";
  ASSERT_EQ(run_cli("compress" + common + "--stats " + s1 + " --acts " + dir_.file("half2.npy") +
                    " --out " + out())
                .exit_code,
            0);
  ASSERT_EQ(
      run_cli("compress" + common + "--acts " + acts() + " --out " + dir_.file("one.safetensors"))
          .exit_code,
      0);
  SafetensorsFile a(out()), b(dir_.file("one.safetensors"));
  auto product = [](const SafetensorsFile& f) {
    return oracle::mul(from_row_major(f.read_f64("fc.1.weight").data(), kM, 3),
                       from_row_major(f.read_f64("fc.0.weight").data(), 3, kN));
  };
  EXPECT_LT(oracle::rel_diff(product(a), product(b)), 1e-5);
  EXPECT_EQ(a.metadata().at("dalr.samples"), std::to_string(kP));
  // Statistics of another layer are refused.
  std::filesystem::remove(out());
  expect_failure(
      "compress --model " + model() + " --layer head --stats " + s1 + " --rank 2 --out " + out(),
      "statistics of a 13 x 21 layer");
}

TEST_F(Cli, InspectAndHelp) {
  test::CommandResult r = run_cli("inspect --model " + model());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("fc.weight"), std::string::npos);
  EXPECT_NE(r.output.find("I64"), std::string::npos);
  EXPECT_NE(r.output.find("fc (13x21)"), std::string::npos);
  EXPECT_NE(r.output.find(std::to_string(kM * kN + kM + 1 + kNext * kM + kNext)),
            std::string::npos);
  test::CommandResult j = run_cli("inspect --json --model " + model());
  EXPECT_EQ(nlohmann::json::parse(j.output)["total_params"], kM * kN + kM + 1 + kNext * kM + kNext);
  for (const char* verb : {"", "compress ", "inspect "}) {
    test::CommandResult h = run_cli(std::string(verb) + "--help");
    EXPECT_EQ(h.exit_code, 0) << verb;
    EXPECT_NE(h.output.find("--"), std::string::npos);
  }
  EXPECT_NE(run_cli("compress --help").output.find("--lambda-rel"), std::string::npos);
  EXPECT_EQ(run_cli("compress --model").exit_code, 2);
}

// ---- bad input: one clear message, exit code 1, nothing written ----

TEST_F(Cli, MissingModel) {
  expect_failure(base("dalr") + " --model /nonexistent.bin", "does not exist");
}

TEST_F(Cli, TruncatedModel) {
  std::string bytes = test::read_file(model());
  test::write_file(dir_.file("trunc.safetensors"), bytes.substr(0, bytes.size() - 9));
  expect_failure("compress --model " + dir_.file("trunc.safetensors") + " --layer fc --acts " +
                     acts() + " --rank 2 --out " + out(),
                 "trunc.safetensors");
}

TEST_F(Cli, HeaderThatLiesAboutOffsets) {
  std::string bytes = test::read_file(model());
  const size_t pos = bytes.find("\"data_offsets\":[0,");
  ASSERT_NE(pos, std::string::npos);
  bytes[pos + 16] = '4';  // [0, ...] becomes [4, ...]: the range no longer fits the shape
  test::write_file(dir_.file("lie.safetensors"), bytes);
  expect_failure("compress --model " + dir_.file("lie.safetensors") + " --layer fc --acts " +
                     acts() + " --rank 2 --out " + out(),
                 "lie.safetensors");
}

TEST_F(Cli, UnknownLayerListsTheLayers) {
  expect_failure(
      "compress --model " + model() + " --layer fc7 --acts " + acts() + " --rank 2 --out " + out(),
      "unknown layer 'fc7'");
  expect_failure(
      "compress --model " + model() + " --layer fc7 --acts " + acts() + " --rank 2 --out " + out(),
      "fc (13x21), head (5x13)");
}

TEST_F(Cli, ActivationsOfTheWrongWidth) {
  std::vector<float> x(6 * 20, 1.0f);
  write_npy(dir_.file("w20.npy"), x.data(), 6, 20);
  expect_failure(base("dalr") + " --acts " + dir_.file("w20.npy"), "takes n = 21");
  expect_failure(base("dalr") + " --acts-test " + dir_.file("w20.npy"), "takes n = 21");
}

// Issue 12: an activation file without rows fits nothing and measures nothing; it used to
// give a report with a held-out error of "rel 0.0".
TEST_F(Cli, ActivationsWithoutRows) {
  const std::vector<float> none;
  write_npy(dir_.file("empty.npy"), none.data(), 0, kN);
  expect_failure(base("dalr") + " --acts-test " + dir_.file("empty.npy"), "holds no samples");
}

// Issue 12: a file name holding a newline does not split the message in two (a script
// reading stderr by lines sees one error).
TEST_F(Cli, MessagesStayOnOneLineWhateverTheyQuote) {
  const std::string odd = dir_.file("a\nb.safetensors");
  test::CommandResult r = run_cli(base("dalr") + " --device cpu --stats '" + odd + "'");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("a\\nb.safetensors"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

TEST_F(Cli, NegativeLambdaRelIsNamed) {
  expect_failure(base("dalr") + " --lambda-rel -1", "--lambda-rel must be a finite number >= 0");
}

TEST_F(Cli, ActivationsWithNaN) {
  std::vector<float> x(acts_);
  x[5 * kN + 3] = NAN;
  write_npy(dir_.file("nan.npy"), x.data(), kP, kN);
  expect_failure(base("dalr") + " --acts " + dir_.file("nan.npy"), "sample 5, unit 3 is NaN");
}

TEST_F(Cli, ActivationsOfAWrongDtype) {
  std::string header = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 21), }";
  header.resize(118, ' ');
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8) + char(header.size()) + '\0' + header +
                      std::string(2 * 21 * 4, '\0');
  test::write_file(dir_.file("i4.npy"), bytes);
  expect_failure(base("dalr") + " --acts " + dir_.file("i4.npy"), "<i4");
}

TEST_F(Cli, WeightOfANonFloatDtype) {
  TensorOut t;
  t.name = "fc.weight";
  t.dtype = DType::I64;
  t.shape = {2, 21};
  t.owned = std::make_shared<std::vector<uint8_t>>(2 * 21 * 8, 0);
  t.data = t.owned->data();
  t.nbytes = t.owned->size();
  write_safetensors(dir_.file("int.safetensors"), {t}, {});
  expect_failure("compress --model " + dir_.file("int.safetensors") + " --layer fc --acts " +
                     acts() + " --rank 1 --out " + out(),
                 "I64");
}

TEST_F(Cli, RankOutOfRange) {
  expect_failure(base("dalr", "--rank 0"), "rank 0 is out of range");
  expect_failure(base("svd", "--rank 14"), "between 1 and 13");
  expect_failure(base("svd", "--keep 1.5"), "--keep must be a fraction");
  expect_failure(base("svd", "--rank 2 --keep 0.5"), "not both");
  expect_failure("compress --model " + model() + " --layer fc --acts " + acts() + " --out " + out(),
                 "--rank K or --keep");
}

// Every option is checked before the activations are read (the compress plan): with an
// activation file whose reading fails (a NaN in sample 5), each bad option must still be
// the error reported, not the NaN.
TEST_F(Cli, BadOptionsFailBeforeTheActivationsAreRead) {
  std::vector<float> x(acts_);
  x[5 * kN + 3] = NAN;
  write_npy(dir_.file("nan.npy"), x.data(), kP, kN);
  std::vector<float> w(6 * 20, 1.0f);
  write_npy(dir_.file("w20.npy"), w.data(), 6, 20);
  auto with_nan = [&](const std::string& method, const std::string& rest) {
    return "compress --model " + model() + " --layer fc --acts " + dir_.file("nan.npy") +
           " --method " + method + " " + rest + " --out " + out();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {with_nan("svd", "--rank 14"), "between 1 and 13 for a 13 x 21 layer"},
      {with_nan("svd", "--keep 1.5"), "--keep must be a fraction in (0, 1]"},
      {with_nan("dalr", "--budget 1.5"), "--budget must be a fraction in (0, 1]"},
      {with_nan("dalr", "--rank 4 --lambda -1"), "lambda must be a finite number >= 0"},
      {with_nan("dalr", "--rank 4 --acts-test " + dir_.file("w20.npy")), "takes n = 21"},
      {with_nan("dalr", "--rank 4 --next-layer head"), "--next-layer only applies to the pruning"},
      {with_nan("prune-mean", "--rank 4 --next-layer nope"), "unknown --next-layer 'nope'"},
      {with_nan("prune-mean", "--rank 4 --next-layer fc"), "does not take layer 'fc' output"},
  };
  for (const auto& [args, words] : cases) {
    SCOPED_TRACE(args);
    expect_failure(args, words);
    // The failure must not come from the activations.
    EXPECT_EQ(run_cli(args).output.find("is NaN"), std::string::npos);
  }
  // The same file does fail once the options are right: the cases above were not lucky.
  expect_failure(with_nan("svd", "--rank 4"), "sample 5, unit 3 is NaN");
}

// Issue 12, findings 4 and 14: counting options in range before anything is read.
TEST_F(Cli, BatchAndWorkersOutOfRange) {
  expect_failure(base("svd") + " --batch 9223372036854775807", "--batch must be at most 1048576");
  expect_failure(base("svd") + " --batch 0", "--batch must be at least 1");
  expect_failure(base("svd") + " --workers 40000", "--workers must be between 1 and 256");
  expect_failure(base("svd") + " --workers 0", "--workers must be between 1 and 256");
  expect_failure(base("svd") + " --limit -1", "--limit must be >= 0");
  const test::CommandResult r =
      run_cli("evaluate --model " + model() + " --data " + acts() + " --workers 1000");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--workers must be between 1 and 256"), std::string::npos) << r.output;
}

// Issue 12, finding 18: messages that say what is wrong.
TEST_F(Cli, MessagesNameTheRealProblem) {
  expect_failure(base("svd") + " --round-rank 0", "--round-rank must be >= 1 (got 0)");
  expect_failure(base("dalr") + " --lambda 1e-3x", "--lambda must be a number >= 0 or auto");
  const test::CommandResult verb = run_cli("compres --model " + model());
  EXPECT_EQ(verb.exit_code, 2) << verb.output;
  EXPECT_NE(verb.output.find("unknown verb 'compres'; did you mean 'compress'?"), std::string::npos)
      << verb.output;
  const test::CommandResult far = run_cli("frobnicate");
  EXPECT_EQ(far.exit_code, 2) << far.output;
  EXPECT_NE(far.output.find("unknown verb 'frobnicate' (verbs: compress"), std::string::npos)
      << far.output;
  // A subnormal lambda is a number (std::stod called it out of range: "not a number").
  const test::CommandResult tiny = run_cli(base("dalr") + " --lambda 1e-320");
  EXPECT_EQ(tiny.exit_code, 0) << tiny.output;
}

TEST_F(Cli, RankThatSavesNothingWarns) {
  test::CommandResult r = run_cli(base("svd", "--rank 12"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: rank 12 saves no parameters"), std::string::npos) << r.output;
}

TEST_F(Cli, OutputOverAnInputIsRefused) {
  expect_failure(base("dalr") + " --out " + model(), "refusing to overwrite an input");
  expect_failure(base("dalr") + " --out " + acts(), "refusing to overwrite an input");
  expect_failure(base("dalr") + " --report " + acts(), "refusing to overwrite an input");
  // The model is still intact.
  EXPECT_NO_THROW(SafetensorsFile f(model()));
}

TEST_F(Cli, UnwritableOutput) {
  expect_failure(base("dalr") + " --out " + dir_.file("no/such/dir/out.safetensors"),
                 "cannot write");
}

TEST_F(Cli, UnknownMethodAndLambda) {
  expect_failure(base("dlar"), "unknown method 'dlar'");
  expect_failure(base("dalr") + " --lambda -1", "lambda must be");
  expect_failure(base("dalr") + " --device cpu --precision fp8", "--precision must be");
}

}  // namespace

namespace {

TEST_F(Cli, DeviceSelection) {
  // auto falls back to the CPU with a one-line notice when there is no device.
  test::CommandResult a = run_cli(base("dalr") + " --report " + dir_.file("r.json"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const std::string dev =
      nlohmann::json::parse(test::read_file(dir_.file("r.json")))["device"].get<std::string>();
  const std::string prec =
      nlohmann::json::parse(test::read_file(dir_.file("r.json")))["precision"].get<std::string>();
  // The default precision follows the device.
  EXPECT_EQ(prec, dev == "cpu" ? "fp64" : "fp32");
  if (dev == "cpu") EXPECT_NE(a.output.find("running on the CPU"), std::string::npos) << a.output;
  std::filesystem::remove(out());
  // --device cuda never falls back silently: it runs on a GPU or says why not.
  test::CommandResult c = run_cli(base("dalr") + " --device cuda");
  if (c.exit_code != 0) {
    EXPECT_EQ(c.exit_code, 1);
    EXPECT_TRUE(c.output.find("does not exist") != std::string::npos ||
                c.output.find("built without CUDA") != std::string::npos)
        << c.output;
    EXPECT_FALSE(test::file_exists(out()));
  }
  std::filesystem::remove(out());
  expect_failure(base("dalr") + " --device gpu", "--device must be");
  expect_failure(base("dalr") + " --device cpu --precision tf32", "tf32 needs --device cuda");
  test::CommandResult q = run_cli(base("dalr") + " --device cpu");
  EXPECT_EQ(q.output.find("running on the CPU"), std::string::npos) << q.output;
}

}  // namespace

namespace {

// --lambda auto: every 10th sample is held out; each grid point is solved on the rest and
// measured on the held-out samples; the smallest held-out error wins. Each point of the
// reported curve equals an independent run on explicitly split files.
TEST_F(Cli, LambdaAutoPicksTheSmallestHeldOutError) {
  std::vector<float> fit, held;
  for (int64_t s = 0; s < kP; ++s)
    (s % 10 == 9 ? held : fit)
        .insert((s % 10 == 9 ? held : fit).end(), acts_.begin() + s * kN,
                acts_.begin() + (s + 1) * kN);
  write_npy(dir_.file("fit.npy"), fit.data(), static_cast<int64_t>(fit.size()) / kN, kN);
  write_npy(dir_.file("held.npy"), held.data(), static_cast<int64_t>(held.size()) / kN, kN);
  test::CommandResult r = run_cli(base("dalr", "--rank 3") + " --lambda auto --device cpu " +
                                  "--report " + dir_.file("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
  const auto& la = rep["lambda_auto"];
  ASSERT_EQ(la["curve"].size(), 6u);
  EXPECT_EQ(la["held_out_samples"], kP / 10);
  EXPECT_EQ(la["fit_samples"], kP - kP / 10);
  double best = 1e300, best_rel = -1;
  for (const auto& p : la["curve"]) {
    const double err = p["held_out_rel_error"].get<double>();
    if (err < best) best = err, best_rel = p["lambda_rel"].get<double>();
    std::filesystem::remove(out());
    char lam[64];
    std::snprintf(lam, sizeof lam, "%.17g", p["lambda"].get<double>());
    test::CommandResult one =
        run_cli("compress --model " + model() + " --layer fc --acts " + dir_.file("fit.npy") +
                " --acts-test " + dir_.file("held.npy") + " --rank 3 --device cpu --lambda " + lam +
                " --out " + out() + " --report " + dir_.file("one.json"));
    ASSERT_EQ(one.exit_code, 0) << one.output;
    const auto o = nlohmann::json::parse(test::read_file(dir_.file("one.json")));
    EXPECT_NEAR(o["error_test"]["rel"].get<double>(), err, 1e-6 * err) << "lambda " << lam;
  }
  EXPECT_EQ(la["chosen_lambda_rel"].get<double>(), best_rel);
  EXPECT_EQ(rep["lambda_rel"].get<double>(), best_rel);
  EXPECT_EQ(rep["samples"], kP);  // the final solve uses every sample
  std::filesystem::remove(out());
  expect_failure(base("svd") + " --lambda auto --device cpu", "--lambda auto applies to dalr");
  expect_failure(base("dalr") + " --lambda lots --device cpu", "--lambda must be a number");
}

}  // namespace

namespace {

TEST_F(Cli, RoundRankRoundsUpAndReportsTheCost) {
  test::CommandResult r =
      run_cli(base("svd", "--rank 5") + " --round-rank 4 --report " + dir_.file("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
  EXPECT_EQ(rep["rank"], 8);
  EXPECT_EQ(rep["round_rank"]["rank_requested"], 5);
  EXPECT_EQ(rep["round_rank"]["extra_params"], 3 * (kM + kN));
  SafetensorsFile f(out());
  EXPECT_EQ(f.at("fc.0.weight").shape, (std::vector<int64_t>{8, kN}));
  // Never past min(m, n) = 13.
  std::filesystem::remove(out());
  ASSERT_EQ(run_cli(base("svd", "--rank 11") + " --round-rank 8 --report " + dir_.file("r.json"))
                .exit_code,
            0);
  EXPECT_EQ(nlohmann::json::parse(test::read_file(dir_.file("r.json")))["rank"], 13);
}

}  // namespace

TEST_F(Cli, OpenBlasRunsTheCpusBestKernels) {
  // OpenBLAS 0.3.21 falls back to SSE3 ("Prescott") kernels on CPUs newer than itself;
  // dalr-gpu starts itself again with OPENBLAS_CORETYPE set (cpu/blas_core.hpp).
  ASSERT_EQ(run_cli(base("dalr") + " --report " + dir_.file("r.json")).exit_code, 0);
  const auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
  const std::string core = rep["openblas_core"].get<std::string>();
  EXPECT_FALSE(core.empty());
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr)
    GTEST_SKIP() << "OPENBLAS_CORETYPE is set here: the user's choice wins";
  const std::string best = cpu::best_openblas_core();
  if (best.empty()) GTEST_SKIP() << "this CPU has neither AVX2 nor AVX-512";
  for (const char* slow : {"Prescott", "Core2", "Penryn", "Nehalem", "Atom", "Sandybridge"})
    EXPECT_NE(core, slow) << "the CPU can run " << best << " kernels";
}

namespace {

// One rule for every list option (--layer, --methods, --ranks): commas or whitespace
// separate, empty items are skipped. Both rules it replaced give the same items here:
// the jobs' (commas, empties skipped) and the sweep's (commas and spaces).
TEST(SplitList, CommasOrWhitespaceSeparateAndEmptiesAreSkipped) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split_list("classifier.0,classifier.3"), (V{"classifier.0", "classifier.3"}));
  EXPECT_EQ(split_list("a,,b,"), (V{"a", "b"}));  // the jobs' rule
  EXPECT_EQ(split_list(",dalr,,svd-bc"), (V{"dalr", "svd-bc"}));
  EXPECT_EQ(split_list("32 64,128"), (V{"32", "64", "128"}));  // the sweep's rule
  EXPECT_EQ(split_list(" 4 , 16  "), (V{"4", "16"}));
  EXPECT_EQ(split_list("a\tb\nc"), (V{"a", "b", "c"}));
  EXPECT_EQ(split_list("x"), (V{"x"}));
  EXPECT_TRUE(split_list("").empty());
  EXPECT_TRUE(split_list(" ,, ").empty());
}

}  // namespace

namespace {

// Issue 12, finding 5: fp32 statistics of activations of 1e30 overflow (squares beyond
// float's 3.4e38); the job used to write NaN factors and exit 0. Now refused, naming
// what overflowed and what to do, and writing neither the model nor --save-stats.
TEST_F(Cli, OverflowingFp32StatisticsAreRefused) {
  std::vector<float> big = acts_;
  for (auto& v : big) v *= 1e30f;
  write_npy(dir_.file("big.npy"), big.data(), kP, kN);
  const std::string stats = dir_.file("s.safetensors");
  const std::string args = "compress --model " + model() + " --layer fc --acts " +
                           dir_.file("big.npy") + " --method dalr --rank 4 --precision fp32" +
                           " --save-stats " + stats + " --out " + out();
  expect_failure(args, "overflowed at fp32");
  test::CommandResult r = run_cli(args);
  EXPECT_NE(r.output.find("Gram matrix"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--precision fp64 or scale the activations"), std::string::npos)
      << r.output;
  EXPECT_FALSE(test::file_exists(stats));
  // At fp64 the same activations are fine.
  r = run_cli(args.substr(0, args.find(" --precision")) + " --out " + out());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::filesystem::remove(out());
}

// Issue 12, finding 6: svd-bc with activations near float's maximum gave an Inf bias in
// the float32 model while the report said "relative error 2.6e-16". Now refused.
TEST_F(Cli, BiasBeyondFloatRangeIsRefused) {
  std::vector<float> big = acts_;
  for (auto& v : big) v = 3e38f;
  write_npy(dir_.file("big.npy"), big.data(), kP, kN);
  const std::string args = "compress --model " + model() + " --layer fc --acts " +
                           dir_.file("big.npy") + " --method svd-bc --rank 4 --out " + out();
  expect_failure(args, "tensor 'fc.1.bias' would hold");
  test::CommandResult r = run_cli(args);
  EXPECT_NE(r.output.find("beyond float32's range"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("scale the activations down"), std::string::npos) << r.output;
}

// Issue 12, finding 7: a NaN in the model's bias was accepted (the report said rel 0).
TEST_F(Cli, NonFiniteBiasIsRefused) {
  SafetensorsFile f(model());
  std::vector<float> bias = f.read_f32("fc.bias");
  bias[3] = std::nanf("");
  std::vector<TensorOut> ts;
  for (const auto& t : f.tensors())
    ts.push_back(t.name == "fc.bias" ? TensorOut::f32("fc.bias", {kM}, bias)
                                     : TensorOut::borrow(f, t));
  write_safetensors(dir_.file("nanbias.safetensors"), ts, f.metadata());
  expect_failure("compress --model " + dir_.file("nanbias.safetensors") + " --layer fc --acts " +
                     acts() + " --method svd --rank 4 --out " + out(),
                 "fc.bias contains NaN or Inf");
}

// Issue 12, finding 16: a --report that cannot be written used to fail after --out was
// already replaced. Now the outputs are committed together: neither is written.
TEST_F(Cli, ReportFailureLeavesTheModelUntouched) {
  test::write_file(out(), "precious");
  const std::string report = dir_.file("no-such-folder/r.json");
  test::CommandResult r = run_cli(base("svd") + " --report " + report);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot write " + report), std::string::npos) << r.output;
  EXPECT_EQ(test::read_file(out()), "precious");
  for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
    EXPECT_EQ(e.path().string().find(kTempMarker), std::string::npos) << "left " << e.path();
  std::filesystem::remove(out());
}

}  // namespace

// Statistics saved from an activation file are bound to the layer's weights: another
// model's layer of the same name and shape is refused; a file without the binding (an
// older version, Python) is accepted with a warning.
TEST_F(Cli, StatisticsOfAnotherModelAreRefused) {
  const std::string s1 = dir_.file("s1.safetensors");
  ASSERT_EQ(run_cli(base("dalr") + " --save-stats " + s1).exit_code, 0);
  std::filesystem::remove(out());
  SafetensorsFile f(model());
  std::vector<float> w = f.read_f32("fc.weight"), b = f.read_f32("fc.bias");
  w[7] += 0.25f;
  const std::string other = dir_.file("other.safetensors");
  write_safetensors(
      other, {TensorOut::f32("fc.weight", {kM, kN}, w), TensorOut::f32("fc.bias", {kM}, b)}, {});
  const std::string tail = " --layer fc --rank 3 --out " + out();
  expect_failure("compress --model " + other + " --stats " + s1 + tail,
                 "was collected with other weights for 'fc'");
  // Without the binding: a warning, in the report too.
  LayerStats<double>::load(s1).save(dir_.file("old.safetensors"));
  test::CommandResult r =
      run_cli("compress --model " + other + " --stats " + dir_.file("old.safetensors") + tail +
              " --report " + dir_.file("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
  ASSERT_EQ(rep["warnings"].size(), 1u) << rep.dump();
  EXPECT_NE(rep["warnings"][0].get<std::string>().find("does not record the weights"),
            std::string::npos);
}

// An error that overflows is reported as not finite, never as a number: null in the JSON,
// "not finite" in the summary, and a warning that says what to do.
TEST_F(Cli, NonFiniteErrorIsNullInTheReport) {
  std::vector<float> huge(acts_);
  for (auto& v : huge) v *= 3e37f;  // finite in fp32; their squares are not
  write_npy(dir_.file("huge.npy"), huge.data(), kP, kN);
  test::CommandResult r = run_cli(base("dalr") + " --precision fp32 --device cpu --acts-test " +
                                  dir_.file("huge.npy") + " --report " + dir_.file("r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("reconstruction error (test):  not finite"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("warning: layer 'fc': the reconstruction error (error_test) is not "
                          "finite: the computation overflowed; use --precision fp64"),
            std::string::npos)
      << r.output;
  auto rep = nlohmann::json::parse(test::read_file(dir_.file("r.json")));
  EXPECT_TRUE(rep["error_test"]["abs"].is_null()) << rep.dump();
  EXPECT_TRUE(rep["error_test"]["rel"].is_null()) << rep.dump();
  EXPECT_TRUE(rep["error_train"]["rel"].is_number()) << rep.dump();
  ASSERT_EQ(rep["warnings"].size(), 1u);
}
