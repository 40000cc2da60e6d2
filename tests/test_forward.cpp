// The CPU forward pass, against naive float64 loops written here. (The architecture
// description it runs is tested in test_arch.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <random>
#include <set>

#include "arch_nets.hpp"
#include "cpu/dnnl_conv.hpp"
#include "cpu/forward.hpp"
#include "cpu/forward_ops.hpp"
#include "dalr/arch.hpp"
#include "dalr/error.hpp"
#include "dalr/forward.hpp"
#include "dalr/safetensors.hpp"
#include "io/half.hpp"
#include "test_util.hpp"

using namespace dalr;

namespace {

using test::expect_error;
using test::kInput;
using test::kInput2;
using test::kNet1;
using test::kNet2;
using test::randn;
using test::random_weights;
using test::rel_diff;
using test::Tensors;
using test::write_model;

// ------------------------------------------------------------ naive float64 reference

struct T4 {  // NCHW, row-major
  int64_t n = 0, c = 0, h = 0, w = 0;
  std::vector<double> v;
  T4() = default;
  T4(int64_t n_, int64_t c_, int64_t h_, int64_t w_)
      : n(n_), c(c_), h(h_), w(w_), v(static_cast<size_t>(n_ * c_ * h_ * w_), 0.0) {}
  double& at(int64_t a, int64_t b, int64_t y, int64_t x) {
    return v[((a * c + b) * h + y) * w + x];
  }
  double at(int64_t a, int64_t b, int64_t y, int64_t x) const {
    return v[((a * c + b) * h + y) * w + x];
  }
};

// PyTorch's Conv2d: tap (ky, kx) reads pixel (oy s + ky d - p, ox s + kx d - p).
T4 ref_conv(const T4& x, const std::vector<double>& wt, const std::vector<double>* bias, int64_t o,
            int64_t k, int64_t s, int64_t p, int64_t d = 1) {
  const int64_t span = d * (k - 1) + 1;
  T4 y(x.n, o, (x.h + 2 * p - span) / s + 1, (x.w + 2 * p - span) / s + 1);
  for (int64_t b = 0; b < x.n; ++b)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t oy = 0; oy < y.h; ++oy)
        for (int64_t ox = 0; ox < y.w; ++ox) {
          long double acc = bias ? (*bias)[oc] : 0.0;
          for (int64_t ic = 0; ic < x.c; ++ic)
            for (int64_t ky = 0; ky < k; ++ky)
              for (int64_t kx = 0; kx < k; ++kx) {
                const int64_t iy = oy * s + ky * d - p, ix = ox * s + kx * d - p;
                if (iy < 0 || ix < 0 || iy >= x.h || ix >= x.w) continue;
                acc += wt[((oc * x.c + ic) * k + ky) * k + kx] * x.at(b, ic, iy, ix);
              }
          y.at(b, oc, oy, ox) = static_cast<double>(acc);
        }
  return y;
}

// Pooling over explicit windows: max or mean.
T4 ref_pool(const T4& x, int64_t oh, int64_t ow, bool is_max,
            const std::function<void(int64_t, int64_t, int64_t*, int64_t*)>& rows,
            const std::function<void(int64_t, int64_t, int64_t*, int64_t*)>& cols) {
  T4 y(x.n, x.c, oh, ow);
  for (int64_t b = 0; b < x.n; ++b)
    for (int64_t c = 0; c < x.c; ++c)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          int64_t y0, y1, x0, x1;
          rows(oy, oh, &y0, &y1);
          cols(ox, ow, &x0, &x1);
          double m = -INFINITY, sum = 0;
          for (int64_t iy = y0; iy < y1; ++iy)
            for (int64_t ix = x0; ix < x1; ++ix) {
              m = std::max(m, x.at(b, c, iy, ix));
              sum += x.at(b, c, iy, ix);
            }
          y.at(b, c, oy, ox) = is_max ? m : sum / double((y1 - y0) * (x1 - x0));
        }
  return y;
}

T4 ref_fixed_pool(const T4& x, int64_t k, int64_t s, bool is_max) {
  auto win = [&](int64_t o, int64_t, int64_t* a, int64_t* b) { *a = o * s, *b = o * s + k; };
  return ref_pool(x, (x.h - k) / s + 1, (x.w - k) / s + 1, is_max, win, win);
}

// PyTorch adaptive pooling, with the issue's formula in floating point.
T4 ref_adaptive(const T4& x, int64_t oh, int64_t ow) {
  auto bins = [](int64_t in) {
    return [in](int64_t i, int64_t out, int64_t* a, int64_t* b) {
      *a = static_cast<int64_t>(std::floor(double(i) * in / out));
      *b = static_cast<int64_t>(std::ceil(double(i + 1) * in / out));
    };
  };
  return ref_pool(x, oh, ow, false, bins(x.h), bins(x.w));
}

void ref_relu(T4& x) {
  for (double& v : x.v) v = std::max(v, 0.0);
}

void ref_bn(T4& x, const Tensors& t, const std::string& name, double eps) {
  for (int64_t b = 0; b < x.n; ++b)
    for (int64_t c = 0; c < x.c; ++c)
      for (int64_t i = 0; i < x.h; ++i)
        for (int64_t j = 0; j < x.w; ++j) {
          double& v = x.at(b, c, i, j);
          v = (v - t.at(name + ".running_mean")[c]) /
                  std::sqrt(t.at(name + ".running_var")[c] + eps) * t.at(name + ".weight")[c] +
              t.at(name + ".bias")[c];
        }
}

T4 ref_flatten(const T4& x) {
  T4 y = x;
  y.c = x.c * x.h * x.w, y.h = y.w = 1;
  return y;
}

T4 ref_linear(const T4& x, const std::vector<double>& wt, const std::vector<double>* bias,
              int64_t out) {
  T4 y(x.n, out, 1, 1);
  for (int64_t b = 0; b < x.n; ++b)
    for (int64_t o = 0; o < out; ++o) {
      long double acc = bias ? (*bias)[o] : 0.0;
      for (int64_t i = 0; i < x.c; ++i) acc += wt[o * x.c + i] * x.v[b * x.c + i];
      y.v[b * out + o] = static_cast<double>(acc);
    }
  return y;
}

// ------------------------------------------------------------ fixtures

template <typename T>
std::vector<double> as_double(const Matrix<T>& m) {
  return std::vector<double>(m.data.begin(), m.data.end());
}

// ------------------------------------------------------------ forward vs naive loops

T4 random_input(int64_t n, int64_t c, int64_t h, int64_t w, std::mt19937_64& rng) {
  T4 x(n, c, h, w);
  x.v = randn(x.v.size(), rng);
  return x;
}

// Net 1 by hand; `fc1_input` receives the input of fc1.
T4 ref_net1(const T4& x, const Tensors& t, T4* fc1_input) {
  T4 y = ref_conv(x, t.at("c1.weight"), &t.at("c1.bias"), 5, 3, 1, 1);
  ref_relu(y);
  y = ref_fixed_pool(y, 2, 2, true);
  y = ref_conv(y, t.at("c2.weight"), &t.at("c2.bias"), 4, 3, 2, 0);
  ref_bn(y, t, "bn", 0.001);
  ref_relu(y);
  y = ref_adaptive(y, 2, 3);
  *fc1_input = y = ref_flatten(y);
  y = ref_linear(y, t.at("fc1.weight"), &t.at("fc1.bias"), 7);
  ref_relu(y);
  return ref_linear(y, t.at("fc2.weight"), &t.at("fc2.bias"), 3);
}

template <typename T>
Matrix<T> run_as(const CpuForward<T>& f, const T4& x, const std::string& stop) {
  std::vector<T> in(x.v.begin(), x.v.end());
  return f.run(in.data(), x.n, x.c, x.h, x.w, stop);
}

TEST(Forward, TinyNetMatchesNaiveLoops) {
  const uint64_t seed = test::test_seed(1234);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  test::TempDir dir;
  const Arch a = parse_arch(kNet1, kInput);
  const Tensors t = random_weights(a, rng);
  write_model(dir.file("net1.safetensors"), a, t);
  SafetensorsFile file(dir.file("net1.safetensors"));
  const CpuForward<double> fwd(a, file);
  const CpuForward<float> fwd32(a, file);

  const T4 x = random_input(3, 3, 11, 13, rng);
  T4 fc1_in;
  const T4 out = ref_net1(x, t, &fc1_in);
  ASSERT_EQ(fc1_in.v.size(), 3u * 24);

  // fp64: the only differences are summation orders, so 1e-10 relative (Frobenius).
  const Matrix<double> acts = run_as(fwd, x, "fc1");
  EXPECT_EQ(acts.rows, 24);
  EXPECT_EQ(acts.cols, 3);
  EXPECT_LT(rel_diff(acts.data, fc1_in.v), 1e-10);
  const Matrix<double> logits = run_as(fwd, x, "");
  EXPECT_EQ(logits.rows, 3);
  EXPECT_EQ(logits.cols, 3);
  EXPECT_LT(rel_diff(logits.data, out.v), 1e-10);
  // Stopping at the last layer gives its input (the 7 post-ReLU features).
  EXPECT_EQ(run_as(fwd, x, "fc2").rows, 7);
  // Each sample alone gives the same column as in the batch.
  for (int64_t b = 0; b < x.n; ++b) {
    T4 one(1, x.c, x.h, x.w);
    std::copy_n(x.v.begin() + b * one.v.size(), one.v.size(), one.v.begin());
    const Matrix<double> col = run_as(fwd, one, "");
    for (int64_t i = 0; i < 3; ++i) EXPECT_NEAR(col(i, 0), logits(i, b), 1e-12);
  }
  // fp32: 1e-5 relative.
  EXPECT_LT(rel_diff(as_double(run_as(fwd32, x, "fc1")), fc1_in.v), 1e-5);
  EXPECT_LT(rel_diff(as_double(run_as(fwd32, x, "")), out.v), 1e-5);

  // One pass with taps hands over each requested layer's input, as run() stops there.
  std::vector<double> in(x.v.begin(), x.v.end());
  std::map<std::string, std::vector<double>> got;
  fwd.run_taps(in.data(), x.n, x.c, x.h, x.w, {"fc2", "fc1"},
               [&](const std::string& name, const double* v, int64_t n, int64_t batch) {
                 got[name].assign(v, v + n * batch);
               });
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got["fc1"], run_as(fwd, x, "fc1").data);
  EXPECT_EQ(got["fc2"], run_as(fwd, x, "fc2").data);
  EXPECT_THROW(fwd.run_taps(in.data(), x.n, x.c, x.h, x.w, {"fc9"}, {}), Error);

  // Another input size flows through the adaptive pool to the same 24 features.
  const T4 x2 = random_input(2, 3, 9, 16, rng);
  T4 fc1_in2;
  const T4 out2 = ref_net1(x2, t, &fc1_in2);
  EXPECT_LT(rel_diff(run_as(fwd, x2, "fc1").data, fc1_in2.v), 1e-10);
  EXPECT_LT(rel_diff(run_as(fwd, x2, "").data, out2.v), 1e-10);
}

TEST(Forward, PoolsOneByOneConvFlatBatchnormNoBias) {
  const uint64_t seed = test::test_seed(99);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  test::TempDir dir;
  const Arch a = parse_arch(kNet2, kInput2);
  const Tensors t = random_weights(a, rng);
  ASSERT_EQ(t.count("head.bias"), 0u);
  write_model(dir.file("net2.safetensors"), a, t);
  const CpuForward<double> fwd(a, SafetensorsFile(dir.file("net2.safetensors")));

  const T4 x = random_input(4, 2, 6, 6, rng);
  T4 y = ref_conv(x, t.at("p.weight"), &t.at("p.bias"), 3, 1, 1, 0);
  y = ref_fixed_pool(y, 2, 1, false);
  ASSERT_EQ(y.h, 5);
  y = ref_adaptive(y, 3, 3);  // 5 -> 3: bins [0,2) [1,4) [3,5) overlap
  y = ref_flatten(y);
  const T4 head_in = y;
  ref_bn(y, t, "bn1d", 1e-5);
  const T4 bn_in = head_in;
  y = ref_linear(y, t.at("head.weight"), nullptr, 4);
  EXPECT_LT(rel_diff(run_as(fwd, x, "bn1d").data, bn_in.v), 1e-10);
  EXPECT_LT(rel_diff(run_as(fwd, x, "").data, y.v), 1e-10);

  // maxpool k3 s2 on 7 columns / 6 rows: floor mode drops the ragged edge.
  const Arch m = parse_arch(R"([{"type":"maxpool","kernel":3,"stride":2},{"type":"flatten"}])",
                            R"({"channels":2,"crop":[6,7]})");
  write_model(dir.file("m.safetensors"), m, {});
  const CpuForward<double> mp(m, SafetensorsFile(dir.file("m.safetensors")));
  const T4 z = random_input(2, 2, 6, 7, rng);
  const T4 zr = ref_fixed_pool(z, 3, 2, true);
  ASSERT_EQ(zr.h * zr.w, 2 * 3);
  EXPECT_EQ(run_as(mp, z, "").data, zr.v);  // max is exact
}

TEST(Forward, FactoredLinearMatchesProduct) {
  // With W = A B exactly, the factored net computes what the dense one does.
  std::mt19937_64 rng(5);
  test::TempDir dir;
  const Arch a = parse_arch(kNet1, kInput);
  Tensors t = random_weights(a, rng);
  const int64_t k = 2, m = 7, n = 24;
  const auto A = randn(m * k, rng), B = randn(k * n, rng);
  std::vector<double> W(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t l = 0; l < k; ++l) W[i * n + j] += A[i * k + l] * B[l * n + j];
  t["fc1.weight"] = W;
  write_model(dir.file("dense.safetensors"), a, t);
  const Arch f = replace_linear_with_factors(a, "fc1", k);
  Tensors tf = t;
  tf.erase("fc1.weight");
  tf["fc1.1.bias"] = t["fc1.bias"];
  tf.erase("fc1.bias");
  tf["fc1.0.weight"] = B;
  tf["fc1.1.weight"] = A;
  write_model(dir.file("fact.safetensors"), f, tf);
  const CpuForward<double> dense(a, SafetensorsFile(dir.file("dense.safetensors")));
  const CpuForward<double> fact(load_arch(SafetensorsFile(dir.file("fact.safetensors")), ""),
                                SafetensorsFile(dir.file("fact.safetensors")));
  const T4 x = random_input(2, 3, 11, 13, rng);
  EXPECT_LT(rel_diff(run_as(fact, x, "").data, run_as(dense, x, "").data), 1e-12);
  EXPECT_LT(rel_diff(run_as(fact, x, "fc1.0").data, run_as(dense, x, "fc1").data), 1e-15);
  EXPECT_EQ(run_as(fact, x, "fc1.1").rows, k);
}

// Dilated convolutions (with stride 2 and padding), one without a bias, and a 1x1 conv
// fed by a conv (oneDNN hands its own layout over): 3x17x15 -> conv k3 p2 d2 (5x17x15) ->
// relu -> conv k3 s2 p1 d3, no bias (4x7x6) -> 1x1 conv (6x7x6) -> flatten -> linear.
const char* kInputDilated = R"({"channels":3,"crop":[17,15]})";
const char* kNetDilated = R"([
  {"type":"conv","name":"d1","in":3,"out":5,"kernel":3,"stride":1,"pad":2,"dilation":2},
  {"type":"relu"},
  {"type":"conv","name":"d2","in":5,"out":4,"kernel":3,"stride":2,"pad":1,"dilation":3,"bias":false},
  {"type":"conv","name":"d3","in":4,"out":6,"kernel":1},
  {"type":"flatten"},
  {"type":"linear","name":"fc","in":252,"out":3}])";

TEST(Forward, DilatedAndBiasFreeConvsMatchNaiveLoops) {
  const uint64_t seed = test::test_seed(77);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  test::TempDir dir;
  const Arch a = parse_arch(kNetDilated, kInputDilated);
  const Tensors t = random_weights(a, rng);
  ASSERT_EQ(t.count("d2.bias"), 0u);
  write_model(dir.file("dil.safetensors"), a, t);
  const SafetensorsFile file(dir.file("dil.safetensors"));
  const T4 x = random_input(3, 3, 17, 15, rng);
  T4 y = ref_conv(x, t.at("d1.weight"), &t.at("d1.bias"), 5, 3, 1, 2, 2);
  ASSERT_EQ(y.h * y.w, 17 * 15);
  ref_relu(y);
  const T4 d2_in = y;
  y = ref_conv(y, t.at("d2.weight"), nullptr, 4, 3, 2, 1, 3);
  ASSERT_EQ(y.h, 7);
  ASSERT_EQ(y.w, 6);
  const T4 d3_in = y;
  y = ref_conv(y, t.at("d3.weight"), &t.at("d3.bias"), 6, 1, 1, 0);
  y = ref_linear(ref_flatten(y), t.at("fc.weight"), &t.at("fc.bias"), 3);
  // fp64 (im2col): summation orders only, 1e-10 relative (Frobenius).
  const CpuForward<double> fwd(a, file);
  EXPECT_LT(rel_diff(run_as(fwd, x, "d2").data, d2_in.v), 1e-10);
  EXPECT_LT(rel_diff(run_as(fwd, x, "d3").data, d3_in.v), 1e-10);
  EXPECT_LT(rel_diff(run_as(fwd, x, "").data, y.v), 1e-10);
  // fp32 on both CPU paths (oneDNN where built, and im2col): 1e-5 relative.
  const CpuForward<float> fwd32(a, file);
  ASSERT_EQ(setenv("DALR_CPU_CONV", "im2col", 1), 0);
  const CpuForward<float> im2col32(a, file);
  ASSERT_EQ(unsetenv("DALR_CPU_CONV"), 0);
  for (const CpuForward<float>* f : {&fwd32, &im2col32}) {
    EXPECT_LT(rel_diff(as_double(run_as(*f, x, "d3")), d3_in.v), 1e-5);
    EXPECT_LT(rel_diff(as_double(run_as(*f, x, "")), y.v), 1e-5);
  }
}

// A conv layer whose weight is A B (c_out x k times k x c_in kh kw) computes what its two
// factors do as a compressed model holds them: NAME.0 (k filters of the original size,
// stride, padding and dilation) and NAME.1 (a 1x1 conv with the bias).
TEST(Forward, FactoredConvMatchesProduct) {
  const uint64_t seed = test::test_seed(78);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  test::TempDir dir;
  const Arch a = parse_arch(kNetDilated, kInputDilated);
  Tensors t = random_weights(a, rng);
  const int64_t k = 3, m = 5, n = 3 * 3 * 3;  // d1: 5 x 3x3x3
  const auto A = randn(m * k, rng), B = randn(k * n, rng);
  std::vector<double> W(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t l = 0; l < k; ++l) W[i * n + j] += A[i * k + l] * B[l * n + j];
  t["d1.weight"] = W;
  write_model(dir.file("dense.safetensors"), a, t);
  const Arch f = replace_conv_with_factors(a, "d1", k);
  Tensors tf = t;
  tf["d1.1.bias"] = t["d1.bias"];
  tf.erase("d1.weight");
  tf.erase("d1.bias");
  tf["d1.0.weight"] = B;
  tf["d1.1.weight"] = A;
  // write_model's shapes come from the arch: (k, 3, 3, 3) and (5, k, 1, 1).
  write_model(dir.file("fact.safetensors"), f, tf);
  const SafetensorsFile ff(dir.file("fact.safetensors"));
  EXPECT_EQ(ff.at("d1.1.weight").shape, (std::vector<int64_t>{m, k, 1, 1}));
  const CpuForward<double> dense(a, SafetensorsFile(dir.file("dense.safetensors")));
  const CpuForward<double> fact(load_arch(ff, ""), ff);
  const T4 x = random_input(2, 3, 17, 15, rng);
  EXPECT_LT(rel_diff(run_as(fact, x, "").data, run_as(dense, x, "").data), 1e-12);
  EXPECT_LT(rel_diff(run_as(fact, x, "d2").data, run_as(dense, x, "d2").data), 1e-12);
  EXPECT_EQ(run_as(fact, x, "d1.1").rows, k * 17 * 15);
  const CpuForward<float> fact32(load_arch(ff, ""), ff);
  EXPECT_LT(rel_diff(as_double(run_as(fact32, x, "")), run_as(dense, x, "").data), 1e-5);
}

// A VGG-like net with odd sizes for the two fp32 convolution paths: 3x19x17 -> conv k3 p1
// -> relu -> conv k3 s2 p0 without bias (16x9x8) -> relu -> 1x1 conv -> relu -> maxpool
// (12x4x4) -> conv k3 p1 -> batchnorm (no fusion) -> relu -> conv k3 s2 p1 (7x2x2) ->
// relu -> adaptive_avgpool 2x2 (identity here; not for the other size tried) -> flatten ->
// linear.
const char* kInputVgg = R"({"channels":3,"crop":[19,17]})";
const char* kNetVgg = R"([
  {"type":"conv","name":"a","in":3,"out":8,"kernel":3,"stride":1,"pad":1},
  {"type":"relu"},
  {"type":"conv","name":"b","in":8,"out":16,"kernel":3,"stride":2,"pad":0,"bias":false},
  {"type":"relu"},
  {"type":"conv","name":"c","in":16,"out":12,"kernel":1},
  {"type":"relu"},
  {"type":"maxpool","kernel":2,"stride":2},
  {"type":"conv","name":"d","in":12,"out":20,"kernel":3,"stride":1,"pad":1},
  {"type":"batchnorm","name":"bn"},
  {"type":"relu"},
  {"type":"conv","name":"e","in":20,"out":7,"kernel":3,"stride":2,"pad":1},
  {"type":"relu"},
  {"type":"adaptive_avgpool","out":[2,2]},
  {"type":"flatten"},
  {"type":"linear","name":"fc","in":28,"out":5}])";

// fp32 through oneDNN (the default where built) against fp32 through im2col + BLAS
// (DALR_CPU_CONV=im2col), and the primitive cache across batch and image sizes.
TEST(Forward, DnnlConvMatchesIm2col) {
  if (!cpu::DnnlConv::create()) GTEST_SKIP() << "no oneDNN in this build (or DALR_CPU_CONV set)";
  const uint64_t seed = test::test_seed(2024);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  test::TempDir dir;
  const Arch a = parse_arch(kNetVgg, kInputVgg);
  write_model(dir.file("vgg.safetensors"), a, random_weights(a, rng));
  const SafetensorsFile file(dir.file("vgg.safetensors"));
  ASSERT_EQ(setenv("DALR_CPU_CONV", "im2col", 1), 0);
  const CpuForward<float> ref(a, file);
  ASSERT_EQ(unsetenv("DALR_CPU_CONV"), 0);
  const CpuForward<float> fwd(a, file);

  // Batches of 5 and a short last batch of 2, then another image size: each shape
  // builds its primitives once; the same input must give the same bits every time.
  const T4 x5 = random_input(5, 3, 19, 17, rng), x2 = random_input(2, 3, 19, 17, rng);
  const T4 x3 = random_input(3, 3, 23, 21, rng);
  std::map<std::string, Matrix<float>> first;
  for (int round = 0; round < 3; ++round)
    for (const auto& [label, x] :
         {std::pair<std::string, const T4*>{"5", &x5}, {"2", &x2}, {"3", &x3}})
      for (const std::string stop : {"fc", "e", "b", ""}) {
        SCOPED_TRACE("batch " + label + ", stop at '" + stop + "', round " + std::to_string(round));
        const Matrix<float> got = run_as(fwd, *x, stop);
        if (round == 0) {
          // Both fp32, summed in different orders: 1e-5 relative (Frobenius).
          EXPECT_LT(rel_diff(as_double(got), as_double(run_as(ref, *x, stop))), 1e-5);
          first[label + stop] = got;
        } else {
          EXPECT_EQ(got.data, first[label + stop].data);
        }
      }
  // Taps at a conv (its input: the previous relu's output) match the im2col path too.
  std::vector<float> in(x5.v.begin(), x5.v.end());
  std::map<std::string, std::vector<float>> got, want;
  const auto keep = [](std::map<std::string, std::vector<float>>* m) {
    return [m](const std::string& name, const float* v, int64_t n, int64_t batch) {
      (*m)[name].assign(v, v + n * batch);
    };
  };
  fwd.run_taps(in.data(), 5, 3, 19, 17, {"c", "bn", "fc"}, keep(&got));
  ref.run_taps(in.data(), 5, 3, 19, 17, {"c", "bn", "fc"}, keep(&want));
  ASSERT_EQ(got.size(), 3u);
  for (const auto& [name, v] : want)
    EXPECT_LT(rel_diff(std::vector<double>(got[name].begin(), got[name].end()),
                       std::vector<double>(v.begin(), v.end())),
              1e-5)
        << name;
}

// ------------------------------------------------------------ 16-bit activation storage

// Rounds to the 16-bit format directly from double (io/half.hpp), not through float.
double ref_round(double v, ActStorage s) {
  return s == ActStorage::Fp16 ? half_to_float(double_to_half(v))
                               : bf16_to_float(double_to_bf16(v));
}
void ref_round(T4& x, ActStorage s) {
  for (double& v : x.v) v = ref_round(v, s);
}
// Through float first, as the float pass reads its input and weights.
std::vector<double> rounded(std::vector<double> v, ActStorage s) {
  for (double& x : v) x = ref_round(static_cast<float>(x), s);
  return v;
}
// A conv or linear product, stored (rounded), then its bias added (read as float, as
// the float pass reads it) and the sum stored: the 16-bit pass's two roundings. Returns
// the stored product.
std::vector<double> ref_bias_after_rounding(T4& y, const std::vector<double>& bias, ActStorage s) {
  ref_round(y, s);
  const std::vector<double> product = y.v;
  for (int64_t b = 0; b < y.n; ++b)
    for (int64_t c = 0; c < y.c; ++c)
      for (int64_t i = 0; i < y.h; ++i)
        for (int64_t j = 0; j < y.w; ++j)
          y.at(b, c, i, j) += static_cast<float>(bias[static_cast<size_t>(c)]);
  ref_round(y, s);
  return product;
}

// The spacing of the format's values at |v| (subnormal spacing below the normal range).
double ulp16(double v, ActStorage s) {
  const int mant = s == ActStorage::Fp16 ? 10 : 7, emin = s == ActStorage::Fp16 ? -14 : -126;
  const int e =
      v == 0 ? emin : std::max(emin, static_cast<int>(std::floor(std::log2(std::fabs(v)))));
  return std::ldexp(1.0, e - mant);
}

// Compares a layer computed by the emulation with the same layer computed here in
// double from the same (representable) input, with the same roundings. They differ only
// where the fp32 sum and the float64 sum land on two sides of a 16-bit rounding
// boundary: by one unit of the format, plus the fp32 sum's own error where terms cancel
// (bounded by 1e-5 of the layer's largest value for these short sums). Where the
// product was stored before the bias was added (`product`), a unit of the product may
// carry into the result too. So every value is within that, and almost all identical.
void expect_one_rounding(const std::vector<double>& got, const std::vector<double>& want,
                         ActStorage s, const std::string& what,
                         const std::vector<double>* product = nullptr) {
  SCOPED_TRACE(what);
  ASSERT_EQ(got.size(), want.size());
  double big = 0;
  for (double v : want) big = std::max(big, std::fabs(v));
  size_t same = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(ref_round(got[i], s), got[i]) << "value " << i << " is not representable";
    double tol = ulp16(std::max(std::fabs(got[i]), std::fabs(want[i])), s) + 1e-5 * big;
    if (product) tol += ulp16((*product)[i], s);
    EXPECT_LE(std::fabs(got[i] - want[i]), tol)
        << "value " << i << ": " << got[i] << " vs " << want[i];
    same += got[i] == want[i];
  }
  EXPECT_GE(same, got.size() * 95 / 100) << same << " of " << got.size() << " identical";
}

TEST(Forward, SixteenBitStorageRoundsEveryLayerOnce) {
  const uint64_t seed = test::test_seed(1616);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  test::TempDir dir;
  const Arch a = parse_arch(kNet1, kInput);
  const Tensors t = random_weights(a, rng);
  write_model(dir.file("net1.safetensors"), a, t);
  const SafetensorsFile file(dir.file("net1.safetensors"));
  const T4 x = random_input(3, 3, 11, 13, rng);
  const CpuForward<float> plain(a, file);

  for (ActStorage s : {ActStorage::Fp16, ActStorage::Bf16}) {
    SCOPED_TRACE(act_storage_name(s));
    const CpuForward<float> fwd(a, file, s);
    // The weights as the pass holds them: conv and linear rounded, the rest not. (The
    // file holds float64: rounding it to 16 bits directly, not through float, moves one
    // weight in a few thousand by a unit, and the outputs with it.)
    Tensors tr = t;
    for (const char* w : {"c1.weight", "c2.weight", "fc1.weight", "fc2.weight"})
      tr[w] = rounded(t.at(w), s);
    auto as_t4 = [&](const Matrix<float>& m, int64_t c, int64_t h, int64_t w) {
      T4 r(m.cols, c, h, w);
      r.v = as_double(m);
      return r;
    };

    // The input, rounded (from float: the pass's input type).
    const Matrix<float> in_c1 = run_as(fwd, x, "c1");
    EXPECT_EQ(as_double(in_c1), rounded(x.v, s));
    // conv 1, + bias, relu, max pool: c2's input.
    const T4 a1 = as_t4(in_c1, 3, 11, 13);
    T4 y = ref_conv(a1, tr.at("c1.weight"), nullptr, 5, 3, 1, 1);
    T4 p1;  // the stored product, through the same relu and max pool (for its units)
    p1 = y;
    p1.v = ref_bias_after_rounding(y, tr.at("c1.bias"), s);
    for (double& v : p1.v) v = std::fabs(v);
    ref_relu(y);
    y = ref_fixed_pool(y, 2, 2, true);
    p1 = ref_fixed_pool(p1, 2, 2, true);  // the largest product of each window bounds its unit
    const Matrix<float> in_c2 = run_as(fwd, x, "c2");
    expect_one_rounding(as_double(in_c2), y.v, s, "conv c1, relu, maxpool", &p1.v);
    // conv 2: bn's input.
    y = ref_conv(as_t4(in_c2, 5, 5, 6), tr.at("c2.weight"), nullptr, 4, 3, 2, 0);
    const std::vector<double> p2 = ref_bias_after_rounding(y, tr.at("c2.bias"), s);
    const Matrix<float> in_bn = run_as(fwd, x, "bn");
    expect_one_rounding(as_double(in_bn), y.v, s, "conv c2", &p2);
    // batchnorm (rounded), relu, adaptive pool (rounded), flatten: fc1's input.
    y = as_t4(in_bn, 4, 2, 2);
    ref_bn(y, tr, "bn", 0.001);
    ref_round(y, s);
    ref_relu(y);
    y = ref_adaptive(y, 2, 3);
    ref_round(y, s);
    const Matrix<float> in_fc1 = run_as(fwd, x, "fc1");
    expect_one_rounding(as_double(in_fc1), ref_flatten(y).v, s, "batchnorm, relu, adaptive pool");
    // fc1 + bias, relu: fc2's input; fc2: the output.
    y = ref_linear(as_t4(in_fc1, 24, 1, 1), tr.at("fc1.weight"), nullptr, 7);
    const std::vector<double> p3 = ref_bias_after_rounding(y, tr.at("fc1.bias"), s);
    ref_relu(y);
    const Matrix<float> in_fc2 = run_as(fwd, x, "fc2");
    expect_one_rounding(as_double(in_fc2), y.v, s, "fc1, relu", &p3);
    y = ref_linear(as_t4(in_fc2, 7, 1, 1), tr.at("fc2.weight"), nullptr, 3);
    const std::vector<double> p4 = ref_bias_after_rounding(y, tr.at("fc2.bias"), s);
    expect_one_rounding(as_double(run_as(fwd, x, "")), y.v, s, "fc2", &p4);

    // Taps see what run() stops at.
    std::vector<float> in(x.v.begin(), x.v.end());
    std::map<std::string, std::vector<float>> got;
    fwd.run_taps(in.data(), x.n, x.c, x.h, x.w, {"fc1", "c2"},
                 [&](const std::string& name, const float* v, int64_t n, int64_t batch) {
                   got[name].assign(v, v + n * batch);
                 });
    EXPECT_EQ(got["fc1"], in_fc1.data);
    EXPECT_EQ(got["c2"], in_c2.data);

    // Against fp32 the output moves by about the format's precision (2^-11 for fp16,
    // 2^-8 for bf16, a few layers deep), and not by nothing.
    const double eps = s == ActStorage::Fp16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
    const double d = rel_diff(as_double(run_as(fwd, x, "")), as_double(run_as(plain, x, "")));
    EXPECT_GT(d, eps / 100);
    EXPECT_LT(d, eps * 20);
  }

  EXPECT_EQ(act_storage(Precision::Fp16), ActStorage::Fp16);
  EXPECT_EQ(act_storage(Precision::Bf16), ActStorage::Bf16);
  EXPECT_EQ(act_storage(Precision::Tf32), ActStorage::Fp32);
  expect_error([&] { CpuForward<double>(a, file, ActStorage::Bf16); },
               {"--precision bf16", "float forward pass"});
}

TEST(Forward, StorageRoundingMatchesTheFileFormats) {
  // round_to_storage (the forward pass's rounding) against io/half.hpp's conversions, on
  // random floats across the range, exact ties, overflow and subnormals.
  const uint64_t seed = test::test_seed(7);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> v = {0.f,
                          -0.f,
                          1.f,
                          65504.f,
                          65520.f,
                          1e6f,
                          -1e-8f,
                          6e-8f,
                          3e38f,
                          -3.4e38f,
                          1.f + std::ldexp(1.f, -8),
                          1.f + 3 * std::ldexp(1.f, -8),
                          1.f + std::ldexp(1.f, -11),
                          1.f + 3 * std::ldexp(1.f, -11),
                          INFINITY,
                          -INFINITY,
                          65519.99f,
                          -65520.f,
                          65536.f,
                          std::ldexp(1.f, -25),
                          3 * std::ldexp(1.f, -25),
                          -5 * std::ldexp(1.f, -25),
                          std::nextafter(std::ldexp(1.f, -14), 0.f),
                          std::ldexp(1.f, -14),
                          std::ldexp(1.f, -24) * 1.5f,
                          std::ldexp(1.f, -149)};
  std::uniform_int_distribution<uint32_t> bits;
  // Random bits, and random values in fp16's subnormal range (2^-24 to 2^-14).
  std::uniform_real_distribution<float> tiny(-std::ldexp(1.f, -14), std::ldexp(1.f, -14));
  for (int i = 0; i < 20000; ++i) v.push_back(tiny(rng));
  for (int i = 0; i < 100000; ++i) {
    uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, sizeof f);
    if (!std::isnan(f)) v.push_back(f);
  }
  for (float f : v) {
    EXPECT_EQ(round_to_storage(f, ActStorage::Bf16), bf16_to_float(float_to_bf16(f))) << f;
    EXPECT_EQ(round_to_storage(f, ActStorage::Fp16), half_to_float(float_to_half(f))) << f;
    EXPECT_EQ(round_to_storage(f, ActStorage::Fp32), f);
  }
  EXPECT_TRUE(std::isnan(round_to_storage(NAN, ActStorage::Bf16)));
  EXPECT_TRUE(std::isnan(round_to_storage(NAN, ActStorage::Fp16)));
}

TEST(Forward, ShapeErrors) {
  std::mt19937_64 rng(3);
  test::TempDir dir;
  const Arch a = parse_arch(kNet1, kInput);
  write_model(dir.file("n.safetensors"), a, random_weights(a, rng));
  const CpuForward<double> fwd(a, SafetensorsFile(dir.file("n.safetensors")));
  const T4 x = random_input(1, 3, 11, 13, rng);
  expect_error([&] { run_as(fwd, x, "fc7"); }, {"no layer named 'fc7'", "c1, c2, bn, fc1, fc2"});
  expect_error([&] { run_as(fwd, random_input(1, 2, 11, 13, rng), ""); },
               {"conv 'c1'", "expects 3 input channels", "2x11x13"});
  expect_error([&] { run_as(fwd, random_input(1, 3, 2, 13, rng), ""); },
               {"conv 'c2'", "kernel 3 is larger than its input 5x1x6"});
  expect_error([&] { fwd.run(x.v.data(), 0, 3, 11, 13, ""); }, {"batch size must be >= 1"});

  // Without an adaptive pool, another image size reaches the linear layer wrongly sized.
  const Arch b = parse_arch(
      R"([{"type":"conv","name":"c","in":1,"out":2,"kernel":3},{"type":"flatten"},
          {"type":"linear","name":"ip","in":18,"out":2}])",
      R"({"channels":1,"crop":[5,5]})");
  write_model(dir.file("b.safetensors"), b, random_weights(b, rng));
  const CpuForward<double> fb(b, SafetensorsFile(dir.file("b.safetensors")));
  EXPECT_EQ(run_as(fb, random_input(2, 1, 5, 5, rng), "ip").rows, 18);
  expect_error([&] { run_as(fb, random_input(2, 1, 6, 6, rng), ""); },
               {"linear 'ip'", "expects in = 18", "flatten before it gives 32 features (2x4x4)"});
}

// ------------------------------------------------------------ run_from

// The network from a layer on, on the shipped example: the same bits as the full pass.
TEST(RunFrom, ContinuesTheForwardPassExactly) {
  SafetensorsFile f(std::string(DALR_SOURCE_DIR) + "/examples/fashion2digits/model.bin");
  const Arch arch = load_arch(f, "");
  const CpuForward<float> fwd(arch, f);
  std::mt19937_64 rng(test::test_seed(11));
  std::normal_distribution<float> nd;
  std::vector<float> img(5 * 32 * 32);
  for (auto& v : img) v = nd(rng);
  const Matrix<float> full = fwd.run(img.data(), 5, 1, 32, 32);
  const Matrix<float> x = fwd.run(img.data(), 5, 1, 32, 32, "classifier.0");
  EXPECT_EQ(fwd.run_from("classifier.0", x.ptr(), 5).data, full.data);
  // After a layer: classifier.6 is the last one, so its output is the network's.
  const Matrix<float> x6 = fwd.run(img.data(), 5, 1, 32, 32, "classifier.6");
  const Matrix<float> y = fwd.run_from("classifier.6", x6.ptr(), 5);
  EXPECT_EQ(fwd.run_from("classifier.6", y.ptr(), 5, /*after=*/true).data, full.data);
  EXPECT_THROW(fwd.run_from("nope", x.ptr(), 5), Error);
}

}  // namespace

// The max pool (specialised, branch-free) against a brute-force window maximum, with
// overlapping windows (kernel 3, stride 2), odd sizes, a floor-mode remainder, and NaN
// in some windows (PyTorch keeps it) and -Inf in others.
TEST(CpuForwardOps, MaxPoolEqualsBruteForceWithNaN) {
  std::mt19937_64 rng(test::test_seed(41));
  const ActShape s{3, 9, 8, false};
  for (auto [k, stride] : {std::pair<int64_t, int64_t>{3, 2}, {2, 2}, {1, 1}, {3, 3}}) {
    LayerSpec l;
    l.type = LayerType::MaxPool;
    l.kernel = k;
    l.stride = stride;
    const ActShape o{s.c, (s.h - k) / stride + 1, (s.w - k) / stride + 1, false};
    const int64_t batch = 2;
    std::vector<float> x(static_cast<size_t>(batch * s.numel()));
    std::normal_distribution<float> nd;
    for (auto& v : x) v = nd(rng);
    x[5] = NAN;
    x[s.numel() + 40] = NAN;
    x[70] = -INFINITY;
    std::vector<float> y;
    cpu::max_pool(x, batch, s, o, l, y);
    ASSERT_EQ(y.size(), static_cast<size_t>(batch * o.numel()));
    for (int64_t p = 0; p < batch * s.c; ++p)
      for (int64_t oy = 0; oy < o.h; ++oy)
        for (int64_t ox = 0; ox < o.w; ++ox) {
          float want = -INFINITY;
          bool nan = false;
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j) {
              const float v = x[(p * s.h + oy * stride + i) * s.w + ox * stride + j];
              nan = nan || std::isnan(v);
              want = std::max(want, v);
            }
          const float got = y[(p * o.h + oy) * o.w + ox];
          if (nan)
            ASSERT_TRUE(std::isnan(got))
                << "k " << k << " plane " << p << " (" << oy << ", " << ox << ")";
          else
            ASSERT_EQ(got, want) << "k " << k << " plane " << p << " (" << oy << ", " << ox << ")";
        }
  }
}
