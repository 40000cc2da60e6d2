// Dilated convolutions in CudnnForward<T> against a brute-force convolution in double
// (independent of both forward passes): a "same"-padded 3x3 conv of dilation 2 with a
// bias (its ReLU fused), then a bias-less 3x3 conv of dilation 3 at stride 2 with an
// unfused ReLU. The final output and a tap in the middle; batch 1 and 4; fp64, fp32 and
// the two 16-bit storages (channels-last tensor-core convolutions).
//
// Tolerances (relative Frobenius error against exact arithmetic): fp64 1e-10; fp32 1e-4;
// 16-bit storage rounds the input, the weights and each layer's outputs, a few roundings
// of the format's unit each: fp16 1e-2 (unit 2^-11), bf16 5e-2 (unit 2^-8). Dilation
// ignored, or an NHWC layout read as NCHW, gives errors of order 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/conv_geometry.hpp"
#include "dalr/cudnn_forward.hpp"
#include "dalr/safetensors.hpp"
#include "gpu_test.hpp"
#include "io/layer_params.hpp"
#include "oracle.hpp"
#include "random_model.hpp"
#include "test_util.hpp"
#include "twin.hpp"

namespace dc = dalr::cuda;
using dalr::Arch;
using dalr::LayerSpec;
using dalr::Matrix;

namespace {

using dalr::test::announce_seed;

// 3x12x10 -> d1 k3 p2 dilation 2 (6x12x10) -> relu -> d2 k3 s2 dilation 3, no bias
// (5x3x2) -> relu. The dilations are set after parsing, so that the test does not
// depend on the JSON field.
const char* kInput = R"({"channels":3,"crop":[12,10]})";
const char* kNet = R"([
  {"type":"conv","name":"d1","in":3,"out":6,"kernel":3,"pad":2},
  {"type":"relu"},
  {"type":"conv","name":"d2","in":6,"out":5,"kernel":3,"stride":2,"bias":false},
  {"type":"relu"}])";

Arch dilated_arch() {
  Arch a = dalr::parse_arch(kNet, kInput);
  a.layers[0].dilation = 2;
  a.layers[2].dilation = 3;
  return a;
}

// One image through conv layer l (weight out x in x k x k row-major, bias or empty),
// straight from the definition, then a ReLU: y[o][oy][ox] = relu(b[o] + sum over c, i, j
// of w[o][c][i][j] x[c][oy s - p + i d][ox s - p + j d]), zero outside the image.
std::vector<double> conv_relu(const LayerSpec& l, const std::vector<double>& w,
                              const std::vector<double>& b, const std::vector<double>& x, int64_t h,
                              int64_t wd, int64_t* oh, int64_t* ow) {
  const int64_t k = l.kernel, s = l.stride, p = l.pad, d = l.dilation;
  *oh = (h + 2 * p - d * (k - 1) - 1) / s + 1;
  *ow = (wd + 2 * p - d * (k - 1) - 1) / s + 1;
  std::vector<double> y(static_cast<size_t>(l.out * *oh * *ow));
  for (int64_t o = 0; o < l.out; ++o)
    for (int64_t oy = 0; oy < *oh; ++oy)
      for (int64_t ox = 0; ox < *ow; ++ox) {
        double acc = b.empty() ? 0.0 : b[o];
        for (int64_t c = 0; c < l.in; ++c)
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j) {
              const int64_t iy = oy * s - p + i * d, ix = ox * s - p + j * d;
              if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
              acc += w[((o * l.in + c) * k + i) * k + j] * x[(c * h + iy) * wd + ix];
            }
        y[(o * *oh + oy) * *ow + ox] = acc > 0 ? acc : 0.0;
      }
  return y;
}

template <typename T>
void check(dc::Math math, double tol, dalr::ActStorage storage) {
  DALR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(announce_seed(20250317));
  const Arch arch = dilated_arch();
  // The arch's own shapes must see the dilation (cuDNN's output shape is checked
  // against them): d1 keeps 12x10, d2 gives 3x2.
  const auto shapes = dalr::layer_input_shapes(arch, 3, 12, 10);
  ASSERT_TRUE(shapes[2].h == 12 && shapes[2].w == 10 && shapes[4].h == 3 && shapes[4].w == 2)
      << "layer_input_shapes ignores LayerSpec::dilation: d1 gives " << shapes[2].h << "x"
      << shapes[2].w << ", d2 " << shapes[4].h << "x" << shapes[4].w;

  dalr::test::TempDir dir;
  const std::string path = dir.file("dilated.safetensors");
  dalr::test::write_random_model(path, arch, rng);
  const dalr::SafetensorsFile file(path);
  std::vector<double> w1, b1, w2, b2;
  dalr::load_layer_params(arch.layers[0], file, &w1, &b1);
  dalr::load_layer_params(arch.layers[2], file, &w2, &b2);
  ASSERT_TRUE(b2.empty());
  const dc::CudnnForward<T> gpu(arch, file, math, 0, storage);

  for (const int64_t batch : {int64_t(1), int64_t(4)}) {
    const std::vector<double> x = dalr::test::randn(static_cast<size_t>(batch * 3 * 12 * 10), rng);
    Matrix<double> mid(6 * 12 * 10, batch), out(5 * 3 * 2, batch);  // the brute force's
    for (int64_t j = 0; j < batch; ++j) {
      const std::vector<double> img(x.begin() + j * 360, x.begin() + (j + 1) * 360);
      int64_t h1 = 0, w1o = 0, h2 = 0, w2o = 0;
      const auto y1 = conv_relu(arch.layers[0], w1, b1, img, 12, 10, &h1, &w1o);
      const auto y2 = conv_relu(arch.layers[2], w2, b2, y1, h1, w1o, &h2, &w2o);
      std::copy(y1.begin(), y1.end(), mid.ptr() + j * mid.rows);
      std::copy(y2.begin(), y2.end(), out.ptr() + j * out.rows);
    }
    const std::vector<T> xt(x.begin(), x.end());
    const std::string at = " at batch " + std::to_string(batch);
    Matrix<T> got = gpu.run(xt.data(), batch, 3, 12, 10);
    dalr::test::twin::expect_close(dalr::oracle::to_double(got), out, tol, "output" + at);
    got = gpu.run(xt.data(), batch, 3, 12, 10, "d2");
    dalr::test::twin::expect_close(dalr::oracle::to_double(got), mid, tol, "input of d2" + at);
  }
}

TEST(CudnnDilation, MatchesBruteForceFp64) {
  check<double>(dc::Math::Exact, 1e-10, dalr::ActStorage::Fp32);
}

TEST(CudnnDilation, MatchesBruteForceFp32) {
  check<float>(dc::Math::Exact, 1e-4, dalr::ActStorage::Fp32);
}

TEST(CudnnDilation, MatchesBruteForceFp16Storage) {
  check<float>(dc::Math::Exact, 1e-2, dalr::ActStorage::Fp16);
}

TEST(CudnnDilation, MatchesBruteForceBf16Storage) {
  check<float>(dc::Math::Exact, 5e-2, dalr::ActStorage::Bf16);
}

}  // namespace
