// wakeup_cost: what a round trip between two processes costs on this machine, with both on one
// CPU and with each on its own. A FUSE request is such a round trip plus the kernel's FUSE
// work, so this is the floor under every control call of smos (docs/benchmarks.md).
//
// usage: wakeup_cost [ROUNDS]     (default 20000; needs CPUs 0 and 1)
// Prints one line per placement: the median of 5 runs, in microseconds per round trip.
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

bool pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

// One byte back and forth through two pipes, `rounds` times; the child runs on `child_cpu`.
// Returns microseconds per round trip, or a negative number on failure.
double round_trip_us(int parent_cpu, int child_cpu, int rounds) {
  int there[2];
  int back[2];
  if (::pipe(there) != 0 || ::pipe(back) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  char byte = 0;
  if (pid == 0) {
    if (!pin(child_cpu)) ::_exit(1);
    for (int i = 0; i < rounds; ++i) {
      if (::read(there[0], &byte, 1) != 1 || ::write(back[1], &byte, 1) != 1) ::_exit(1);
    }
    ::_exit(0);
  }
  bool ok = pin(parent_cpu);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; ok && i < rounds; ++i) {
    ok = ::write(there[1], &byte, 1) == 1 && ::read(back[0], &byte, 1) == 1;
  }
  const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
  for (int fd : {there[0], there[1], back[0], back[1]}) ::close(fd);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return took.count() / rounds;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 20000;
  if (rounds <= 0) {
    std::fprintf(stderr, "usage: wakeup_cost [ROUNDS]\n");
    return 2;
  }
  const struct {
    const char* name;
    int child_cpu;
  } placements[] = {{"one CPU (0 and 0)", 0}, {"two CPUs (0 and 1)", 1}};
  for (const auto& p : placements) {
    std::vector<double> runs;
    for (int i = 0; i < 5; ++i) {
      const double us = round_trip_us(0, p.child_cpu, rounds);
      if (us < 0) {
        std::fprintf(stderr, "wakeup_cost: %s: cannot run there\n", p.name);
        return 1;
      }
      runs.push_back(us);
    }
    std::sort(runs.begin(), runs.end());
    std::printf("%-20s %7.2f us per round trip (median of 5 x %d)\n", p.name, runs[2], rounds);
  }
  return 0;
}
