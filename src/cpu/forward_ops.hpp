#pragma once
// One function per layer op of the CPU forward pass (CpuForward's walk dispatches to
// them, one case per LayerType), and the 16-bit storage rules they share. Activations are
// NCHW per image, images one after another; `s` is a layer's input shape, `o` its
// output's (layer_input_shapes). Ops that change the size write `y` (resized here);
// the others work in place.
#include <cstdint>
#include <vector>

#include "dalr/arch.hpp"
#include "dalr/forward.hpp"

namespace dalr::cpu {

// Rounds every value of v to the storage format in place (ActStorage; nothing for fp32
// or for double, which has no 16-bit storage).
template <typename T>
void round_all(std::vector<T>& v, ActStorage s);

// 16-bit storage's rule for a conv or linear layer with a bias: its product v (batch
// blocks of channels x hw) is stored (rounded) before the bias is added; the sum is
// rounded with the layer's output. Nothing without a bias.
template <typename T>
void add_bias_to_stored(std::vector<T>& v, int64_t batch, int64_t channels, int64_t hw,
                        const std::vector<T>& bias, ActStorage s);

// The one NaN-keeping ReLU (as torch.relu: NaN stays NaN, -0 and negatives become +0).
template <typename T>
inline T relu_keep_nan(T v) {
  return v > T(0) ? v : (v == v ? T(0) : v);
}
template <typename T>
void relu(std::vector<T>& v);

// y = conv(x) + bias through im2col and one BLAS product per image (bias may be empty).
template <typename T>
void conv(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
          const LayerSpec& l, const std::vector<T>& weight, const std::vector<T>& bias,
          std::vector<T>& y);

// y (out x batch) = W x + b; weight (out, in) row-major, bias empty or out.
template <typename T>
void linear(const std::vector<T>& x, int64_t batch, const LayerSpec& l,
            const std::vector<T>& weight, const std::vector<T>& bias, std::vector<T>& y);

// PyTorch semantics: floor mode, no padding; max keeps NaN.
template <typename T>
void max_pool(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
              const LayerSpec& l, std::vector<T>& y);
template <typename T>
void avg_pool(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
              const LayerSpec& l, std::vector<T>& y);
// Bin i covers [floor(i*H/out), ceil((i+1)*H/out)).
template <typename T>
void adaptive_avg_pool(const std::vector<T>& x, int64_t batch, const ActShape& s, const ActShape& o,
                       std::vector<T>& y);

// v = v * scale[c] + shift[c] per channel (inference batchnorm, folded).
template <typename T>
void batchnorm(std::vector<T>& v, int64_t batch, const ActShape& s, const std::vector<T>& scale,
               const std::vector<T>& shift);

}  // namespace dalr::cpu
