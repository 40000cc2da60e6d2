#include "dalr/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "dalr/error.hpp"
#include "io/atomic_file.hpp"
#include "io/half.hpp"
#include "io/input_file.hpp"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "dalr's file formats assume a little-endian host"
#endif

namespace dalr {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

struct DTypeEntry {
  DType type;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},
    {DType::U16, "U16", 2},   {DType::I16, "I16", 2}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::U32, "U32", 4}, {DType::I32, "I32", 4},
    {DType::F32, "F32", 4},   {DType::U64, "U64", 8}, {DType::I64, "I64", 8},
    {DType::F64, "F64", 8},
};

const DTypeEntry& entry(DType t) {
  for (const auto& e : kDTypes)
    if (e.type == t) return e;
  throw Error("invalid DType value " + std::to_string(static_cast<int>(t)));
}

bool lookup_dtype(const std::string& s, DType* out) {
  for (const auto& e : kDTypes)
    if (s == e.name) {
      *out = e.type;
      return true;
    }
  return false;
}

// numel of a shape, or false if a dimension is negative or the product overflows.
bool checked_numel(const std::vector<int64_t>& shape, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *out = n;
  return true;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Converts `n` elements of a float dtype at `src` (any alignment) to T.
template <typename T>
void convert_from(DType dt, const uint8_t* src, size_t n, T* dst) {
  switch (dt) {
    case DType::F16:
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = static_cast<T>(dt == DType::F16 ? half_to_float(h) : bf16_to_float(h));
      }
      break;
    case DType::F32:
      for (size_t i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, src + 4 * i, 4);
        dst[i] = static_cast<T>(f);
      }
      break;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = static_cast<T>(d);
      }
      break;
    default:
      throw Error(std::string("cannot convert dtype ") + dtype_name(dt));
  }
}

// What a file that starts with `base` (8 bytes or more) is when it is a PyTorch checkpoint
// instead of safetensors; nullptr otherwise. torch.save writes a zip archive since PyTorch
// 1.6, a bare pickle (protocol 2: 0x80 0x02) before.
const char* pytorch_kind(const uint8_t* base) {
  if (std::memcmp(base, "PK\x03\x04", 4) == 0)
    return "a zip archive (a PyTorch checkpoint saved by torch.save, e.g. a .pth)";
  if (base[0] == 0x80 && base[1] >= 2 && base[1] <= 5)
    return "a Python pickle (a PyTorch checkpoint saved by an old torch.save, e.g. a .pth)";
  return nullptr;
}

// The header's JSON, refusing what nlohmann::json would accept silently: a key given
// twice in one object (the last would win, so a second tensor of the same name would
// replace the first) and nesting deeper than a safetensors header has (3 levels).
nlohmann::json parse_header(const std::string& path, const char* begin, const char* end) {
  constexpr int kMaxDepth = 8;
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto check = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (depth > kMaxDepth)
      throw Error(path + ": header is nested deeper than " + std::to_string(kMaxDepth) +
                  " levels; not a safetensors file");
    if (event == E::object_start) {
      keys.emplace_back();
    } else if (event == E::object_end) {
      keys.pop_back();
    } else if (event == E::key && !keys.back().insert(parsed.get<std::string>()).second) {
      const std::string what = keys.size() == 1 ? "tensor" : "key";
      throw Error(path + ": the header names " + what + " '" +
                  parsed.get<std::string>().substr(0, 200) +
                  "' twice; refusing to guess which one is meant");
    }
    return true;
  };
  return nlohmann::json::parse(begin, end, check);
}

TensorInfo parse_tensor(const std::string& file, const std::string& name, const nlohmann::json& j) {
  const std::string where = file + ": tensor '" + name + "'";
  if (!j.is_object()) throw Error(where + " is not a JSON object in the header");
  TensorInfo t;
  t.name = name;

  auto dt = j.find("dtype");
  if (dt == j.end() || !dt->is_string()) throw Error(where + " has no string 'dtype'");
  if (!lookup_dtype(dt->get<std::string>(), &t.dtype))
    throw Error(where + " has unknown dtype '" + dt->get<std::string>() + "'");

  auto sh = j.find("shape");
  if (sh == j.end() || !sh->is_array()) throw Error(where + " has no 'shape' array");
  for (const auto& d : *sh) {
    if (!d.is_number_integer()) throw Error(where + " has a non-integer dimension in 'shape'");
    if (d.is_number_unsigned() ? d.get<uint64_t>() > uint64_t(INT64_MAX) : d.get<int64_t>() < 0)
      throw Error(where + " has a negative (or absurd) dimension in shape " + sh->dump());
    t.shape.push_back(d.get<int64_t>());
  }

  auto off = j.find("data_offsets");
  const std::string bad_offsets =
      where + " has invalid data_offsets (expected [begin, end] with 0 <= begin <= end)";
  if (off == j.end() || !off->is_array() || off->size() != 2) throw Error(bad_offsets);
  for (const auto& o : *off)
    if (!o.is_number_unsigned()) throw Error(bad_offsets);  // negatives parse as signed
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.begin > t.end) throw Error(bad_offsets);

  uint64_t numel, nbytes;
  if (!checked_numel(t.shape, &numel) ||
      __builtin_mul_overflow(numel, dtype_size(t.dtype), &nbytes))
    throw Error(where + " has a shape too large to address: " + shape_str(t.shape));
  if (t.end - t.begin != nbytes)
    throw Error(where + ": header lies about offsets: data_offsets [" + std::to_string(t.begin) +
                ", " + std::to_string(t.end) + "] span " + std::to_string(t.end - t.begin) +
                " bytes but shape " + shape_str(t.shape) + " of " + dtype_name(t.dtype) +
                " needs " + std::to_string(nbytes));
  return t;
}

}  // namespace

const char* dtype_name(DType t) {
  return entry(t).name;
}

DType dtype_from_name(const std::string& s) {
  DType t;
  if (!lookup_dtype(s, &t)) throw Error("unknown dtype '" + s + "'");
  return t;
}

size_t dtype_size(DType t) {
  return entry(t).size;
}

bool dtype_is_float(DType t) {
  return t == DType::F16 || t == DType::BF16 || t == DType::F32 || t == DType::F64;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------- reading

// About 80 lines: the header's checks in the order a reader meets them (size, JSON,
// names, dtypes, shapes, offsets), each with its own message.
SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  fd_ = open_input_file(path);  // refuses a FIFO without blocking
  struct stat st;
  if (::fstat(fd_, &st) != 0) {
    int err = errno;
    ::close(fd_);
    throw Error("cannot open " + path + ": " + std::strerror(err));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd_);
    throw Error(path + " is not a safetensors file: it has " + std::to_string(size) +
                " bytes, fewer than the 8-byte header length");
  }
  map_ = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd_, 0);
  int err = errno;
  ::close(fd_);  // the mapping keeps the file alive
  fd_ = -1;
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw Error("cannot map " + path + ": " + std::strerror(err));
  }
  map_size_ = size;
  try {
    const auto* base = static_cast<const uint8_t*>(map_);
    uint64_t header_len;
    std::memcpy(&header_len, base, 8);
    // Only a header length no safetensors file has is a reason to look closer.
    const char* kind =
        header_len > kMaxHeaderBytes || header_len > size - 8 ? pytorch_kind(base) : nullptr;
    if (kind)
      throw Error(
          path + ": this is " + kind +
          ", not a safetensors file; convert it once with tools/torchvision_to_bin.py "
          "(e.g. `tools/torchvision_to_bin.py vgg19 out.bin --state-dict " +
          "model.pth`), or write the state dict with dalr_format.write_safetensors (README, "
          "\"Use it on your own model\")");
    if (header_len > kMaxHeaderBytes)
      throw Error(path + ": header length " + std::to_string(header_len) +
                  " is absurd (more than 100 MB); not a safetensors file?");
    if (header_len > size - 8)
      throw Error(path + ": header length " + std::to_string(header_len) +
                  " is larger than the file (" + std::to_string(size) +
                  " bytes); truncated or not a safetensors file");
    data_ = base + 8 + header_len;
    const uint64_t data_size = size - 8 - header_len;

    const char* h = reinterpret_cast<const char*>(base + 8);
    nlohmann::json header;
    try {
      header = parse_header(path, h, h + header_len);
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": header is not valid JSON (" + e.what() + ")");
    }
    if (!header.is_object()) throw Error(path + ": header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it->is_object()) throw Error(path + ": __metadata__ is not a JSON object");
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string())
            throw Error(path + ": __metadata__ value for key '" + m.key() +
                        "' is not a string (safetensors metadata maps strings to strings)");
          metadata_[m.key()] = m->get<std::string>();
        }
        continue;
      }
      tensors_.push_back(parse_tensor(path, it.key(), *it));
    }

    // File order; (begin, end) keeps an empty tensor ahead of one starting at its offset.
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    const TensorInfo* prev = nullptr;
    for (const auto& t : tensors_) {
      if (t.end > data_size)
        throw Error(path + " is truncated: tensor '" + t.name + "' ends at byte " +
                    std::to_string(t.end) + " of the data section, which has only " +
                    std::to_string(data_size) + " bytes");
      if (t.begin == t.end) continue;  // an empty range overlaps nothing
      if (prev && t.begin < prev->end)
        throw Error(path + ": tensors '" + prev->name + "' and '" + t.name +
                    "' overlap in the data section");
      prev = &t;
    }
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) throw Error("no tensor '" + name + "' in " + path_);
  return *t;
}

const uint8_t* SafetensorsFile::raw(const TensorInfo& t) const {
  return data_ + t.begin;
}

template <typename T>
std::vector<T> SafetensorsFile::read(const std::string& name) const {
  const TensorInfo& t = at(name);
  if (!dtype_is_float(t.dtype))
    throw Error("tensor '" + name + "' in " + path_ + " has dtype " + dtype_name(t.dtype) +
                ", expected a floating-point type");
  std::vector<T> out(static_cast<size_t>(t.numel()));
  convert_from(t.dtype, raw(t), out.size(), out.data());
  return out;
}

template std::vector<float> SafetensorsFile::read<float>(const std::string&) const;
template std::vector<double> SafetensorsFile::read<double>(const std::string&) const;

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  return read<float>(name);
}
std::vector<double> SafetensorsFile::read_f64(const std::string& name) const {
  return read<double>(name);
}

// ---------------------------------------------------------------- writing

TensorOut TensorOut::f32(const std::string& name, std::vector<int64_t> shape,
                         const std::vector<float>& values) {
  return convert<float>(name, std::move(shape), values, DType::F32);
}

TensorOut TensorOut::f64(const std::string& name, std::vector<int64_t> shape,
                         const std::vector<double>& values) {
  return convert<double>(name, std::move(shape), values, DType::F64);
}

template <typename T>
TensorOut TensorOut::convert(const std::string& name, std::vector<int64_t> shape,
                             const std::vector<T>& values, DType dtype) {
  uint64_t numel;
  if (!checked_numel(shape, &numel))
    throw Error("tensor '" + name + "': invalid shape " + shape_str(shape));
  if (numel != values.size())
    throw Error("tensor '" + name + "': shape " + shape_str(shape) + " holds " +
                std::to_string(numel) + " values but " + std::to_string(values.size()) +
                " were given");
  if (!dtype_is_float(dtype))
    throw Error("tensor '" + name + "': cannot convert to dtype " + dtype_name(dtype) +
                " (F32, F64, F16 or BF16 only)");
  TensorOut t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const size_t n = values.size();
  t.owned = std::make_shared<std::vector<uint8_t>>(n * dtype_size(dtype));
  uint8_t* dst = t.owned->data();
  for (size_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(values[i]);  // exact for float and double
    switch (dtype) {
      case DType::F16: {
        uint16_t h = double_to_half(v);
        std::memcpy(dst + 2 * i, &h, 2);
        break;
      }
      case DType::BF16: {
        uint16_t h = double_to_bf16(v);
        std::memcpy(dst + 2 * i, &h, 2);
        break;
      }
      case DType::F32: {
        float f = static_cast<float>(values[i]);
        std::memcpy(dst + 4 * i, &f, 4);
        break;
      }
      default: {  // F64
        std::memcpy(dst + 8 * i, &v, 8);
        break;
      }
    }
  }
  t.data = t.owned->data();
  t.nbytes = t.owned->size();
  return t;
}

template TensorOut TensorOut::convert<float>(const std::string&, std::vector<int64_t>,
                                             const std::vector<float>&, DType);
template TensorOut TensorOut::convert<double>(const std::string&, std::vector<int64_t>,
                                              const std::vector<double>&, DType);

TensorOut TensorOut::borrow(const SafetensorsFile& f, const TensorInfo& t) {
  TensorOut o;
  o.name = t.name;
  o.dtype = t.dtype;
  o.shape = t.shape;
  o.data = f.raw(t);
  o.nbytes = static_cast<size_t>(t.end - t.begin);
  return o;
}

void write_safetensors(const std::string& path, const std::vector<TensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  stage_safetensors(path, tensors, metadata)->commit();
}

std::unique_ptr<AtomicFile> stage_safetensors(const std::string& path,
                                              const std::vector<TensorOut>& tensors,
                                              const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the tensors in the order they are laid out, as a reader expects.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const std::string where = "cannot write " + path + ": tensor '" + t.name + "'";
    if (t.name == "__metadata__") throw Error(where + ": the name is reserved");
    if (!names.insert(t.name).second) throw Error(where + " appears twice");
    uint64_t numel, expect;
    if (!checked_numel(t.shape, &numel) ||
        __builtin_mul_overflow(numel, dtype_size(t.dtype), &expect))
      throw Error(where + " has an invalid shape " + shape_str(t.shape));
    if (t.nbytes != expect)
      throw Error(where + " has " + std::to_string(t.nbytes) + " bytes but shape " +
                  shape_str(t.shape) + " of " + dtype_name(t.dtype) + " needs " +
                  std::to_string(expect));
    if (t.nbytes > 0 && !t.data) throw Error(where + " has no data");
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the reference pads to 8 bytes
  const uint64_t header_len = text.size();

  auto f = std::make_unique<AtomicFile>(path);
  f->write(&header_len, 8);
  f->write(text.data(), text.size());
  for (const auto& t : tensors) f->write(t.data, t.nbytes);
  return f;
}

}  // namespace dalr
