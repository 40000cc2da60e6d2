#include "dalr/npy.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <utility>

#include "dalr/error.hpp"
#include "io/atomic_file.hpp"
#include "io/half.hpp"
#include "io/input_file.hpp"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "dalr's file formats assume a little-endian host"
#endif

namespace dalr {

namespace {

constexpr size_t kChunkBytes = size_t{4} << 20;  // conversion buffer for C-order reads
// numpy writes headers of a few hundred bytes with one level of nesting; these bounds keep
// a hostile header from exhausting the stack or flooding a message.
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 20;
constexpr int kMaxNesting = 16;
constexpr size_t kMessageExcerpt = 200;

// The header as an error message shows it: at most kMessageExcerpt characters.
std::string header_excerpt(const std::string& text) {
  if (text.size() <= kMessageExcerpt) return text;
  return text.substr(0, kMessageExcerpt) + "... (" + std::to_string(text.size()) + " bytes)";
}

// The subset of Python literals an .npy header dict uses.
struct PyValue {
  enum class Kind { Str, Int, Bool, None, Seq, Dict } kind = Kind::None;
  std::string str;
  int64_t num = 0;
  bool flag = false;
  std::vector<PyValue> items;                            // tuple or list
  std::vector<std::pair<std::string, PyValue>> entries;  // dict, in file order

  const PyValue* get(const std::string& key) const {
    for (const auto& [k, v] : entries)
      if (k == key) return &v;
    return nullptr;
  }
};

class PyLiteralParser {
 public:
  PyLiteralParser(const std::string& text, const std::string& file) : s_(text), file_(file) {}

  PyValue parse() {
    PyValue v = value();
    skip_space();
    if (pos_ != s_.size()) fail("unexpected text after the dict");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Error(file_ + ": malformed .npy header (" + why + " at offset " + std::to_string(pos_) +
                "): " + header_excerpt(s_));
  }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool eat_word(const char* w) {
    size_t n = std::strlen(w);
    if (s_.compare(pos_, n, w) != 0) return false;
    pos_ += n;
    return true;
  }

  // Depth-counted: each nested dict or sequence is one level of recursion.
  PyValue value() {
    if (++depth_ > kMaxNesting)
      fail("nested deeper than " + std::to_string(kMaxNesting) + " levels");
    PyValue v = value_at_depth();
    --depth_;
    return v;
  }

  PyValue value_at_depth() {
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end");
    PyValue v;
    char c = s_[pos_];
    if (c == '\'' || c == '"') {
      v.kind = PyValue::Kind::Str;
      v.str = string_literal();
    } else if (c == '{') {
      ++pos_;
      v.kind = PyValue::Kind::Dict;
      while (!eat('}')) {
        skip_space();
        if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) fail("expected a key");
        std::string key = string_literal();
        if (!eat(':')) fail("expected ':'");
        v.entries.emplace_back(key, value());
        if (eat('}')) break;
        if (!eat(',')) fail("expected ',' or '}'");
      }
    } else if (c == '(' || c == '[') {
      const char close = c == '(' ? ')' : ']';
      ++pos_;
      v.kind = PyValue::Kind::Seq;
      while (!eat(close)) {
        v.items.push_back(value());
        if (eat(close)) break;
        if (!eat(',')) fail("expected ',' in a sequence");
      }
    } else if (eat_word("True")) {
      v.kind = PyValue::Kind::Bool;
      v.flag = true;
    } else if (eat_word("False")) {
      v.kind = PyValue::Kind::Bool;
    } else if (eat_word("None")) {
      v.kind = PyValue::Kind::None;
    } else if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
      v.kind = PyValue::Kind::Int;
      v.num = integer();
    } else {
      fail("unexpected character");
    }
    return v;
  }

  std::string string_literal() {
    const char q = s_[pos_++];
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) ++pos_;
      out += s_[pos_++];
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    ++pos_;
    return out;
  }

  int64_t integer() {
    bool neg = s_[pos_] == '-';
    if (neg) ++pos_;
    if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_])))
      fail("expected digits");
    int64_t n = 0;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      if (__builtin_mul_overflow(n, 10, &n) || __builtin_add_overflow(n, s_[pos_] - '0', &n))
        fail("integer too large");
      ++pos_;
    }
    if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;  // Python 2 long suffix
    return neg ? -n : n;
  }

  const std::string& s_;
  const std::string& file_;
  size_t pos_ = 0;
  int depth_ = 0;
};

void pread_all(int fd, void* buf, size_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot read " + path + ": " + std::strerror(errno));
    }
    if (r == 0) throw Error(path + " is truncated (it ended while being read)");
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

// Converts n little-endian floats of elem_size bytes (any alignment) to T.
template <typename T>
void convert_elems(const uint8_t* src, size_t n, size_t elem_size, T* dst) {
  if (elem_size == 2) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = static_cast<T>(half_to_float(h));
    }
  } else if (elem_size == 4) {
    for (size_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, src + 4 * i, 4);
      dst[i] = static_cast<T>(f);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, src + 8 * i, 8);
      dst[i] = static_cast<T>(d);
    }
  }
}

// Element size for a supported descr, or throws naming the dtype.
size_t check_descr(const std::string& descr, const std::string& path) {
  if (!descr.empty() && descr[0] == '>')
    throw Error(path + " holds big-endian data (dtype '" + header_excerpt(descr) +
                "'); only little-endian is supported: convert it with "
                "a.astype(a.dtype.newbyteorder('<'))");
  const bool little = !descr.empty() && (descr[0] == '<' || descr[0] == '=' || descr[0] == '|');
  if (little && descr.size() == 3 && descr[1] == 'f') {
    if (descr[2] == '2') return 2;
    if (descr[2] == '4') return 4;
    if (descr[2] == '8') return 8;
  }
  throw Error(path + " has unsupported dtype '" + header_excerpt(descr) +
              "' (supported: <f2, <f4, <f8)");
}

}  // namespace

// About 90 lines: one check after another on the file's bytes (magic, version, header
// length, header, dtype, shape, data size), each with its own message, in the order a
// reader meets them; the parsing helpers above hold the rest.
NpyReader::NpyReader(const std::string& path) : path_(path) {
  fd_ = open_input_file(path);  // refuses a FIFO without blocking
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    const std::string not_npy = path + " is not a .npy file";

    uint8_t pre[12];
    if (size < 10) throw Error(not_npy + " (only " + std::to_string(size) + " bytes)");
    pread_all(fd_, pre, 10, 0, path);
    if (std::memcmp(pre, "\x93NUMPY", 6) != 0) throw Error(not_npy + " (bad magic bytes)");
    const int major = pre[6], minor = pre[7];
    uint64_t header_len, prefix;
    if (major == 1) {
      header_len = pre[8] | (uint64_t{pre[9]} << 8);
      prefix = 10;
    } else if (major == 2 || major == 3) {
      if (size < 12) throw Error(path + " is truncated inside its .npy header");
      pread_all(fd_, pre + 10, 2, 10, path);
      header_len =
          pre[8] | (uint64_t{pre[9]} << 8) | (uint64_t{pre[10]} << 16) | (uint64_t{pre[11]} << 24);
      prefix = 12;
    } else {
      throw Error(path + " has unsupported .npy format version " + std::to_string(major) + "." +
                  std::to_string(minor) + " (supported: 1.0, 2.0, 3.0)");
    }
    if (prefix + header_len > size) throw Error(path + " is truncated inside its .npy header");
    if (header_len > kMaxHeaderBytes)
      throw Error(path + ": .npy header of " + std::to_string(header_len) +
                  " bytes is absurd (more than 1 MiB); not a .npy file written by numpy?");
    std::string text(header_len, '\0');
    pread_all(fd_, text.data(), header_len, prefix, path);
    data_offset_ = prefix + header_len;

    const PyValue dict = PyLiteralParser(text, path).parse();
    if (dict.kind != PyValue::Kind::Dict) throw Error(path + ": .npy header is not a dict");
    const PyValue* descr = dict.get("descr");
    const PyValue* fortran = dict.get("fortran_order");
    const PyValue* shape = dict.get("shape");
    if (!descr || !fortran || !shape)
      throw Error(path + ": .npy header lacks 'descr', 'fortran_order' or 'shape': " +
                  header_excerpt(text));
    if (descr->kind != PyValue::Kind::Str)
      throw Error(path + " has an unsupported (structured) dtype; expected <f2, <f4 or <f8");
    if (fortran->kind != PyValue::Kind::Bool)
      throw Error(path + ": .npy header 'fortran_order' is not True or False");
    if (shape->kind != PyValue::Kind::Seq)
      throw Error(path + ": .npy header 'shape' is not a tuple");
    descr_ = descr->str;
    fortran_ = fortran->flag;
    elem_size_ = check_descr(descr_, path);
    for (const auto& d : shape->items) {
      if (d.kind != PyValue::Kind::Int || d.num < 0)
        throw Error(path + ": .npy shape has an invalid dimension: " + header_excerpt(text));
      shape_.push_back(d.num);
    }
    if (shape_.empty())
      throw Error(path + " holds a 0-dimensional array; expected at least 1 dimension");
    if (fortran_ && shape_.size() > 2)
      throw Error(path + " holds a " + std::to_string(shape_.size()) +
                  "-dimensional array in Fortran order; only 1-D or 2-D arrays may be "
                  "Fortran-ordered (save it with np.ascontiguousarray)");

    uint64_t cols = 1, numel, nbytes;
    for (size_t i = 1; i < shape_.size(); ++i)
      if (__builtin_mul_overflow(cols, static_cast<uint64_t>(shape_[i]), &cols))
        throw Error(path + ": .npy shape is too large");
    if (__builtin_mul_overflow(cols, static_cast<uint64_t>(shape_[0]), &numel) ||
        __builtin_mul_overflow(numel, elem_size_, &nbytes) || cols > uint64_t(INT64_MAX))
      throw Error(path + ": .npy shape is too large");
    rows_ = shape_[0];
    cols_ = static_cast<int64_t>(cols);
    const uint64_t found = size - data_offset_;
    if (found < nbytes)
      throw Error(path + " is truncated: expected " + std::to_string(nbytes) +
                  " bytes of data, found " + std::to_string(found));
    if (found > nbytes)
      throw Error(path + " has " + std::to_string(found - nbytes) +
                  " unexpected bytes after its data (expected " + std::to_string(nbytes) +
                  " bytes of data, found " + std::to_string(found) + ")");
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

NpyReader::~NpyReader() {
  if (fd_ >= 0) ::close(fd_);
}

void NpyReader::seek(int64_t row) {
  if (row < 0 || row > rows_)
    throw Error(path_ + ": row " + std::to_string(row) + " is outside the file's " +
                std::to_string(rows_) + " rows");
  next_row_ = row;
}

template <typename T>
int64_t NpyReader::read_rows(T* out, int64_t max_rows) {
  const int64_t n = std::min(max_rows, rows_ - next_row_);
  if (n <= 0) return 0;
  const uint64_t es = elem_size_, cols = static_cast<uint64_t>(cols_);
  const uint64_t un = static_cast<uint64_t>(n), row0 = static_cast<uint64_t>(next_row_);

  if (!fortran_ || shape_.size() == 1) {
    // C order: the requested rows are one contiguous range.
    const uint64_t count = un * cols;
    const uint64_t offset = data_offset_ + row0 * cols * es;
    if (es == sizeof(T)) {  // same float type: straight into the caller's buffer
      pread_all(fd_, out, count * es, offset, path_);
    } else {
      const uint64_t per_chunk = std::max<uint64_t>(1, kChunkBytes / es);
      scratch_.resize(std::min(count, per_chunk) * es);
      for (uint64_t done = 0; done < count;) {
        const uint64_t k = std::min(per_chunk, count - done);
        pread_all(fd_, scratch_.data(), k * es, offset + done * es, path_);
        convert_elems(scratch_.data(), k, es, out + done);
        done += k;
      }
    }
  } else {
    // Fortran order (column-major rows_ x cols_): each column holds the requested rows
    // as one contiguous slice; gather and scatter into row-major `out`.
    scratch_.resize(un * es);
    std::vector<T> col(un);
    const uint64_t rows = static_cast<uint64_t>(rows_);
    for (uint64_t j = 0; j < cols; ++j) {
      pread_all(fd_, scratch_.data(), un * es, data_offset_ + (j * rows + row0) * es, path_);
      convert_elems(scratch_.data(), un, es, col.data());
      for (uint64_t i = 0; i < un; ++i) out[i * cols + j] = col[i];
    }
  }
  next_row_ += n;
  return n;
}

template int64_t NpyReader::read_rows<float>(float*, int64_t);
template int64_t NpyReader::read_rows<double>(double*, int64_t);

namespace {

template <typename T>
void write_npy_impl(const std::string& path, const T* data, int64_t rows, int64_t cols,
                    const char* descr) {
  if (rows < 0) throw Error("cannot write " + path + ": negative row count");
  const uint64_t count = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols < 0 ? 1 : cols);
  if (count > 0 && !data) throw Error("cannot write " + path + ": no data");
  const std::string shape = cols < 0
                                ? "(" + std::to_string(rows) + ",)"
                                : "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")";
  std::string header =
      std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // numpy pads with spaces and a final newline so the data starts on a 64-byte boundary.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  const uint16_t hlen = static_cast<uint16_t>(header.size());  // version 1.0: < 64 KiB

  std::string prefix("\x93NUMPY\x01\x00", 8);
  prefix += static_cast<char>(hlen & 0xff);
  prefix += static_cast<char>(hlen >> 8);

  AtomicFile f(path);
  f.write(prefix.data(), prefix.size());
  f.write(header.data(), header.size());
  f.write(data, count * sizeof(T));
  f.commit();
}

}  // namespace

void write_npy(const std::string& path, const float* data, int64_t rows, int64_t cols) {
  write_npy_impl(path, data, rows, cols, "<f4");
}

void write_npy(const std::string& path, const double* data, int64_t rows, int64_t cols) {
  write_npy_impl(path, data, rows, cols, "<f8");
}

}  // namespace dalr
