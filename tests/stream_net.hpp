#pragma once
// The tiny network the streaming tests share (tests/test_stream.cpp,
// tests/test_stream_dual.cpp): conv 2->4, max pool, classifier.0 (36 -> 17),
// classifier.3 (17 -> 9), classifier.6 (9 -> 3), 45 random 2 x 6 x 6 images as an
// (N, C, H, W) .npy, and each fc layer's inputs written as activation files.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "cpu/forward.hpp"
#include "dalr/arch.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "oracle.hpp"
#include "test_util.hpp"

namespace dalr::test {

inline const char* kStreamArch = R"([
  {"type":"conv","name":"features.0","in":2,"out":4,"kernel":3,"stride":1,"pad":1},
  {"type":"relu"},
  {"type":"maxpool","kernel":2,"stride":2},
  {"type":"flatten"},
  {"type":"linear","name":"classifier.0","in":36,"out":17},
  {"type":"relu"},
  {"type":"dropout"},
  {"type":"linear","name":"classifier.3","in":17,"out":9},
  {"type":"relu"},
  {"type":"linear","name":"classifier.6","in":9,"out":3}])";
inline const char* kStreamInput = R"({"channels":2,"crop":[6,6]})";
inline constexpr int64_t kImages = 45;

class StreamNet : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(test::test_seed(77));
    std::normal_distribution<double> nd;
    auto vec = [&](int64_t count) {
      std::vector<float> v(static_cast<size_t>(count));
      for (auto& x : v) x = static_cast<float>(nd(rng));
      return v;
    };
    const Arch arch = parse_arch(kStreamArch, kStreamInput);
    std::vector<TensorOut> ts = {TensorOut::f32("features.0.weight", {4, 2, 3, 3}, vec(72)),
                                 TensorOut::f32("features.0.bias", {4}, vec(4)),
                                 TensorOut::f32("classifier.0.weight", {17, 36}, vec(17 * 36)),
                                 TensorOut::f32("classifier.0.bias", {17}, vec(17)),
                                 TensorOut::f32("classifier.3.weight", {9, 17}, vec(9 * 17)),
                                 TensorOut::f32("classifier.3.bias", {9}, vec(9)),
                                 TensorOut::f32("classifier.6.weight", {3, 9}, vec(27)),
                                 TensorOut::f32("classifier.6.bias", {3}, vec(3))};
    write_safetensors(model(), ts, arch_metadata(arch));
    write_safetensors(plain(), ts, {});  // a state dict without metadata
    images_ = vec(kImages * 2 * 6 * 6);
    write_images(images(), images_);
    // The layer inputs the forward pass computes, written as activation files.
    SafetensorsFile f(model());
    const CpuForward<double> fwd(arch, f);
    std::vector<double> in(images_.begin(), images_.end());
    for (const char* layer : {"classifier.0", "classifier.3"}) {
      const Matrix<double> x = fwd.run(in.data(), kImages, 2, 6, 6, layer);
      write_npy(dir_.file(std::string(layer) + ".npy"), x.ptr(), kImages, x.rows);
    }
  }
  // NCHW images as a .npy of shape (N, C, H, W).
  void write_images(const std::string& path, const std::vector<float>& v) const {
    write_npy(dir_.file("raw.npy"), v.data(), kImages, 72);
    std::string bytes = test::read_file(dir_.file("raw.npy"));
    const size_t at = bytes.find("(45, 72)");
    ASSERT_NE(at, std::string::npos);
    bytes.replace(at, 8, "(45,2,6,6)");  // same header length: the padding absorbs it
    bytes.erase(bytes.find('\n') - 2, 2);
    test::write_file(path, bytes);
  }
  std::string model() const { return dir_.file("model.bin"); }
  std::string plain() const { return dir_.file("plain.safetensors"); }
  std::string images() const { return dir_.file("images.npy"); }
  static Matrix<double> product(const SafetensorsFile& f, const std::string& layer) {
    const TensorInfo& b = f.at(layer + ".0.weight");
    const TensorInfo& a = f.at(layer + ".1.weight");
    return oracle::mul(from_row_major(f.read_f64(a.name).data(), a.shape[0], a.shape[1]),
                       from_row_major(f.read_f64(b.name).data(), b.shape[0], b.shape[1]));
  }
  test::TempDir dir_;
  std::vector<float> images_;
};

}  // namespace dalr::test
