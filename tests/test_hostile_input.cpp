// Hostile input and hostile output paths (issue 12): what a stranger's file or an odd
// output target must not do to us (crash, hang, allocate gigabytes, destroy a file).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>

#include "common/checked.hpp"
#include "common/finite.hpp"
#include "dalr/arch.hpp"
#include "dalr/error.hpp"
#include "dalr/images.hpp"
#include "dalr/npy.hpp"
#include "dalr/safetensors.hpp"
#include "dalr/stats.hpp"
#include "io/atomic_file.hpp"
#include "io/decode.hpp"
#include "test_util.hpp"

namespace dalr {
namespace {

using test::read_file;
using test::TempDir;
using test::write_file;

void expect_error(const std::function<void()>& f, std::initializer_list<std::string> words) {
  const std::string msg = test::error_message(f);
  for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << w << " in: " << msg;
}

mode_t mode_of(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

bool temporaries_in(const std::string& dir) {
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().find(kTempMarker) != std::string::npos) return true;
  return false;
}

// ---------------------------------------------------------------- finding 1: outputs

TEST(OutputTarget, ReadOnlyFileIsRefusedEvenForRoot) {
  TempDir dir;
  const std::string p = dir.file("ro.txt");
  write_file(p, "keep me");
  ASSERT_EQ(::chmod(p.c_str(), 0444), 0);
  expect_error([&] { write_text_file(p, "new"); }, {"cannot write " + p, "read-only", "0444"});
  EXPECT_EQ(read_file(p), "keep me");
  EXPECT_EQ(mode_of(p) & 07777, 0444u);
  EXPECT_FALSE(temporaries_in(dir.path()));
}

TEST(OutputTarget, ReplacedFileKeepsItsMode) {
  TempDir dir;
  for (mode_t m : {0600, 0640, 0755}) {
    const std::string p = dir.file("m" + std::to_string(m));
    write_file(p, "old");
    ASSERT_EQ(::chmod(p.c_str(), m), 0);
    write_text_file(p, "new contents");
    EXPECT_EQ(read_file(p), "new contents");
    EXPECT_EQ(mode_of(p) & 07777, m);
  }
  EXPECT_FALSE(temporaries_in(dir.path()));
}

TEST(OutputTarget, SymlinkIsFollowedAndKept) {
  TempDir dir;
  std::filesystem::create_directory(dir.file("real"));
  const std::string target = dir.file("real/out.txt"), link = dir.file("link.txt");
  write_file(target, "old");
  ASSERT_EQ(::chmod(target.c_str(), 0600), 0);
  ASSERT_EQ(::symlink("real/out.txt", link.c_str()), 0);  // relative, as users make them
  write_text_file(link, "through the link");
  EXPECT_TRUE(S_ISLNK(mode_of(link)));
  EXPECT_EQ(read_file(target), "through the link");
  EXPECT_EQ(mode_of(target) & 07777, 0600u);
  // A dangling link creates its target.
  const std::string dangling = dir.file("dangling.txt");
  ASSERT_EQ(::symlink("real/new.txt", dangling.c_str()), 0);
  write_text_file(dangling, "created");
  EXPECT_TRUE(S_ISLNK(mode_of(dangling)));
  EXPECT_EQ(read_file(dir.file("real/new.txt")), "created");
  EXPECT_FALSE(temporaries_in(dir.path()));
  EXPECT_FALSE(temporaries_in(dir.file("real")));
}

TEST(OutputTarget, FifoIsWrittenThroughNotReplaced) {
  TempDir dir;
  const std::string fifo = dir.file("pipe");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  AtomicFile probe(fifo);  // a probe (as compress makes) neither blocks nor opens the FIFO
  EXPECT_TRUE(probe.temporary().empty());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // the reader: copies the FIFO into a file
    FILE* in = std::fopen(fifo.c_str(), "rb");
    FILE* out = std::fopen((fifo + ".read").c_str(), "wb");
    int c;
    while (in && out && (c = std::fgetc(in)) != EOF) std::fputc(c, out);
    ::_exit(in && out && std::fclose(out) == 0 ? 0 : 1);
  }
  write_text_file(fifo, "streamed");
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(S_ISFIFO(mode_of(fifo)));
  EXPECT_EQ(read_file(fifo + ".read"), "streamed");
  EXPECT_FALSE(temporaries_in(dir.path()));
}

TEST(OutputTarget, CharacterDeviceIsWrittenThrough) {
  if (::access("/dev/null", W_OK) != 0) GTEST_SKIP() << "no writable /dev/null";
  const mode_t before = mode_of("/dev/null");
  ASSERT_TRUE(S_ISCHR(before));
  write_text_file("/dev/null", "discarded");
  EXPECT_TRUE(S_ISCHR(mode_of("/dev/null")));
  EXPECT_EQ(mode_of("/dev/null"), before);
  // Through a link to it as well (what /dev/stdout is).
  TempDir dir;
  const std::string link = dir.file("null");
  ASSERT_EQ(::symlink("/dev/null", link.c_str()), 0);
  write_safetensors(link, {TensorOut::f32("x", {1}, {1.0f})}, {});
  EXPECT_TRUE(S_ISLNK(mode_of(link)));
  EXPECT_TRUE(S_ISCHR(mode_of("/dev/null")));
  EXPECT_FALSE(temporaries_in(dir.path()));
}

TEST(OutputTarget, DirectoryIsRefused) {
  TempDir dir;
  expect_error([&] { write_text_file(dir.path(), "x"); }, {"cannot write", "directory"});
}

TEST(OutputTarget, StaleTemporaryOfADeadProcessIsRemoved) {
  TempDir dir;
  const pid_t child = ::fork();  // a PID that surely is gone once reaped
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  const std::string stale =
      dir.file(".out.txt" + std::string(kTempMarker) + std::to_string(child) + ".0");
  const std::string alive =
      dir.file(".out.txt" + std::string(kTempMarker) + std::to_string(::getppid()) + ".0");
  write_file(stale, "left by SIGKILL");
  write_file(alive, "another run still writing");
  write_text_file(dir.file("out.txt"), "fresh");
  EXPECT_FALSE(test::file_exists(stale));
  EXPECT_TRUE(test::file_exists(alive));
  EXPECT_EQ(read_file(dir.file("out.txt")), "fresh");
}

// ---------------------------------------------------------------- finding 13: signals

// A child process holds a live temporary, as the CLI does while writing --out; each
// signal must remove it and end the process with 128 + the signal.
TEST(Interrupt, SignalRemovesLiveTemporariesAndSetsTheExitCode) {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    SCOPED_TRACE(sig);
    TempDir dir;
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(ready[0]);
      install_interrupt_cleanup("test-child");
      AtomicFile f(dir.file("big.safetensors"));
      std::string chunk(1 << 16, 'x');
      f.write(chunk.data(), chunk.size());
      const char one = '1';
      if (::write(ready[1], &one, 1) != 1) ::_exit(2);
      for (;;) ::pause();
    }
    ::close(ready[1]);
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
    ::close(ready[0]);
    EXPECT_TRUE(temporaries_in(dir.path()));  // the test sees the temporary it must remove
    ASSERT_EQ(::kill(child, sig), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 128 + sig);
    EXPECT_FALSE(temporaries_in(dir.path()));
    EXPECT_FALSE(test::file_exists(dir.file("big.safetensors")));
  }
}

// ---------------------------------------------------------------- finding 15: FIFO inputs

// Opening a FIFO as an input used to block in open() forever; now it is refused at once.
// (A hang would show as a ctest timeout; the reader never appears.)
TEST(InputFiles, FifoIsRefusedWithoutBlocking) {
  TempDir dir;
  const std::string fifo = dir.file("in");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error([&] { SafetensorsFile f(fifo); }, {"cannot open " + fifo, "FIFO"});
  expect_error([&] { NpyReader r(fifo); }, {"cannot open " + fifo, "FIFO"});
  expect_error([&] { LayerStats<double>::load(fifo); }, {"cannot open " + fifo, "FIFO"});
  if (::access("/dev/zero", R_OK) == 0)
    expect_error([&] { SafetensorsFile f("/dev/zero"); }, {"character device"});
}

// Images too (finding 15 and 18): a FIFO named like an image is refused at once, and an
// unreadable image's message gives the system's reason.
TEST(InputFiles, ImageFifoIsRefusedAndMissingImagesSayWhy) {
  TempDir dir;
  const std::string fifo = dir.file("a.png");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  InputSpec in;
  in.channels = 1;
  in.crop = {4, 4};
  std::vector<float> out(16);
  expect_error([&] { decode_and_preprocess(fifo, in, out.data()); },
               {"image", "cannot open " + fifo, "FIFO"});
  expect_error([&] { decode_and_preprocess(dir.file("gone.png"), in, out.data()); },
               {"cannot open", "gone.png", "No such file or directory"});
}

// ---------------------------------------------------------------- finding 2: npy nesting

std::string npy_with_header(const std::string& dict) {
  std::string h = dict;
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::string s("\x93NUMPY\x02\x00", 8);
  const uint32_t len = static_cast<uint32_t>(h.size());
  s.append(reinterpret_cast<const char*>(&len), 4);
  return s + h;
}

TEST(NpyHeader, DeepNestingIsRefusedNotAStackOverflow) {
  TempDir dir;
  const std::string p = dir.file("deep.npy");
  const size_t depth = 500000;  // 1 MB of parentheses: overflowed the stack before
  write_file(p, npy_with_header(std::string(depth, '(') + std::string(depth, ')')));
  const std::string msg = test::error_message([&] { NpyReader r(p); });
  EXPECT_NE(msg.find("nested deeper than 16"), std::string::npos) << msg.substr(0, 300);
  EXPECT_LT(msg.size(), 600u) << "the message quotes a bounded excerpt of the header";
  // Sixteen levels still parse (and then fail on meaning, not on depth).
  write_file(p, npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': " +
                                std::string(14, '(') + "2," + std::string(14, ')') + "}"));
  const std::string ok = test::error_message([&] { NpyReader r(p); });
  EXPECT_EQ(ok.find("nested deeper"), std::string::npos) << ok;
}

TEST(NpyHeader, HugeHeaderIsRefused) {
  TempDir dir;
  const std::string p = dir.file("huge.npy");
  write_file(p, npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), " +
                                std::string(2 << 20, ' ') + "}"));
  expect_error([&] { NpyReader r(p); }, {p, "absurd"});
}

// ---------------------------------------------------------------- finding 8: sample count

TEST(StatsFile, SampleCountIsParsedStrictly) {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  LayerStats<double> s(3, 0);
  s.save(good);
  SafetensorsFile f(good);
  auto with_count = [&](const std::string& count) {
    std::map<std::string, std::string> meta = f.metadata();
    meta["dalr.count"] = count;
    std::vector<TensorOut> ts;
    for (const auto& t : f.tensors()) ts.push_back(TensorOut::borrow(f, t));
    const std::string p = dir.file("c.safetensors");
    write_safetensors(p, ts, meta);
    return p;
  };
  for (const char* bad : {"-5", "1e99", "600.5", "", " 7", "7 ", "+7", "0x10", "12abc",
                          "99999999999999999999", "9223372036854775808"}) {
    SCOPED_TRACE(bad);
    const std::string p = with_count(bad);
    expect_error([&] { LayerStats<double>::load(p); }, {p, "dalr.count", "not a sample count"});
  }
  for (const auto& [text, value] :
       std::map<std::string, int64_t>{{"0", 0}, {"600", 600}, {"9223372036854775807", INT64_MAX}}) {
    const std::string p = with_count(text);
    EXPECT_EQ(LayerStats<double>::load(p).count(), value) << text;
  }
}

// ---------------------------------------------------------------- finding 7: statistics

TEST(StatsFile, NonFiniteValuesAreRefusedOnLoadAndSave) {
  TempDir dir;
  const int64_t n = 3, m = 2;
  const std::string p = dir.file("s.safetensors");
  auto write = [&](const char* bad, double value) {
    std::map<std::string, std::vector<double>> v = {{"gram", {2, 1, 0, 1, 3, 1, 0, 1, 4}},
                                                    {"sum_x", {1, 2, 3}},
                                                    {"max_x", {1, 1, 2}},
                                                    {"sum_y", {0.5, 1}},
                                                    {"max_y", {0.2, 0.4}}};
    if (bad) v[bad][1] = value;
    write_safetensors(
        p,
        {TensorOut::f64("gram", {n, n}, v["gram"]), TensorOut::f64("sum_x", {n}, v["sum_x"]),
         TensorOut::f64("max_x", {n}, v["max_x"]), TensorOut::f64("sum_y", {m}, v["sum_y"]),
         TensorOut::f64("max_y", {m}, v["max_y"])},
        {{"dalr.kind", "stats"}, {"dalr.count", "5"}});
  };
  write(nullptr, 0);
  EXPECT_EQ(LayerStats<double>::load(p).count(), 5);
  const double inf = std::numeric_limits<double>::infinity();
  for (const char* name : {"gram", "sum_x", "max_x", "sum_y", "max_y"})
    for (double bad : {std::nan(""), inf, -inf}) {
      SCOPED_TRACE(std::string(name) + " " + std::to_string(bad));
      write(name, bad);
      if (bad < 0 && std::string(name).rfind("max_", 0) == 0) {  // a max before any sample
        EXPECT_EQ(LayerStats<double>::load(p).count(), 5);
        continue;
      }
      expect_error([&] { LayerStats<double>::load(p); },
                   {p, "tensor '" + std::string(name) + "'", "at index 1", "must be finite"});
    }
  // A gram beyond float's range is Inf at fp32.
  write("gram", 1e300);
  EXPECT_EQ(LayerStats<double>::load(p).count(), 5);
  expect_error([&] { LayerStats<float>::load(p); }, {"tensor 'gram' holds Inf"});
  // An empty accumulator saves maxima of -Inf.
  LayerStats<double> empty(n, m);
  empty.save(p);
  EXPECT_EQ(LayerStats<double>::load(p).count(), 0);
  // Saving refuses what loading would.
  LayerStats<float> s(n, 0);
  const float x[3] = {3e19f, 1, 2};  // its square passes float's 3.4e38
  s.add(x, 1, n, nullptr, nullptr);
  expect_error([&] { s.save(dir.file("o.safetensors")); },
               {"cannot save statistics", "tensor 'gram' holds Inf", "--precision fp64"});
  EXPECT_FALSE(test::file_exists(dir.file("o.safetensors")));
}

TEST(ReconError, OverflowedInputsGiveNaNNotAFiniteRatio) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(std::isnan(relative_error(1.0, inf)));  // read as a perfect 0 before
  EXPECT_TRUE(std::isnan(relative_error(inf, inf)));
  EXPECT_TRUE(std::isnan(relative_error(std::nan(""), 2.0)));
  EXPECT_DOUBLE_EQ(relative_error(1.0, 4.0), 0.25);
  EXPECT_EQ(relative_error(0.0, 0.0), 0.0);
}

// ---------------------------------------------------------------- finding 10: duplicates

std::string st_file(const std::string& header, const std::string& data) {
  std::string h = header;
  const uint64_t len = h.size();
  return std::string(reinterpret_cast<const char*>(&len), 8) + h + data;
}

TEST(SafetensorsHeader, DuplicateTensorNameIsRefused) {
  TempDir dir;
  const std::string p = dir.file("dup.safetensors");
  const std::string t = R"({"dtype":"F32","shape":[1],"data_offsets":)";
  write_file(p, st_file("{\"w\":" + t + "[0,4]},\"w\":" + t + "[4,8]}}", std::string(8, '\0')));
  expect_error([&] { SafetensorsFile f(p); }, {p, "tensor 'w' twice"});
  // A key twice inside a tensor's entry or the metadata is as ambiguous.
  write_file(p, st_file(R"({"w":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}})",
                        std::string(4, '\0')));
  expect_error([&] { SafetensorsFile f(p); }, {p, "key 'dtype' twice"});
  write_file(p, st_file(R"({"__metadata__":{"a":"1","a":"2"}})", ""));
  expect_error([&] { SafetensorsFile f(p); }, {p, "key 'a' twice"});
  // The same name in two different objects is fine.
  write_file(p, st_file(R"({"__metadata__":{"w":"x"},"w":)" + t + "[0,4]}}", std::string(4, 0)));
  EXPECT_EQ(SafetensorsFile(p).tensors().size(), 1u);
}

TEST(SafetensorsHeader, DeepNestingIsRefused) {
  TempDir dir;
  const std::string p = dir.file("deep.safetensors");
  write_file(p, st_file("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", ""));
  expect_error([&] { SafetensorsFile f(p); }, {p, "nested deeper"});
}

// ---------------------------------------------------------------- finding 3: dalr.arch JSON

const char* const kIn = R"({"channels":1,"crop":[4,4]})";

TEST(ArchJson, DeepNestingIsRefusedNotAStackOverflow) {
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  expect_error([&] { parse_arch(deep, kIn); }, {"dalr.arch", "nested deeper"});
  expect_error([&] { parse_arch(R"([{"type":"flatten"}])", "{\"a\":" + deep + "}"); },
               {"dalr.input", "nested deeper"});
  // Nesting a layer list needs (array, layer, [h, w]) is fine.
  EXPECT_NO_THROW(
      parse_arch(R"([{"type":"adaptive_avgpool","out":[1,1]},{"type":"flatten"}])", kIn));
}

TEST(ArchJson, MessagesQuoteAnExcerptNotTheWholeInput) {
  std::string big = "[1";
  for (int i = 0; i < 100000; ++i) big += ",1";
  big += "]";
  const std::string arch = R"([{"type":"conv","name":"c","in":1,"out":2,"kernel":)" + big + "}]";
  const std::string msg = test::error_message([&] { parse_arch(arch, kIn); });
  EXPECT_NE(msg.find("'kernel'"), std::string::npos) << msg.substr(0, 300);
  EXPECT_LT(msg.size(), 600u);
  const std::string m2 = test::error_message([&] { parse_arch("[" + big + "]", kIn); });
  EXPECT_NE(m2.find("JSON object"), std::string::npos) << m2.substr(0, 300);
  EXPECT_LT(m2.size(), 600u);
  const std::string m3 = test::error_message([&] { parse_arch(big, big); });
  EXPECT_LT(m3.size(), 600u);
}

// ---------------------------------------------------------------- finding 14: ranges

TEST(Ranges, ArchFieldsHaveSaneMaxima) {
  const std::string conv = R"({"type":"conv","name":"c","in":1,"out":2,"kernel":1)";
  expect_error([&] { parse_arch("[" + conv + R"(,"pad":1099511627776}])", kIn); },
               {"'pad'", "must be <= 65536", "1099511627776"});
  expect_error([&] { parse_arch("[" + conv + R"(,"stride":70000}])", kIn); }, {"'stride'"});
  expect_error([&] { parse_arch(R"([{"type":"maxpool","kernel":65537}])", kIn); }, {"'kernel'"});
  expect_error([&] { parse_arch(R"([{"type":"flatten"}])", R"({"channels":1,"crop":70000})"); },
               {"'crop'", "at most 65536"});
  expect_error([&] { parse_arch(R"([{"type":"linear","name":"f","in":16,"out":16777217}])", kIn); },
               {"'out'", "must be <= 16777216"});
  // Each field in range, but the activation they make is not: refused, no overflow.
  expect_error(
      [&] {
        parse_arch(R"([{"type":"conv","name":"c","in":1,"out":16777216,"kernel":1}])",
                   R"({"channels":1,"crop":[65536,65536]})");
      },
      {"the output of layer 0 (conv 'c')", "values per sample"});
  EXPECT_NO_THROW(parse_arch("[" + conv + R"(,"pad":3}])", kIn));
}

TEST(Ranges, CheckedMultiplication) {
  EXPECT_EQ(checked_mul(3037000499, 3037000499, "x"), 9223372030926249001);
  expect_error([] { checked_mul(3037000500, 3037000500, "the buffer"); },
               {"the buffer is too large", "3037000500 x 3037000500"});
  expect_error([] { checked_mul(INT64_MAX, 2, "y"); }, {"y is too large"});
  expect_error([] { checked_mul(-1, 2, "z"); }, {"z is too large"});
  EXPECT_EQ(checked_mul(0, INT64_MAX, "w"), 0);
}

// ---------------------------------------------------------------- finding 4: threads

// With the address space capped, starting 200 decoding threads (8 MiB stacks) fails
// part way: a clean error, not std::terminate with threads running. In a child process,
// so the cap does not reach the other tests.
TEST(Threads, FailedThreadStartIsACleanError) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan's shadow memory is reserved address space: a cap on it stops the sanitizer's
  // own allocations before any thread's, so this test means nothing in that build.
  GTEST_SKIP() << "RLIMIT_AS cannot be tested under AddressSanitizer";
#endif
  TempDir dir;
  std::filesystem::create_directories(dir.file("data/a"));
  write_file(dir.file("data/a/x.png"), "not an image");
  InputSpec in;
  in.channels = 1;
  in.crop = {4, 4};
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    long pages = 0;
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f || std::fscanf(f, "%ld", &pages) != 1) ::_exit(3);
    std::fclose(f);
    const rlim_t cap = rlim_t(pages) * rlim_t(::sysconf(_SC_PAGESIZE)) + (rlim_t(64) << 20);
    const struct rlimit lim = {cap, cap};
    if (::setrlimit(RLIMIT_AS, &lim) != 0) ::_exit(4);
    try {
      open_images(dir.file("data"), in, 200, 0, false, 0);
    } catch (const Error& e) {
      const std::string m = e.what();
      ::_exit(m.find("could not start image decoding thread") != std::string::npos &&
                      m.find("fewer --workers") != std::string::npos
                  ? 0
                  : 5);
    } catch (...) {
      ::_exit(6);
    }
    ::_exit(7);  // every thread started: the cap did not bite
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Threads, WorkersOutOfRangeAreRefused) {
  InputSpec in;
  in.channels = 1;
  in.crop = {4, 4};
  expect_error([&] { open_images("/nonexistent", in, 40000, 0, false, 0); },
               {"workers must be between 1 and 256", "40000"});
}

// ---------------------------------------------------------------- finding 17: .pth

TEST(SafetensorsHeader, PyTorchCheckpointIsNamedWithItsConverter) {
  TempDir dir;
  const std::string zip = dir.file("model.pth");
  write_file(zip, std::string("PK\x03\x04\x14\x00\x00\x00\x08\x00", 10) + std::string(200, 'x'));
  expect_error([&] { SafetensorsFile f(zip); },
               {zip, "zip archive", "torch.save", "tools/torchvision_to_bin.py",
                "dalr_format.write_safetensors"});
  const std::string pickle = dir.file("old.pth");
  write_file(pickle, std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8", 12) +
                         std::string(200, 'y'));
  expect_error([&] { SafetensorsFile f(pickle); },
               {pickle, "Python pickle", "tools/torchvision_to_bin.py"});
  // A safetensors file whose header length (640 = 0x280) starts with the same two bytes
  // as a pickle is still read.
  std::string header = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  header.resize(640, ' ');
  const std::string p = dir.file("ok.safetensors");
  write_file(p, st_file(header, std::string(4, '\0')));
  ASSERT_EQ(static_cast<uint8_t>(read_file(p)[0]), 0x80);
  EXPECT_EQ(SafetensorsFile(p).tensors().size(), 1u);
}

// ---------------------------------------------------------------- finding 12: image size

uint32_t crc32(const std::string& s) {
  uint32_t c = 0xffffffffu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string png_chunk(const std::string& type, const std::string& body) {
  return be32(static_cast<uint32_t>(body.size())) + type + body + be32(crc32(type + body));
}

// A PNG of a few dozen bytes that declares W x H RGB pixels.
std::vector<uint8_t> tiny_png(uint32_t w, uint32_t h) {
  const std::string s = std::string("\x89PNG\r\n\x1a\n", 8) +
                        png_chunk("IHDR", be32(w) + be32(h) + std::string("\x08\x02\0\0\0", 5)) +
                        png_chunk("IDAT", std::string("\x78\x9c", 2)) + png_chunk("IEND", "");
  return {s.begin(), s.end()};
}

// A baseline greyscale JPEG header declaring W x H (up to the scan; no image data).
std::vector<uint8_t> tiny_jpeg(uint16_t w, uint16_t h) {
  std::string s("\xff\xd8", 2);
  s += std::string("\xff\xdb\x00\x43\x00", 5) + std::string(64, '\x01');
  s += std::string("\xff\xc0\x00\x0b\x08", 5);
  s += {static_cast<char>(h >> 8), static_cast<char>(h), static_cast<char>(w >> 8),
        static_cast<char>(w)};
  s += std::string("\x01\x01\x11\x00", 4);
  s += std::string("\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00", 10);
  s += std::string("\x00\x00\xff\xd9", 4);
  return {s.begin(), s.end()};
}

class ImageCap : public ::testing::Test {
 protected:
  void TearDown() override { ::unsetenv("DALR_MAX_IMAGE_PIXELS"); }
  static std::string png_error(uint32_t w, uint32_t h) {
    int64_t ow, oh, oc;
    std::vector<uint8_t> px;
    return test::error_message(
        [&] { io::decode_png("t.png", tiny_png(w, h), &ow, &oh, &oc, &px); });
  }
  static std::string jpeg_error(uint16_t w, uint16_t h) {
    int64_t ow, oh, oc;
    std::vector<uint8_t> px;
    return test::error_message(
        [&] { io::decode_jpeg("t.jpg", tiny_jpeg(w, h), 0, false, &ow, &oh, &oc, &px); });
  }
};

TEST_F(ImageCap, HugeDeclaredPngIsRefusedBeforeAllocating) {
  const std::string big = png_error(60000, 60000);
  EXPECT_NE(big.find("t.png: PNG declares 60000 x 60000 pixels"), std::string::npos) << big;
  EXPECT_NE(big.find("DALR_MAX_IMAGE_PIXELS"), std::string::npos) << big;
  const std::string huge = png_error(1000000, 1000000);  // a bare bad_alloc before
  EXPECT_NE(huge.find("declares 1000000 x 1000000"), std::string::npos) << huge;
  // Under the cap, the same file gets as far as its (missing) image data.
  const std::string small = png_error(64, 48);
  EXPECT_EQ(small.find("declares"), std::string::npos) << small;
  EXPECT_NE(small.find("t.png"), std::string::npos) << small;
  ::setenv("DALR_MAX_IMAGE_PIXELS", "3000", 1);  // 64 x 48 = 3072
  EXPECT_NE(png_error(64, 48).find("declares 64 x 48 pixels, more than the 3000"),
            std::string::npos);
  ::setenv("DALR_MAX_IMAGE_PIXELS", "-1", 1);
  EXPECT_NE(png_error(64, 48).find("DALR_MAX_IMAGE_PIXELS='-1'"), std::string::npos);
}

TEST_F(ImageCap, HugeDeclaredJpegIsRefusedBeforeAllocating) {
  const std::string big = jpeg_error(65000, 65000);
  EXPECT_NE(big.find("t.jpg: JPEG declares 65000 x 65000 pixels"), std::string::npos) << big;
  const std::string small = jpeg_error(64, 48);
  EXPECT_EQ(small.find("declares"), std::string::npos) << small;
  ::setenv("DALR_MAX_IMAGE_PIXELS", "3071", 1);
  EXPECT_NE(jpeg_error(64, 48).find("declares 64 x 48 pixels"), std::string::npos);
  ::setenv("DALR_MAX_IMAGE_PIXELS", "3072", 1);
  EXPECT_EQ(jpeg_error(64, 48).find("declares"), std::string::npos);
}

// The cap as a command-line option (--max-image-pixels, compress / evaluate / sweep): it
// wins over the environment, names the file, and a bad value is refused before any work.
TEST_F(ImageCap, CommandLineOption) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.file("imgs/0"));
  const std::vector<uint8_t> png = tiny_png(64, 48);
  test::write_file(dir.file("imgs/0/a.png"), std::string(png.begin(), png.end()));
  const std::string model = std::string(DALR_SOURCE_DIR) + "/examples/fashion2digits/model.bin";
  const std::string eval = "evaluate --model " + model + " --data " + dir.file("imgs") +
                           " --device cpu -q --max-image-pixels ";
  ::setenv("DALR_MAX_IMAGE_PIXELS", "100000000", 1);
  test::CommandResult r = test::run_cli(eval + "3000");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("a.png: PNG declares 64 x 48 pixels, more than the 3000"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("--max-image-pixels"), std::string::npos) << r.output;
  for (const char* bad : {"0", "-5"}) {
    r = test::run_cli(eval + bad);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("--max-image-pixels must be a positive whole number"),
              std::string::npos)
        << r.output;
  }
}

}  // namespace
}  // namespace dalr
