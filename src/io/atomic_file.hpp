#pragma once
// Output files are written to a temporary name in the same folder and renamed into
// place only when complete, so a failure never leaves a half-written file.
#include <cstddef>
#include <string>

namespace dalr {

class AtomicFile {
 public:
  // Creates PATH.tmp.<pid>.<counter>; throws dalr::Error "cannot write PATH: <reason>".
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded; never throws
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);  // throws on a short write (disk full, ...)
  void commit();                           // fsync, close, rename over PATH

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes a whole string atomically (reports, JSON).
void write_text_file(const std::string& path, const std::string& text);

// True when both paths name the same existing file (same device and inode), or
// resolve to the same path; used to refuse an output that would overwrite an input.
bool same_file(const std::string& a, const std::string& b);

}  // namespace dalr
