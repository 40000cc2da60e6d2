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
// dst(j, i) = src(i, j) for the column-major r x c src (leading dimension lds) and the
// c x r dst (ldd), in 64 x 64 tiles: element by element, each write of a large matrix
// lands a whole column away from the last (a 4096 x 25088 weight took 2.2 s, the tiles
// about a tenth of that).
template <typename T>
void transpose_into(const T* src, int64_t r, int64_t c, int64_t lds, T* dst, int64_t ldd) {
  constexpr int64_t kTile = 64;
  for (int64_t j0 = 0; j0 < c; j0 += kTile)
    for (int64_t i0 = 0; i0 < r; i0 += kTile) {
      const int64_t j1 = j0 + kTile < c ? j0 + kTile : c, i1 = i0 + kTile < r ? i0 + kTile : r;
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) dst[i * ldd + j] = src[j * lds + i];
    }
}

template <typename T>
Matrix<T> from_row_major(const T* src, int64_t r, int64_t c) {
  Matrix<T> m(r, c);  // src is the column-major c x r matrix m^T
  transpose_into(src, c, r, c, m.ptr(), r);
  return m;
}

template <typename T>
std::vector<T> to_row_major(const Matrix<T>& m) {
  std::vector<T> out(static_cast<size_t>(m.size()));
  transpose_into(m.ptr(), m.rows, m.cols, m.ld(), out.data(), m.cols);
  return out;
}

}  // namespace dalr
