#pragma once
// Opening an input file (model, activations, statistics) without the traps of open(2):
// a FIFO would block open() until some writer appeared, a directory or device would be
// read as garbage. Only regular files (through any symbolic links) are accepted.
#include <string>

namespace dalr {

// An O_RDONLY | O_CLOEXEC descriptor of the regular file PATH (blocking mode, as
// open() gives), or dalr::Error "cannot open PATH: <reason>" naming what PATH is instead.
int open_input_file(const std::string& path);

}  // namespace dalr
