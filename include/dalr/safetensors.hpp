#pragma once
// safetensors container: read (memory-mapped, validated) and write (atomic).
// Format: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value", ...}}, then the data section; offsets are
// relative to the start of the data section.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dalr {

enum class DType { BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64 };

const char* dtype_name(DType t);              // "F32", ...
DType dtype_from_name(const std::string& s);  // throws dalr::Error on an unknown name
size_t dtype_size(DType t);
bool dtype_is_float(DType t);  // F16, BF16, F32, F64

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

// Opens and memory-maps a file; validates the header (length within the file, JSON,
// known dtypes, shapes that match the byte ranges, ranges inside the data section,
// no overlaps). Throws dalr::Error naming the file and the problem.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // file order
  const TensorInfo* find(const std::string& name) const;               // nullptr if absent
  const TensorInfo& at(const std::string& name) const;  // throws: "no tensor 'x' in FILE"
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  const uint8_t* raw(const TensorInfo& t) const;  // bytes of a tensor inside the mapping

  // The tensor's elements in storage order (row-major), converted from any float dtype.
  std::vector<float> read_f32(const std::string& name) const;
  std::vector<double> read_f64(const std::string& name) const;
  template <typename T>
  std::vector<T> read(const std::string& name) const;

 private:
  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write. Either owns its bytes (`owned`) or points at bytes that
// outlive the write call (e.g. inside an input SafetensorsFile's mapping).
struct TensorOut {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::shared_ptr<std::vector<uint8_t>> owned;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  static TensorOut f32(const std::string& name, std::vector<int64_t> shape,
                       const std::vector<float>& values);
  static TensorOut f64(const std::string& name, std::vector<int64_t> shape,
                       const std::vector<double>& values);
  // Converts `values` (row-major) to `dtype` (F32, F64, F16 or BF16).
  template <typename T>
  static TensorOut convert(const std::string& name, std::vector<int64_t> shape,
                           const std::vector<T>& values, DType dtype);
  static TensorOut borrow(const SafetensorsFile& f, const TensorInfo& t);
};

// Writes to PATH.tmp.<pid> in the same folder, fsyncs, then renames over PATH, so
// a failure never leaves a half-written file. Throws dalr::Error on any failure
// (the temporary file is removed).
void write_safetensors(const std::string& path, const std::vector<TensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata);

class AtomicFile;  // io/atomic_file.hpp (the library's, not part of the public API)
// The same, left uncommitted: a job commits its outputs together (commit_all).
std::unique_ptr<AtomicFile> stage_safetensors(const std::string& path,
                                              const std::vector<TensorOut>& tensors,
                                              const std::map<std::string, std::string>& metadata);

}  // namespace dalr
