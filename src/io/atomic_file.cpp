#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "dalr/error.hpp"

namespace dalr {

namespace {

std::string cannot_write(const std::string& path, int err) {
  return "cannot write " + path + ": " + std::strerror(err);
}

// Distinguishes temporaries of several AtomicFiles for one path in one process.
uint64_t next_temp_counter() {
  static std::atomic<uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

// Makes the rename itself durable; best effort (some file systems refuse it).
void fsync_parent_folder(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path)
    : path_(path),
      tmp_(path + ".tmp." + std::to_string(::getpid()) + "." +
           std::to_string(next_temp_counter())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0) throw Error(cannot_write(path_, errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": file already committed");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(cannot_write(path_, errno));
    }
    if (w == 0) throw Error(cannot_write(path_, ENOSPC));  // no progress: treat as full
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": file already committed");
  // Data reaches the disk before the name points at it, so a crash leaves either the
  // old file or the complete new one.
  if (::fsync(fd_) != 0) throw Error(cannot_write(path_, errno));
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw Error(cannot_write(path_, errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw Error(cannot_write(path_, errno));
  committed_ = true;
  fsync_parent_folder(path_);
}

void write_text_file(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0)
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  // One of them does not exist (yet): compare where the paths lead.
  std::error_code ea, eb;
  auto ca = std::filesystem::weakly_canonical(a, ea);
  auto cb = std::filesystem::weakly_canonical(b, eb);
  if (ea || eb)
    return std::filesystem::path(a).lexically_normal() ==
           std::filesystem::path(b).lexically_normal();
  return ca == cb;
}

}  // namespace dalr
