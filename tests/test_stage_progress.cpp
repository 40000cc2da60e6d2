// The progress lines of the long stages (core/stage_progress.hpp): what they print on
// stderr (not a terminal under ctest), that --quiet silences them, that a stage estimated
// under a second starts silently, and the flop counts behind the estimates.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "core/stage_progress.hpp"
#include "dalr/backend.hpp"

using namespace dalr;

namespace {

std::unique_ptr<Backend> cpu_fp32() {
  return make_cpu_backend(Precision::Fp32);
}

TEST(StageProgress, LongStageGetsAStartAndAnEndLineWithTheEstimate) {
  const auto backend = cpu_fp32();
  StageRates rates(*backend);
  const double flops = rates.seconds(1.0) > 0 ? 1.0 / rates.seconds(1.0) * 7.0 : 0;  // 7 s
  testing::internal::CaptureStderr();
  {
    StageProgress line("solve fc7 (test)", flops, rates, /*quiet=*/false);
    line.finish();
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("solve fc7 (test) (est. 7.0 s) ...\n"), std::string::npos) << err;
  EXPECT_NE(err.find("solve fc7 (test) (est. 7.0 s) ... 0.0 s\n"), std::string::npos) << err;
}

TEST(StageProgress, QuietAndShortStagesPrintNothing) {
  const auto backend = cpu_fp32();
  StageRates rates(*backend);
  testing::internal::CaptureStderr();
  {
    StageProgress quiet("solve big", 1e18, rates, /*quiet=*/true);
    quiet.finish();
    StageProgress small("solve small", 1e3, rates, /*quiet=*/false);
    small.finish();
    StageProgress unfinished("solve thrown", 1e3, rates, false);  // destroyed unfinished
  }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(StageProgress, RatesLearnFromStagesThatTookLongEnough) {
  const auto backend = cpu_fp32();
  StageRates rates(*backend);
  const double before = rates.seconds(1e12);
  rates.observe(1e12, 0.01);  // too short to say anything: ignored
  EXPECT_EQ(rates.seconds(1e12), before);
  rates.observe(1e12, 4.0);
  EXPECT_DOUBLE_EQ(rates.seconds(1e12), 4.0);
  EXPECT_DOUBLE_EQ(rates.seconds(5e11), 2.0);
}

TEST(StageProgress, FlopCountsFollowTheAlgebra) {
  const SolveOptions full{Method::Dalr, 256, 1.0, Eigensolver::Full};
  const SolveOptions topk{Method::Dalr, 256, 1.0, Eigensolver::TopK};
  EXPECT_LT(solve_flops(topk, 4096, 4096), solve_flops(full, 4096, 4096));
  EXPECT_GT(solve_flops(full, 4096, 25088), solve_flops(full, 4096, 4096));
  // dalr-exact applies the ridge to m columns, dalr to k.
  EXPECT_GT(solve_flops({Method::DalrExact, 256, 1.0, Eigensolver::Full}, 4096, 4096),
            solve_flops(full, 4096, 4096));
  // lambda = 0: the pseudo-inverse (an eigendecomposition of C) costs more than Cholesky.
  EXPECT_GT(solve_flops({Method::Dalr, 256, 0.0, Eigensolver::Full}, 4096, 4096),
            solve_flops(full, 4096, 4096));
  EXPECT_DOUBLE_EQ(error_flops(10, 20, 3, 0), 2.0 * 13 * 20 * 20);
  EXPECT_DOUBLE_EQ(error_flops(10, 20, 3, 7), 7.0 * (2 * 10 * 20 + 2 * 3 * 30));
  EXPECT_EQ(solve_description(topk, 4096, 4096),
            "dalr, 4096 x 4096, rank 256): eigenvectors of 4096 x 4096 (top 256), Cholesky of "
            "4096 x 4096");
  // The subspace iteration (auto at 4096 / 256 on the CPU) is estimated cheaper than MRRR,
  // as bench_eigen measured it; on the GPU auto is Xsyevdx, estimated as MRRR.
  const SolveOptions autos{Method::Dalr, 256, 1.0, Eigensolver::Auto};
  EXPECT_LT(solve_flops(autos, 4096, 4096), solve_flops(topk, 4096, 4096));
  EXPECT_DOUBLE_EQ(solve_flops(autos, 4096, 4096, false), solve_flops(topk, 4096, 4096));
  EXPECT_LT(solve_flops_dual(autos, 4096, 16384, 2048), solve_flops_dual(topk, 4096, 16384, 2048));
  EXPECT_EQ(solve_description(autos, 4096, 4096),
            "dalr, 4096 x 4096, rank 256): eigenvectors of 4096 x 4096 (top 256, subspace "
            "iteration), Cholesky of 4096 x 4096");
  EXPECT_EQ(solve_description(autos, 4096, 4096, false), solve_description(topk, 4096, 4096));
  EXPECT_EQ(solve_description({Method::Svd, 8, 0.0}, 30, 20),
            "svd, 30 x 20, rank 8): SVD of 30 x 20");
}

}  // namespace
