// The one parser of --precision (dalr/precision.hpp).
#include "dalr/precision.hpp"

#include "dalr/error.hpp"

namespace dalr {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::Fp64:
      return "fp64";
    case Precision::Fp32:
      return "fp32";
    case Precision::Tf32:
      return "tf32";
    case Precision::Fp16:
      return "fp16";
    case Precision::Bf16:
      return "bf16";
  }
  throw Error("unknown precision value");
}

Precision parse_precision(const std::string& text, bool device_is_cpu) {
  if (text == "auto") return device_is_cpu ? Precision::Fp64 : Precision::Fp32;
  for (Precision p :
       {Precision::Fp64, Precision::Fp32, Precision::Tf32, Precision::Fp16, Precision::Bf16}) {
    if (text != precision_name(p)) continue;
    if (p == Precision::Tf32 && device_is_cpu)
      throw Error("--precision tf32 needs --device cuda (TF32 is a tensor-core mode)");
    return p;
  }
  throw Error("--precision must be fp64, fp32, tf32, fp16 or bf16 (got '" + text + "')");
}

}  // namespace dalr
