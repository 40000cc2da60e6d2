// `compress --max-drop`: the greedy joint search (the paper's Table 10). The search
// function on accuracies with a known answer (where it stops, how many evaluations),
// and the command line on the shipped example: the report's fields, the accuracy
// within the allowed drop (and equal to `evaluate` on the written model), the factor
// shapes of the final ranks, and the errors of a wrong combination of options.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "dalr/error.hpp"
#include "dalr/joint.hpp"
#include "dalr/safetensors.hpp"
#include "test_util.hpp"

using namespace dalr;
using test::run_cli;
using json = nlohmann::json;

namespace {

TEST(JointSearch, NextRank) {
  EXPECT_EQ(joint_next_rank(256, 0.8), 204);
  EXPECT_EQ(joint_next_rank(10, 0.95), 9);  // at least 1 less
  EXPECT_EQ(joint_next_rank(2, 0.8), 1);
  EXPECT_EQ(joint_next_rank(3, 0.1), 1);  // at least 1
  EXPECT_EQ(joint_next_rank(1, 0.8), 0);  // cannot shrink
}

// With shrink 0.9 and ranks <= 10 every step is exactly one rank less. Layer 0 costs
// 0.25 points per step, layer 1 0.1 * s^2 points after s steps; 1 point allowed:
//   (0,0) -> opts 0.25 / 0.1: layer 1     -> (0,1) 0.1
//   (0,1) -> opts 0.35 / 0.4: layer 0     -> (1,1) 0.35
//   (1,1) -> opts 0.6 / 0.65: layer 0     -> (2,1) 0.6
//   (2,1) -> opts 0.85 / 0.9: layer 0     -> (3,1) 0.85
//   (3,1) -> opts 1.1 / 1.15: both lose more than 1 point: stop at ranks (7, 9).
TEST(JointSearch, StopsWhereItMust) {
  const double base = 0.9;
  int64_t calls = 0;
  auto acc = [&](const std::vector<int64_t>& r) {
    ++calls;
    const double s0 = double(10 - r[0]), s1 = double(10 - r[1]);
    return base - 0.0025 * s0 - 0.001 * s1 * s1;
  };
  const JointSearchResult res = greedy_joint_search({10, 10}, base, 1.0, 0.9, acc);
  EXPECT_EQ(res.ranks, (std::vector<int64_t>{7, 9}));
  EXPECT_NEAR(res.accuracy, base - 0.0085, 1e-12);
  EXPECT_EQ(res.evaluations, 10);
  EXPECT_EQ(calls, 10);
  ASSERT_EQ(res.steps.size(), 5u);
  const std::vector<int> choices = {1, 0, 0, 0, -1};
  for (size_t i = 0; i < choices.size(); ++i) {
    EXPECT_EQ(res.steps[i].choice, choices[i]) << "step " << i;
    EXPECT_EQ(res.steps[i].tried.size(), 2u);
  }
  EXPECT_EQ(res.steps[4].tried[0], (std::vector<int64_t>{6, 9}));
  EXPECT_EQ(res.steps[4].tried[1], (std::vector<int64_t>{7, 8}));
}

TEST(JointSearch, NoOptionWithinTheDropKeepsTheStart) {
  const JointSearchResult res =
      greedy_joint_search({8, 4}, 0.9, 0.5, 0.8, [](const std::vector<int64_t>&) { return 0.8; });
  EXPECT_EQ(res.ranks, (std::vector<int64_t>{8, 4}));
  EXPECT_DOUBLE_EQ(res.accuracy, 0.9);
  EXPECT_EQ(res.evaluations, 2);
  ASSERT_EQ(res.steps.size(), 1u);
  EXPECT_EQ(res.steps[0].choice, -1);
}

TEST(JointSearch, StopsAtRankOne) {
  // No loss at all: shrinks until every layer is at rank 1; a layer at rank 1 is no
  // longer tried. (2,2) -> (1,2) -> (1,1): 2 + 1 evaluations.
  const JointSearchResult res =
      greedy_joint_search({2, 2}, 0.5, 0.0, 0.8, [](const std::vector<int64_t>&) { return 0.5; });
  EXPECT_EQ(res.ranks, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(res.evaluations, 3);
  ASSERT_EQ(res.steps.size(), 2u);
  EXPECT_EQ(res.steps[0].choice, 0);  // a tie goes to the earlier layer
  EXPECT_EQ(res.steps[1].tried.size(), 1u);
}

TEST(JointSearch, BadArguments) {
  auto acc = [](const std::vector<int64_t>&) { return 0.5; };
  EXPECT_THROW(greedy_joint_search({4}, 0.5, 1.0, 1.0, acc), Error);
  EXPECT_THROW(greedy_joint_search({4}, 0.5, -1.0, 0.8, acc), Error);
}

const std::string kEx = std::string(DALR_SOURCE_DIR) + "/examples/fashion2digits/";
const std::string kJoint = "compress --model " + kEx + "model.bin --acts stream --data " + kEx +
                           "train --limit 600 --shuffle --seed 5 --layer classifier.0,classifier.3 "
                           "--method dalr --device cpu -q";

TEST(JointCli, ShippedExample) {
  test::TempDir dir;
  const std::string out = dir.file("small.bin"), rep = dir.file("r.json");
  const auto r = run_cli(kJoint + " --max-drop 1.0 --val " + kEx + "test --val-limit 300" +
                         " --test " + kEx + "test --out " + out + " --report " + rep);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(test::read_file(rep))["joint"];
  for (const char* k : {"steps", "ranks", "kept_fraction", "kept_fraction_layers", "top1",
                        "base_top1", "budget_comparison", "evaluations", "start_ranks"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["val"]["images"], 300);
  EXPECT_EQ(j["start_ranks"], json({256, 128}));
  const double base = j["base_top1"], top1 = j["top1"];
  EXPECT_GE(top1, base - 0.01 - 1e-12);
  const std::vector<int64_t> ranks = j["ranks"];
  ASSERT_EQ(ranks.size(), 2u);
  EXPECT_LT(ranks[0], 256);
  EXPECT_LT(ranks[1], 128);
  // The last step is the one that stopped the search: every option lost too much.
  ASSERT_FALSE(j["steps"].empty());
  const json& last = j["steps"].back();
  EXPECT_TRUE(last["choice"].is_null());
  for (const json& t : last["tried"]) EXPECT_LT(t["top1"].get<double>(), base - 0.01);
  // Every accepted step is within the drop; the evaluations are the options tried.
  int64_t tried = 0;
  for (const json& s : j["steps"]) {
    tried += static_cast<int64_t>(s["tried"].size());
    if (!s["choice"].is_null())
      EXPECT_GE(s["tried"][s["choice"].get<size_t>()]["top1"].get<double>(), base - 0.01 - 1e-12);
  }
  EXPECT_EQ(j["evaluations"], tried);
  const double kept =
      double(ranks[0] * (256 + 1024) + ranks[1] * (128 + 256)) / double(256 * 1024 + 128 * 256);
  EXPECT_DOUBLE_EQ(j["kept_fraction"].get<double>(), kept);
  EXPECT_DOUBLE_EQ(j["kept_fraction_layers"]["classifier.0"].get<double>(),
                   double(ranks[0] * (256 + 1024)) / (256.0 * 1024));
  // --budget at the same fraction: within it, with its own accuracy.
  EXPECT_LE(j["budget_comparison"]["kept_fraction"].get<double>(), kept + 1e-12);
  EXPECT_TRUE(j["budget_comparison"].contains("top1"));
  EXPECT_EQ(j["budget_comparison"]["ranks"].size(), 2u);

  // The written model has the final ranks' factors...
  SafetensorsFile f(out);
  EXPECT_EQ(f.at("classifier.0.0.weight").shape, (std::vector<int64_t>{ranks[0], 1024}));
  EXPECT_EQ(f.at("classifier.0.1.weight").shape, (std::vector<int64_t>{256, ranks[0]}));
  EXPECT_EQ(f.at("classifier.3.0.weight").shape, (std::vector<int64_t>{ranks[1], 256}));
  EXPECT_EQ(f.at("classifier.3.1.weight").shape, (std::vector<int64_t>{128, ranks[1]}));
  // ...and `evaluate` on the same validation images gives the search's accuracy.
  const auto e =
      run_cli("evaluate --model " + out + " --data " + kEx +
              "test --limit 300 --shuffle --seed 5 --device cpu -q --report " + dir.file("e.json"));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_EQ(json::parse(test::read_file(dir.file("e.json")))["top1"].get<double>(), top1);
  // --test: the whole test folder, unshuffled, as `evaluate` sees it.
  const auto t = run_cli("evaluate --model " + out + " --data " + kEx +
                         "test --device cpu -q --report " + dir.file("t.json"));
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_EQ(j["test"]["images"], 2000);
  EXPECT_EQ(json::parse(test::read_file(dir.file("t.json")))["top1"].get<double>(),
            j["test"]["top1"].get<double>());
  EXPECT_DOUBLE_EQ(j["test"]["base_top1"].get<double>(), 0.9495);
}

// Issue 16: conv layers in the search (with an fc layer): candidates run with the conv
// pairs substituted, the statistics from one pass of the original network (no sequential
// passes), and the search's accuracy is `evaluate`'s on the written model.
TEST(JointCli, ConvLayers) {
  test::TempDir dir;
  const std::string out = dir.file("conv.bin"), rep = dir.file("c.json");
  const auto r = run_cli("compress --model " + kEx + "model.bin --acts stream --data " + kEx +
                         "train --limit 400 --layer features.6,features.3,classifier.0 --device "
                         "cpu -q --max-drop 2 --shrink 0.5 --shuffle --seed 3 --val " +
                         kEx + "test --val-limit 200 --out " + out + " --report " + rep);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json all = json::parse(test::read_file(rep)), j = all["joint"];
  EXPECT_FALSE(all.contains("sequential"));
  EXPECT_EQ(j["start_ranks"], json({64, 32, 256}));
  const std::vector<int64_t> ranks = j["ranks"];
  ASSERT_EQ(ranks.size(), 3u);
  EXPECT_GE(j["top1"].get<double>(), j["base_top1"].get<double>() - 0.02 - 1e-12);
  // Multiply-adds per image: features.6 at 8x8, features.3 at 16x16 positions, fc once.
  const double after = 64.0 * ranks[0] * (64 + 288) + 256.0 * ranks[1] * (32 + 144) +
                       double(ranks[2]) * (256 + 1024);
  const double before = 64.0 * 64 * 288 + 256.0 * 32 * 144 + 256.0 * 1024;
  EXPECT_NEAR(j["flops_kept_fraction"].get<double>(), after / before, 1e-12);
  SafetensorsFile f(out);
  EXPECT_EQ(f.at("features.6.0.weight").shape, (std::vector<int64_t>{ranks[0], 32, 3, 3}));
  EXPECT_EQ(f.at("features.3.1.weight").shape, (std::vector<int64_t>{32, ranks[1], 1, 1}));
  const auto e =
      run_cli("evaluate --model " + out + " --data " + kEx +
              "test --limit 200 --shuffle --seed 3 --device cpu -q --report " + dir.file("e.json"));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_EQ(json::parse(test::read_file(dir.file("e.json")))["top1"].get<double>(),
            j["top1"].get<double>());
}

TEST(JointCli, Errors) {
  test::TempDir dir;
  const std::string out = " --out " + dir.file("o.bin");
  auto fails = [&](const std::string& args, const std::string& msg) {
    const auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.output.find(msg), std::string::npos) << r.output;
  };
  fails(kJoint + " --max-drop 1" + out, "--val");
  fails(kJoint + " --rank 4 --test " + kEx + "test" + out, "--test is used with --max-drop");
  fails(kJoint + " --max-drop 1 --rank 4 --val " + kEx + "test" + out, "not both");
  fails(kJoint + " --max-drop -1 --val " + kEx + "test" + out, "--max-drop");
  fails(kJoint + " --rank 4 --val " + kEx + "test" + out, "--val is used with --max-drop");
  fails(kJoint + " --max-drop 1 --shrink 1.5 --val " + kEx + "test" + out, "--shrink");
}

}  // namespace
