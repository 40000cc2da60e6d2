#pragma once
// Which GPUs exist: declared in the public header (device_count, device_name).
#include "dalr/cuda.hpp"
