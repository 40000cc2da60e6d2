#pragma once
// Output files are written to a temporary name in the same folder and renamed into
// place only when complete, so a failure never leaves a half-written file.
//
// What an output path may name (each case would otherwise lose data):
// - a symbolic link: followed; the temporary is made beside the link's final target,
//   which is replaced and the link kept;
// - a character device (/dev/null) or a FIFO: written through, never replaced;
// - a directory, block device or socket: refused;
// - an existing regular file: its mode is kept; refused when it is read-only (no write
//   bit at all, checked on the mode so that root is refused too) or not writable by us.
// Temporaries are named .NAME.dalr-tmp.PID.N; while one exists its path sits in a
// fixed table that remove_live_temporaries() empties from a signal handler. A later
// AtomicFile for the same NAME removes the temporaries of processes that no longer run.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace dalr {

class AtomicFile {
 public:
  // Checks the target and creates the temporary (nothing for a write-through target);
  // throws dalr::Error "cannot write PATH: <reason>".
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded; never throws
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);  // throws on a short write (disk full, ...)
  void commit();                           // sync(), then rename over the target
  // fsync and close, leaving only the rename to commit(): what commit_all() does first
  // for every file. Nothing for a write-through target (commit() closes it).
  void sync();

  // The temporary's path; empty for a write-through target.
  const std::string& temporary() const { return tmp_; }

 private:
  void open_through();  // write-through targets are opened on first use, not by a probe

  std::string path_;    // as the caller named it (messages)
  std::string target_;  // the file replaced: path_ with its links followed
  std::string tmp_;
  int fd_ = -1;
  bool through_ = false;
  bool committed_ = false;
  bool synced_ = false;
  int slot_ = -1;  // in the table of live temporaries
};

// Writes a whole string atomically (reports, JSON).
void write_text_file(const std::string& path, const std::string& text);
// The same, left uncommitted: for a job's outputs that are committed together.
std::unique_ptr<AtomicFile> stage_text_file(const std::string& path, const std::string& text);

// A job's outputs together: every file is on disk (sync) before any is renamed into
// place, so a failure while writing one (disk full, a folder that is not there) replaces
// none of them. Only the renames themselves come after the first replacement.
void commit_all(const std::vector<std::unique_ptr<AtomicFile>>& files);

// True when both paths name the same existing file (same device and inode), or
// resolve to the same path; used to refuse an output that would overwrite an input.
bool same_file(const std::string& a, const std::string& b);

// Unlinks every temporary file an AtomicFile of this process holds now. Async-signal-
// safe (a fixed table, unlink only): the CLI calls it from its SIGINT/SIGTERM/SIGHUP
// handler. Returns how many it removed.
int remove_live_temporaries() noexcept;

// For programs (the CLI), not the library's callers: SIGINT, SIGTERM and SIGHUP then
// remove the live temporaries, print "PROGRAM: interrupted by SIG...", and end the
// process with 128 + the signal (130, 143, 129), as a shell reports it. A signal that
// was ignored when the program started (nohup) stays ignored. PROGRAM must outlive us.
void install_interrupt_cleanup(const char* program);

// The temporary-file marker in a name (".dalr-tmp."), for tests and clean-up tools.
extern const char kTempMarker[];

}  // namespace dalr
