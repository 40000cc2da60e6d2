#include "dalr/images.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>

#include "common/checked.hpp"
#include "dalr/communicator.hpp"
#include "dalr/error.hpp"
#include "dalr/npy.hpp"
#include "io/input_file.hpp"

namespace dalr {

namespace io {  // jpeg.cpp, png.cpp
void decode_jpeg(const std::string& path, const std::vector<uint8_t>& bytes, int64_t min_short_side,
                 bool want_grey, int64_t* width, int64_t* height, int64_t* channels,
                 std::vector<uint8_t>* pixels);
void decode_png(const std::string& path, const std::vector<uint8_t>& bytes, int64_t* width,
                int64_t* height, int64_t* channels, std::vector<uint8_t>* pixels);
}  // namespace io

namespace fs = std::filesystem;

BatchSource::~BatchSource() = default;

namespace {

// The colour models the decoder converts to, then validate(p).
void check_decodable(const InputSpec& p) {
  if (p.channels != 1 && p.channels != 3)
    throw Error("preprocess: channels must be 1 or 3, not " + std::to_string(p.channels));
  validate(p);
}

}  // namespace

// ------------------------------------------------------------------ folder listing

namespace {

bool is_image_name(const std::string& name) {
  std::string ext = fs::path(name).extension().string();
  for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

std::vector<fs::directory_entry> sorted_entries(const fs::path& dir) {
  std::vector<fs::directory_entry> v;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    v.push_back(*it);
  if (ec) throw Error("cannot list " + dir.string() + ": " + ec.message());
  // By the name's bytes, as Python's sorted() on str does for ASCII names.
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
    return a.path().filename().string() < b.path().filename().string();
  });
  return v;
}

}  // namespace

std::vector<Sample> list_image_folder(const std::string& dir,
                                      std::vector<std::string>* class_names) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error("image folder " + dir + " does not exist or is not a folder");
  std::vector<Sample> samples;
  std::vector<std::string> names;
  for (const auto& cls : sorted_entries(dir)) {
    if (!cls.is_directory(ec)) continue;  // follows symlinks, as os.scandir().is_dir()
    const int64_t label = static_cast<int64_t>(names.size());
    names.push_back(cls.path().filename().string());
    for (const auto& f : sorted_entries(cls.path()))
      if (f.is_regular_file(ec) && is_image_name(f.path().filename().string()))
        samples.push_back({f.path().string(), label});
  }
  if (names.empty())
    throw Error("image folder " + dir + " has no class subfolders (expected DIR/CLASS/IMAGE)");
  if (samples.empty())
    throw Error("image folder " + dir + " holds no .jpg, .jpeg or .png image in its " +
                std::to_string(names.size()) + " class subfolders");
  if (class_names) *class_names = std::move(names);
  return samples;
}

// ------------------------------------------------------------------ preprocessing

namespace {

// Buffers one thread reuses from image to image: fresh ones cost page faults.
struct Scratch {
  std::vector<uint8_t> bytes, pixels;
  std::vector<float> rows, planes;
};

// The whole file, through open_input_file (a FIFO or device in the folder is refused,
// never waited on); a failure names the image and the system's reason.
void read_bytes(const std::string& path, std::vector<uint8_t>* bytes) {
  int fd = -1;
  try {
    fd = open_input_file(path);
  } catch (const Error& e) {
    throw Error(std::string("image: ") + e.what());
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error("cannot read image " + path + ": " + std::strerror(err));
  }
  bytes->resize(static_cast<size_t>(std::max<off_t>(st.st_size, 0)));
  size_t got = 0;
  while (got < bytes->size()) {
    const ssize_t r = ::read(fd, bytes->data() + got, bytes->size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int err = r < 0 ? errno : 0;
      ::close(fd);
      throw Error("cannot read image " + path + ": " +
                  (r < 0 ? std::strerror(err) : "the file ended early (changed while read?)"));
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
}

// One output pixel's window of input pixels along one axis and their weights.
struct Taps {
  std::vector<int64_t> first;  // per output pixel
  std::vector<int64_t> count;
  std::vector<double> weights;  // count entries per output pixel, at stride `stride`
  int64_t stride = 0;
};

// PIL's bilinear (ImagingResample): a triangle filter on pixel centres, widened by the
// reduction factor when shrinking; windows clipped at the border and renormalised.
// Only output pixels [out_first, out_first + n) (the crop) are computed.
Taps bilinear_taps(int64_t in_size, int64_t out_size, int64_t out_first, int64_t n) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;  // triangle support 1, widened
  Taps t;
  t.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.first.resize(n);
  t.count.resize(n);
  t.weights.assign(n * t.stride, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double center = (static_cast<double>(out_first + i) + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    double* w = &t.weights[i * t.stride];
    double sum = 0;
    for (int64_t x = lo; x < hi; ++x) {
      const double d = std::abs((static_cast<double>(x) - center + 0.5) / filter_scale);
      w[x - lo] = d < 1 ? 1 - d : 0;
      sum += w[x - lo];
    }
    for (int64_t x = lo; x < hi; ++x) w[x - lo] = sum > 0 ? w[x - lo] / sum : 0;
    t.first[i] = lo;
    t.count[i] = hi - lo;
  }
  return t;
}

// Resized size whose shorter side is `target` (torchvision: the longer side truncated).
void resized_size(int64_t w, int64_t h, int64_t target, int64_t* ow, int64_t* oh) {
  if (target <= 0) {
    *ow = w;
    *oh = h;
  } else if (w <= h) {
    *ow = target;
    *oh = static_cast<int64_t>(static_cast<double>(target) * h / w);
  } else {
    *oh = target;
    *ow = static_cast<int64_t>(static_cast<double>(target) * w / h);
  }
}

// Resize + centre crop of an interleaved 8-bit image into planar float (sc planes of
// crop_h x crop_w), values 0..255 unrounded.
void resize_crop(const std::vector<uint8_t>& px, int64_t w, int64_t h, int64_t sc,
                 const InputSpec& p, const std::string& path, std::vector<float>* rows_buf,
                 std::vector<float>* planes) {
  int64_t ow, oh;
  resized_size(w, h, p.resize, &ow, &oh);
  if (ow < p.crop[1] || oh < p.crop[0])
    throw Error(path + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                (p.resize > 0
                     ? " (" + std::to_string(ow) + "x" + std::to_string(oh) + " after resize)"
                     : std::string()) +
                ", smaller than the " + std::to_string(p.crop[1]) + "x" +
                std::to_string(p.crop[0]) + " crop");
  // torchvision's CenterCrop: round((size - crop) / 2), ties to even.
  const int64_t x0 = static_cast<int64_t>(std::nearbyint((ow - p.crop[1]) / 2.0));
  const int64_t y0 = static_cast<int64_t>(std::nearbyint((oh - p.crop[0]) / 2.0));
  const Taps tx = bilinear_taps(w, ow, x0, p.crop[1]);
  const Taps ty = bilinear_taps(h, oh, y0, p.crop[0]);
  const int64_t row_lo = ty.first.front();
  const int64_t row_hi = ty.first.back() + ty.count.back();
  // Horizontal pass over the rows the vertical pass reads: tmp[c][row][x].
  const int64_t rows = row_hi - row_lo;
  std::vector<float>& tmp = *rows_buf;
  tmp.resize(static_cast<size_t>(sc * rows * p.crop[1]));
  std::vector<float> wx(tx.weights.begin(), tx.weights.end());
  for (int64_t r = row_lo; r < row_hi; ++r) {
    const uint8_t* src = px.data() + r * w * sc;
    for (int64_t x = 0; x < p.crop[1]; ++x) {
      const float* wt = &wx[x * tx.stride];
      const uint8_t* s = src + tx.first[x] * sc;
      float acc[3] = {0.f, 0.f, 0.f};
      if (sc == 3) {
        for (int64_t k = 0; k < tx.count[x]; ++k) {
          acc[0] += wt[k] * s[3 * k];
          acc[1] += wt[k] * s[3 * k + 1];
          acc[2] += wt[k] * s[3 * k + 2];
        }
      } else {
        for (int64_t k = 0; k < tx.count[x]; ++k) acc[0] += wt[k] * s[k];
      }
      for (int64_t c = 0; c < sc; ++c) tmp[(c * rows + (r - row_lo)) * p.crop[1] + x] = acc[c];
    }
  }
  planes->assign(static_cast<size_t>(sc * p.crop[0] * p.crop[1]), 0.f);  // capacity kept
  for (int64_t c = 0; c < sc; ++c)
    for (int64_t y = 0; y < p.crop[0]; ++y) {
      const double* wt = &ty.weights[y * ty.stride];
      float* dst = planes->data() + (c * p.crop[0] + y) * p.crop[1];
      for (int64_t k = 0; k < ty.count[y]; ++k) {
        const float* s = tmp.data() + (c * rows + (ty.first[y] + k - row_lo)) * p.crop[1];
        const float wk = static_cast<float>(wt[k]);
        for (int64_t x = 0; x < p.crop[1]; ++x) dst[x] += wk * s[x];
      }
    }
}

// decode_and_preprocess with caller-owned buffers; p already validated.
void decode_into(const std::string& path, const InputSpec& p, float* out, Scratch* scratch) {
  std::vector<uint8_t>& bytes = scratch->bytes;
  std::vector<uint8_t>& px = scratch->pixels;
  read_bytes(path, &bytes);
  int64_t w = 0, h = 0, sc = 0;
  static const uint8_t kJpeg[] = {0xFF, 0xD8, 0xFF};
  static const uint8_t kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes.size() >= 3 && std::memcmp(bytes.data(), kJpeg, 3) == 0)
    io::decode_jpeg(path, bytes, p.resize, p.channels == 1, &w, &h, &sc, &px);
  else if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0)
    io::decode_png(path, bytes, &w, &h, &sc, &px);
  else
    throw Error(path + ": not a JPEG or PNG file (unknown signature)");
  if (w <= 0 || h <= 0) throw Error(path + ": image has no pixels");

  const std::vector<float>& planes = scratch->planes;
  resize_crop(px, w, h, sc, p, path, &scratch->rows, &scratch->planes);
  const int64_t plane = p.crop[0] * p.crop[1];
  for (int64_t c = 0; c < p.channels; ++c) {
    const double mean = p.mean.empty() ? 0.0 : p.mean[c];
    const double inv_std = 1.0 / (p.std.empty() ? 1.0 : p.std[c]);
    float* dst = out + c * plane;
    for (int64_t i = 0; i < plane; ++i) {
      double v;
      if (sc == p.channels)
        v = planes[c * plane + i];
      else if (sc == 1)  // grey -> colour: replicate
        v = planes[i];
      else  // colour -> grey: ITU-R 601 luma (linear, so it commutes with the resize)
        v = 0.299 * planes[i] + 0.587 * planes[plane + i] + 0.114 * planes[2 * plane + i];
      dst[i] = static_cast<float>((v * p.scale - mean) * inv_std);
    }
  }
}

}  // namespace

void decode_and_preprocess(const std::string& path, const InputSpec& p, float* out) {
  check_decodable(p);
  Scratch scratch;
  decode_into(path, p, out, &scratch);
}

// ------------------------------------------------------------------ sources

namespace {

// Workers claim list positions in order and decode into a ring of image slots; the
// consumer copies slots out in list order. A worker never runs more than
// ring_size images ahead of the consumer, so memory stays bounded.
class ImageFolderSource final : public BatchSource {
 public:
  ImageFolderSource(std::vector<Sample> samples, ClassMap classes, const InputSpec& p, int workers,
                    bool skip_bad)
      : samples_(std::move(samples)),
        classes_(std::move(classes)),
        p_(p),
        image_floats_(p.channels * p.crop[0] * p.crop[1]),
        skip_bad_(skip_bad) {
    ring_size_ = std::max<int64_t>(16, 4 * static_cast<int64_t>(workers));
    ring_.resize(static_cast<size_t>(ring_size_));
    for (auto& s : ring_) s.data.resize(static_cast<size_t>(image_floats_));
    // A failed thread start (a process limit) must not leave running threads behind an
    // exception from a constructor: that ends in std::terminate. Stop them, then say so.
    try {
      for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
    } catch (const std::system_error& e) {
      const size_t started = threads_.size();
      stop_workers();
      throw Error("images: could not start image decoding thread " + std::to_string(started + 1) +
                  " of " + std::to_string(workers) + " (" + e.what() +
                  "); use fewer --workers or raise the process limit");
    }
  }

  ~ImageFolderSource() override { stop_workers(); }

  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  int64_t channels() const override { return p_.channels; }
  int64_t height() const override { return p_.crop[0]; }
  int64_t width() const override { return p_.crop[1]; }
  int64_t skipped() const override { return skipped_; }
  std::string first_skip_reason() const override { return first_skip_reason_; }
  std::vector<std::string> label_names() const override { return classes_.names; }
  std::string label_warning() const override { return classes_.warning; }
  std::vector<std::string> last_names() const override { return last_names_; }

  int64_t next(float* out, int64_t max_batch, std::vector<int64_t>* labels) override {
    if (labels) labels->clear();
    last_names_.clear();
    int64_t n = 0;
    while (n < max_batch && consumed_ < size()) {
      Slot& s = ring_[static_cast<size_t>(consumed_ % ring_size_)];
      {
        std::unique_lock<std::mutex> lock(mu_);
        slot_ready_.wait(lock, [&] { return s.index == consumed_; });
      }
      if (s.error && !skip_bad_) std::rethrow_exception(s.error);  // later calls throw again
      if (s.error) {                                               // left out and counted
        if (skipped_++ == 0) {
          try {
            std::rethrow_exception(s.error);
          } catch (const std::exception& e) {
            first_skip_reason_ = e.what();
          }
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++consumed_;
        }
        slot_free_.notify_all();
        continue;
      }
      std::memcpy(out + n * image_floats_, s.data.data(),
                  static_cast<size_t>(image_floats_) * sizeof(float));
      const Sample& sample = samples_[static_cast<size_t>(consumed_)];
      if (labels) labels->push_back(sample.label);
      last_names_.push_back(sample.path);
      ++n;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++consumed_;
      }
      slot_free_.notify_all();
    }
    return n;
  }

 private:
  struct Slot {
    int64_t index = -1;  // list position held, once decoded
    std::vector<float> data;
    std::exception_ptr error;
  };

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    slot_free_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  void work() {
    Scratch scratch;
    for (;;) {
      int64_t i;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (stop_ || next_claim_ >= size()) return;
        i = next_claim_++;
        slot_free_.wait(lock, [&] { return stop_ || i < consumed_ + ring_size_; });
        if (stop_) return;
      }
      // The slot is ours alone until we publish its index.
      Slot& s = ring_[static_cast<size_t>(i % ring_size_)];
      s.error = nullptr;
      try {
        decode_into(samples_[static_cast<size_t>(i)].path, p_, s.data.data(), &scratch);
      } catch (...) {
        s.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        s.index = i;
      }
      slot_ready_.notify_all();
    }
  }

  const std::vector<Sample> samples_;
  const ClassMap classes_;
  const InputSpec p_;
  const int64_t image_floats_;
  const bool skip_bad_;
  int64_t skipped_ = 0;  // consumer side only
  std::string first_skip_reason_;
  std::vector<std::string> last_names_;  // consumer side only
  int64_t ring_size_ = 0;
  std::vector<Slot> ring_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable slot_free_, slot_ready_;
  bool stop_ = false;
  int64_t next_claim_ = 0;
  int64_t consumed_ = 0;  // written under mu_; read without it only by the consumer
};

class NpyImageSource final : public BatchSource {
 public:
  NpyImageSource(const std::string& path, int64_t limit, int rank, int ranks)
      : path_(path), reader_(path) {
    const auto& shape = reader_.shape();
    if (shape.size() != 4)
      throw Error(path + ": expected an N x C x H x W array of images, got rank " +
                  std::to_string(shape.size()));
    if (shape[1] <= 0 || shape[2] <= 0 || shape[3] <= 0)
      throw Error(path + ": images have an empty dimension");
    const Share share =
        share_of(limit > 0 ? std::min(limit, reader_.rows()) : reader_.rows(), rank, ranks);
    reader_.seek(share.first);
    first_ = share.first;
    end_ = share.last;
  }
  int64_t size() const override { return end_ - first_; }
  int64_t first_index() const override { return first_; }
  int64_t channels() const override { return reader_.shape()[1]; }
  int64_t height() const override { return reader_.shape()[2]; }
  int64_t width() const override { return reader_.shape()[3]; }
  int64_t next(float* out, int64_t max_batch, std::vector<int64_t>* labels) override {
    const int64_t first = reader_.position();
    const int64_t want = std::min(max_batch, end_ - first);
    const int64_t n = want > 0 ? reader_.read_rows(out, want) : 0;
    if (labels) labels->assign(static_cast<size_t>(n), -1);
    last_first_ = first;
    last_count_ = n;
    return n;
  }
  std::vector<std::string> last_names() const override {
    std::vector<std::string> v;
    for (int64_t i = 0; i < last_count_; ++i)
      v.push_back(path_ + "[" + std::to_string(last_first_ + i) + "]");
    return v;
  }

 private:
  std::string path_;
  int64_t last_first_ = 0, last_count_ = 0;
  NpyReader reader_;
  int64_t first_ = 0, end_ = 0;  // this source's rows of the file
};

// One process's share of another source's list: the same images from `first` on.
class ShareOf final : public BatchSource {
 public:
  ShareOf(std::unique_ptr<BatchSource> src, int64_t first) : src_(std::move(src)), first_(first) {}
  int64_t size() const override { return src_->size(); }
  int64_t first_index() const override { return first_; }
  int64_t next(float* out, int64_t max_batch, std::vector<int64_t>* labels) override {
    return src_->next(out, max_batch, labels);
  }
  int64_t channels() const override { return src_->channels(); }
  int64_t height() const override { return src_->height(); }
  int64_t width() const override { return src_->width(); }
  int64_t skipped() const override { return src_->skipped(); }
  std::string first_skip_reason() const override { return src_->first_skip_reason(); }
  std::vector<std::string> label_names() const override { return src_->label_names(); }
  std::string label_warning() const override { return src_->label_warning(); }
  std::vector<std::string> last_names() const override { return src_->last_names(); }

 private:
  std::unique_ptr<BatchSource> src_;
  int64_t first_;
};

}  // namespace

std::unique_ptr<BatchSource> open_images(const std::string& dir, const InputSpec& p, int workers,
                                         int64_t limit, bool shuffle, uint64_t seed, bool skip_bad,
                                         const ModelClasses* classes, int rank, int ranks) {
  check_decodable(p);
  if (workers < 1 || workers > kMaxWorkers)
    throw Error("images: workers must be between 1 and " + std::to_string(kMaxWorkers) + ", not " +
                std::to_string(workers));
  std::vector<std::string> folders;
  std::vector<Sample> samples = list_image_folder(dir, &folders);
  ClassMap map;
  if (classes) {
    map = map_class_folders(dir, folders, *classes);
    for (Sample& s : samples) s.label = map.label[static_cast<size_t>(s.label)];
  }
  if (shuffle) {
    // Fisher-Yates with raw engine output (std::shuffle and the distributions differ
    // between standard libraries; this order is the same everywhere for a seed).
    std::mt19937_64 rng(seed);
    for (size_t i = samples.size(); i > 1; --i) std::swap(samples[i - 1], samples[rng() % i]);
  }
  if (limit > 0 && limit < static_cast<int64_t>(samples.size()))
    samples.resize(static_cast<size_t>(limit));
  const Share share = share_of(static_cast<int64_t>(samples.size()), rank, ranks);
  samples.erase(samples.begin() + share.last, samples.end());
  samples.erase(samples.begin(), samples.begin() + share.first);
  return std::make_unique<ShareOf>(
      std::make_unique<ImageFolderSource>(std::move(samples), std::move(map), p, workers, skip_bad),
      share.first);
}

std::unique_ptr<BatchSource> open_npy_images(const std::string& path, int64_t limit, int rank,
                                             int ranks) {
  return std::make_unique<NpyImageSource>(path, limit, rank, ranks);
}

}  // namespace dalr
