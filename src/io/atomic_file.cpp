#include "io/atomic_file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "dalr/error.hpp"

namespace dalr {

const char kTempMarker[] = ".dalr-tmp.";

namespace {

std::string cannot_write(const std::string& path, int err) {
  return "cannot write " + path + ": " + std::strerror(err);
}

std::string cannot_write(const std::string& path, const std::string& why) {
  return "cannot write " + path + ": " + why;
}

// Distinguishes temporaries of several AtomicFiles for one path in one process.
uint64_t next_temp_counter() {
  static std::atomic<uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

std::string parent_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

// Makes the rename itself durable; best effort (some file systems refuse it).
void fsync_parent_folder(const std::string& path) {
  int fd = ::open(parent_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// ---- the table of live temporaries, read by a signal handler
// A global because a signal handler can reach nothing else; fixed-size and lock-free so
// that the handler may walk it (state 0: free, 1: being filled, 2: live).
constexpr int kSlots = 64;
constexpr size_t kSlotPath = PATH_MAX;
struct Slot {
  std::atomic<int> state{0};
  char path[kSlotPath];
};
static_assert(std::atomic<int>::is_always_lock_free, "signal handlers need lock-free atomics");
Slot g_slots[kSlots];

int register_temporary(const std::string& tmp) {
  if (tmp.size() >= kSlotPath) return -1;  // not removable on a signal; still correct
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (g_slots[i].state.compare_exchange_strong(expected, 1)) {
      std::memcpy(g_slots[i].path, tmp.c_str(), tmp.size() + 1);
      g_slots[i].state.store(2, std::memory_order_release);
      return i;
    }
  }
  return -1;
}

void unregister_temporary(int slot) {
  if (slot >= 0) g_slots[slot].state.store(0, std::memory_order_release);
}

// ---- where an output path leads

// The file a dangling symbolic link would create (links followed by hand, at most 40).
std::string follow_dangling_link(const std::string& path) {
  std::string cur = path;
  for (int hop = 0; hop < 40; ++hop) {
    struct stat st;
    if (::lstat(cur.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return cur;
    char buf[PATH_MAX];
    const ssize_t n = ::readlink(cur.c_str(), buf, sizeof(buf) - 1);
    if (n < 0) throw Error(cannot_write(path, errno));
    std::string next(buf, static_cast<size_t>(n));
    cur = next[0] == '/' ? next : parent_of(cur) + "/" + next;
  }
  throw Error(cannot_write(path, ELOOP));
}

std::string mode_string(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// Removes .NAME.dalr-tmp.PID.N files in DIR whose process no longer runs (a SIGKILL or a
// power cut), saying so on stderr.
void remove_stale_temporaries(const std::string& dir, const std::string& prefix) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const char* digits = name.c_str() + prefix.size();
    char* end = nullptr;
    const long pid = std::strtol(digits, &end, 10);
    if (end == digits || *end != '.' || pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive
    const std::string file = dir + "/" + name;
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::unlink(file.c_str()) == 0)
      std::fprintf(stderr, "dalr-gpu: removed '%s', left by an interrupted run (process %ld)\n",
                   file.c_str(), pid);
  }
  ::closedir(d);
}

const char* g_program = "dalr";  // for the handler's message

void write_stderr(const char* text) {
  const ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

// Async-signal-safe calls only: unlink, write, _exit.
extern "C" void on_interrupt(int sig) {
  remove_live_temporaries();
  write_stderr(g_program);
  write_stderr(sig == SIGINT    ? ": interrupted by SIGINT"
               : sig == SIGTERM ? ": interrupted by SIGTERM"
                                : ": interrupted by SIGHUP");
  write_stderr("; unfinished output files were removed\n");
  ::_exit(128 + sig);
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path), target_(path) {
  struct stat lst, st;
  if (::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
    if (::stat(path.c_str(), &st) != 0) {
      target_ = follow_dangling_link(path);  // the link's target is created
    } else if (S_ISREG(st.st_mode)) {
      char* real = ::realpath(path.c_str(), nullptr);
      if (!real) throw Error(cannot_write(path, "cannot resolve the symbolic link"));
      target_ = real;
      std::free(real);
    }  // else: a device or FIFO, opened through the link (/proc/self/fd/1 works so)
  }
  bool existed = false;
  if (::stat(target_.c_str(), &st) == 0) {
    existed = true;
    if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
      through_ = true;  // written through, never replaced: /dev/null stays a device
      return;
    }
    if (S_ISDIR(st.st_mode)) throw Error(cannot_write(path, "it is a directory"));
    if (!S_ISREG(st.st_mode))
      throw Error(cannot_write(path, "not a regular file, character device or FIFO"));
    // Root may write anything, so the mode bits decide what "read-only" means.
    if ((st.st_mode & 0222) == 0)
      throw Error(cannot_write(path, "the file is read-only (mode " + mode_string(st.st_mode) +
                                         "); make it writable or remove it first"));
    if (::access(target_.c_str(), W_OK) != 0) throw Error(cannot_write(path, errno));
  }
  const std::string dir = parent_of(target_);
  // NAME is cut so that the temporary's name stays within NAME_MAX (255).
  const std::string prefix =
      "." + std::filesystem::path(target_).filename().string().substr(0, 200) + kTempMarker;
  remove_stale_temporaries(dir, prefix);
  tmp_ =
      dir + "/" + prefix + std::to_string(::getpid()) + "." + std::to_string(next_temp_counter());
  slot_ = register_temporary(tmp_);  // before the file exists: a signal never misses it
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0) {
    const int err = errno;
    unregister_temporary(slot_);
    throw Error(cannot_write(path_, err));
  }
  if (existed) {  // the replacement keeps the old file's mode (and owner, when root)
    ::fchmod(fd_, st.st_mode & 07777);
    if (::geteuid() == 0) {
      const int ignored = ::fchown(fd_, st.st_uid, st.st_gid);  // best effort
      (void)ignored;
    }
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !through_) ::unlink(tmp_.c_str());
  unregister_temporary(slot_);
}

void AtomicFile::open_through() {
  // A FIFO blocks here until a reader opens it, as a shell's `> fifo` does.
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(cannot_write(path_, errno));
}

void AtomicFile::write(const void* data, size_t n) {
  if (committed_) throw Error("cannot write " + path_ + ": file already committed");
  if (through_ && fd_ < 0) open_through();
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
  if (committed_) throw Error("cannot write " + path_ + ": file already committed");
  if (through_) {
    if (fd_ < 0) open_through();  // an empty output still reaches the reader
    int fd = fd_;
    fd_ = -1;
    committed_ = true;
    if (::close(fd) != 0) throw Error(cannot_write(path_, errno));
    return;
  }
  sync();
  if (::rename(tmp_.c_str(), target_.c_str()) != 0) throw Error(cannot_write(path_, errno));
  committed_ = true;
  unregister_temporary(slot_);
  slot_ = -1;
  fsync_parent_folder(target_);
}

void AtomicFile::sync() {
  if (through_ || synced_) return;
  if (committed_ || fd_ < 0) throw Error("cannot write " + path_ + ": file already committed");
  // Data reaches the disk before the name points at it, so a crash leaves either the
  // old file or the complete new one.
  if (::fsync(fd_) != 0) throw Error(cannot_write(path_, errno));
  int fd = fd_;
  fd_ = -1;
  synced_ = true;
  if (::close(fd) != 0) throw Error(cannot_write(path_, errno));
}

void write_text_file(const std::string& path, const std::string& text) {
  stage_text_file(path, text)->commit();
}

std::unique_ptr<AtomicFile> stage_text_file(const std::string& path, const std::string& text) {
  auto f = std::make_unique<AtomicFile>(path);
  f->write(text.data(), text.size());
  return f;
}

void commit_all(const std::vector<std::unique_ptr<AtomicFile>>& files) {
  for (const auto& f : files) f->sync();
  for (const auto& f : files) f->commit();
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

int remove_live_temporaries() noexcept {
  int removed = 0;
  for (auto& s : g_slots)
    if (s.state.load(std::memory_order_acquire) == 2 && ::unlink(s.path) == 0) ++removed;
  return removed;
}

void install_interrupt_cleanup(const char* program) {
  g_program = program;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sa.sa_mask, sig);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction old;
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    ::sigaction(sig, &sa, nullptr);
  }
}

}  // namespace dalr
