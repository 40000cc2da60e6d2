#pragma once
// Dense column-major matrix, the storage every backend shares (BLAS/LAPACK/cuBLAS
// convention: element (i, j) at data[i + j * rows], leading dimension == rows).
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dalr {

template <typename T>
struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<T> data;

  Matrix() = default;
  Matrix(int64_t r, int64_t c, T fill = T(0))
      : rows(r), cols(c), data(static_cast<size_t>(r) * static_cast<size_t>(c), fill) {}

  T& operator()(int64_t i, int64_t j) { return data[static_cast<size_t>(i + j * rows)]; }
  const T& operator()(int64_t i, int64_t j) const {
    return data[static_cast<size_t>(i + j * rows)];
  }
  T* ptr() { return data.data(); }
  const T* ptr() const { return data.data(); }
  int64_t ld() const { return rows > 0 ? rows : 1; }
  int64_t size() const { return rows * cols; }
  bool empty() const { return data.empty(); }
};

// A row-major (r x c) buffer, as PyTorch and safetensors store a weight, is the
// column-major (c x r) matrix; these convert between the two layouts.
template <typename T>
Matrix<T> from_row_major(const T* src, int64_t r, int64_t c) {
  Matrix<T> m(r, c);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) m(i, j) = src[i * c + j];
  return m;
}

template <typename T>
std::vector<T> to_row_major(const Matrix<T>& m) {
  std::vector<T> out(static_cast<size_t>(m.size()));
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t j = 0; j < m.cols; ++j) out[static_cast<size_t>(i * m.cols + j)] = m(i, j);
  return out;
}

}  // namespace dalr
