#pragma once
// The image preprocessing a model expects: its file's `dalr.input` metadata, what the
// image reader applies (dalr/images.hpp) and what the forward pass assumes was applied.
//
// dalr.input: {"channels":3,["resize":0],"crop":[224,224],["scale":1],["mean":[..]],
//              ["std":[..]]} ("crop" may be one number for a square).
// An image is resized so its shorter side equals `resize` (bilinear, aspect kept; 0: no
// resize), centre-cropped to crop[0] x crop[1] (height x width), and each value becomes
// (pixel * scale - mean[c]) / std[c] (pixel in 0..255; mean/std empty mean 0/1).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace dalr {

struct InputSpec {
  int64_t channels = 3;
  int64_t resize = 0;  // shorter side resized to this before the crop; 0: no resize
  std::array<int64_t, 2> crop{224, 224};  // (height, width) fed to the network
  double scale = 1.0;                     // pixel (0..255) * scale
  std::vector<double> mean;               // per channel, empty: none
  std::vector<double> std;                // per channel, empty: none
};

// Throws dalr::Error naming the field unless: channels >= 1, resize >= 0, both crop
// sizes >= 1, scale finite and > 0, mean and std each empty or one finite value per
// channel, every std > 0. (Decoding images needs channels 1 or 3 besides: open_images.)
void validate(const InputSpec& in);

// Parses the dalr.input JSON (above) and validates it. "channels" and "crop" are
// required; absent optional keys keep InputSpec's defaults. Throws dalr::Error on bad
// JSON, an unknown key, a missing field or a wrong value.
InputSpec parse_input_spec(const std::string& json_text);

// The inverse of parse_input_spec (every field written except an empty mean or std).
std::string input_to_json(const InputSpec& in);

bool operator==(const InputSpec& a, const InputSpec& b);

}  // namespace dalr
