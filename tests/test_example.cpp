// The shipped example against PyTorch: reference outputs saved once by
// tools/make_reference.py (torch on the network rebuilt from model.bin) for 64 test
// images. The C++ decode + preprocessing + forward pass must reproduce them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/stream.hpp"
#include "cpu/forward.hpp"
#include "dalr/arch.hpp"
#include "dalr/forward.hpp"
#include "dalr/images.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "test_util.hpp"

using namespace dalr;

namespace {

const std::string kDir = std::string(DALR_SOURCE_DIR) + "/examples/fashion2digits/";

std::vector<double> read_all(const std::string& path, int64_t* rows, int64_t* cols) {
  NpyReader r(path);
  *rows = r.rows();
  *cols = r.cols();
  std::vector<double> v(static_cast<size_t>(r.rows() * r.cols()));
  r.read_rows<double>(v.data(), r.rows());
  return v;
}

template <typename T>
double rel_diff(const Matrix<T>& got, const std::vector<double>& want_rowmajor) {
  // got: n x batch column-major == batch x n row-major, the layout of the .npy.
  double num = 0, den = 0;
  for (size_t i = 0; i < want_rowmajor.size(); ++i) {
    const double d = double(got.data[i]) - want_rowmajor[i];
    num += d * d;
    den += want_rowmajor[i] * want_rowmajor[i];
  }
  return std::sqrt(num / den);
}

TEST(Example, ForwardMatchesPyTorch) {
  const auto ref = nlohmann::json::parse(test::read_file(kDir + "reference.json"));
  SafetensorsFile model(kDir + "model.bin");
  const Arch arch = load_arch(model, "");
  const InputSpec& pre = arch.input;
  const int64_t per = pre.channels * pre.crop[0] * pre.crop[1];
  const auto& images = ref["images"];
  const int64_t batch = static_cast<int64_t>(images.size());
  ASSERT_EQ(batch, 64);
  std::vector<float> x(static_cast<size_t>(batch * per));
  for (int64_t i = 0; i < batch; ++i)
    decode_and_preprocess(kDir + images[i].get<std::string>(), pre, x.data() + i * per);

  int64_t r0, c0, r1, c1;
  const std::vector<double> fc0 = read_all(kDir + "reference_fc0_input.npy", &r0, &c0);
  const std::vector<double> logits = read_all(kDir + "reference_logits.npy", &r1, &c1);
  ASSERT_EQ(r0, batch);
  ASSERT_EQ(c0, 1024);
  ASSERT_EQ(c1, 10);

  // float: torch computed in float32 with another summation order: 1e-5 relative.
  const CpuForward<float> f32(arch, model);
  EXPECT_LT(
      rel_diff(f32.run(x.data(), batch, pre.channels, pre.crop[0], pre.crop[1], "classifier.0"),
               fc0),
      1e-5);
  const Matrix<float> out = f32.run(x.data(), batch, pre.channels, pre.crop[0], pre.crop[1]);
  EXPECT_LT(rel_diff(out, logits), 1e-5);
  // double: the reference's own float32 rounding dominates: 1e-5 as well.
  std::vector<double> xd(x.begin(), x.end());
  const CpuForward<double> f64(arch, model);
  EXPECT_LT(rel_diff(f64.run(xd.data(), batch, pre.channels, pre.crop[0], pre.crop[1]), logits),
            1e-5);
  // Same predictions, image by image.
  for (int64_t j = 0; j < batch; ++j) {
    int64_t best = 0, want = 0;
    for (int64_t c = 1; c < 10; ++c) {
      if (out(c, j) > out(best, j)) best = c;
      if (logits[j * 10 + c] > logits[j * 10 + want]) want = c;
    }
    EXPECT_EQ(best, want) << "image " << images[j];
  }
}

TEST(Example, ImageFolderLabelsFollowSortedClassNames) {
  std::vector<std::string> classes;
  const std::vector<Sample> s = list_image_folder(kDir + "test", &classes);
  ASSERT_EQ(classes.size(), 10u);
  for (size_t i = 0; i < classes.size(); ++i) EXPECT_EQ(classes[i], std::to_string(i));
  EXPECT_EQ(s.size(), 2000u);
  const auto ref = nlohmann::json::parse(test::read_file(kDir + "reference.json"));
  for (size_t i = 0; i < ref["images"].size(); ++i) {
    EXPECT_EQ(s[i * 31].path, kDir + ref["images"][i].get<std::string>());
    EXPECT_EQ(s[i * 31].label, ref["labels"][i].get<int64_t>());
  }
}

}  // namespace
