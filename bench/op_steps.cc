// op_steps: what each system call of a small push + pop, and of a .latest read, costs on a
// mounted smos: the medians of open, write or read, and close, step by step. smos_bench gives
// the whole operations against tmpfs; this says where their time goes (docs/benchmarks.md).
//
// usage: op_steps OBJECT_DIR [ROUNDS] [--cpu N]
//   OBJECT_DIR  an object (a directory) on a smos mount, which the run leaves empty
//   ROUNDS      pairs and reads to time (default 5000)
//   --cpu N     hold this process on CPU N, so that no step pays for a move between CPUs
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// The samples of one step, in microseconds.
struct Step {
  const char* name;
  std::vector<double> us;

  double median() {
    std::sort(us.begin(), us.end());
    return us.empty() ? 0 : us[us.size() / 2];
  }
};

double since(Clock::time_point& t) {
  const Clock::time_point now = Clock::now();
  const double us = std::chrono::duration<double, std::micro>(now - t).count();
  t = now;
  return us;
}

bool fail(const char* what) {
  std::fprintf(stderr, "op_steps: %s: %s\n", what, std::strerror(errno));
  return false;
}

// open, read of 4 KiB, close of `path`, timed into steps[first..first + 2].
bool open_read_close(const std::string& path, int flags, std::vector<char>& buf,
                     std::vector<Step>& steps, std::size_t first) {
  Clock::time_point t = Clock::now();
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return fail(("open " + path).c_str());
  steps[first].us.push_back(since(t));
  if (::read(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) {
    return fail(("read " + path).c_str());
  }
  steps[first + 1].us.push_back(since(t));
  ::close(fd);
  steps[first + 2].us.push_back(since(t));
  return true;
}

// open(O_WRONLY), write, close of `push` (steps 0-2); then the same entry's pop (steps 3-5).
bool push_pop(const std::string& push, const std::string& pop, std::vector<char>& buf,
              std::vector<Step>& steps) {
  Clock::time_point t = Clock::now();
  const int fd = ::open(push.c_str(), O_WRONLY);
  if (fd < 0) return fail(("open " + push).c_str());
  steps[0].us.push_back(since(t));
  if (::write(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) {
    return fail("write");
  }
  steps[1].us.push_back(since(t));
  if (::close(fd) != 0) return fail("close of the push");
  steps[2].us.push_back(since(t));
  return open_read_close(pop, O_RDONLY | O_NONBLOCK, buf, steps, 3);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int rounds = 5000;
  int cpu = -1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cpu") == 0 && i + 1 < argc) {
      cpu = std::atoi(argv[++i]);
    } else if (dir.empty()) {
      dir = argv[i];
    } else {
      rounds = std::atoi(argv[i]);
    }
  }
  if (dir.empty() || rounds <= 0) {
    std::fprintf(stderr, "usage: op_steps OBJECT_DIR [ROUNDS] [--cpu N]\n");
    return 2;
  }
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) {
      fail("--cpu");
      return 1;
    }
  }
  std::vector<char> buf(4096, 'x');
  std::vector<Step> steps = {{"push open", {}}, {"push write", {}},   {"push close", {}},
                             {"pop open", {}},  {"pop read", {}},     {"pop close", {}},
                             {".latest open", {}}, {".latest read", {}}, {".latest close", {}}};
  const std::string push = dir + "/.push", pop = dir + "/.pop", latest = dir + "/.latest";
  for (int i = 0; i < rounds; ++i) {
    if (!push_pop(push, pop, buf, steps)) return 1;
  }
  // .latest needs an entry: one pushed and left there, popped at the end.
  const int fd = ::open(push.c_str(), O_WRONLY);
  if (fd < 0 || ::write(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()) ||
      ::close(fd) != 0) {
    fail("the entry for .latest");
    return 1;
  }
  for (int i = 0; i < rounds; ++i) {
    if (!open_read_close(latest, O_RDONLY, buf, steps, 6)) return 1;
  }
  ::close(::open(pop.c_str(), O_RDONLY | O_NONBLOCK));
  std::printf("%d rounds of 4 KiB, medians%s\n", rounds, cpu >= 0 ? ", held on one CPU" : "");
  for (Step& s : steps) std::printf("  %-14s %8.2f us\n", s.name, s.median());
  return 0;
}
