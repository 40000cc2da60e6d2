// The one parser of --precision (dalr/precision.hpp) and what each value means, and the
// backends made from it.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dalr/backend.hpp"
#include "dalr/precision.hpp"
#include "test_util.hpp"

namespace {

using dalr::ActStorage;
using dalr::Precision;

struct Row {
  const char* text;
  Precision value;
  bool is_double, tf32;
  ActStorage storage;
};

// Every user-facing choice, written out by hand (not derived from the parser's table).
const std::vector<Row> kRows = {
    {"fp64", Precision::Fp64, true, false, ActStorage::Fp32},
    {"fp32", Precision::Fp32, false, false, ActStorage::Fp32},
    {"tf32", Precision::Tf32, false, true, ActStorage::Fp32},
    {"fp16", Precision::Fp16, false, false, ActStorage::Fp16},
    {"bf16", Precision::Bf16, false, false, ActStorage::Bf16},
};

TEST(Precision, EveryValueParsesAndRoundTrips) {
  for (const Row& r : kRows) {
    SCOPED_TRACE(r.text);
    EXPECT_EQ(dalr::parse_precision(r.text, /*device_is_cpu=*/false), r.value);
    if (r.value != Precision::Tf32) EXPECT_EQ(dalr::parse_precision(r.text, true), r.value);
    EXPECT_EQ(std::string(dalr::precision_name(r.value)), r.text);
    EXPECT_EQ(dalr::uses_double(r.value), r.is_double);
    EXPECT_EQ(dalr::uses_tf32(r.value), r.tf32);
    EXPECT_EQ(dalr::act_storage(r.value), r.storage);
  }
}

TEST(Precision, AutoFollowsTheDevice) {
  EXPECT_EQ(dalr::parse_precision("auto", /*device_is_cpu=*/true), Precision::Fp64);
  EXPECT_EQ(dalr::parse_precision("auto", /*device_is_cpu=*/false), Precision::Fp32);
}

TEST(Precision, Tf32OnTheCpuIsRefused) {
  const std::string msg = dalr::test::error_message([] { dalr::parse_precision("tf32", true); });
  EXPECT_NE(msg.find("--precision tf32 needs --device cuda"), std::string::npos) << msg;
  // A CPU backend cannot be made for it either (the library's own guard).
  const std::string b = dalr::test::error_message([] { dalr::make_cpu_backend(Precision::Tf32); });
  EXPECT_NE(b.find("tf32 needs --device cuda"), std::string::npos) << b;
}

TEST(Precision, GarbageIsRefusedNamingTheChoices) {
  for (const char* bad : {"fp8", "", "FP32", "fp32 ", "double", "autox"}) {
    for (bool cpu : {true, false}) {
      const std::string msg = dalr::test::error_message([&] { dalr::parse_precision(bad, cpu); });
      EXPECT_NE(msg.find("--precision must be fp64, fp32, tf32, fp16 or bf16 (got '" +
                         std::string(bad) + "')"),
                std::string::npos)
          << msg;
    }
  }
}

TEST(Precision, TheCpuBackendHoldsItsPrecision) {
  for (const Row& r : kRows) {
    if (r.value == Precision::Tf32) continue;
    EXPECT_EQ(dalr::make_cpu_backend(r.value)->precision(), r.value) << r.text;
  }
  EXPECT_EQ(dalr::make_cpu_backend()->precision(), Precision::Fp64);
}

}  // namespace
