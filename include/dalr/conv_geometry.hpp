#pragma once
// A convolution as a linear map on patches (im2col): a conv layer with weight
// W (c_out x c_in x kh x kw) computes, at every output position, y = W_mat x_patch + b,
// W_mat being the row-major weight seen as c_out x (c_in kh kw) and x_patch the input
// values under the kernel there, in the same order (channel, then kernel row, then
// kernel column; zeros where the window covers the padding). Every statistic and solver
// of a fully connected layer then applies to conv layers unchanged, the samples being
// the (image, output position) pairs.
#include <cstdint>

namespace dalr {

struct ConvGeometry {
  int64_t channels = 0, height = 0, width = 0;  // the input feature map (C, H, W)
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride = 1, pad = 0, dilation = 1;  // PyTorch's semantics (floor mode)

  int64_t out_height() const {
    return (height + 2 * pad - dilation * (kernel_h - 1) - 1) / stride + 1;
  }
  int64_t out_width() const {
    return (width + 2 * pad - dilation * (kernel_w - 1) - 1) / stride + 1;
  }
  int64_t positions() const { return out_height() * out_width(); }       // samples per image
  int64_t patch_size() const { return channels * kernel_h * kernel_w; }  // n
  int64_t map_size() const { return channels * height * width; }         // one image's input values
  // Throws dalr::Error naming the bad value: sizes below 1 (pad below 0), or a dilated
  // kernel larger than the padded input.
  void check() const;
};

}  // namespace dalr
