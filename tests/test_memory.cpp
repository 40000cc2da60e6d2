// The compress job's memory model and check: the stages' terms against hand-computed
// bytes at odd sizes (host: primal and dual; device: the GPU steps' own terms), sizes as
// --memory-limit reads them, the machine's numbers, and end to end: a job refused below
// its estimate (the numbers, the remedies, nothing written, exit 1), run above it.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/memory_check.hpp"
#include "core/memory_model.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "test_util.hpp"

using namespace dalr;

namespace {

double stage(const MemoryEstimate& e, const std::string& name, bool device = false) {
  for (const StageMemory& s : e.stages)
    if (s.name == name) return device ? s.device_bytes() : s.host_bytes();
  ADD_FAILURE() << "no stage " << name;
  return -1;
}

double term(const MemoryEstimate& e, const std::string& st, const std::string& name) {
  for (const StageMemory& s : e.stages)
    if (s.name == st)
      for (const MemoryTerm& t : s.host)
        if (t.name == name) return t.bytes;
  ADD_FAILURE() << "no term '" << name << "' in " << st;
  return -1;
}

// A 7 x 11 layer at rank 3, fp64, 13 samples of an activation file in chunks of 5.
MemoryShape file_job() {
  MemoryShape s;
  s.elem = 8;
  s.method = Method::Dalr;
  s.eigensolver = Eigensolver::Full;
  s.batch = 5;
  s.samples = 13;
  s.model_bytes = 400;
  MemoryShape::Layer l;
  l.name = "fc";
  l.m = 7;
  l.n = 11;
  l.k = 3;
  l.file_bytes = 336;  // (77 + 7) float32 values
  s.layers = {l};
  return s;
}

TEST(MemoryModel, PrimalFileJobByHand) {
  const MemoryEstimate e = estimate_memory(file_job(), 1000);
  // load: the layer's pages 336, W and b (77 + 7) x 8 = 672, W as read 77 x 8 = 616.
  EXPECT_EQ(stage(e, "load"), 336 + 672 + 616);
  // statistics: + C 121 x 8 = 968; chunks of 5 < CpuStats' 256 are gathered in a block
  // 11 x 256 x 8 = 22528; sums and maxima of the inputs 2 x 11 doubles = 176 (dalr keeps
  // none of the outputs); the file's chunk 11 x 5 x 8 = 440.
  for (const StageMemory& st : e.stages)
    for (const MemoryTerm& t : st.host)
      EXPECT_EQ(t.name.find("output statistics"), std::string::npos);
  EXPECT_EQ(stage(e, "statistics"), 336 + 672 + 968 + 176 + 22528 + 440);
  // After the pass: the above less the block and chunk, the factors (3 x 18 + 7) x 8 = 488,
  // the measured BLAS buffers 5e6 + 448 x 11 x 8.
  const double resident = 336 + 672 + 968 + 176 + 488 + (5e6 + 448 * 11 * 8);
  // solve: W C 616, the factor of C + lambda I 968, G 49 x 8 = 392 and syevd's workspace
  // (1 + 6 x 7 + 2 x 49) x 8 + 7 x 8 eigenvalues + (3 + 5 x 7) x 4 integers = 1336.
  EXPECT_EQ(term(e, "solve", "G (m x m), its eigensolver and the products after it"), 392 + 1336);
  EXPECT_EQ(stage(e, "solve"), resident + 616 + 968 + 392 + 1336);
  // error over the file: the chunk 440, Y, Yhat and B x (2 x 7 + 3) x 5 x 8 = 680.
  EXPECT_EQ(stage(e, "error"), resident + 440 + 680);
  // write: every tensor's pages (400, not 336), the factors as float32 61 x 4 = 244, one
  // factor in row-major order 3 x 11 x 8 = 264.
  EXPECT_EQ(stage(e, "write"), resident - 336 + 400 + 244 + 264);
  EXPECT_EQ(e.host_peak(), 1000 + stage(e, "solve"));
  EXPECT_EQ(e.host_peak_stage().name, "solve");
  EXPECT_EQ(e.device_peak(), 0);
  // The outputs' statistics where something reads them (keeps_output_statistics): Y is
  // m x min(256, 13) = 7 x 13 x 8 = 728, the sums and maxima 2 (11 + 7) doubles = 288.
  for (const bool save : {false, true}) {
    MemoryShape s = file_job();
    if (save)
      s.save_stats = true;
    else
      s.method = Method::PruneMean;
    const MemoryEstimate o = estimate_memory(s, 1000);
    EXPECT_EQ(term(o, "statistics", "output statistics' scratch (m x 13)"), 728);
    EXPECT_EQ(stage(o, "statistics"), 336 + 672 + 968 + 728 + 288 + 22528 + 440);
  }
}

TEST(MemoryModel, DualFileJobByHand) {
  MemoryShape s = file_job();
  s.samples = 9;
  s.layers[0].dual = true;
  s.layers[0].kept = 9;
  s.no_error = true;
  const MemoryEstimate e = estimate_memory(s);
  // statistics: the pages, W, and X 11 x 9 x 8 = 792 (read in place: no chunk, no C).
  EXPECT_EQ(term(e, "statistics", "X, the kept samples (11 x 9)"), 792);
  EXPECT_EQ(stage(e, "statistics"), 336 + 672 + 792);
  // solve: + factors 488, BLAS 5e6 + 256 (11 + 9) x 8; Z 7 x 9 x 8 = 504, K and its factor
  // 2 x 81 x 8 = 1296, G and syevd as above 1728.
  const double resident = 336 + 672 + 792 + 488 + (5e6 + 256 * 20 * 8);
  EXPECT_EQ(stage(e, "solve"), resident + 504 + 1296 + 1728);
  EXPECT_EQ(stage(e, "error"), resident);  // --no-error
  // The kept samples grow the peak by n x elem a sample, and nothing else does (but the
  // dual's own p x p and m x p products, and the BLAS term's 256 p).
  MemoryShape t = s;
  t.samples = t.layers[0].kept = 10;
  const double grow = estimate_memory(t).host_peak() - e.host_peak();
  EXPECT_EQ(grow, 11 * 8 + 7 * 8 + 2 * (100 - 81) * 8 + 256 * 8);
}

TEST(MemoryModel, GpuJobUsesTheStepsOwnTerms) {
  MemoryShape s = file_job();
  s.cuda = true;
  s.elem = 4;
  const MemoryEstimate e = estimate_memory(s);
  const double c = 121 * 4;  // C stays on the device after the pass
  EXPECT_EQ(stage(e, "statistics", true), total_bytes(gpu_stats_terms(11, 0, 5, 4)));  // no W X
  // cuda::solve: 2 x 77 + 121 + 49 + (7 + 22) + 21 + 66 + 33 + syevd(11) 309 = 782 values,
  // and the 64 MiB reserve.
  EXPECT_EQ(total_bytes(gpu_solve_terms(Method::Dalr, 7, 11, 3, 4)), 782 * 4 + 67108864.0);
  EXPECT_EQ(stage(e, "solve", true), c + 782 * 4 + 67108864.0);
  EXPECT_EQ(e.device_peak(), c + 782 * 4 + 67108864.0);
  EXPECT_EQ(e.device_peak_stage().name, "solve");
  // The dual's: W, X, Z, 2 K, 3 Z^T, G, eigenvalues, U S B, syevd(9): (77 + 99 + 63 + 162
  // + 189 + 49 + 25 + 21 + 27 + 33 + 217) values.
  EXPECT_EQ(total_bytes(gpu_solve_dual_terms(7, 11, 9, 3, 4)), 962 * 4 + 67108864.0);
  // The host holds no C: W, the pinned staging blocks, the file's chunk.
  EXPECT_EQ(stage(e, "statistics"), 336 + 84 * 4 + 2 * 11 * 5 * 4 + 11 * 5 * 4);
}

TEST(MemoryModel, SeveralLayersKeepTheirTermsApart) {
  MemoryShape s = file_job();
  s.source = MemoryShape::Source::Stream;
  s.layers.push_back(s.layers[0]);
  s.layers[1].name = "fc2";
  s.layers[1].n = 7;
  const MemoryEstimate e = estimate_memory(s);
  EXPECT_EQ(term(e, "statistics", "C (n x n), fc"), 121 * 8);
  EXPECT_EQ(term(e, "statistics", "C (n x n), fc2"), 49 * 8);
  EXPECT_EQ(memory_json(e)["stages"]["statistics"]["host_terms"].size(),
            e.stages[1].host.size());  // no two terms share a name
}

TEST(MemorySize, UnitsAsDocumented) {
  EXPECT_EQ(parse_memory_size("123456"), 123456);
  EXPECT_EQ(parse_memory_size("8G"), 8e9);
  EXPECT_EQ(parse_memory_size("8gb"), 8e9);
  EXPECT_EQ(parse_memory_size("500M"), 5e8);
  EXPECT_EQ(parse_memory_size("2K"), 2000);
  EXPECT_EQ(parse_memory_size("2KiB"), 2048);
  EXPECT_EQ(parse_memory_size("1.5Gi"), 1.5 * 1073741824.0);
  EXPECT_EQ(parse_memory_size("1T"), 1e12);
  for (const char* bad : {"", "G", "-1G", "8X", "8GG", "Ki", "8i", "none ", "0", "inf"})
    EXPECT_NE(test::error_message([&] { parse_memory_size(bad); }).find("--memory-limit must be"),
              std::string::npos)
        << bad;
}

TEST(MemorySize, TheMachineIsRead) {
  const HostMemory h = probe_host_memory();
  EXPECT_GT(h.resident, 1e6);  // a process with its libraries
  EXPECT_GE(h.peak, h.resident);
  EXPECT_GT(h.available, 0);
}

// ---- end to end ----

// A 301 x 2003 layer and 157 random samples: at fp64 C and its factor (2 x 32 MB) stand out
// of the program's own memory, so that the remedies change the estimate.
class MemoryCli : public ::testing::Test {
 protected:
  static constexpr int64_t kM = 301, kN = 2003, kP = 157;
  void SetUp() override {
    std::mt19937_64 rng(test::test_seed(57));
    const Matrix<float> w = test::random_matrix<float>(kN, kM, rng, 0.02);  // row-major m x n
    std::vector<float> b(kM, 0.1f);
    write_safetensors(
        dir_.file("model.bin"),
        {TensorOut::f32("fc.weight", {kM, kN}, w.data), TensorOut::f32("fc.bias", {kM}, b)}, {});
    Matrix<float> x = test::random_matrix<float>(kN, kP, rng);
    for (float& v : x.data) v = std::fabs(v);
    write_npy(dir_.file("acts.npy"), x.ptr(), kP, kN);
  }
  test::CommandResult run(const std::string& name, const std::string& extra) {
    return test::run_cli("--model " + dir_.file("model.bin") + " --acts " + dir_.file("acts.npy") +
                         " --layer fc --rank 12 --out " + dir_.file(name + ".bin") + " --report " +
                         dir_.file(name + ".json") + " --device cpu -q " + extra);
  }
  nlohmann::json report(const std::string& name) {
    return nlohmann::json::parse(test::read_file(dir_.file(name + ".json")));
  }
  test::TempDir dir_;
};

TEST_F(MemoryCli, RefusedBelowTheEstimateRunsAboveIt) {
  const std::string job = "--solve primal --precision fp64";
  const test::CommandResult free_run = run("free", job);
  ASSERT_EQ(free_run.exit_code, 0) << free_run.output;
  const nlohmann::json mem = report("free")["memory"];
  const double need = mem["host_peak_bytes"], program = mem["baseline_bytes"];
  EXPECT_EQ(mem["host_peak_stage"], "solve");
  EXPECT_GT(mem["host_limit_bytes"].get<double>(), need);  // this machine's
  EXPECT_GT(mem["host_peak_measured_bytes"].get<double>(), 0);
  EXPECT_EQ(report("free")["solve_reason"], "--solve primal");

  const test::CommandResult low = run(
      "low", job + " --memory-limit " + std::to_string(int64_t(program + 0.6 * (need - program))));
  EXPECT_EQ(low.exit_code, 1) << low.output;
  for (const std::string words :
       {"not enough memory for this job: its solve stage needs ", "GB on the host but ",
        "is available to this process (--memory-limit)", "Largest terms: C (n x n) ",
        "--solve dual (p = 157 < n): ", "--precision fp32: ", "Nothing was read or written"})
    EXPECT_NE(low.output.find(words), std::string::npos) << words << " in " << low.output;
  EXPECT_FALSE(test::file_exists(dir_.file("low.bin")));
  EXPECT_FALSE(test::file_exists(dir_.file("low.json")));

  const test::CommandResult high =
      run("high", job + " --memory-limit " + std::to_string(int64_t(1.05 * need)));
  ASSERT_EQ(high.exit_code, 0) << high.output;
  EXPECT_EQ(report("high")["memory"]["host_limit_source"], "--memory-limit");
  EXPECT_EQ(test::read_file(dir_.file("high.bin")), test::read_file(dir_.file("free.bin")));

  const test::CommandResult none = run("none", job + " --memory-limit none");
  ASSERT_EQ(none.exit_code, 0) << none.output;
  EXPECT_EQ(report("none")["memory"]["checked"], false);
  const test::CommandResult bad = run("bad", job + " --memory-limit 8X");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("--memory-limit must be a size"), std::string::npos) << bad.output;
}

}  // namespace
