#pragma once
// The precision of a job, chosen once (--precision) and held by the backend and the job
// alike: the scalar type of the statistics and the solve, the GPU's math mode and how a
// float forward pass stores its activations.
#include <string>

namespace dalr {

// How a float forward pass stores its activations between layers (--precision).
// Fp32: as computed. Fp16 / Bf16: the input, the conv and linear weights and every
// layer's output are rounded to that format (nearest, ties to even); the arithmetic
// inside a layer stays fp32, and biases and batchnorm's scale and shift stay fp32. A
// conv or linear layer with a bias is two roundings: its product, then product + bias.
// On the GPU this is the tensor-core path (16-bit data, fp32 accumulation,
// channels-last between convolutions); on the CPU the same rounding is emulated, so
// the CPU twin shows what the format does to the activations, not a speed-up. Taps
// and outputs are widened back to float (exactly), so the statistics and the solve
// run in fp32 either way.
enum class ActStorage { Fp32, Fp16, Bf16 };

// The five user-facing choices. fp64: double throughout. fp32: float storage and math,
// no reduced-precision reductions. tf32: float, TF32 tensor-core math for the GPU's
// Gram/GEMM products (CUDA only). fp16 / bf16: 16-bit activations in the forward pass
// (ActStorage), statistics and solve in fp32.
enum class Precision { Fp64, Fp32, Tf32, Fp16, Bf16 };

const char* precision_name(Precision p);  // "fp64", "fp32", "tf32", "fp16", "bf16"

// The scalar type of the statistics and the solve: double for fp64, float otherwise.
inline bool uses_double(Precision p) {
  return p == Precision::Fp64;
}
// TF32 tensor-core math on the GPU (cuda::Math::Tf32); every other choice is exact.
inline bool uses_tf32(Precision p) {
  return p == Precision::Tf32;
}
inline ActStorage act_storage(Precision p) {
  return p == Precision::Fp16   ? ActStorage::Fp16
         : p == Precision::Bf16 ? ActStorage::Bf16
                                : ActStorage::Fp32;
}

// The one parser of --precision: fp64 | fp32 | tf32 | fp16 | bf16, or auto (fp64 on the
// CPU, fp32 on the GPU). Throws dalr::Error for tf32 on the CPU and for anything else,
// naming the choices.
Precision parse_precision(const std::string& text, bool device_is_cpu);

}  // namespace dalr
