// Image input: folder listing, JPEG/PNG decoding, preprocessing against a float64
// reference written here, the threaded source (order, shuffle, limit), the .npy source
// and the errors. Test images are written with libjpeg/libpng into a temporary folder.
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "dalr/error.hpp"
#include "dalr/images.hpp"
#include "dalr/npy.hpp"
#include "test_util.hpp"

namespace dalr {
namespace {

using test::TempDir;

// ---------------------------------------------------------------- writing test images

struct Image {
  int64_t w = 0, h = 0, c = 0;
  std::vector<uint8_t> px;  // interleaved
  uint8_t at(int64_t x, int64_t y, int64_t ch) const { return px[(y * w + x) * c + ch]; }
};

Image random_image(int64_t w, int64_t h, int64_t c, std::mt19937_64& rng) {
  Image im{w, h, c, std::vector<uint8_t>(w * h * c)};
  for (auto& v : im.px) v = static_cast<uint8_t>(rng() % 256);
  return im;
}

// Smooth content (what JPEG keeps well): sums of slow sinusoids, different per channel.
Image smooth_image(int64_t w, int64_t h, int64_t c, double phase) {
  Image im{w, h, c, std::vector<uint8_t>(w * h * c)};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t ch = 0; ch < c; ++ch) {
        const double v = 128 + 60 * std::sin(0.05 * x + phase + ch) +
                         50 * std::cos(0.037 * y + 0.5 * ch + phase) +
                         10 * std::sin(0.011 * (x + y));
        im.px[(y * w + x) * c + ch] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
      }
  return im;
}

struct PngWriter {
  FILE* f;
  png_structp png;
  png_infop info;
  explicit PngWriter(const std::string& path) {
    f = std::fopen(path.c_str(), "wb");
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    info = png_create_info_struct(png);
    png_init_io(png, f);
  }
  ~PngWriter() {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
  }
  // rows of `row_bytes` each; the test images are valid, so libpng never longjmps here.
  void write(const uint8_t* data, int64_t h, size_t row_bytes) {
    png_write_info(png, info);
    for (int64_t y = 0; y < h; ++y) png_write_row(png, data + y * row_bytes);
    png_write_end(png, nullptr);
  }
};

void write_png(const std::string& path, const Image& im) {
  PngWriter w(path);
  const int type = im.c == 1   ? PNG_COLOR_TYPE_GRAY
                   : im.c == 3 ? PNG_COLOR_TYPE_RGB
                               : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_IHDR(w.png, w.info, im.w, im.h, 8, type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  w.write(im.px.data(), im.h, im.w * im.c);
}

// 16-bit grey holding v * 257, which libpng's scale_16 brings back to v exactly.
void write_png16_grey(const std::string& path, const Image& im) {
  std::vector<uint8_t> be(im.px.size() * 2);
  for (size_t i = 0; i < im.px.size(); ++i) be[2 * i] = be[2 * i + 1] = im.px[i];
  PngWriter w(path);
  png_set_IHDR(w.png, w.info, im.w, im.h, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  w.write(be.data(), im.h, im.w * 2);
}

// A palette PNG; returns the RGB image it stands for.
Image write_palette_png(const std::string& path, int64_t w, int64_t h, std::mt19937_64& rng) {
  std::vector<png_color> pal(16);
  for (auto& p : pal)
    p = {static_cast<png_byte>(rng()), static_cast<png_byte>(rng()), static_cast<png_byte>(rng())};
  std::vector<uint8_t> idx(w * h);
  Image rgb{w, h, 3, std::vector<uint8_t>(w * h * 3)};
  for (int64_t i = 0; i < w * h; ++i) {
    idx[i] = static_cast<uint8_t>(rng() % pal.size());
    rgb.px[3 * i] = pal[idx[i]].red;
    rgb.px[3 * i + 1] = pal[idx[i]].green;
    rgb.px[3 * i + 2] = pal[idx[i]].blue;
  }
  PngWriter pw(path);
  png_set_IHDR(pw.png, pw.info, w, h, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_PLTE(pw.png, pw.info, pal.data(), static_cast<int>(pal.size()));
  pw.write(idx.data(), h, w);
  return rgb;
}

void write_jpeg(const std::string& path, const Image& im, int quality) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  FILE* f = std::fopen(path.c_str(), "wb");
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = static_cast<JDIMENSION>(im.w);
  cinfo.image_height = static_cast<JDIMENSION>(im.h);
  cinfo.input_components = static_cast<int>(im.c);
  cinfo.in_color_space = im.c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(im.px.data()) + cinfo.next_scanline * im.w * im.c;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
}

// ---------------------------------------------------------------- float64 reference

// PIL-style bilinear weight of input pixel i for output pixel o, evaluated over the whole
// axis (no windows), then normalised: an independent statement of the same filter.
std::vector<double> axis_weights(int64_t in, int64_t out, int64_t o) {
  const double scale = static_cast<double>(in) / out, fs = std::max(scale, 1.0);
  std::vector<double> w(in);
  double sum = 0;
  for (int64_t i = 0; i < in; ++i) {
    const double d = std::abs((i + 0.5 - (o + 0.5) * scale) / fs);
    w[i] = std::max(0.0, 1 - d);
    sum += w[i];
  }
  for (auto& v : w) v /= sum;
  return w;
}

// Resize shorter side to p.resize, centre crop, all in double; returns planes of the
// source's channels (0..255, not normalised). px is interleaved.
std::vector<double> ref_resize_crop(const std::vector<double>& px, int64_t w, int64_t h, int64_t c,
                                    const InputSpec& p) {
  int64_t ow = w, oh = h;
  if (p.resize > 0) {
    if (w <= h) {
      ow = p.resize;
      oh = static_cast<int64_t>(std::floor(static_cast<double>(p.resize) * h / w));
    } else {
      oh = p.resize;
      ow = static_cast<int64_t>(std::floor(static_cast<double>(p.resize) * w / h));
    }
  }
  const int64_t x0 = static_cast<int64_t>(std::nearbyint((ow - p.crop[1]) / 2.0));
  const int64_t y0 = static_cast<int64_t>(std::nearbyint((oh - p.crop[0]) / 2.0));
  // Rows first: tmp[sy][x][ch], then columns.
  std::vector<double> tmp(h * p.crop[1] * c, 0.0);
  for (int64_t x = 0; x < p.crop[1]; ++x) {
    const auto wx = axis_weights(w, ow, x0 + x);
    for (int64_t sy = 0; sy < h; ++sy)
      for (int64_t sx = 0; sx < w; ++sx)
        for (int64_t ch = 0; ch < c; ++ch)
          tmp[(sy * p.crop[1] + x) * c + ch] += wx[sx] * px[(sy * w + sx) * c + ch];
  }
  std::vector<double> out(c * p.crop[0] * p.crop[1], 0.0);
  for (int64_t y = 0; y < p.crop[0]; ++y) {
    const auto wy = axis_weights(h, oh, y0 + y);
    for (int64_t sy = 0; sy < h; ++sy)
      for (int64_t x = 0; x < p.crop[1]; ++x)
        for (int64_t ch = 0; ch < c; ++ch)
          out[(ch * p.crop[0] + y) * p.crop[1] + x] += wy[sy] * tmp[(sy * p.crop[1] + x) * c + ch];
  }
  return out;
}

std::vector<double> to_double(const Image& im) {
  return {im.px.begin(), im.px.end()};
}

std::vector<double> to_double_planar(const Image& im) {
  std::vector<double> out(im.px.size());
  for (int64_t ch = 0; ch < im.c; ++ch)
    for (int64_t i = 0; i < im.w * im.h; ++i) out[ch * im.w * im.h + i] = im.px[i * im.c + ch];
  return out;
}

std::vector<double> normalise(std::vector<double> planes, const InputSpec& p) {
  const int64_t plane = p.crop[0] * p.crop[1];
  for (int64_t ch = 0; ch < p.channels; ++ch)
    for (int64_t i = 0; i < plane; ++i) {
      double& v = planes[ch * plane + i];
      v = (v * p.scale - (p.mean.empty() ? 0 : p.mean[ch])) / (p.std.empty() ? 1 : p.std[ch]);
    }
  return planes;
}

std::vector<float> decode(const std::string& path, const InputSpec& p) {
  std::vector<float> out(p.channels * p.crop[0] * p.crop[1], std::nanf(""));  // poisoned
  decode_and_preprocess(path, p, out.data());
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) return INFINITY;
    m = std::max(m, std::abs(a[i] - b[i]));
  }
  return m;
}

std::vector<double> planar_to_interleaved(const std::vector<float>& planes, int64_t c) {
  const size_t n = planes.size() / c;
  std::vector<double> out(planes.size());
  for (size_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch) out[i * c + ch] = planes[ch * n + i];
  return out;
}

InputSpec imagenet_like(int64_t channels, int64_t resize, int64_t crop_h, int64_t crop_w) {
  InputSpec p;
  p.channels = channels;
  p.resize = resize;
  p.crop = {crop_h, crop_w};
  p.scale = 1.0 / 255;
  if (channels == 3) {
    p.mean = {0.485, 0.456, 0.406};
    p.std = {0.229, 0.224, 0.225};
  } else {
    p.mean = {0.45};
    p.std = {0.226};
  }
  return p;
}

// Raw pixels as floats: no resize, full-size crop, scale 1, no normalisation.
InputSpec raw(int64_t channels, const Image& im) {
  InputSpec p;
  p.channels = channels;
  p.resize = 0;
  p.crop = {im.h, im.w};
  p.scale = 1;
  return p;
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no dalr::Error thrown";
  } catch (const Error& e) {
    std::printf("error message: %s\n", e.what());
    for (const auto& s : parts)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos)
          << "message lacks '" << s << "': " << e.what();
  }
}

// ---------------------------------------------------------------- listing

TEST(ImageFolder, ListsSortedClassesAndFilesIgnoringOthers) {
  TempDir d;
  namespace fs = std::filesystem;
  for (const char* c : {"b_cls", "a_cls", "c_empty", "a_cls/nested"})
    fs::create_directory(d.file(c));
  std::mt19937_64 rng(1);
  const Image im = random_image(4, 4, 3, rng);
  for (const char* f : {"b_cls/z.PNG", "b_cls/a.jpg", "b_cls/m.JpEg", "a_cls/y.png",
                        "a_cls/nested/deep.png", "top.png"})
    write_png(d.file(f), im);
  for (const char* f : {"b_cls/notes.txt", "b_cls/x.gif", "a_cls/png", "a_cls/y.png.bak"})
    test::write_file(d.file(f), "x");

  std::vector<std::string> classes;
  const auto s = list_image_folder(d.path(), &classes);
  EXPECT_EQ(classes, (std::vector<std::string>{"a_cls", "b_cls", "c_empty"}));
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].path, d.file("a_cls/y.png"));
  EXPECT_EQ(s[1].path, d.file("b_cls/a.jpg"));
  EXPECT_EQ(s[2].path, d.file("b_cls/m.JpEg"));
  EXPECT_EQ(s[3].path, d.file("b_cls/z.PNG"));
  EXPECT_EQ(s[0].label, 0);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(s[i].label, 1);
}

TEST(ImageFolder, MissingOrEmptyFolderIsAnError) {
  TempDir d;
  expect_error([&] { list_image_folder(d.file("nope"), nullptr); }, {d.file("nope"), "not exist"});
  expect_error([&] { list_image_folder(d.path(), nullptr); }, {d.path(), "no class subfolders"});
  std::filesystem::create_directory(d.file("cls"));
  test::write_file(d.file("cls/readme.txt"), "x");
  expect_error([&] { open_images(d.path(), InputSpec{}, 1, 0, false, 0); },
               {d.path(), "no .jpg, .jpeg or .png"});
}

// ---------------------------------------------------------------- preprocessing

TEST(Preprocess, PngMatchesFloat64Reference) {
  const uint64_t seed = test::test_seed(11);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir d;
  const Image im = random_image(37, 29, 3, rng);
  write_png(d.file("a.png"), im);
  // Shrink (29 -> 20), enlarge (29 -> 50), none (crop only), odd crops.
  for (const auto& p : {imagenet_like(3, 20, 16, 13), imagenet_like(3, 50, 31, 44),
                        imagenet_like(3, 0, 21, 30), imagenet_like(3, 9, 9, 11)}) {
    SCOPED_TRACE("resize " + std::to_string(p.resize));
    const auto ref = normalise(ref_resize_crop(to_double(im), im.w, im.h, 3, p), p);
    EXPECT_LT(max_abs_diff(decode(d.file("a.png"), p), ref), 1e-5);  // lossless: float error
  }
}

TEST(Preprocess, GreyAndColourConversion) {
  std::mt19937_64 rng(test::test_seed(12));
  TempDir d;
  const Image grey = random_image(23, 31, 1, rng), colour = random_image(23, 31, 3, rng);
  write_png(d.file("g.png"), grey);
  write_png(d.file("c.png"), colour);

  // grey -> 3 channels: each channel is the grey image, normalised with its own mean/std.
  auto p3 = imagenet_like(3, 19, 17, 15);
  const auto g = ref_resize_crop(to_double(grey), grey.w, grey.h, 1, p3);
  std::vector<double> g3;
  for (int i = 0; i < 3; ++i) g3.insert(g3.end(), g.begin(), g.end());
  EXPECT_LT(max_abs_diff(decode(d.file("g.png"), p3), normalise(g3, p3)), 1e-5);

  // colour -> 1 channel: ITU-R 601 luma of the (resized) colour image.
  auto p1 = imagenet_like(1, 19, 17, 15);
  const auto c = ref_resize_crop(to_double(colour), colour.w, colour.h, 3, p1);
  const int64_t n = p1.crop[0] * p1.crop[1];
  std::vector<double> luma(n);
  for (int64_t i = 0; i < n; ++i) luma[i] = 0.299 * c[i] + 0.587 * c[n + i] + 0.114 * c[2 * n + i];
  EXPECT_LT(max_abs_diff(decode(d.file("c.png"), p1), normalise(luma, p1)), 1e-5);
}

TEST(Preprocess, PngPaletteAlphaAnd16Bit) {
  std::mt19937_64 rng(test::test_seed(13));
  TempDir d;
  const Image pal = write_palette_png(d.file("p.png"), 19, 14, rng);
  const auto p = imagenet_like(3, 12, 10, 11);
  EXPECT_LT(max_abs_diff(decode(d.file("p.png"), p),
                         normalise(ref_resize_crop(to_double(pal), pal.w, pal.h, 3, p), p)),
            1e-5);

  Image rgba = random_image(8, 6, 4, rng);  // alpha is dropped, as PIL's convert("RGB")
  write_png(d.file("a.png"), rgba);
  Image rgb{8, 6, 3, {}};
  for (int64_t i = 0; i < 48; ++i)
    for (int ch = 0; ch < 3; ++ch) rgb.px.push_back(rgba.px[4 * i + ch]);
  EXPECT_LT(max_abs_diff(decode(d.file("a.png"), raw(3, rgb)), to_double_planar(rgb)), 1e-5);

  const Image grey = random_image(7, 5, 1, rng);
  write_png16_grey(d.file("g16.png"), grey);
  EXPECT_LT(max_abs_diff(decode(d.file("g16.png"), raw(1, grey)), to_double(grey)), 1e-5);
}

TEST(Preprocess, JpegCloseToItsSource) {
  TempDir d;
  const Image im = smooth_image(61, 47, 3, 0.3);
  write_jpeg(d.file("c.jpg"), im, 100);
  // Quality 100 with 4:2:0 chroma on smooth content: within 6 levels of 255 per pixel,
  // under 1 level on average.
  const auto got = decode(d.file("c.jpg"), raw(3, im));
  const auto src = to_double_planar(im);
  const double max_err = max_abs_diff(got, src);
  double mean = 0;
  for (size_t i = 0; i < got.size(); ++i) mean += std::abs(got[i] - src[i]) / got.size();
  std::printf("jpeg q100 vs source: max %.2f mean %.3f levels\n", max_err, mean);
  EXPECT_LE(max_err, 6.0);
  EXPECT_LT(mean, 1.0);

  // Colour JPEG to 1 channel: libjpeg's Y, the 601 luma of the source within 3 levels.
  std::vector<double> luma(im.w * im.h);
  for (int64_t i = 0; i < im.w * im.h; ++i)
    luma[i] = 0.299 * im.px[3 * i] + 0.587 * im.px[3 * i + 1] + 0.114 * im.px[3 * i + 2];
  EXPECT_LE(max_abs_diff(decode(d.file("c.jpg"), raw(1, im)), luma), 3.0);

  // Grey JPEG to 3 channels: replicated exactly.
  const Image grey = smooth_image(30, 20, 1, 1.0);
  write_jpeg(d.file("g.jpg"), grey, 100);
  const auto g1 = decode(d.file("g.jpg"), raw(1, grey));
  const auto g3 = decode(d.file("g.jpg"), raw(3, grey));
  for (size_t ch = 0; ch < 3; ++ch)
    EXPECT_TRUE(std::equal(g1.begin(), g1.end(), g3.begin() + ch * g1.size()));
  EXPECT_LE(max_abs_diff(g1, to_double(grey)), 3.0);
}

TEST(Preprocess, DctScaledJpegCloseToFullDecodeThenResize) {
  TempDir d;
  const Image im = smooth_image(400, 300, 3, 0.7);
  write_jpeg(d.file("big.jpg"), im, 100);
  // Shorter side 300 to 70: the decoder takes 2/8 (100x75), then resizes 75 -> 70.
  auto p = imagenet_like(3, 70, 64, 64);
  p.mean.clear();  // compare in levels of 255
  p.std.clear();
  p.scale = 1;
  const auto full = decode(d.file("big.jpg"), raw(3, im));  // no resize: no DCT scaling
  const auto ref = ref_resize_crop(planar_to_interleaved(full, 3), im.w, im.h, 3, p);
  const auto got = decode(d.file("big.jpg"), p);
  // The DCT reduction is a box filter where the reference is a triangle: on this smooth
  // content they agree within 3 levels of 255 (measured: 2.01), 0.5 on average.
  const double err = max_abs_diff(got, ref);
  double mean = 0;
  for (size_t i = 0; i < got.size(); ++i) mean += std::abs(got[i] - ref[i]) / got.size();
  std::printf("dct-scaled vs full decode + resize: max %.3f mean %.3f levels\n", err, mean);
  EXPECT_LE(err, 3.0);
  EXPECT_LT(mean, 0.5);
}

// ---------------------------------------------------------------- the threaded source

// Folder of n small PNGs in 3 classes, each image different.
std::string make_folder(const TempDir& d, int n, std::mt19937_64& rng) {
  namespace fs = std::filesystem;
  const std::string root = d.file("data");
  for (const char* c : {"cat", "dog", "eel"}) fs::create_directories(root + "/" + c);
  for (int i = 0; i < n; ++i) {
    const char* cls = i % 3 == 0 ? "cat" : i % 3 == 1 ? "dog" : "eel";
    char name[32];
    std::snprintf(name, sizeof name, "/%s/img%03d.png", cls, i);
    write_png(root + name, random_image(14 + i % 5, 12 + i % 3, i % 4 == 0 ? 1 : 3, rng));
  }
  return root;
}

struct Drained {
  std::vector<float> data;
  std::vector<int64_t> labels;
  std::vector<int64_t> batch_sizes;
};

Drained drain(BatchSource& src, int64_t batch) {
  Drained r;
  const int64_t per = src.channels() * src.height() * src.width();
  std::vector<float> buf(batch * per);
  std::vector<int64_t> labels;
  for (;;) {
    std::fill(buf.begin(), buf.end(), std::nanf(""));
    const int64_t n = src.next(buf.data(), batch, &labels);
    if (n == 0) break;
    EXPECT_EQ(static_cast<int64_t>(labels.size()), n);
    r.batch_sizes.push_back(n);
    r.data.insert(r.data.end(), buf.begin(), buf.begin() + n * per);
    r.labels.insert(r.labels.end(), labels.begin(), labels.end());
  }
  EXPECT_EQ(src.next(buf.data(), batch, &labels), 0);  // stays at the end
  return r;
}

TEST(ImageSource, ListOrderWhateverTheWorkers) {
  std::mt19937_64 rng(test::test_seed(21));
  TempDir d;
  const std::string root = make_folder(d, 23, rng);
  const auto p = imagenet_like(3, 12, 10, 9);
  auto one = open_images(root, p, 1, 0, false, 0);
  auto four = open_images(root, p, 4, 0, false, 0);
  EXPECT_EQ(one->size(), 23);
  EXPECT_EQ(one->channels(), 3);
  EXPECT_EQ(one->height(), 10);
  EXPECT_EQ(one->width(), 9);
  const Drained a = drain(*one, 5), b = drain(*four, 5);
  EXPECT_EQ(a.batch_sizes, (std::vector<int64_t>{5, 5, 5, 5, 3}));
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_TRUE(a.data == b.data);  // bitwise (no NaN: every element was written)

  // Each image is what decode_and_preprocess gives for the listed file, in list order.
  const auto list = list_image_folder(root, nullptr);
  const size_t per = 3 * 10 * 9;
  for (size_t i = 0; i < list.size(); ++i) {
    EXPECT_EQ(a.labels[i], list[i].label);
    const auto one_image = decode(list[i].path, p);
    EXPECT_TRUE(std::equal(one_image.begin(), one_image.end(), a.data.begin() + i * per));
  }
}

TEST(ImageSource, SeededShuffleAndLimit) {
  std::mt19937_64 rng(test::test_seed(22));
  TempDir d;
  const std::string root = make_folder(d, 17, rng);
  const auto p = imagenet_like(1, 12, 10, 10);
  const Drained a = drain(*open_images(root, p, 3, 0, true, 42), 4);
  const Drained b = drain(*open_images(root, p, 2, 0, true, 42), 7);
  const Drained c = drain(*open_images(root, p, 3, 0, true, 43), 4);
  const Drained plain = drain(*open_images(root, p, 3, 0, false, 0), 4);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_TRUE(a.data == b.data);
  EXPECT_FALSE(a.data == c.data);
  EXPECT_FALSE(a.data == plain.data);
  auto sorted = a.labels, plain_sorted = plain.labels;
  std::sort(sorted.begin(), sorted.end());
  std::sort(plain_sorted.begin(), plain_sorted.end());
  EXPECT_EQ(sorted, plain_sorted);  // a permutation of the same images

  // limit takes the first images of the (shuffled) list.
  auto lim = open_images(root, p, 2, 5, true, 42);
  EXPECT_EQ(lim->size(), 5);
  const Drained l = drain(*lim, 3);
  EXPECT_EQ(l.batch_sizes, (std::vector<int64_t>{3, 2}));
  EXPECT_TRUE(std::equal(l.data.begin(), l.data.end(), a.data.begin()));
  EXPECT_EQ(drain(*open_images(root, p, 2, 100, false, 0), 8).labels.size(), 17u);
}

TEST(ImageSource, StopsEarlyWithoutHanging) {
  std::mt19937_64 rng(test::test_seed(23));
  TempDir d;
  const std::string root = make_folder(d, 40, rng);
  auto src = open_images(root, imagenet_like(3, 12, 10, 10), 4, 0, false, 0);
  std::vector<float> buf(2 * 300);
  EXPECT_EQ(src->next(buf.data(), 2, nullptr), 2);
  src.reset();  // workers blocked on a full ring must exit
}

// ---------------------------------------------------------------- .npy source

void write_npy4(const std::string& path, const std::vector<double>& v,
                const std::vector<int64_t>& shape, bool f8) {
  std::string shp;
  for (auto s : shape) shp += std::to_string(s) + ", ";
  std::string header = std::string("{'descr': '") + (f8 ? "<f8" : "<f4") +
                       "', 'fortran_order': False, 'shape': (" + shp + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  for (double x : v) {
    if (f8) {
      bytes.append(reinterpret_cast<const char*>(&x), 8);
    } else {
      const float f = static_cast<float>(x);
      bytes.append(reinterpret_cast<const char*>(&f), 4);
    }
  }
  test::write_file(path, bytes);
}

TEST(NpySource, BatchesOfImages) {
  TempDir d;
  std::vector<double> v(7 * 2 * 3 * 5);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.25 * static_cast<double>(i) - 3;
  for (bool f8 : {false, true}) {
    write_npy4(d.file("x.npy"), v, {7, 2, 3, 5}, f8);
    auto src = open_npy_images(d.file("x.npy"), 0);
    EXPECT_EQ(src->size(), 7);
    EXPECT_EQ(src->channels(), 2);
    EXPECT_EQ(src->height(), 3);
    EXPECT_EQ(src->width(), 5);
    const Drained r = drain(*src, 3);
    EXPECT_EQ(r.batch_sizes, (std::vector<int64_t>{3, 3, 1}));
    EXPECT_EQ(r.labels, std::vector<int64_t>(7, -1));
    ASSERT_EQ(r.data.size(), v.size());
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(r.data[i], static_cast<float>(v[i]));
  }
  auto lim = open_npy_images(d.file("x.npy"), 4);
  EXPECT_EQ(lim->size(), 4);
  EXPECT_EQ(drain(*lim, 3).batch_sizes, (std::vector<int64_t>{3, 1}));
}

// ---------------------------------------------------------------- errors

TEST(ImageErrors, NameTheFileAndTheProblem) {
  std::mt19937_64 rng(test::test_seed(31));
  TempDir d;
  const auto p = imagenet_like(3, 20, 16, 16);
  const Image im = smooth_image(40, 30, 3, 0.1);
  write_jpeg(d.file("ok.jpg"), im, 90);
  write_png(d.file("ok.png"), im);
  const std::string jpg = test::read_file(d.file("ok.jpg"));
  const std::string png = test::read_file(d.file("ok.png"));

  test::write_file(d.file("trunc.jpg"), jpg.substr(0, jpg.size() / 2));
  expect_error([&] { decode(d.file("trunc.jpg"), p); }, {d.file("trunc.jpg"), "JPEG"});
  // A Huffman table whose 16 code counts add up to more than 256 codes.
  std::string bad = jpg;
  const size_t dht = bad.find("\xFF\xC4");
  ASSERT_NE(dht, std::string::npos);
  for (size_t i = dht + 5; i < dht + 21; ++i) bad[i] = '\x7f';
  test::write_file(d.file("corrupt.jpg"), bad);
  expect_error([&] { decode(d.file("corrupt.jpg"), p); },
               {d.file("corrupt.jpg"), "corrupt", "Huffman"});
  test::write_file(d.file("trunc.png"), png.substr(0, png.size() * 2 / 3));
  expect_error([&] { decode(d.file("trunc.png"), p); }, {d.file("trunc.png"), "truncated"});
  test::write_file(d.file("text.png"), "hello, not an image");
  expect_error([&] { decode(d.file("text.png"), p); }, {d.file("text.png"), "not a JPEG or PNG"});
  expect_error([&] { decode(d.file("absent.png"), p); }, {d.file("absent.png"), "cannot open"});

  // Smaller than the crop, with and without resize.
  expect_error([&] { decode(d.file("ok.png"), imagenet_like(3, 20, 16, 27)); },
               {d.file("ok.png"), "40x30", "26x20 after resize", "27x16 crop"});
  expect_error([&] { decode(d.file("ok.png"), imagenet_like(3, 0, 31, 10)); },
               {d.file("ok.png"), "smaller than the 10x31 crop"});

  // Through the threaded source: the error surfaces at that image, naming it.
  namespace fs = std::filesystem;
  fs::create_directories(d.file("data/a"));
  for (int i = 0; i < 6; ++i) write_png(d.file("data/a/" + std::to_string(i) + ".png"), im);
  fs::copy_file(d.file("trunc.jpg"), d.file("data/a/3b.jpg"));
  auto src = open_images(d.file("data"), p, 3, 0, false, 0);
  std::vector<float> buf(8 * 3 * 16 * 16);
  EXPECT_EQ(src->next(buf.data(), 4, nullptr), 4);  // 0 1 2 3
  expect_error([&] { src->next(buf.data(), 4, nullptr); }, {d.file("data/a/3b.jpg")});

  // npy of the wrong rank; bad preprocessing; bad worker count.
  write_npy(d.file("flat.npy"), std::vector<float>(12, 1.f).data(), 3, 4);
  expect_error([&] { open_npy_images(d.file("flat.npy"), 0); },
               {d.file("flat.npy"), "N x C x H x W", "rank 2"});
  auto two = p;
  two.channels = 2;
  expect_error([&] { decode(d.file("ok.png"), two); }, {"channels must be 1 or 3"});
  auto short_mean = p;
  short_mean.mean = {0.5};
  expect_error([&] { decode(d.file("ok.png"), short_mean); }, {"mean and std"});
  expect_error([&] { open_images(d.file("data"), p, 0, 0, false, 0); }, {"workers"});
}

// The one parser of the preprocessing (dalr.input): what the image reader also takes.
TEST(Preprocess, ParsesJson) {
  const InputSpec p =
      parse_input_spec(R"({"channels":3,"resize":256,"crop":[224,200],"scale":0.00392156862745098,)"
                       R"("mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]})");
  EXPECT_EQ(p.channels, 3);
  EXPECT_EQ(p.resize, 256);
  EXPECT_EQ(p.crop[0], 224);
  EXPECT_EQ(p.crop[1], 200);
  EXPECT_DOUBLE_EQ(p.scale, 1.0 / 255);
  EXPECT_EQ(p.mean, (std::vector<double>{0.485, 0.456, 0.406}));
  EXPECT_EQ(p.std, (std::vector<double>{0.229, 0.224, 0.225}));
  const InputSpec q = parse_input_spec(R"({"channels":1,"crop":32})");
  EXPECT_EQ(q.crop[0], 32);
  EXPECT_EQ(q.crop[1], 32);
  EXPECT_EQ(q.resize, 0);  // InputSpec's defaults kept
  EXPECT_EQ(q.scale, 1.0);
  expect_error([] { parse_input_spec(R"({"chanels":3,"crop":2})"); }, {"unknown field 'chanels'"});
  expect_error([] { parse_input_spec(R"({"channels":3,"crop":[1,2,3]})"); },
               {"'crop' must be [height, width]"});
  expect_error([] { parse_input_spec(R"({"channels":3,"crop":2,"resize":"big"})"); },
               {"'resize' must be an integer"});
  expect_error([] { parse_input_spec("{"); }, {"not valid JSON"});
  expect_error([] { parse_input_spec(R"({"channels":1,"crop":2,"mean":[1,2]})"); },
               {"mean and std"});
  // validate() holds the same rules for a spec built in code.
  InputSpec bad;
  bad.std = {1, -2, 1};
  expect_error([&] { validate(bad); }, {"'std' has a bad value -2", "> 0"});
  bad = InputSpec{};
  bad.scale = 0;
  expect_error([&] { validate(bad); }, {"'scale' must be > 0"});
  bad = InputSpec{};
  bad.crop = {3, 0};
  expect_error([&] { validate(bad); }, {"'crop' must be [height, width]"});
}

TEST(Preprocess, CmykJpegAsAdobeWritesIt) {
  TempDir d;
  // Adobe CMYK JPEGs store 255 - ink; the expected RGB is stored_c * stored_k / 255.
  const Image cmyk = smooth_image(24, 16, 4, 0.2);
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  FILE* f = std::fopen(d.file("k.jpg").c_str(), "wb");
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = 24;
  cinfo.image_height = 16;
  cinfo.input_components = 4;
  cinfo.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 100, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(cmyk.px.data()) + cinfo.next_scanline * 24 * 4;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
  Image rgb{24, 16, 3, {}};
  for (int64_t i = 0; i < 24 * 16; ++i)
    for (int ch = 0; ch < 3; ++ch)
      rgb.px.push_back(static_cast<uint8_t>(cmyk.px[4 * i + ch] * cmyk.px[4 * i + 3] / 255));
  // JPEG error on C and K (about 2 levels each at quality 100) compounds: 5 levels.
  EXPECT_LE(max_abs_diff(decode(d.file("k.jpg"), raw(3, rgb)), to_double_planar(rgb)), 5.0);
}

}  // namespace
}  // namespace dalr
