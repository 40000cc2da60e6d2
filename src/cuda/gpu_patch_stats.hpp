#pragma once
// The GPU twin of PatchAccumulator (dalr/patches.hpp): statistics of a conv layer's
// patches, cut from the feature maps on the device (kernels/im2row.cuh) one tile at a
// time and handed to GpuStats. Backend::conv_stats of the CUDA backend returns it.
#include <cstdint>
#include <memory>
#include <vector>

#include "dalr/backend.hpp"
#include "dalr/conv_geometry.hpp"
#include "im2row.cuh"

namespace dalr::cuda {

class Context;

// The device im2row's view of a geometry (kernels/im2row.cuh).
inline kernels::Im2rowGeometry im2row_geometry(const ConvGeometry& g) {
  return {g.channels, g.height, g.width,    g.kernel_h,     g.kernel_w,
          g.stride,   g.pad,    g.dilation, g.out_height(), g.out_width()};
}

// The same semantics as PatchAccumulator<T>(stats(g.patch_size(), m, w, b, tile_cols), g,
// tile_cols): add() takes host feature maps (g.map_size() x images); samples are
// numbered image * positions + position; the statistics have width g.patch_size().
// Besides, add_device() takes feature maps already on ctx's device (the contract of
// StatsAccumulator::add_device, e.g. a CudnnForward device tap), which never visit the
// host. A tile holds `tile_cols` consecutive samples, across image boundaries. Device
// memory: GpuStats' own (C and two staging slots of n x tile_cols) plus one tile and,
// for add(), the maps of about tile_cols / positions images; none of it grows with the
// number of images. NaN/Inf: add() throws before counting anything, with the host
// twin's message (the first non-finite value of a patch, by sample then unit; a value
// no window reads is ignored, as by the twin); add_device() reports it later, as
// GpuStats::add_device does.
template <typename T>
std::unique_ptr<StatsAccumulator<T>> make_patch_stats(std::shared_ptr<Context> ctx,
                                                      const ConvGeometry& g, int64_t m,
                                                      const Matrix<T>* w, const std::vector<T>* b,
                                                      int64_t tile_cols);

}  // namespace dalr::cuda
