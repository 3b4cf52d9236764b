// smos_bench: the workloads of issue 4, run on a fresh smos mount and on plain tmpfs
// (/dev/shm) in the same run, printed as one table line per workload with the ratio to tmpfs
// and the target.
//
// usage: smos_bench [--smosd PATH] [--quick] [--only W[,W...]] [--memory SIZE] [--timeout SEC]
//                   [--markdown] [--no-passthrough] [--no-io-uring]
// Exit status: 0 when every workload ran (whatever the numbers), 1 when one failed or smosd
// misbehaved, 2 for a usage error, 77 when this machine cannot mount FUSE (ctest: skipped).
//
// Process shape. The parent mounts the store (smosd -f, in its own process group), then forks
// one worker that runs the workloads (in its own process group, with any readers, pushers and
// poppers it forks). The parent only waits: a signal, the timeout, or a crash of the worker ends
// in the same clean-up, which unmounts (fusermount3 -u, then -uz), reaps smosd, and removes the
// store's /dev/shm files and both temp directories. Nothing of the benchmark outlives it.
//
// What "cold" means. On the mount, a read is cold when the kernel's page cache of that FUSE
// inode holds none of the file, so every byte crosses FUSE from the daemon: the harness drops
// it with posix_fadvise(POSIX_FADV_DONTNEED) (FUSE uses the generic fadvise, which evicts clean,
// unmapped pages) and checks with mincore() that nothing stayed resident. On tmpfs there is no
// separate cache: the page-cache pages are the data, and fadvise cannot drop them, so a cold
// tmpfs read is a warm one. Warm means a fresh open (and, for mmap, a fresh mapping) after a
// complete read; whether the mount keeps its page cache across opens is the daemon's choice
// (keep_cache), and the figure shows it. With FUSE passthrough (the default where the kernel
// offers it) the mount has no page cache of its own: reads go to the segment's pages, as on
// tmpfs, and cold == warm there too. --no-passthrough measures the other path.
//
// Requests reach smosd through its io_uring where the kernel offers one (the fuse module's
// enable_uring; scripts/bench.sh turns it on), else through /dev/fuse; --no-io-uring measures
// the latter on a kernel that offers both. The header line says which path ran.
#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "smos/control.h"
#include "smos/xattr.h"

namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kIoSize = kMiB;  // every large read and write moves 1 MiB
constexpr long kFuseSuperMagic = 0x65735546;

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
  std::string smosd;
  bool quick = false;
  bool markdown = false;  // print the table as Markdown
  std::vector<int> only;  // workload numbers 1-9; empty: all
  std::string memory = "4G";
  int timeout_s = 0;  // 0: the mode's default
  bool passthrough = true;  // false: smosd --no-passthrough, to measure the fallback path
  bool passthrough_on = false;  // what smosd logged that the kernel accepted
  bool ring = true;  // false: smosd --no-io-uring
  bool ring_on = false;  // what smosd logged
};

struct Sizes {
  std::size_t big;             // workloads 4-7
  std::size_t shared;          // workload 8, readers
  int lat_iters;               // workloads 1, 2, 3 (stat, getxattr)
  int readdir_iters;           // workload 3 (readdir)
  int rounds;                  // latency samples are taken in this many alternating rounds
  int reps;                    // throughput repetitions, workloads 4-7
  int conc_reps;               // workload 8
  std::size_t conc_min_bytes;  // each readers run moves at least this much in total
  int queue_per_process;       // workload 8, entries per pusher
  int ctl_batches;             // workload 9
  int ctl_batch;
  // Time caps, so that a loaded machine still finishes in time: a latency line stops taking
  // samples, and a throughput line or workload 9 starts no new repetition, once it has run
  // this long. On an idle machine the counts above are reached first.
  double latency_cap_s;
  double throughput_cap_s;
  double control_cap_s;
};

Sizes sizes_for(bool quick) {
  if (quick) {
    return {.big = 64 * kMiB,
            .shared = 16 * kMiB,
            .lat_iters = 1000,
            .readdir_iters = 60,
            .rounds = 2,
            .reps = 2,
            .conc_reps = 1,
            .conc_min_bytes = 256 * kMiB,
            .queue_per_process = 200,
            .ctl_batches = 20,
            .ctl_batch = 100,
            .latency_cap_s = 0.5,
            .throughput_cap_s = 1.0,
            .control_cap_s = 1.0};
  }
  return {.big = 256 * kMiB,
          .shared = 64 * kMiB,
          .lat_iters = 10000,
          .readdir_iters = 400,
          .rounds = 4,
          .reps = 9,
          .conc_reps = 3,
          .conc_min_bytes = 1024 * kMiB,
          .queue_per_process = 1000,
          .ctl_batches = 150,
          .ctl_batch = 100,
          .latency_cap_s = 5.0,
          .throughput_cap_s = 10.0,
          .control_cap_s = 8.0};
}

const char* const kWorkloadNames[] = {
    "",           "push_pop", "latest",  "metadata",    "large_write",
    "large_read", "mmap",     "segment", "concurrency", "control"};

[[noreturn]] void usage(const char* message) {
  if (message) std::fprintf(stderr, "smos_bench: %s\n", message);
  std::fprintf(stderr,
               "usage: smos_bench [--smosd PATH] [--quick] [--only W[,W...]] [--memory SIZE] "
               "[--timeout SEC] [--markdown] [--no-passthrough] [--no-io-uring]\n"
               "  W: 1-9 or push_pop latest metadata large_write large_read mmap segment "
               "concurrency control\n"
               "  --smosd defaults to the smosd next to this binary\n");
  std::exit(2);
}

std::string self_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<std::size_t>(n));
  return path.substr(0, path.rfind('/'));
}

int workload_number(const std::string& word) {
  for (int i = 1; i <= 9; ++i) {
    if (word == kWorkloadNames[i] || word == std::to_string(i)) return i;
  }
  return 0;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const std::string& flag) -> std::optional<std::string> {
      if (a == flag) {
        if (i + 1 >= argc) usage((flag + " needs a value").c_str());
        return std::string(argv[++i]);
      }
      if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
      return std::nullopt;
    };
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--markdown") {
      o.markdown = true;
    } else if (a == "--no-passthrough") {
      o.passthrough = false;
    } else if (a == "--no-io-uring") {
      o.ring = false;
    } else if (a == "-h" || a == "--help") {
      usage(nullptr);
    } else if (auto v = value("--smosd")) {
      o.smosd = *v;
    } else if (auto v = value("--memory")) {
      o.memory = *v;
    } else if (auto v = value("--timeout")) {
      o.timeout_s = std::atoi(v->c_str());
    } else if (auto v = value("--only")) {
      std::stringstream list(*v);
      std::string word;
      while (std::getline(list, word, ',')) {
        int n = workload_number(word);
        if (n == 0) usage(("unknown workload " + word).c_str());
        o.only.push_back(n);
      }
    } else {
      usage(("unknown argument " + a).c_str());
    }
  }
  if (o.smosd.empty()) o.smosd = self_dir() + "/smosd";
  if (::access(o.smosd.c_str(), X_OK) != 0) {
    usage(("no executable smosd at " + o.smosd + " (use --smosd PATH)").c_str());
  }
  if (o.timeout_s <= 0) o.timeout_s = o.quick ? 120 : 400;
  return o;
}

// ---------------------------------------------------------------------------------------------
// Errors, time, syscall helpers

struct BenchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void fail(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  throw BenchError(buf);
}

[[noreturn]] void fail_errno(const char* what, const std::string& path) {
  int err = errno;
  fail("%s %s: %s", what, path.c_str(), std::strerror(err));
}

std::int64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int xopen(const std::string& path, int flags, mode_t mode = 0644) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) fail_errno("open", path);
  return fd;
}

void xclose(int fd, const std::string& path) {
  if (::close(fd) != 0) fail_errno("close", path);
}

void xunlink(const std::string& path) {
  if (::unlink(path.c_str()) != 0) fail_errno("unlink", path);
}

void xmkdir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0) fail_errno("mkdir", path);
}

void write_all(int fd, const void* data, std::size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail_errno("write", path);
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Reads until `n` bytes or end of file; returns the count.
std::size_t read_full(int fd, void* data, std::size_t n, const std::string& path) {
  char* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail_errno("read", path);
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

// A page-aligned buffer of whole pages, touched once so that page faults stay out of timing.
struct Buffer {
  explicit Buffer(std::size_t n) : size(n) {
    data = static_cast<char*>(std::aligned_alloc(kPage, n));
    if (!data) throw std::bad_alloc();
    std::memset(data, 0, n);
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::uint64_t* words() const { return reinterpret_cast<std::uint64_t*>(data); }
  char* data;
  std::size_t size;
};

// ---------------------------------------------------------------------------------------------
// Data pattern: pseudo-random words, with the first word of every 4 KiB page of a file stamped
// with that page's index, so a reader can check it got the right page cheaply.

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t page_stamp(std::uint64_t file_page) { return mix(file_page ^ 0x736d6f73ull); }

constexpr std::size_t kWordsPerPage = kPage / 8;

void fill_base(Buffer& b) {
  for (std::size_t i = 0; i < b.size / 8; ++i) b.words()[i] = mix(i);
}

void stamp_chunk(Buffer& b, std::size_t chunk) {
  std::size_t pages = b.size / kPage;
  for (std::size_t p = 0; p < pages; ++p) {
    b.words()[p * kWordsPerPage] = page_stamp(chunk * pages + p);
  }
}

// Checks the stamps of `n` bytes read into `data` from file offset `off` (page-aligned).
void check_stamps(const char* data, std::size_t n, std::size_t off, const std::string& path) {
  const auto* w = reinterpret_cast<const std::uint64_t*>(data);
  for (std::size_t p = 0; p < n / kPage; ++p) {
    std::uint64_t want = page_stamp(off / kPage + p);
    if (w[p * kWordsPerPage] != want) {
      fail("wrong data in %s at offset %zu: %016" PRIx64 ", want %016" PRIx64, path.c_str(),
           off + p * kPage, w[p * kWordsPerPage], want);
    }
  }
}

// The sum of the 64-bit words of a file of `size` bytes in this pattern.
std::uint64_t expected_sum(std::size_t size) {
  Buffer b(kIoSize);
  fill_base(b);
  std::uint64_t base = 0, base_stamps = 0;
  for (std::size_t i = 0; i < kIoSize / 8; ++i) base += b.words()[i];
  for (std::size_t p = 0; p < kIoSize / kPage; ++p) base_stamps += b.words()[p * kWordsPerPage];
  std::uint64_t sum = 0;
  for (std::size_t p = 0; p < size / kPage; ++p) sum += page_stamp(p);
  return sum + (size / kIoSize) * (base - base_stamps);
}

// Reads every byte of a mapping: the "touch every byte" of workloads 6 and 7.
__attribute__((noinline)) std::uint64_t sum_words(const void* data, std::size_t n) {
  const auto* w = static_cast<const std::uint64_t*>(data);
  std::uint64_t a = 0, b = 0, c = 0, d = 0;
  for (std::size_t i = 0; i + 4 <= n / 8; i += 4) {
    a += w[i];
    b += w[i + 1];
    c += w[i + 2];
    d += w[i + 3];
  }
  return a + b + c + d;
}

// ---------------------------------------------------------------------------------------------
// Statistics and results

// A summary of samples. For latencies `tail` is the 99th percentile; for rates and throughputs
// it is the 1st percentile: either way, the slow tail.
struct Summary {
  double median = NAN;
  double tail = NAN;
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::size_t k = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  k = std::clamp<std::size_t>(k, 1, v.size()) - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

double median_of(const std::vector<double>& v) {
  if (v.empty()) return NAN;
  std::vector<double> s = v;
  std::sort(s.begin(), s.end());
  std::size_t n = s.size();
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

Summary summarize(const std::vector<double>& v, bool higher_better) {
  return {median_of(v), percentile(v, higher_better ? 0.01 : 0.99)};
}

struct Line {
  std::string name;
  std::string unit;
  bool higher_better = false;
  Summary smos, tmpfs;
  // Target as a bound on smos/tmpfs, unless `verdict` is set by the workload itself.
  std::string target = "-";
  std::optional<double> bound;
  std::string verdict;
  std::string note;
  std::string error;
  std::string samples;  // how many samples each side had: "smos/tmpfs"
};

Line new_line(std::string name, std::string target = "-",
              std::optional<double> bound = std::nullopt) {
  Line l;
  l.name = std::move(name);
  l.target = std::move(target);
  l.bound = bound;
  return l;
}

double ratio(const Line& l) { return l.smos.median / l.tmpfs.median; }

std::string verdict_of(const Line& l) {
  if (!l.error.empty()) return "ERROR";
  if (!l.verdict.empty()) return l.verdict;
  if (!l.bound) return "-";
  double r = ratio(l);
  if (std::isnan(r)) return "-";
  return (l.higher_better ? r >= *l.bound : r <= *l.bound) ? "met" : "MISSED";
}

std::string fmt_value(double v) {
  char buf[32];
  if (std::isnan(v)) return "-";
  if (v >= 1000) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (v >= 100) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f", v);
  }
  return buf;
}

std::string fmt_ratio(double r) {
  char buf[32];
  if (std::isnan(r)) return "-";
  std::snprintf(buf, sizeof buf, "%.2fx", r);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// The two sides: the same operations under the mount and under a twin directory on tmpfs.

struct Side {
  const char* name = "";
  std::string root;
  bool smos = false;
  int index = 0;  // 0 for smos, 1 for tmpfs: picks a side's entry in per-side arrays
  std::string path(const std::string& rel) const { return root + "/" + rel; }
};

struct Bench {
  Sizes z;
  Side sides[2] = {};  // [0] smos, [1] tmpfs
  std::vector<Line> lines;
  bool failed = false;
  double worst_cold_residency = 0;  // of the mount, after dropping its cache
  bool cold_checked = false;
};

// Latency: samples are taken in alternating rounds (smos first, then tmpfs first, ...) so that
// drift on a shared machine hits both sides alike. `op(side, i)` is timed whole.
using LatencyOp = std::function<void(const Side&, std::uint64_t)>;

void measure_latency(Bench& b, Line& line, int iters, const LatencyOp& op) {
  std::vector<double> samples[2];
  std::uint64_t counter[2] = {0, 0};
  int warmup = std::max(10, iters / 20);
  for (int s = 0; s < 2; ++s) {
    for (int i = 0; i < warmup; ++i) op(b.sides[s], counter[s]++);
  }
  int per_round = std::max(1, iters / b.z.rounds);
  // Each side's share of the time cap in each round.
  const auto slot_ns = static_cast<std::int64_t>(b.z.latency_cap_s * 1e9 / (2 * b.z.rounds));
  for (int r = 0; r < b.z.rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      int s = (r % 2 == 0) ? k : 1 - k;
      const std::int64_t start = now_ns();
      for (int i = 0; i < per_round; ++i) {
        std::int64_t t0 = now_ns();
        op(b.sides[s], counter[s]++);
        std::int64_t t1 = now_ns();
        samples[s].push_back(static_cast<double>(t1 - t0) / 1000.0);
        if (t1 - start > slot_ns) break;
      }
    }
  }
  line.samples = std::to_string(samples[0].size()) + "/" + std::to_string(samples[1].size());
  line.unit = "us";
  line.higher_better = false;
  line.smos = summarize(samples[0], false);
  line.tmpfs = summarize(samples[1], false);
}

// Throughput: `op(side)` does one repetition and returns its bytes and the seconds it took
// (so it may leave set-up, such as dropping a cache, out of the timing). One untimed
// repetition per side comes first, unless `warmup` is false.
struct Timed {
  double bytes;
  double seconds;
};
using ThroughputOp = std::function<Timed(const Side&)>;

// On this kind of machine a large file reads at one speed all run long, and a rewritten one at
// another, up to 20% apart: physical page placement, not load. Workloads 5-7 therefore pass
// `renew`, which rewrites a side's entry (untimed) before every kRepsPerPlacement-th
// repetition after the first, so that their medians span several placements on both sides.
constexpr int kRepsPerPlacement = 3;

void measure_throughput(Bench& b, Line& line, int reps, const ThroughputOp& op,
                        bool warmup = true, const std::function<void(const Side&)>& renew = {}) {
  std::vector<double> gbps[2];
  if (warmup) {
    for (const Side& s : b.sides) op(s);  // untimed: first touches, lazy set-up, ...
  }
  const std::int64_t start = now_ns();
  for (int r = 0; r < reps; ++r) {
    if (r > 0 && static_cast<double>(now_ns() - start) / 1e9 > b.z.throughput_cap_s) break;
    for (int k = 0; k < 2; ++k) {
      int s = (r % 2 == 0) ? k : 1 - k;
      if (renew && r > 0 && r % kRepsPerPlacement == 0) renew(b.sides[s]);
      Timed t = op(b.sides[s]);
      gbps[s].push_back(t.bytes / t.seconds / 1e9);
    }
  }
  line.unit = "GB/s";
  line.higher_better = true;
  line.samples = std::to_string(gbps[0].size()) + "/" + std::to_string(gbps[1].size());
  line.smos = summarize(gbps[0], true);
  line.tmpfs = summarize(gbps[1], true);
}

void make_object(const Side& s, const std::string& name, std::optional<std::uint64_t> capacity) {
  xmkdir(s.path(name));
  if (s.smos && capacity) {
    std::string v = std::to_string(*capacity);
    if (::setxattr(s.path(name).c_str(), smos::xattr::kCapacity, v.data(), v.size(), 0) != 0) {
      fail_errno("setxattr user.smos.capacity", s.path(name));
    }
  }
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Writes a file of `size` bytes in the pattern, in 1 MiB writes; returns the seconds from the
// open to the close (the close commits an smos entry).
double write_pattern_file(const std::string& path, std::size_t size, Buffer& buf) {
  std::int64_t t0 = now_ns();
  int fd = xopen(path, O_WRONLY | O_CREAT | O_EXCL);
  for (std::size_t c = 0; c < size / kIoSize; ++c) {
    stamp_chunk(buf, c);
    write_all(fd, buf.data, kIoSize, path);
  }
  xclose(fd, path);
  return static_cast<double>(now_ns() - t0) / 1e9;
}

// Reads a whole pattern file with 1 MiB reads, checking the stamps; returns the seconds from
// the open to the close.
double read_pattern_file(const std::string& path, std::size_t size, Buffer& buf) {
  std::int64_t t0 = now_ns();
  int fd = xopen(path, O_RDONLY);
  std::size_t off = 0;
  for (;;) {
    std::size_t n = read_full(fd, buf.data, kIoSize, path);
    if (n == 0) break;
    check_stamps(buf.data, n & ~(kPage - 1), off, path);
    off += n;
  }
  xclose(fd, path);
  double secs = static_cast<double>(now_ns() - t0) / 1e9;
  if (off != size) fail("%s: read %zu bytes, want %zu", path.c_str(), off, size);
  return secs;
}

// The fraction of a file's pages in the page cache of its inode.
double resident_fraction(const std::string& path, std::size_t size) {
  int fd = xopen(path, O_RDONLY);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return NAN;
  std::vector<unsigned char> vec(size / kPage);
  double frac = NAN;
  if (::mincore(map, size, vec.data()) == 0) {
    std::size_t resident = 0;
    for (unsigned char c : vec) resident += c & 1;
    frac = static_cast<double>(resident) / static_cast<double>(vec.size());
  }
  ::munmap(map, size);
  return frac;
}

// Makes the next read of `path` cold: see "What cold means" at the top. On tmpfs this is a
// no-op in effect, and not checked.
void drop_cache(Bench& b, const Side& s, const std::string& path, std::size_t size) {
  int fd = xopen(path, O_RDONLY);
  int err = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  if (err != 0) {
    errno = err;
    fail_errno("posix_fadvise DONTNEED", path);
  }
  if (s.smos) {
    double frac = resident_fraction(path, size);
    if (!std::isnan(frac)) {
      b.cold_checked = true;
      b.worst_cold_residency = std::max(b.worst_cold_residency, frac);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Workload 1: small push + pop

constexpr std::size_t kSmall = 4 * kKiB;

// Holds this process on the CPU it runs on, for as long as it lives.
class HeldOnThisCpu {
 public:
  HeldOnThisCpu() {
    held_ = ::sched_getaffinity(0, sizeof before_, &before_) == 0;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(::sched_getcpu(), &one);
    held_ = held_ && ::sched_setaffinity(0, sizeof one, &one) == 0;
  }
  ~HeldOnThisCpu() {
    if (held_) ::sched_setaffinity(0, sizeof before_, &before_);
  }
  HeldOnThisCpu(const HeldOnThisCpu&) = delete;
  HeldOnThisCpu& operator=(const HeldOnThisCpu&) = delete;

 private:
  cpu_set_t before_;
  bool held_ = false;
};

void workload_push_pop(Bench& b) {
  for (const Side& s : b.sides) make_object(s, "pp", std::nullopt);
  Buffer out(kSmall), in(kSmall);
  fill_base(out);
  // Paths are made outside the timed operation, except the tmpfs file's (a short snprintf).
  const std::string push = b.sides[0].path(std::string("pp/") + smos::control::kPush);
  const std::string pop = b.sides[0].path(std::string("pp/") + smos::control::kPop);
  const std::string tmpfs_dir = b.sides[1].path("pp/");
  const auto pair = [&](const Side& s, std::uint64_t i) {
    out.words()[0] = i;
    in.words()[0] = ~0ull;
    if (s.smos) {
      int fd = xopen(push, O_WRONLY);
      write_all(fd, out.data, kSmall, push);
      xclose(fd, push);
      fd = xopen(pop, O_RDONLY);
      std::size_t n = read_full(fd, in.data, kSmall, pop);
      xclose(fd, pop);
      if (n != kSmall || in.words()[0] != i) {
        fail("%s gave %zu bytes, id %" PRIu64 ", want 4096 bytes of id %" PRIu64, pop.c_str(), n,
             in.words()[0], i);
      }
    } else {
      char name[32];
      std::snprintf(name, sizeof name, "%" PRIu64, i);
      const std::string path = tmpfs_dir + name;
      int fd = xopen(path, O_WRONLY | O_CREAT | O_EXCL);
      write_all(fd, out.data, kSmall, path);
      xclose(fd, path);
      fd = xopen(path, O_RDONLY);
      std::size_t n = read_full(fd, in.data, kSmall, path);
      xclose(fd, path);
      xunlink(path);
      if (n != kSmall || in.words()[0] != i) fail("%s: wrong data", path.c_str());
    }
  };
  Line line = new_line("1 push+pop 4K", "<=4x", 4.0);
  measure_latency(b, line, b.z.lat_iters, pair);
  line.unit = "us/pair";
  b.lines.push_back(line);

  // The same with this process held on one CPU. Its requests then all go to one of smosd's
  // queues, and each answer finds it where it was: the pair without the scheduler's moves
  // between CPUs (docs/benchmarks.md, "What bounds the missed targets").
  Line held = new_line("1 push+pop 4K, 1 CPU");
  {
    HeldOnThisCpu hold;
    measure_latency(b, held, b.z.lat_iters, pair);
  }
  held.unit = "us/pair";
  held.note = "no target; this process held on one CPU";
  b.lines.push_back(held);
}

// ---------------------------------------------------------------------------------------------
// Workload 2: latest read

void workload_latest(Bench& b) {
  Line line = new_line("2 latest read 4K", "<=4x", 4.0);
  Buffer buf(kSmall);
  fill_base(buf);
  stamp_chunk(buf, 0);
  for (const Side& s : b.sides) {
    make_object(s, "lt", std::nullopt);
    std::string path = s.path("lt/w");
    int fd = xopen(path, O_WRONLY | O_CREAT | O_EXCL);
    write_all(fd, buf.data, kSmall, path);
    xclose(fd, path);
  }
  const std::string paths[2] = {b.sides[0].path(std::string("lt/") + smos::control::kLatest),
                                b.sides[1].path("lt/w")};
  measure_latency(b, line, b.z.lat_iters, [&](const Side& s, std::uint64_t) {
    const std::string& path = paths[s.index];
    buf.words()[0] = ~0ull;
    int fd = xopen(path, O_RDONLY);
    std::size_t n = read_full(fd, buf.data, kSmall, path);
    xclose(fd, path);
    if (n != kSmall || buf.words()[0] != page_stamp(0)) fail("%s: wrong data", path.c_str());
  });
  b.lines.push_back(line);
}

// ---------------------------------------------------------------------------------------------
// Workload 3: metadata

void workload_metadata(Bench& b) {
  constexpr int kDirEntries = 1000;
  for (const Side& s : b.sides) {
    make_object(s, "md", std::nullopt);
    int fd = xopen(s.path("md/e"), O_WRONLY | O_CREAT | O_EXCL);
    write_all(fd, "metadata", 8, s.path("md/e"));
    xclose(fd, s.path("md/e"));
    if (!s.smos) {
      // The twin of user.smos.state: a user xattr on the tmpfs file.
      if (::setxattr(s.path("md/e").c_str(), smos::xattr::kState, "idle", 4, 0) != 0) {
        fail_errno("setxattr", s.path("md/e"));
      }
    }
    make_object(s, "dir", kDirEntries + 16);
    for (int i = 0; i < kDirEntries; ++i) {
      std::string path = s.path("dir/" + std::to_string(i));
      xclose(xopen(path, O_WRONLY | O_CREAT | O_EXCL), path);
    }
  }

  const std::string entry[2] = {b.sides[0].path("md/e"), b.sides[1].path("md/e")};
  const std::string dir[2] = {b.sides[0].path("dir"), b.sides[1].path("dir")};

  Line stat_line = new_line("3 stat", "<=1.5x", 1.5);
  measure_latency(b, stat_line, b.z.lat_iters * 2, [&](const Side& s, std::uint64_t) {
    struct stat st;
    if (::stat(entry[s.index].c_str(), &st) != 0) fail_errno("stat", entry[s.index]);
    if (st.st_size != 8) {
      fail("stat %s: size %lld, want 8", entry[s.index].c_str(),
           static_cast<long long>(st.st_size));
    }
  });
  b.lines.push_back(stat_line);

  Line dir_line = new_line("3 readdir 1000", "<=3x", 3.0);
  measure_latency(b, dir_line, b.z.readdir_iters, [&](const Side& s, std::uint64_t) {
    DIR* d = ::opendir(dir[s.index].c_str());
    if (!d) fail_errno("opendir", dir[s.index]);
    int n = 0;
    while (const dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
    if (n != kDirEntries) {
      fail("readdir %s: %d entries, want %d", dir[s.index].c_str(), n, kDirEntries);
    }
  });
  b.lines.push_back(dir_line);

  Line xattr_line = new_line("3 getxattr state");
  measure_latency(b, xattr_line, b.z.lat_iters, [&](const Side& s, std::uint64_t) {
    char v[32];
    ssize_t n = ::getxattr(entry[s.index].c_str(), smos::xattr::kState, v, sizeof v);
    if (n < 0) fail_errno("getxattr user.smos.state", entry[s.index]);
    if (n != 4 || std::memcmp(v, "idle", 4) != 0) {
      fail("%s: user.smos.state is '%.*s', want idle", entry[s.index].c_str(), static_cast<int>(n),
           v);
    }
  });
  xattr_line.note = "no target; tmpfs twin: a user xattr";
  b.lines.push_back(xattr_line);
}

// ---------------------------------------------------------------------------------------------
// Workloads 4-7: one large entry

std::string size_name(std::size_t n) { return std::to_string(n / kMiB) + "M"; }

// The large entry "big/e" of workloads 5-7, written untimed unless workload 4 ran.
void ensure_big(Bench& b) {
  Buffer buf(kIoSize);
  fill_base(buf);
  for (const Side& s : b.sides) {
    if (!exists(s.path("big"))) make_object(s, "big", std::nullopt);
    if (!exists(s.path("big/e"))) write_pattern_file(s.path("big/e"), b.z.big, buf);
  }
}

void workload_large_write(Bench& b) {
  Line line = new_line("4 write " + size_name(b.z.big), ">=0.5x", 0.5);
  Buffer buf(kIoSize);
  fill_base(buf);
  for (const Side& s : b.sides) {
    if (!exists(s.path("big"))) make_object(s, "big", std::nullopt);
    if (exists(s.path("big/e"))) xunlink(s.path("big/e"));
  }
  int rep[2] = {0, 0};
  measure_throughput(b, line, b.z.reps, [&](const Side& s) {
    // Each repetition writes a new entry; the one before is deleted first, untimed, so an
    // smos slot (and its memory) may be reused, as in steady use.
    int& r = rep[s.smos ? 0 : 1];
    if (r > 0) xunlink(s.path("big/e"));
    ++r;
    return Timed{static_cast<double>(b.z.big), write_pattern_file(s.path("big/e"), b.z.big, buf)};
  });
  line.note = "open, 1 MiB writes, close (commit)";
  b.lines.push_back(line);
}

// Writes a side's large entry anew (untimed): the next repetitions read other pages.
void renew_big(Bench& b, const Side& s) {
  Buffer buf(kIoSize);
  fill_base(buf);
  xunlink(s.path("big/e"));
  write_pattern_file(s.path("big/e"), b.z.big, buf);
}

// The cold and the warm line of workloads 5 and 6. `touch` goes through the whole large entry
// of a side and returns the seconds it took.
void measure_cold_and_warm(Bench& b, Line cold, Line warm,
                           const std::function<double(const Side&)>& touch) {
  const double bytes = static_cast<double>(b.z.big);
  measure_throughput(
      b, cold, b.z.reps,
      [&](const Side& s) {
        drop_cache(b, s, s.path("big/e"), b.z.big);
        return Timed{bytes, touch(s)};
      },
      true, [&](const Side& s) { renew_big(b, s); });
  b.lines.push_back(cold);

  for (const Side& s : b.sides) touch(s);
  measure_throughput(
      b, warm, b.z.reps, [&](const Side& s) { return Timed{bytes, touch(s)}; }, true,
      [&](const Side& s) {
        renew_big(b, s);
        touch(s);
      });
  b.lines.push_back(warm);
}

void workload_large_read(Bench& b) {
  ensure_big(b);
  Buffer buf(kIoSize);
  Line cold = new_line("5 read cold " + size_name(b.z.big), ">=0.5x", 0.5);
  cold.note = "tmpfs cold == warm";
  Line warm = new_line("5 read warm " + size_name(b.z.big), ">=0.9x", 0.9);
  warm.note = "a new open after a full read";
  measure_cold_and_warm(b, cold, warm, [&](const Side& s) {
    return read_pattern_file(s.path("big/e"), b.z.big, buf);
  });
}

// Maps a file read-only, sums every word, and checks the sum; returns seconds from the open
// to the munmap.
double mmap_touch(const std::string& path, std::size_t size, std::uint64_t want) {
  std::int64_t t0 = now_ns();
  int fd = xopen(path, O_RDONLY);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) fail_errno("mmap", path);
  std::uint64_t sum = sum_words(map, size);
  ::munmap(map, size);
  xclose(fd, path);
  double secs = static_cast<double>(now_ns() - t0) / 1e9;
  if (sum != want) {
    fail("mmap of %s: checksum %016" PRIx64 ", want %016" PRIx64, path.c_str(), sum, want);
  }
  return secs;
}

void workload_mmap(Bench& b) {
  ensure_big(b);
  const std::uint64_t want = expected_sum(b.z.big);
  Line cold = new_line("6 mmap cold " + size_name(b.z.big));
  cold.note = "no target; tmpfs cold == warm";
  Line warm = new_line("6 mmap warm " + size_name(b.z.big), ">=0.9x", 0.9);
  warm.note = "a new open and mapping after a full touch";
  measure_cold_and_warm(b, cold, warm, [&](const Side& s) {
    return mmap_touch(s.path("big/e"), b.z.big, want);
  });
}

void workload_segment(Bench& b) {
  ensure_big(b);
  const std::uint64_t want = expected_sum(b.z.big);
  Line line = new_line("7 segment mmap " + size_name(b.z.big), ">=0.95x", 0.95);
  measure_throughput(b, line, b.z.reps, [&](const Side& s) {
    std::string path = s.path("big/e");
    if (!s.smos) return Timed{static_cast<double>(b.z.big), mmap_touch(path, b.z.big, want)};
    // The open handle on the mount is the lease on the segment's bytes.
    std::int64_t t0 = now_ns();
    int lease = xopen(path, O_RDONLY);
    char segment[4096];
    ssize_t n = ::fgetxattr(lease, smos::xattr::kSegment, segment, sizeof segment - 1);
    if (n <= 0) fail_errno("fgetxattr user.smos.segment", path);
    segment[n] = '\0';
    double secs = mmap_touch(segment, b.z.big, want);
    xclose(lease, path);
    secs = static_cast<double>(now_ns() - t0) / 1e9;
    return Timed{static_cast<double>(b.z.big), secs};
  }, true, [&](const Side& s) { renew_big(b, s); });
  line.note = "open, getxattr, open+mmap segment; tmpfs: mmap";
  b.lines.push_back(line);
}

// ---------------------------------------------------------------------------------------------
// Workload 8: concurrency

// Forks `n` children that each run `body(i)` at the same moment; returns the seconds from the
// start signal until the last child exited. If a child fails, the others are killed (a popper
// must not wait forever for a pusher that died), and this throws with the first child's error.
double run_processes(int n, const std::function<void(int)>& body) {
  int ready[2], start[2], errors[2];
  if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(start, O_CLOEXEC) != 0 ||
      ::pipe2(errors, O_CLOEXEC | O_NONBLOCK) != 0) {
    fail_errno("pipe", "");
  }
  std::vector<pid_t> pids;
  std::fflush(nullptr);
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    if (pid < 0) fail_errno("fork", "");
    if (pid == 0) {
      ::close(ready[0]);
      ::close(start[1]);
      ::close(errors[0]);
      int code = 0;
      try {
        char c = 1;
        if (::write(ready[1], &c, 1) != 1) ::_exit(3);
        if (::read(start[0], &c, 1) != 0) ::_exit(3);  // EOF: go
        body(i);
      } catch (const std::exception& e) {
        // One write of at most PIPE_BUF bytes: messages of several children never interleave.
        char msg[512];
        int len = std::snprintf(msg, sizeof msg, "process %d: %s\n", i, e.what());
        (void)!::write(errors[1], msg, std::min<std::size_t>(len, sizeof msg - 1));
        code = 1;
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  ::close(ready[1]);
  ::close(start[0]);
  ::close(errors[1]);
  for (int i = 0; i < n; ++i) {
    char c;
    if (::read(ready[0], &c, 1) != 1) break;  // a child died early: its status says why
  }
  std::int64_t t0 = now_ns();
  ::close(start[1]);
  int failed = 0, stopped = 0;
  for (std::size_t left = pids.size(); left > 0;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end()) continue;
    *it = -1;
    --left;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    if (failed > 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
      ++stopped;
      continue;
    }
    if (failed++ == 0) {
      for (pid_t other : pids) {
        if (other > 0) ::kill(other, SIGKILL);
      }
    }
  }
  double secs = static_cast<double>(now_ns() - t0) / 1e9;
  char msg[4096];
  ssize_t len = ::read(errors[0], msg, sizeof msg - 1);
  ::close(ready[0]);
  ::close(errors[0]);
  if (failed) {
    std::string first = len > 0 ? std::string(msg, static_cast<std::size_t>(len)) : "";
    if (first.find('\n') != std::string::npos) first.resize(first.find('\n'));
    fail("%d of %d processes failed (%d more stopped); first: %s", failed, n, stopped,
         first.empty() ? "no message (killed?)" : first.c_str());
  }
  return secs;
}

long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t val, const timespec* timeout) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, val, timeout, nullptr, 0);
}

// Shared by the pushers and poppers of one run (an anonymous shared mapping).
struct QueueShared {
  std::atomic<std::uint32_t> next_push;  // tmpfs: the next sequence number to publish
  std::atomic<std::uint32_t> next_pop;   // tmpfs: the next sequence number to claim
  std::atomic<std::uint32_t> published;  // tmpfs: a futex word, bumped on every publish
  std::atomic<std::uint8_t> seen[];      // how often each payload was popped
};

void workload_concurrency(Bench& b) {
  const std::size_t size = b.z.shared;
  Buffer fill(kIoSize);
  fill_base(fill);
  for (const Side& s : b.sides) {
    make_object(s, "shared", std::nullopt);
    write_pattern_file(s.path("shared/e"), size, fill);
    Buffer buf(kIoSize);
    read_pattern_file(s.path("shared/e"), size, buf);  // the state every run starts from
  }
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  std::vector<int> counts = {1, 2, 8, 32, 64};
  std::vector<Line> reader_lines;
  for (int n : counts) {
    Line line = new_line("8 readers x" + std::to_string(n) + " " + size_name(size));
    // Every run moves at least conc_min_bytes, so that it lasts long enough to time.
    std::size_t loops = std::max<std::size_t>(1, b.z.conc_min_bytes / (size * n));
    measure_throughput(
        b, line, b.z.conc_reps,
        [&](const Side& s) {
          double secs = run_processes(n, [&](int) {
            Buffer buf(kIoSize);
            for (std::size_t l = 0; l < loops; ++l)
              read_pattern_file(s.path("shared/e"), size, buf);
          });
          return Timed{static_cast<double>(size * loops * n), secs};
        },
        /*warmup=*/false);
    reader_lines.push_back(line);
  }
  // Targets: aggregate throughput grows with readers up to the core count, and does not
  // collapse at 64 (here: stays above half of the best aggregate).
  double one = reader_lines[0].smos.median, peak = 0;
  for (const Line& l : reader_lines) peak = std::max(peak, l.smos.median);
  for (std::size_t i = 0; i < counts.size(); ++i) {
    Line& l = reader_lines[i];
    char note[96];
    std::snprintf(note, sizeof note, "%.2fx of 1 reader", l.smos.median / one);
    l.note = note;
    if (counts[i] == 1) {
      l.note = "baseline for the scaling targets";
    } else if (counts[i] <= cores) {
      l.target = ">1.1x of x1";
      l.verdict = l.smos.median >= 1.1 * one ? "met" : "MISSED";
    } else if (counts[i] == 64) {
      l.target = ">=0.5x of peak";
      l.verdict = l.smos.median >= 0.5 * peak ? "met" : "MISSED";
      std::snprintf(note, sizeof note, "%.2fx of 1 reader, %.2fx of peak", l.smos.median / one,
                    l.smos.median / peak);
      l.note = note;
    }
    b.lines.push_back(l);
  }

  // 8 pushers against 8 poppers. On tmpfs the same queue is built the usual way: a pusher
  // writes a temporary file and renames it to the next sequence number (an atomic publish);
  // a popper claims the next number from a shared counter, waits until that file appears,
  // reads it and unlinks it.
  constexpr int kPushers = 8, kPoppers = 8;
  const int per = b.z.queue_per_process;
  const std::size_t total = static_cast<std::size_t>(per) * kPushers;
  const std::size_t shared_bytes = sizeof(QueueShared) + total;
  void* mem =
      ::mmap(nullptr, shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) fail_errno("mmap", "anonymous");
  std::unique_ptr<void, std::function<void(void*)>> unmap(
      mem, [shared_bytes](void* p) { ::munmap(p, shared_bytes); });
  auto* q = static_cast<QueueShared*>(mem);
  for (const Side& s : b.sides) make_object(s, "queue", total + 64);

  Line line = new_line("8 push x8 / pop x8 4K");
  std::vector<double> rates[2];
  const std::int64_t queue_start = now_ns();
  for (int r = 0; r < b.z.conc_reps; ++r) {
    if (r > 0 && static_cast<double>(now_ns() - queue_start) / 1e9 > b.z.throughput_cap_s) break;
    for (int k = 0; k < 2; ++k) {
      const Side& s = b.sides[(r % 2 == 0) ? k : 1 - k];
      std::memset(static_cast<void*>(q), 0, shared_bytes);
      double secs = run_processes(kPushers + kPoppers, [&](int id) {
        Buffer buf(kSmall);
        fill_base(buf);
        if (id < kPushers) {
          for (int i = 0; i < per; ++i) {
            buf.words()[0] = static_cast<std::uint64_t>(id) * per + i;
            if (s.smos) {
              std::string push = s.path(std::string("queue/") + smos::control::kPush);
              int fd = xopen(push, O_WRONLY);
              write_all(fd, buf.data, kSmall, push);
              xclose(fd, push);
            } else {
              std::uint32_t seq = q->next_push.fetch_add(1);
              std::string tmp = s.path("queue/.tmp" + std::to_string(seq));
              int fd = xopen(tmp, O_WRONLY | O_CREAT | O_EXCL);
              write_all(fd, buf.data, kSmall, tmp);
              xclose(fd, tmp);
              std::string name = s.path("queue/" + std::to_string(seq));
              if (::rename(tmp.c_str(), name.c_str()) != 0) fail_errno("rename", tmp);
              q->published.fetch_add(1);
              futex(&q->published, FUTEX_WAKE, INT32_MAX, nullptr);
            }
          }
          return;
        }
        for (int i = 0; i < per; ++i) {
          std::string path;
          int fd;
          if (s.smos) {
            path = s.path(std::string("queue/") + smos::control::kPop);
            fd = xopen(path, O_RDONLY);
          } else {
            path = s.path("queue/" + std::to_string(q->next_pop.fetch_add(1)));
            for (;;) {
              std::uint32_t seen = q->published.load();
              fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
              if (fd >= 0) break;
              if (errno != ENOENT) fail_errno("open", path);
              timespec ms{0, 1000000};
              futex(&q->published, FUTEX_WAIT, seen, &ms);
            }
          }
          buf.words()[0] = ~0ull;
          std::size_t n = read_full(fd, buf.data, kSmall, path);
          std::uint64_t payload = buf.words()[0];
          if (n != kSmall || payload >= total) {
            char name[64] = "?", state[16] = "?";
            if (s.smos) {
              ssize_t k = ::fgetxattr(fd, smos::xattr::kName, name, sizeof name - 1);
              name[k > 0 ? k : 0] = '\0';
              k = ::fgetxattr(fd, smos::xattr::kState, state, sizeof state - 1);
              state[k > 0 ? k : 0] = '\0';
            }
            struct stat st {};
            ::fstat(fd, &st);
            fail("%s (entry %s, state %s, st_size %lld): read %zu bytes, payload %" PRIu64
                 ", want 4096 bytes and a payload below %zu",
                 path.c_str(), name, state, static_cast<long long>(st.st_size), n, payload, total);
          }
          xclose(fd, path);
          if (!s.smos) xunlink(path);
          q->seen[payload].fetch_add(1);
        }
      });
      for (std::size_t i = 0; i < total; ++i) {
        if (q->seen[i].load() != 1) {
          fail("%s queue: payload %zu popped %d times", s.name, i, int{q->seen[i].load()});
        }
      }
      rates[s.smos ? 0 : 1].push_back(static_cast<double>(total) / secs);
    }
  }
  line.unit = "entries/s";
  line.higher_better = true;
  line.samples = std::to_string(rates[0].size()) + "/" + std::to_string(rates[1].size());
  line.smos = summarize(rates[0], true);
  line.tmpfs = summarize(rates[1], true);
  line.note = "each entry pushed once, popped once";
  b.lines.push_back(line);
}

// ---------------------------------------------------------------------------------------------
// Workload 9: control-plane cost of the lifecycle, with empty entries

void workload_control(Bench& b) {
  const int batch = b.z.ctl_batch;
  for (const Side& s : b.sides) make_object(s, "ctl", batch * 2 + 16);
  const char* phases[] = {"create", "commit", "open", "release", "delete"};
  std::vector<double> rates[2][5];
  std::vector<int> fds(static_cast<std::size_t>(batch));
  std::uint64_t round[2] = {0, 0};
  auto run_batch = [&](const Side& s, bool record) {
    int side = s.smos ? 0 : 1;
    std::vector<std::string> names;
    for (int i = 0; i < batch; ++i) {
      names.push_back(s.path("ctl/" + std::to_string(round[side]) + "_" + std::to_string(i)));
    }
    ++round[side];
    std::int64_t t[6];
    t[0] = now_ns();
    for (int i = 0; i < batch; ++i) fds[i] = xopen(names[i], O_WRONLY | O_CREAT | O_EXCL);
    t[1] = now_ns();
    for (int i = 0; i < batch; ++i) xclose(fds[i], names[i]);  // commits
    t[2] = now_ns();
    for (int i = 0; i < batch; ++i) fds[i] = xopen(names[i], O_RDONLY);
    t[3] = now_ns();
    for (int i = 0; i < batch; ++i) xclose(fds[i], names[i]);  // releases the reader
    t[4] = now_ns();
    for (int i = 0; i < batch; ++i) xunlink(names[i]);
    t[5] = now_ns();
    if (!record) return;
    for (int p = 0; p < 5; ++p) {
      rates[side][p].push_back(batch / (static_cast<double>(t[p + 1] - t[p]) / 1e9));
    }
  };
  for (const Side& s : b.sides) run_batch(s, false);  // warm-up
  const std::int64_t start = now_ns();
  for (int r = 0; r < b.z.ctl_batches; ++r) {
    if (r >= 4 && static_cast<double>(now_ns() - start) / 1e9 > b.z.control_cap_s) break;
    run_batch(b.sides[r % 2], true);
    run_batch(b.sides[1 - r % 2], true);
  }
  const char* notes[] = {"open(O_CREAT|O_EXCL|O_WRONLY)", "close of the writer",
                         "open(O_RDONLY) of a committed entry", "close of the reader", "unlink"};
  for (int p = 0; p < 5; ++p) {
    Line line = new_line(std::string("9 ") + phases[p]);
    line.unit = "ops/s";
    line.higher_better = true;
    line.smos = summarize(rates[0][p], true);
    line.tmpfs = summarize(rates[1][p], true);
    line.samples = std::to_string(rates[0][p].size()) + "/" + std::to_string(rates[1][p].size());
    line.note = std::string("no target; ") + notes[p];
    b.lines.push_back(line);
  }
}

// ---------------------------------------------------------------------------------------------
// The worker: runs the chosen workloads and prints the table.

std::string today() {
  char buf[64];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&t));
  return buf;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// How long an idle vCPU polls before it halts, where the guest's cpuidle-haltpoll driver says:
// waking a halted one costs tens of microseconds, which the latency lines pay whenever the
// scheduler moves the benchmark to the other CPU (docs/benchmarks.md, "What bounds").
std::string idle_poll() {
  std::ifstream in("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
  std::string ns;
  if (!(in >> ns)) return "";
  return ", guest_halt_poll_ns " + ns;
}

void print_table(const Bench& b, const Options& o, double seconds, const std::string& load0) {
  utsname u;
  ::uname(&u);
  const bool md = o.markdown;
  std::printf("smos_bench %s: %s, nproc %ld, kernel %s%s, %.0f s, load average %s -> %s\n",
              o.quick ? "--quick (reduced sizes; not comparable to the targets)" : "default",
              today().c_str(), ::sysconf(_SC_NPROCESSORS_ONLN), u.release, idle_poll().c_str(),
              seconds, load0.c_str(), load_average().c_str());
  std::printf("smosd: %s%s%s (passthrough %s, requests through %s)\n%s", o.smosd.c_str(),
              o.passthrough ? "" : " --no-passthrough", o.ring ? "" : " --no-io-uring",
              o.passthrough_on ? "on" : "off", o.ring_on ? "io_uring" : "/dev/fuse",
              md ? "\n" : "");
  const char* head[] = {"workload", "unit",   "smos med", "smos p99", "tmpfs med", "tmpfs p99",
                        "ratio",    "better", "target",   "result",   "n",         "note"};
  if (md) {
    for (const char* h : head) std::printf("| %s ", h);
    std::printf("|\n");
    for (std::size_t i = 0; i < std::size(head); ++i) {
      std::printf(i >= 2 && i <= 6 ? "|---:" : "|---");
    }
    std::printf("|\n");
  } else {
    std::printf("%-22s %-9s %9s %9s %9s %9s %7s %-6s %-14s %-6s %-9s %s\n", head[0], head[1],
                head[2], head[3], head[4], head[5], head[6], head[7], head[8], head[9], head[10],
                head[11]);
  }
  // A Markdown cell must not hold a bare '|'.
  auto cell = [md](const std::string& text) {
    if (!md) return text;
    std::string out;
    for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
    return out;
  };
  for (const Line& l : b.lines) {
    if (!l.error.empty()) {
      std::printf(md ? "| %s | ERROR: %s |\n" : "%-22s ERROR: %s\n", l.name.c_str(),
                  cell(l.error).c_str());
      continue;
    }
    std::printf(md ? "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n"
                   : "%-22s %-9s %9s %9s %9s %9s %7s %-6s %-14s %-6s %-9s %s\n",
                l.name.c_str(), l.unit.c_str(), fmt_value(l.smos.median).c_str(),
                fmt_value(l.smos.tail).c_str(), fmt_value(l.tmpfs.median).c_str(),
                fmt_value(l.tmpfs.tail).c_str(), fmt_ratio(ratio(l)).c_str(),
                l.higher_better ? "higher" : "lower", l.target.c_str(), verdict_of(l).c_str(),
                l.samples.c_str(), cell(l.note).c_str());
  }
  std::printf(
      "%s"
      "ratio = smos / tmpfs, both medians; 'better' says which way is better for smos.\n"
      "p99 = the slow tail: the 99th-percentile latency, or for GB/s, entries/s and ops/s the\n"
      "  1st-percentile (slowest) repetition or batch. GB/s = 10^9 bytes/s. n = samples,\n"
      "  smos/tmpfs (latencies: operations; throughputs: repetitions; workload 9: batches).\n"
      "%s",
      md ? "\n" : "",
      o.passthrough_on
          ? "cold: with passthrough the kernel reads an entry from its segment's pages, as on\n"
            "  tmpfs, where the pages are the data and no separate cache exists: cold == warm.\n"
          : "cold: smos = the FUSE page cache of the entry dropped (posix_fadvise DONTNEED), so\n"
            "  every byte crosses FUSE; tmpfs has no separate cache (its pages are the data):\n"
            "  cold == warm.\n");
  if (b.cold_checked && !o.passthrough_on) {
    std::printf("  mincore after each drop: at most %.1f%% of the entry stayed resident.\n",
                100 * b.worst_cold_residency);
  }
}

int run_worker(const Options& o, const std::string& mount, const std::string& twin) {
  Bench b;
  b.z = sizes_for(o.quick);
  b.sides[0] = Side{"smos", mount, true, 0};
  b.sides[1] = Side{"tmpfs", twin, false, 1};
  using Workload = void (*)(Bench&);
  const Workload workloads[] = {nullptr,           workload_push_pop,    workload_latest,
                                workload_metadata, workload_large_write, workload_large_read,
                                workload_mmap,     workload_segment,     workload_concurrency,
                                workload_control};
  std::int64_t t0 = now_ns();
  const std::string load0 = load_average();
  for (int w = 1; w <= 9; ++w) {
    if (!o.only.empty() && std::find(o.only.begin(), o.only.end(), w) == o.only.end()) continue;
    std::fprintf(stderr, "smos_bench: [%d/9] %s\n", w, kWorkloadNames[w]);
    std::int64_t tw = now_ns();
    try {
      workloads[w](b);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "smos_bench: %s failed: %s\n", kWorkloadNames[w], e.what());
      b.lines.push_back(new_line(std::to_string(w) + " " + kWorkloadNames[w]));
      b.lines.back().error = e.what();
      b.failed = true;
    }
    std::fprintf(stderr, "smos_bench:       %.1f s\n", static_cast<double>(now_ns() - tw) / 1e9);
  }
  print_table(b, o, static_cast<double>(now_ns() - t0) / 1e9, load0);
  std::fflush(nullptr);
  return b.failed ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// The parent: mount, run the worker, and always clean up.

volatile sig_atomic_t g_signal = 0;
volatile pid_t g_worker = 0;

void on_signal(int sig) {
  g_signal = sig;
  if (g_worker > 0) ::kill(-g_worker, SIGKILL);
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Waits up to `ms` for `pid`; returns its status, or nothing if it still runs.
std::optional<int> wait_for(pid_t pid, int ms) {
  for (int waited = 0;; waited += 10) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;  // not our child any more
    if (waited >= ms) return std::nullopt;
    sleep_ms(10);
  }
}

bool fuse_mounted_at(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string skip, point;
    fields >> skip >> skip >> skip >> skip >> point;
    std::size_t dash = line.find(" - ");
    if (point == mountpoint && dash != std::string::npos &&
        line.compare(dash + 3, 4, "fuse") == 0) {
      return true;
    }
  }
  return false;
}

int run_fusermount(const char* flag, const std::string& mountpoint) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execlp("fusermount3", "fusermount3", flag, mountpoint.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid < 0) return -1;
  std::optional<int> status = wait_for(pid, 10000);
  if (!status) {
    ::kill(pid, SIGKILL);
    wait_for(pid, 1000);
    return -1;
  }
  return WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string tail_of_file(const std::string& path, std::size_t max) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  return s.size() <= max ? s : "..." + s.substr(s.size() - max);
}

void remove_tree(const std::string& path) {
  // Only ever called on our own temp directories, never on or through the mount.
  std::string cmd = "rm -rf -- '" + path + "'";
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "smos_bench: could not remove %s\n", path.c_str());
  }
}

struct Mount {
  std::string store;
  std::string dir;         // mktemp -d
  std::string mountpoint;  // dir/mnt
  std::string log;         // dir/smosd.log
  std::string twin;        // the tmpfs side
  pid_t daemon = -1;
};

// Starts smosd and waits for its mount. Returns an empty string or what went wrong.
std::string start(const Options& o, Mount& m) {
  char dir_tmpl[] = "/tmp/smos-bench.XXXXXX";
  if (!::mkdtemp(dir_tmpl)) return std::string("mkdtemp: ") + std::strerror(errno);
  m.dir = dir_tmpl;
  m.mountpoint = m.dir + "/mnt";
  m.log = m.dir + "/smosd.log";
  if (::mkdir(m.mountpoint.c_str(), 0755) != 0) return "mkdir " + m.mountpoint;
  char twin_tmpl[] = "/dev/shm/smos-bench-tmpfs.XXXXXX";
  if (!::mkdtemp(twin_tmpl)) return std::string("mkdtemp /dev/shm: ") + std::strerror(errno);
  m.twin = twin_tmpl;

  std::vector<std::string> args = {
      o.smosd, "-f", "--store=" + m.store, "--reset", "--memory=" + o.memory, m.mountpoint};
  if (!o.passthrough) args.insert(args.end() - 1, "--no-passthrough");
  if (!o.ring) args.insert(args.end() - 1, "--no-io-uring");
  int log = ::open(m.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) return "open " + m.log;
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);  // a terminal's ^C goes to us; we unmount, and the daemon follows
    // Should we die without cleaning up (SIGKILL), smosd unmounts itself on SIGTERM.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, STDIN_FILENO);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::close_range(3, ~0u, 0);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log);
  if (pid < 0) return "fork";
  m.daemon = pid;

  for (int waited = 0;; waited += 10) {
    if (g_signal) return "interrupted";
    if (std::optional<int> status = wait_for(m.daemon, 0)) {
      m.daemon = -1;
      return "smosd exited (" + describe(*status) + ") before mounting; log:\n" +
             tail_of_file(m.log, 4000);
    }
    struct statfs fs;
    if (fuse_mounted_at(m.mountpoint) && ::statfs(m.mountpoint.c_str(), &fs) == 0 &&
        fs.f_type == kFuseSuperMagic) {
      return "";
    }
    if (waited > 15000) return "no mount after 15 s; log:\n" + tail_of_file(m.log, 4000);
    sleep_ms(10);
  }
}

// Unmounts, reaps the daemon, removes the store's files and the temp directories.
// Returns false if something was left behind.
bool stop(Mount& m) {
  bool clean = true;
  if (!m.mountpoint.empty() && fuse_mounted_at(m.mountpoint)) {
    if (run_fusermount("-u", m.mountpoint) != 0 || fuse_mounted_at(m.mountpoint)) {
      run_fusermount("-uz", m.mountpoint);
    }
  }
  if (m.daemon > 0) {
    // An unmount ends a healthy daemon by itself; the signals are for the others.
    std::optional<int> status = wait_for(m.daemon, 10000);
    if (!status) {
      std::fprintf(stderr, "smos_bench: smosd did not exit after the unmount; SIGTERM\n");
      ::kill(m.daemon, SIGTERM);
      status = wait_for(m.daemon, 5000);
    }
    if (!status) {
      ::kill(m.daemon, SIGKILL);
      status = wait_for(m.daemon, 5000);
    }
    if (status && !(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)) {
      std::fprintf(stderr, "smos_bench: smosd ended with %s; log:\n%s\n", describe(*status).c_str(),
                   tail_of_file(m.log, 4000).c_str());
      clean = false;
    }
    m.daemon = -1;
  }
  if (DIR* d = ::opendir("/dev/shm")) {
    std::string prefix = m.store + ".";
    while (const dirent* e = ::readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) {
        ::unlinkat(::dirfd(d), e->d_name, 0);
      }
    }
    ::closedir(d);
  }
  if (!m.twin.empty()) remove_tree(m.twin);
  if (!m.dir.empty()) {
    if (fuse_mounted_at(m.mountpoint)) {
      std::fprintf(stderr, "smos_bench: %s is still mounted; left %s in place\n",
                   m.mountpoint.c_str(), m.dir.c_str());
      clean = false;
    } else {
      remove_tree(m.dir);
    }
  }
  return clean;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_options(argc, argv);
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    std::fprintf(stderr, "smos_bench: skipped: /dev/fuse is not usable here\n");
    return 77;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGALRM}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  Mount m;
  m.store = "bench" + std::to_string(::getpid());
  std::string err = start(o, m);
  const std::string log = tail_of_file(m.log, 4000);
  o.passthrough_on = log.find("passthrough on") != std::string::npos;
  o.ring_on = log.find("io_uring on") != std::string::npos;
  int rc = 0;
  if (!err.empty()) {
    std::fprintf(stderr, "smos_bench: %s\n", err.c_str());
    rc = 1;
  } else {
    std::fflush(nullptr);
    const pid_t parent = ::getpid();
    pid_t worker = ::fork();
    if (worker == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGALRM}) ::signal(sig, SIG_DFL);
      ::_exit(run_worker(o, m.mountpoint, m.twin));
    }
    if (worker < 0) {
      std::perror("smos_bench: fork");
      rc = 1;
    } else {
      ::setpgid(worker, worker);  // also here, so that a kill(-worker) cannot miss
      g_worker = worker;
      if (g_signal) ::kill(-worker, SIGKILL);
      ::alarm(static_cast<unsigned>(o.timeout_s));
      // Wait for the worker. After a signal it is killed; if it cannot die (a request stuck
      // in a hung daemon), killing the daemon aborts the FUSE connection and frees it.
      std::optional<int> status;
      bool daemon_killed = false;
      for (int after_signal = 0; !(status = wait_for(worker, 100));) {
        if (g_signal && (after_signal += 100) > 5000 && !daemon_killed) {
          std::fprintf(stderr, "smos_bench: the worker is stuck; killing smosd\n");
          ::kill(m.daemon, SIGKILL);
          daemon_killed = true;
        }
      }
      ::alarm(0);
      ::kill(-worker, SIGKILL);  // any reader or pusher it left behind
      g_worker = 0;
      if (g_signal == SIGALRM) {
        std::fprintf(stderr,
                     "smos_bench: timed out after %d s (the last progress line names "
                     "the workload); smosd log:\n%s\n",
                     o.timeout_s, tail_of_file(m.log, 4000).c_str());
        rc = 1;
      } else if (g_signal) {
        std::fprintf(stderr, "smos_bench: %s\n", strsignal(g_signal));
        rc = 128 + g_signal;
      } else if (WIFEXITED(*status)) {
        rc = WEXITSTATUS(*status);
      } else {
        std::fprintf(stderr, "smos_bench: the worker died: %s\n", strsignal(WTERMSIG(*status)));
        rc = 1;
      }
    }
  }
  if (!stop(m)) rc = rc ? rc : 1;
  return rc;
}
