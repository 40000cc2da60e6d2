#pragma once
// Convolutions through oneDNN for CpuForward<float>: the same arithmetic as the im2col +
// BLAS path (bias added, then an optional fused ReLU), in oneDNN's JIT kernels on
// channels-last or blocked layouts, which run VGG-sized layers markedly faster. Every
// other layer sees plain NCHW; only a conv that feeds a conv directly hands over oneDNN's
// layout.
//
// DALR_CPU_CONV selects the path at run time: unset or "dnnl" uses oneDNN where the build
// found it (DALR_HAVE_DNNL), "im2col" forces the im2col + BLAS path (to compare, or as an
// escape hatch). fp64 always takes the im2col path.
#include <cstdint>
#include <memory>
#include <vector>

#include "dalr/arch.hpp"

namespace dalr::cpu {

class DnnlConv {
 public:
  // nullptr when the build has no oneDNN or DALR_CPU_CONV=im2col; throws dalr::Error on
  // an unknown DALR_CPU_CONV value.
  static std::shared_ptr<DnnlConv> create();
  ~DnnlConv();
  DnnlConv(const DnnlConv&) = delete;
  DnnlConv& operator=(const DnnlConv&) = delete;

  // Where an activation is not plain NCHW: the layout a cached primitive writes (its
  // own, often channels-last or blocked), so that one conv can feed the next without a
  // round trip through NCHW. nullptr means NCHW.
  using Layout = const void*;

  // y = conv(x) + bias (then max(., 0) with `relu`, NaN kept) for `batch` images of shape
  // s into o. x is in `x_layout` (nullptr: NCHW; else what an earlier call returned for
  // the layer before). y (resized here) is NCHW, or with `keep_layout` in the
  // primitive's own layout, which is returned (nullptr when NCHW). `layer` (the layer's
  // index) keys the cached primitive and reordered weights, so weight and bias must stay
  // the same for a given index. Primitives are built once per (layer, batch, input size,
  // relu); thread-safe (calls are serialised).
  // Layer keys from kUncached on are one-off: their weights may change between calls (a
  // substituted layer, CpuForward::run_from), so each call rebuilds the primitive and the
  // reordered weights, dropping the key's earlier ones. Keys that run in the same pass
  // must differ (the Layout a call returns lives until its key's next call).
  static constexpr size_t kUncached = size_t(1) << 62;
  Layout run(size_t layer, const float* x, Layout x_layout, int64_t batch, const ActShape& s,
             const ActShape& o, const LayerSpec& l, const std::vector<float>& weight,
             const std::vector<float>& bias, bool relu, bool keep_layout, std::vector<float>* y);

 private:
  DnnlConv();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dalr::cpu
