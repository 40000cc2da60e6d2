#include "io/input_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dalr/error.hpp"

namespace dalr {

namespace {

const char* what_it_is(mode_t m) {
  if (S_ISFIFO(m)) return "not a regular file (a FIFO, or named pipe)";
  if (S_ISDIR(m)) return "not a regular file (a directory)";
  if (S_ISCHR(m)) return "not a regular file (a character device)";
  if (S_ISBLK(m)) return "not a regular file (a block device)";
  if (S_ISSOCK(m)) return "not a regular file (a socket)";
  return "not a regular file";
}

}  // namespace

int open_input_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging; the
  // descriptor then goes back to blocking mode for the reads.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error("cannot open " + path + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("cannot open " + path + ": " + what_it_is(st.st_mode));
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error("cannot open " + path + ": " + std::strerror(err));
  }
  return fd;
}

}  // namespace dalr
