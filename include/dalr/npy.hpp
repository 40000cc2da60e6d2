#pragma once
// NumPy .npy files: a streaming reader (rows in chunks, never the whole file in
// memory) and a writer. Supported: format versions 1, 2, 3; dtypes <f4, <f8, <f2
// (little endian or '|'); C or Fortran order. An array of shape (p, d1, d2, ...)
// is read as p rows of d1*d2*... values (C order flattening, as torch.flatten).
#include <cstdint>
#include <string>
#include <vector>

namespace dalr {

class NpyReader {
 public:
  explicit NpyReader(const std::string& path);  // throws dalr::Error naming file + problem
  ~NpyReader();
  NpyReader(const NpyReader&) = delete;
  NpyReader& operator=(const NpyReader&) = delete;

  const std::string& path() const { return path_; }
  int64_t rows() const { return rows_; }  // shape[0]: samples
  int64_t cols() const { return cols_; }  // product of the other dims: features
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::string& descr() const { return descr_; }  // e.g. "<f4"
  bool fortran_order() const { return fortran_; }

  // Reads up to max_rows further rows into `out` (row-major rows x cols, which is the
  // column-major cols x rows matrix: one sample per column), converting to T.
  // Returns the number of rows read; 0 at the end. Throws if the file is truncated.
  template <typename T>
  int64_t read_rows(T* out, int64_t max_rows);
  int64_t position() const { return next_row_; }  // rows consumed so far
  void rewind() { next_row_ = 0; }
  // The next read starts at `row` (0 .. rows()); throws beyond the end.
  void seek(int64_t row);

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<int64_t> shape_;
  std::string descr_;
  bool fortran_ = false;
  int64_t rows_ = 0, cols_ = 0;
  size_t elem_size_ = 0;
  uint64_t data_offset_ = 0;
  int64_t next_row_ = 0;
  std::vector<uint8_t> scratch_;
};

// Writes a C-order array of shape (rows, cols) (or (rows,) if cols < 0) as <f4 or <f8,
// atomically (temporary file + rename).
void write_npy(const std::string& path, const float* data, int64_t rows, int64_t cols);
void write_npy(const std::string& path, const double* data, int64_t rows, int64_t cols);

}  // namespace dalr
