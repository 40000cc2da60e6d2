// File formats: safetensors (read/write), .npy (streaming read, write), atomic output.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <tuple>

#include "dalr/error.hpp"
#include "dalr/matrix.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "io/atomic_file.hpp"
#include "io/half.hpp"
#include "test_util.hpp"

namespace dalr {
namespace {

using test::read_file;
using test::TempDir;
using test::write_file;

// ---------------------------------------------------------------- helpers

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A safetensors file from a header text (unpadded) and a data section.
std::string st_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// Runs `f`, expects a dalr::Error whose message contains every word; returns the message.
std::string expect_error(const std::function<void()>& f, std::initializer_list<std::string> words) {
  std::string msg;
  try {
    f();
    ADD_FAILURE() << "expected a dalr::Error";
    return "";
  } catch (const Error& e) {
    msg = e.what();
  }
  for (const auto& w : words)
    EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' missing from: " << msg;
  return msg;
}

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

float float_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

double double_bits(uint64_t u) {
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}

std::vector<uint16_t> u16_of(const uint8_t* p, size_t n) {
  std::vector<uint16_t> v(n);
  std::memcpy(v.data(), p, 2 * n);
  return v;
}

size_t entries_in(const std::string& dir) {
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator(dir);
       it != std::filesystem::directory_iterator(); ++it)
    ++n;
  return n;
}

// ---------------------------------------------------------------- half / bf16

// Values on both sides of every rounding decision, with the bits an IEEE
// round-to-nearest-even conversion must give.
struct NarrowCase {
  double value;
  uint16_t half;
};
const NarrowCase kHalfCases[] = {
    {1.0, 0x3c00},
    {1.0 + std::ldexp(1.0, -11), 0x3c00},                         // tie, even stays
    {1.0 + 3 * std::ldexp(1.0, -11), 0x3c02},                     // tie, odd rounds up
    {1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -20), 0x3c01},  // just above the tie
    {std::ldexp(1.0, -24), 0x0001},                               // smallest subnormal
    {3 * std::ldexp(1.0, -25), 0x0002},                           // 1.5 units: tie to 2
    {std::ldexp(1.0, -25), 0x0000},                               // tie with zero
    {-1023 * std::ldexp(1.0, -24), 0x83ff},                       // largest subnormal
    {std::ldexp(1.0, -14), 0x0400},                               // smallest normal
    {65504.0, 0x7bff},
    {65519.0, 0x7bff},
    {65520.0, 0x7c00},  // rounds to infinity
    {-std::numeric_limits<double>::infinity(), 0xfc00},
    {-0.0, 0x8000},
};

TEST(Half, NarrowingRoundsToNearestEven) {
  for (const auto& c : kHalfCases) {
    EXPECT_EQ(double_to_half(c.value), c.half) << c.value;
    if (static_cast<double>(static_cast<float>(c.value)) == c.value) {
      EXPECT_EQ(float_to_half(static_cast<float>(c.value)), c.half) << c.value;
    }
  }
  // A double just above a tie must not be rounded twice (via float it would land on it).
  EXPECT_EQ(double_to_half(1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40)), 0x3c01);
  EXPECT_EQ(double_to_bf16(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30)), 0x3f81);
}

TEST(Half, WideningIsExact) {
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(half_to_float(0x83ff), -1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(half_to_float(0x0200), std::ldexp(1.0f, -15));
  EXPECT_EQ(half_to_float(0x3c02), 1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(half_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(half_to_float(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(half_to_float(0x8000)));
  EXPECT_TRUE(std::isnan(half_to_float(0x7c01)));
  EXPECT_EQ(bf16_to_float(0x3f81), 1.0f + std::ldexp(1.0f, -7));
  EXPECT_EQ(bf16_to_float(0x0001), std::ldexp(1.0f, -133));
  // Every finite half survives a trip through float.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(float_to_half(half_to_float(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

TEST(Half, NanStaysNan) {
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::quiet_NaN()), 0x7e00);
  EXPECT_EQ(float_to_half(float_bits(0xffc00000u)), 0xfe00);
  EXPECT_EQ(float_to_half(float_bits(0x7f800001u)), 0x7e00);  // payload only in low bits
  EXPECT_EQ(float_to_bf16(float_bits(0x7f800001u)), 0x7fc0);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::quiet_NaN()), 0x7fc0);
  // A signalling NaN whose payload sits only in bits the narrow format drops.
  EXPECT_EQ(double_to_half(double_bits(0x7ff0000000000001ull)), 0x7e00);
  EXPECT_EQ(double_to_bf16(double_bits(0xfff0000000000001ull)), 0xffc0);
}

// ---------------------------------------------------------------- safetensors

TEST(Safetensors, RoundTripFloatDtypes) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> f32 = {
      1.5f, -0.0f, std::ldexp(1.0f, -149), inf, float_bits(0x7fc12345u), 3.14159274f};
  const std::vector<double> f64 = {1.0 / 3.0, -std::numeric_limits<double>::infinity(),
                                   double_bits(1), double_bits(0x7ff8000000abcdefull), -2.5};
  std::vector<double> half_in;
  std::vector<uint16_t> half_want;
  for (const auto& c : kHalfCases) {
    half_in.push_back(c.value);
    half_want.push_back(c.half);
  }
  half_in.push_back(std::numeric_limits<double>::quiet_NaN());
  half_want.push_back(0x7e00);
  half_in.push_back(1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40));
  half_want.push_back(0x3c01);  // rounded once from double
  const std::vector<float> bf_in = {1.0f,
                                    1.0f + std::ldexp(1.0f, -8),
                                    1.0f + 3 * std::ldexp(1.0f, -8),
                                    1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20),
                                    std::numeric_limits<float>::max(),
                                    std::ldexp(1.0f, -133),
                                    std::ldexp(1.0f, -149),
                                    -inf,
                                    std::numeric_limits<float>::quiet_NaN()};
  const std::vector<uint16_t> bf_want = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x7f80,
                                         0x0001, 0x0000, 0xff80, 0x7fc0};

  write_safetensors(path,
                    {TensorOut::f32("f32", {2, 3}, f32), TensorOut::f64("f64", {5}, f64),
                     TensorOut::convert<double>("f16", {static_cast<int64_t>(half_in.size())},
                                                half_in, DType::F16),
                     TensorOut::convert<float>("bf16", {3, 3}, bf_in, DType::BF16)},
                    {});
  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.at("f32").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.at("bf16").dtype, DType::BF16);

  auto r32 = f.read_f32("f32");
  ASSERT_EQ(r32.size(), f32.size());
  for (size_t i = 0; i < f32.size(); ++i) EXPECT_TRUE(same_bits(r32[i], f32[i])) << i;
  auto r64 = f.read_f64("f64");
  ASSERT_EQ(r64.size(), f64.size());
  for (size_t i = 0; i < f64.size(); ++i) EXPECT_TRUE(same_bits(r64[i], f64[i])) << i;

  EXPECT_EQ(u16_of(f.raw(f.at("f16")), half_want.size()), half_want);
  EXPECT_EQ(u16_of(f.raw(f.at("bf16")), bf_want.size()), bf_want);
  auto rh = f.read_f64("f16");
  for (size_t i = 0; i < half_want.size(); ++i) {
    float want = half_to_float(half_want[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(rh[i])) << i;
    } else {
      EXPECT_TRUE(same_bits(rh[i], static_cast<double>(want))) << i;
    }
  }
  auto rb = f.read<float>("bf16");
  EXPECT_EQ(rb[3], 1.0f + std::ldexp(1.0f, -7));
  EXPECT_EQ(rb[5], std::ldexp(1.0f, -133));
  EXPECT_EQ(rb[7], -inf);
  EXPECT_TRUE(std::isnan(rb[8]));

  // Narrowing double -> F32 goes through the same path.
  write_safetensors(path, {TensorOut::convert<double>("d", {2}, {1.0 / 3.0, 1e300}, DType::F32)},
                    {});
  SafetensorsFile g(path);
  auto rd = g.read_f32("d");
  EXPECT_EQ(rd[0], 1.0f / 3.0f);
  EXPECT_EQ(rd[1], inf);
}

TEST(Safetensors, KeepsFileOrderAndMetadata) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"note", "h\xc3\xa9llo \"quoted\"\nline"}, {"empty", ""}};
  write_safetensors(path,
                    {TensorOut::f32("zeta", {1}, {1.0f}), TensorOut::f32("alpha", {2}, {2, 3}),
                     TensorOut::f32("mid", {0}, {}), TensorOut::f32("beta", {}, {4.0f})},
                    meta);
  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata(), meta);
  std::vector<std::string> names;
  for (const auto& t : f.tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"zeta", "alpha", "mid", "beta"}));
  EXPECT_EQ(f.at("mid").numel(), 0);
  EXPECT_EQ(f.at("beta").numel(), 1);  // a scalar has shape []
  EXPECT_EQ(f.read_f32("beta"), std::vector<float>{4.0f});
  EXPECT_EQ(f.find("nope"), nullptr);
  expect_error([&] { f.at("nope"); }, {"no tensor 'nope' in", path});

  write_safetensors(path, {TensorOut::f32("x", {1}, {1.0f})}, {});
  EXPECT_EQ(read_file(path).find("__metadata__"), std::string::npos);
  EXPECT_TRUE(SafetensorsFile(path).metadata().empty());
}

TEST(Safetensors, BorrowPassesBytesThrough) {
  TempDir dir;
  const std::string in = dir.file("in.safetensors"), out = dir.file("out.safetensors");
  const uint64_t seed = test::test_seed(7);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> w(37);
  for (auto& v : w) v = nd(rng);
  TensorOut ids;
  ids.name = "ids";
  ids.dtype = DType::I64;
  ids.shape = {3};
  std::vector<int64_t> id_values = {-1, 1ll << 40, 7};
  ids.owned = std::make_shared<std::vector<uint8_t>>(24);
  std::memcpy(ids.owned->data(), id_values.data(), 24);
  ids.data = ids.owned->data();
  ids.nbytes = 24;
  write_safetensors(
      in, {TensorOut::convert<float>("h", {37}, w, DType::F16), ids, TensorOut::f32("w", {37}, w)},
      {{"k", "v"}});

  SafetensorsFile src(in);
  std::vector<TensorOut> outs;
  for (const auto& t : src.tensors()) outs.push_back(TensorOut::borrow(src, t));
  outs.push_back(TensorOut::f64("new", {1}, {2.0}));
  write_safetensors(out, outs, src.metadata());

  SafetensorsFile dst(out);
  ASSERT_EQ(dst.tensors().size(), 4u);
  for (const auto& t : src.tensors()) {
    const TensorInfo& d = dst.at(t.name);
    EXPECT_EQ(d.dtype, t.dtype);
    EXPECT_EQ(d.shape, t.shape);
    ASSERT_EQ(d.end - d.begin, t.end - t.begin);
    EXPECT_EQ(std::memcmp(dst.raw(d), src.raw(t), t.end - t.begin), 0) << t.name;
  }
  EXPECT_EQ(dst.read_f32("w"), w);
  EXPECT_EQ(dst.metadata().at("k"), "v");
  expect_error([&] { dst.read_f32("ids"); },
               {"tensor 'ids' in " + out + " has dtype I64, expected a floating-point type"});
}

// The writer's bytes, checked against a header written out by hand.
TEST(Safetensors, WriterMatchesHandBuiltBytes) {
  TempDir dir;
  const std::string path = dir.file("tiny.safetensors");
  write_safetensors(path,
                    {TensorOut::f32("b", {2}, {1.0f, -2.0f}),
                     TensorOut::convert<float>("a", {1, 1}, {1.0f}, DType::F16)},
                    {{"k", "v"}});
  // 135 characters of JSON, padded with 1 space to 136 (0x88).
  std::string header =
      "{\"__metadata__\":{\"k\":\"v\"},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"a\":{\"dtype\":\"F16\",\"shape\":[1,1],\"data_offsets\":[8,10]}}";
  ASSERT_EQ(header.size(), 135u);
  header += " ";
  const std::string data("\x00\x00\x80\x3f\x00\x00\x00\xc0\x00\x3c", 10);
  EXPECT_EQ(read_file(path), std::string("\x88\0\0\0\0\0\0\0", 8) + header + data);
}

// A file another writer could produce: no padding, so the data section is unaligned.
TEST(Safetensors, ReadsHandBuiltUnalignedFile) {
  TempDir dir;
  const std::string path = dir.file("odd.safetensors");
  const std::string header =
      "{\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
      "\"x\":{\"dtype\":\"F64\",\"shape\":[2,1],\"data_offsets\":[0,16]}, "
      "\"__metadata__\":{\"a\":\"b\"}}";
  ASSERT_NE(header.size() % 8, 0u);
  const std::vector<double> x = {0.1, -7.25};
  const std::vector<float> y = {2.5f, -0.125f};
  write_file(path, st_bytes(header, bytes_of(x) + bytes_of(y)));
  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "x");  // ordered by offset, not by key
  EXPECT_EQ(f.tensors()[1].name, "y");
  EXPECT_EQ(f.read_f64("x"), x);
  EXPECT_EQ(f.read_f32("x"), (std::vector<float>{0.1f, -7.25f}));
  EXPECT_EQ(f.read_f64("y"), (std::vector<double>{2.5, -0.125}));
  EXPECT_EQ(f.metadata().at("a"), "b");
}

TEST(SafetensorsErrors, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("absent.safetensors");
  expect_error([&] { SafetensorsFile f(path); }, {"cannot open", path, "No such file"});
  expect_error([&] { SafetensorsFile f(dir.path()); }, {"cannot open", "not a regular file"});
}

TEST(SafetensorsErrors, ThreeByteFile) {
  TempDir dir;
  const std::string path = dir.file("short.safetensors");
  write_file(path, "abc");
  expect_error([&] { SafetensorsFile f(path); }, {path, "3 bytes", "8-byte header length"});
}

TEST(SafetensorsErrors, HeaderLengthBeyondFile) {
  TempDir dir;
  const std::string path = dir.file("h.safetensors");
  write_file(path, le64(1000) + "{}");
  expect_error([&] { SafetensorsFile f(path); }, {path, "header length 1000", "larger than"});
}

TEST(SafetensorsErrors, AbsurdHeaderLength) {
  TempDir dir;
  const std::string path = dir.file("h.safetensors");
  write_file(path, le64(uint64_t{1} << 40) + "{}");
  expect_error([&] { SafetensorsFile f(path); }, {path, "absurd"});
}

TEST(SafetensorsErrors, HeaderNotJson) {
  TempDir dir;
  const std::string path = dir.file("j.safetensors");
  write_file(path, st_bytes("{\"a\": {\"dtype\": ", ""));
  expect_error([&] { SafetensorsFile f(path); }, {path, "not valid JSON"});
}

TEST(SafetensorsErrors, HeaderNotObject) {
  TempDir dir;
  const std::string path = dir.file("j.safetensors");
  write_file(path, st_bytes("[1, 2]", ""));
  expect_error([&] { SafetensorsFile f(path); }, {path, "not a JSON object"});
}

TEST(SafetensorsErrors, UnknownDtype) {
  TempDir dir;
  const std::string path = dir.file("d.safetensors");
  write_file(path, st_bytes(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})",
                            std::string(2, '\1')));
  expect_error([&] { SafetensorsFile f(path); }, {path, "'w'", "unknown dtype 'F8_E4M3'"});
}

TEST(SafetensorsErrors, NegativeDimension) {
  TempDir dir;
  const std::string path = dir.file("n.safetensors");
  write_file(path, st_bytes(R"({"w":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})",
                            std::string(8, '\1')));
  expect_error([&] { SafetensorsFile f(path); }, {path, "'w'", "negative"});
}

TEST(SafetensorsErrors, MalformedOffsets) {
  TempDir dir;
  const std::string path = dir.file("o.safetensors");
  for (const char* offsets : {"[8,4]", "[0]", "[-4,4]", "[0,4,8]", "\"0,4\""}) {
    write_file(path, st_bytes(std::string(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)") +
                                  offsets + "}}",
                              std::string(8, '\1')));
    expect_error([&] { SafetensorsFile f(path); }, {path, "'w'", "data_offsets"});
  }
}

TEST(SafetensorsErrors, OffsetsLieAboutSize) {
  TempDir dir;
  const std::string path = dir.file("l.safetensors");
  write_file(path, st_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                            std::string(12, '\1')));
  expect_error([&] { SafetensorsFile f(path); }, {path, "'w'", "lies about offsets", "12"});
}

TEST(SafetensorsErrors, TruncatedData) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  write_file(path, st_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                            std::string(12, '\1')));
  expect_error([&] { SafetensorsFile f(path); }, {path, "truncated", "'w'", "16", "12 bytes"});
}

TEST(SafetensorsErrors, OverlappingRanges) {
  TempDir dir;
  const std::string path = dir.file("v.safetensors");
  write_file(path, st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            std::string(12, '\1')));
  expect_error([&] { SafetensorsFile f(path); }, {path, "'a'", "'b'", "overlap"});
}

TEST(SafetensorsErrors, NonStringMetadata) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_file(path, st_bytes(R"({"__metadata__":{"ok":"x","n":3}})", ""));
  expect_error([&] { SafetensorsFile f(path); }, {path, "__metadata__", "'n'", "not a string"});
}

TEST(SafetensorsErrors, WriterRejectsBadTensorsAndLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  expect_error(
      [&] {
        write_safetensors(path, {TensorOut::f32("a", {1}, {1}), TensorOut::f32("a", {1}, {2})}, {});
      },
      {path, "'a'", "twice"});
  TensorOut bad = TensorOut::f32("b", {2}, {1, 2});
  bad.shape = {3};
  expect_error([&] { write_safetensors(path, {bad}, {}); }, {path, "'b'", "8 bytes", "needs 12"});
  expect_error([&] { TensorOut::f32("c", {2, 2}, {1, 2, 3}); }, {"'c'", "4 values", "3 were"});
  EXPECT_EQ(entries_in(dir.path()), 0u);
}

// ---------------------------------------------------------------- npy

// An .npy file with a hand-written header of the given format version.
std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  const uint32_t n = static_cast<uint32_t>(header.size());
  out.append(reinterpret_cast<const char*>(&n), major == 1 ? 2 : 4);
  return out + header + data;
}

// Reads the whole array in chunks of `chunk` rows, checking the chunk sizes.
template <typename T>
std::vector<T> read_in_chunks(NpyReader& r, int64_t chunk) {
  std::vector<T> all(static_cast<size_t>(r.rows() * r.cols()), T(-999));  // poison
  std::vector<T> buf(static_cast<size_t>(chunk * r.cols()) + 3, T(-777));
  int64_t row = 0;
  while (true) {
    int64_t got = r.read_rows(buf.data(), chunk);
    EXPECT_EQ(got, std::min(chunk, r.rows() - row));
    EXPECT_EQ(buf[static_cast<size_t>(chunk * r.cols())], T(-777)) << "wrote past the chunk";
    if (got == 0) break;
    std::copy(buf.begin(), buf.begin() + got * r.cols(), all.begin() + row * r.cols());
    row += got;
    EXPECT_EQ(r.position(), row);
  }
  EXPECT_EQ(row, r.rows());
  return all;
}

TEST(Npy, RoundTripF4InChunks) {
  TempDir dir;
  const std::string path = dir.file("a.npy");
  const uint64_t seed = test::test_seed(11);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> a(23 * 5);
  for (auto& v : a) v = nd(rng);
  write_npy(path, a.data(), 23, 5);

  const std::string bytes = read_file(path);
  ASSERT_EQ(bytes.size() % 64, (23 * 5 * 4) % 64);  // data starts on a 64-byte boundary
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_NE(bytes.find("{'descr': '<f4', 'fortran_order': False, 'shape': (23, 5), }"),
            std::string::npos);
  EXPECT_EQ(bytes[bytes.size() - 23 * 5 * 4 - 1], '\n');

  NpyReader r(path);
  EXPECT_EQ(r.rows(), 23);
  EXPECT_EQ(r.cols(), 5);
  EXPECT_EQ(r.descr(), "<f4");
  EXPECT_FALSE(r.fortran_order());
  EXPECT_EQ(read_in_chunks<float>(r, 7), a);
  r.rewind();
  auto d = read_in_chunks<double>(r, 4);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(d[i], static_cast<double>(a[i])) << i;
}

TEST(Npy, RoundTripF8AndOneDimensional) {
  TempDir dir;
  const std::string path = dir.file("b.npy");
  std::vector<double> a(19);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 1.0 / (static_cast<double>(i) + 3.0);
  write_npy(path, a.data(), 19, -1);
  EXPECT_NE(read_file(path).find("'descr': '<f8', 'fortran_order': False, 'shape': (19,), }"),
            std::string::npos);
  NpyReader r(path);
  EXPECT_EQ(r.shape(), std::vector<int64_t>{19});
  EXPECT_EQ(r.rows(), 19);
  EXPECT_EQ(r.cols(), 1);
  EXPECT_EQ(read_in_chunks<double>(r, 5), a);
  r.rewind();
  auto f = read_in_chunks<float>(r, 19);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(f[i], static_cast<float>(a[i]));
}

TEST(Npy, HandBuiltF2Version2) {
  TempDir dir;
  const std::string path = dir.file("h.npy");
  std::vector<float> want(23 * 5);
  std::vector<uint16_t> halves(want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    want[k] = (static_cast<float>(k) - 50.0f) / 8.0f;  // exact in fp16
    halves[k] = float_to_half(want[k]);
  }
  halves[3] = 0x0001;  // a subnormal
  want[3] = std::ldexp(1.0f, -24);
  write_file(path, npy_bytes("{'descr': '<f2', 'fortran_order': False, 'shape': (23, 5), }",
                             bytes_of(halves), 2));
  NpyReader r(path);
  EXPECT_EQ(r.descr(), "<f2");
  EXPECT_EQ(read_in_chunks<float>(r, 7), want);
}

TEST(Npy, HandBuiltFortranOrder) {
  TempDir dir;
  const std::string path = dir.file("f.npy");
  const int64_t rows = 23, cols = 5;
  std::vector<double> colmajor(rows * cols);
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < rows; ++i) colmajor[j * rows + i] = 100.0 * i + j + 0.25;
  write_file(path, npy_bytes("{'descr': '<f8', 'fortran_order': True, 'shape': (23, 5), }",
                             bytes_of(colmajor), 3));
  NpyReader r(path);
  EXPECT_TRUE(r.fortran_order());
  for (int64_t chunk : {7, 1, 23, 100}) {
    r.rewind();
    auto got = read_in_chunks<float>(r, chunk);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        EXPECT_EQ(got[i * cols + j], static_cast<float>(100.0 * i + j + 0.25))
            << i << "," << j << " chunk " << chunk;
  }
}

TEST(Npy, ThreeDimensionalIsFlattened) {
  TempDir dir;
  const std::string path = dir.file("c.npy");
  std::vector<float> a(4 * 3 * 2);
  for (size_t k = 0; k < a.size(); ++k) a[k] = static_cast<float>(k) + 0.5f;
  write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3, 2), }",
                             bytes_of(a)));
  NpyReader r(path);
  EXPECT_EQ(r.shape(), (std::vector<int64_t>{4, 3, 2}));
  EXPECT_EQ(r.rows(), 4);
  EXPECT_EQ(r.cols(), 6);
  EXPECT_EQ(read_in_chunks<float>(r, 3), a);
}

TEST(NpyErrors, Truncated) {
  TempDir dir;
  const std::string path = dir.file("t.npy");
  std::vector<float> a(23 * 5, 1.0f);
  write_npy(path, a.data(), 23, 5);
  std::string bytes = read_file(path);
  write_file(path, bytes.substr(0, bytes.size() - 4));
  expect_error([&] { NpyReader r(path); },
               {path + " is truncated: expected 460 bytes of data, found 456"});
  write_file(path, bytes + "xx");
  expect_error([&] { NpyReader r(path); }, {path, "2 unexpected bytes"});
}

TEST(NpyErrors, BigEndian) {
  TempDir dir;
  const std::string path = dir.file("be.npy");
  write_file(path, npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
                             std::string(8, '\0')));
  expect_error([&] { NpyReader r(path); }, {path, "big-endian", "'>f4'"});
}

TEST(NpyErrors, UnsupportedDtype) {
  TempDir dir;
  const std::string path = dir.file("i.npy");
  write_file(path, npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 1), }",
                             std::string(8, '\0')));
  expect_error([&] { NpyReader r(path); }, {path, "unsupported dtype '<i4'"});
}

TEST(NpyErrors, FortranBeyondTwoDimensions) {
  TempDir dir;
  const std::string path = dir.file("f3.npy");
  write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2, 2), }",
                             std::string(32, '\0')));
  expect_error([&] { NpyReader r(path); }, {path, "Fortran"});
}

TEST(NpyErrors, NotNpyOrMalformed) {
  TempDir dir;
  const std::string path = dir.file("x.npy");
  write_file(path, "PK\x03\x04 this is a zip, not an npy file");
  expect_error([&] { NpyReader r(path); }, {path, "not a .npy file"});
  write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, }", ""));
  expect_error([&] { NpyReader r(path); }, {path, "malformed"});
  write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", "abcd"));
  expect_error([&] { NpyReader r(path); }, {path, "0-dimensional"});
  expect_error([&] { NpyReader r(dir.file("absent.npy")); }, {"cannot open", "No such file"});
  expect_error([&] { NpyReader r(dir.path()); }, {"cannot open", "not a regular file"});
}

// ---------------------------------------------------------------- atomic output

TEST(AtomicFile, MissingFolderFailsClearly) {
  TempDir dir;
  const std::string path = dir.file("nope/out.txt");
  expect_error([&] { write_text_file(path, "x"); },
               {"cannot write " + path + ": No such file or directory"});
  std::vector<float> a = {1, 2};
  expect_error([&] { write_npy(path, a.data(), 2, 1); }, {"cannot write " + path});
  EXPECT_EQ(entries_in(dir.path()), 0u);
}

TEST(AtomicFile, UncommittedLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("out.txt");
  {
    AtomicFile f(path);
    f.write("abc", 3);
    EXPECT_EQ(entries_in(dir.path()), 1u);  // the temporary exists meanwhile
  }
  EXPECT_EQ(entries_in(dir.path()), 0u);
  try {
    AtomicFile f(path);
    f.write("abc", 3);
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(entries_in(dir.path()), 0u);
}

TEST(AtomicFile, CommitReplacesOnlyWhenComplete) {
  TempDir dir;
  const std::string path = dir.file("out.txt");
  write_text_file(path, "old");
  {
    AtomicFile f(path);
    f.write("new but abandoned", 17);
  }
  EXPECT_EQ(read_file(path), "old");
  write_text_file(path, "new");
  EXPECT_EQ(read_file(path), "new");
  EXPECT_EQ(entries_in(dir.path()), 1u);
  AtomicFile f(path);
  f.write("x", 1);
  f.commit();
  expect_error([&] { f.write("y", 1); }, {"cannot write " + path});
}

// A write the file system refuses (here the file-size limit; disk full behaves alike)
// must throw, and the temporary must go.
TEST(AtomicFile, FailedWriteThrows) {
  TempDir dir;
  const std::string path = dir.file("big.bin");
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 1000;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string msg;
  {
    std::string big(5000, 'z');
    msg = expect_error([&] { write_text_file(path, big); }, {"cannot write " + path});
  }
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(msg.find("too large"), std::string::npos) << msg;
  EXPECT_EQ(entries_in(dir.path()), 0u);
}

TEST(AtomicFile, SameFile) {
  TempDir dir;
  const std::string a = dir.file("a"), b = dir.file("b"), link = dir.file("hard");
  write_text_file(a, "same");
  write_text_file(b, "same");
  ASSERT_EQ(::link(a.c_str(), link.c_str()), 0);
  EXPECT_TRUE(same_file(a, a));
  EXPECT_TRUE(same_file(a, dir.path() + "/./a"));
  EXPECT_TRUE(same_file(a, link));
  EXPECT_FALSE(same_file(a, b));
  EXPECT_FALSE(same_file(a, dir.file("c")));
  EXPECT_TRUE(same_file(
      dir.file("c"),
      dir.path() + "/../" + std::filesystem::path(dir.path()).filename().string() + "/c"));
}

}  // namespace
}  // namespace dalr

// The tiled transpose behind from_row_major / to_row_major and the solver's transposes,
// against the element-by-element definition: odd sizes around the 64 x 64 tile, a
// leading dimension larger than the rows, empty matrices.
TEST(Matrix, TiledTransposeEqualsDefinition) {
  for (const auto& [r, c, pad] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 0}, {63, 65, 3}, {64, 64, 0}, {129, 7, 2}, {5, 200, 0}, {0, 9, 0}, {9, 0, 1}}) {
    SCOPED_TRACE(std::to_string(r) + " x " + std::to_string(c));
    const int64_t lds = r + pad;
    std::vector<float> src(static_cast<size_t>(std::max<int64_t>(lds * c, 1)));
    for (size_t i = 0; i < src.size(); ++i) src[i] = float(i) * 0.5f - 7.f;
    std::vector<float> dst(static_cast<size_t>(std::max<int64_t>(c * r, 1)), -1.f);
    dalr::transpose_into(src.data(), r, c, lds, dst.data(), c);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j)
        ASSERT_EQ(dst[static_cast<size_t>(j + i * c)], src[static_cast<size_t>(i + j * lds)]);
    // Row-major r x c in, column-major out, and back.
    std::vector<float> rm(static_cast<size_t>(r * c));
    for (size_t i = 0; i < rm.size(); ++i) rm[i] = float(i) + 0.25f;
    const dalr::Matrix<float> m = dalr::from_row_major(rm.data(), r, c);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) ASSERT_EQ(m(i, j), rm[static_cast<size_t>(i * c + j)]);
    EXPECT_EQ(dalr::to_row_major(m), rm);
  }
}
