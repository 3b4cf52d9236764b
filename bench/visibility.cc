// visibility: how soon another process finds an entry committed after its writer's close(2)
// returned, on a mounted smos. A writer, held on CPU 0, writes a 4 KiB entry by name, closes it
// and then computes (spins) for a while; an observer, held on CPU 1, stat(2)s the name until it
// is there. Prints the median, p90 and worst of (found - close returned). No tmpfs twin: on
// tmpfs the name is there before close(2). docs/design.md ("FUSE over io_uring") uses it.
//
// usage: visibility OBJECT_DIR [ROUNDS] [--spin US]
//   OBJECT_DIR  an object (a directory) on a smos mount, which the run leaves empty
//   ROUNDS      entries to time (default 200)
//   --spin US   how long the writer computes after each close (default 20000)
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

bool hold_on_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

int fail(const std::string& what) {
  std::fprintf(stderr, "visibility: %s: %s\n", what.c_str(), std::strerror(errno));
  return 1;
}

std::string entry(const std::string& dir, int i) { return dir + "/v" + std::to_string(i); }

// The writer's side: each entry, then spin_us of computing, then a short sleep so that the
// observer's polling does not decide which round it is in.
int write_entries(const std::string& dir, int rounds, int spin_us,
                  std::atomic<std::int64_t>* closed) {
  if (!hold_on_cpu(0)) std::fprintf(stderr, "visibility: writer not held on CPU 0\n");
  const std::vector<char> bytes(4096, 'v');
  for (int i = 0; i < rounds; ++i) {
    const int fd = ::open(entry(dir, i).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return fail("open " + entry(dir, i));
    if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
      return fail("write");
    }
    if (::close(fd) != 0) return fail("close");
    closed[i].store(now_ns(), std::memory_order_release);
    for (const std::int64_t until = now_ns() + spin_us * 1000ll; now_ns() < until;) {
    }
    ::usleep(2000);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int rounds = 200;
  int spin_us = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--spin") == 0 && i + 1 < argc) {
      spin_us = std::atoi(argv[++i]);
    } else if (dir.empty()) {
      dir = argv[i];
    } else {
      rounds = std::atoi(argv[i]);
    }
  }
  if (dir.empty() || rounds <= 0 || spin_us < 0) {
    std::fprintf(stderr, "usage: visibility OBJECT_DIR [ROUNDS] [--spin US]\n");
    return 2;
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return fail(dir);
  // The writer's close times, shared with the forked writer.
  void* shared = ::mmap(nullptr, sizeof(std::atomic<std::int64_t>) * rounds, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return fail("mmap");
  auto* closed = new (shared) std::atomic<std::int64_t>[rounds]();
  const pid_t writer = ::fork();
  if (writer < 0) return fail("fork");
  if (writer == 0) ::_exit(write_entries(dir, rounds, spin_us, closed));

  if (!hold_on_cpu(1)) std::fprintf(stderr, "visibility: observer not held on CPU 1\n");
  std::vector<double> us;
  int status = 0;
  for (int i = 0; i < rounds; ++i) {
    const std::string name = entry(dir, i);
    while (::stat(name.c_str(), &st) != 0) {
      if (errno != ENOENT) return fail("stat " + name);
      if (::waitpid(writer, &status, WNOHANG) == writer) {
        std::fprintf(stderr, "visibility: the writer exited with %d before %s\n", status,
                     name.c_str());
        return 1;
      }
    }
    const std::int64_t found = now_ns();
    std::int64_t close_returned;
    while ((close_returned = closed[i].load(std::memory_order_acquire)) == 0) {
    }
    us.push_back((found - close_returned) / 1e3);  // negative: found while close(2) returned
  }
  if (::waitpid(writer, &status, 0) != writer || status != 0) {
    std::fprintf(stderr, "visibility: the writer failed (status %d)\n", status);
    return 1;
  }
  for (int i = 0; i < rounds; ++i) ::unlink(entry(dir, i).c_str());
  std::sort(us.begin(), us.end());
  std::printf(
      "%d entries of 4 KiB, the writer spinning %d us after each close: found after "
      "median %.1f us, p90 %.1f us, worst %.1f us\n",
      rounds, spin_us, us[us.size() / 2], us[us.size() * 9 / 10], us.back());
  return 0;
}
