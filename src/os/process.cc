#include "os/process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace smos::os {

namespace {
// /proc/TID/status, whole: a long Groups: line must not be cut. Empty when /proc cannot tell.
std::string read_status(pid_t tid) {
  if (tid <= 0) return {};
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(tid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      text.clear();
      break;
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

// The rest of the line that starts with `field` ("Tgid:"), or nullopt.
std::optional<std::string_view> field_of(std::string_view status, std::string_view field) {
  for (std::size_t at = 0; at < status.size();) {
    std::size_t end = status.find('\n', at);
    if (end == std::string_view::npos) return std::nullopt;  // cut short: believe none of it
    const std::string_view line = status.substr(at, end - at);
    if (line.starts_with(field)) return line.substr(field.size());
    at = end + 1;
  }
  return std::nullopt;
}

ThreadInfo read_thread_info(pid_t tid) {
  ThreadInfo info;
  info.tgid = tid;
  const std::string status = read_status(tid);
  const auto tgid = field_of(status, "Tgid:");
  if (!tgid) return info;
  info.known = true;
  info.tgid = static_cast<pid_t>(std::strtol(std::string(*tgid).c_str(), nullptr, 10));
  if (const auto groups = field_of(status, "Groups:")) {
    const std::string text(*groups);
    const char* at = text.c_str();
    for (char* end;; at = end) {
      const unsigned long g = std::strtoul(at, &end, 10);
      if (end == at) break;
      info.groups.push_back(static_cast<gid_t>(g));
    }
  }
  if (const auto caps = field_of(status, "CapEff:")) {
    info.capabilities = std::strtoull(std::string(*caps).c_str(), nullptr, 16);
  }
  return info;
}
}  // namespace

bool ThreadInfo::in_group(gid_t gid) const {
  return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

// /proc/TID/status costs some 10 us, and every push asks. A thread id is not reused until the
// kernel has cycled through pid_max (4M) others, far longer than an answer is kept here; a
// thread's groups and capabilities may change meanwhile, and are then believed for at most
// that long.
ThreadInfo thread_info(pid_t tid) {
  constexpr std::int64_t kKeepNs = 1'000'000'000;
  constexpr std::size_t kMaxKept = 4096;
  struct Known {
    ThreadInfo info;
    std::int64_t until;
  };
  static std::mutex mu;
  static std::unordered_map<pid_t, Known> known;
  const std::int64_t now = monotonic_ns();
  {
    std::lock_guard lock(mu);
    if (auto it = known.find(tid); it != known.end() && it->second.until > now) {
      return it->second.info;
    }
  }
  ThreadInfo info = read_thread_info(tid);
  std::lock_guard lock(mu);
  if (known.size() >= kMaxKept) known.clear();
  known[tid] = Known{info, now + kKeepNs};
  return info;
}

pid_t thread_group_of(pid_t tid) { return thread_info(tid).tgid; }

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
