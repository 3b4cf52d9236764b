#include "os/process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <unordered_map>

namespace smos::os {

namespace {
// The value of `field` ("\nTgid:") in /proc/TID/status, up to the end of its line; empty when
// /proc cannot tell.
std::string status_field(pid_t tid, const char* field) {
  if (tid <= 0) return {};
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(tid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[4096];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return {};
  buf[n] = '\0';
  const char* line = std::strstr(buf, field);
  if (line == nullptr) return {};
  line += std::strlen(field);
  return std::string(line, std::strcspn(line, "\n"));
}

pid_t read_thread_group(pid_t tid) {
  const std::string tgid = status_field(tid, "\nTgid:");
  return tgid.empty() ? tid : static_cast<pid_t>(std::strtol(tgid.c_str(), nullptr, 10));
}
}  // namespace

bool has_group(pid_t tid, gid_t gid) {
  const std::string groups = status_field(tid, "\nGroups:");
  const char* at = groups.c_str();
  for (char* end;; at = end) {
    const unsigned long g = std::strtoul(at, &end, 10);
    if (end == at) return false;
    if (g == gid) return true;
  }
}

// /proc/TID/status costs some 10 us, and every push asks. A thread id is not reused until the
// kernel has cycled through pid_max (4M) others, far longer than an answer is kept here.
pid_t thread_group_of(pid_t tid) {
  constexpr std::int64_t kKeepNs = 1'000'000'000;
  constexpr std::size_t kMaxKept = 4096;
  struct Known {
    pid_t tgid;
    std::int64_t until;
  };
  static std::mutex mu;
  static std::unordered_map<pid_t, Known> known;
  const std::int64_t now = monotonic_ns();
  {
    std::lock_guard lock(mu);
    if (auto it = known.find(tid); it != known.end() && it->second.until > now) {
      return it->second.tgid;
    }
  }
  const pid_t tgid = read_thread_group(tid);
  std::lock_guard lock(mu);
  if (known.size() >= kMaxKept) known.clear();
  known[tid] = Known{tgid, now + kKeepNs};
  return tgid;
}

bool is_own_thread(pid_t tid) { return thread_group_of(tid) == ::getpid(); }

bool thread_exists(pid_t tid) {
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d", static_cast<int>(tid));
  return ::access(path, F_OK) == 0;
}

int probe_in_child(const std::function<int()>& probe, int timeout_ms) {
  // A SIGCHLD that smosd's launcher ignored (it is inherited across exec) would have the
  // kernel reap the child, and its status would be lost.
  struct sigaction dfl {}, old {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &dfl, &old);
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child == 0) {
    // Never outlive the parent: the child holds copies of its descriptors, the store's lock
    // among them.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(kProbeUnknown);
    const rlimit no_core{0, 0};  // a crash is the expected way to fail
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::_exit(probe() & 0x7f);
  }
  int result = kProbeUnknown;
  if (child > 0) {
    int status = 0;
    for (int waited = 0;; ++waited) {
      const pid_t done = ::waitpid(child, &status, WNOHANG);
      if (done == child) {
        result = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        break;
      }
      if (done < 0 && errno != EINTR) break;  // cannot tell
      if (waited == timeout_ms) ::kill(child, SIGKILL);  // a loop is as bad as a crash
      ::usleep(1000);
    }
  }
  ::sigaction(SIGCHLD, &old, nullptr);
  return result;
}

namespace {
std::int64_t clock_ns(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
}  // namespace

std::int64_t now_ns() { return clock_ns(CLOCK_REALTIME); }

std::int64_t monotonic_ns() { return clock_ns(CLOCK_MONOTONIC); }

}  // namespace smos::os
