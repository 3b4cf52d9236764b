// Facts about the processes that call into the store.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace smos::os {

// What /proc/TID/status says of a thread (as FUSE reports thread ids), as far as smosd asks:
// cached for a second.
struct ThreadInfo {
  bool known = false;     // false when /proc cannot tell: the thread has exited, or is 0 (a
                          // caller from another pid namespace)
  pid_t tgid = 0;         // its process; the thread id itself when unknown
  std::vector<gid_t> groups;  // supplementary groups
  std::uint64_t capabilities = 0;  // effective set, one bit per CAP_* number
  bool in_group(gid_t gid) const;
  bool capable(int cap) const { return (capabilities >> cap) & 1; }
};
ThreadInfo thread_info(pid_t tid);
// The thread-group (process) id of a thread id. Returns the argument itself when /proc cannot
// tell (the thread has already exited).
pid_t thread_group_of(pid_t tid);
// Whether a thread id (as FUSE reports it) is one of this process's threads.
bool is_own_thread(pid_t tid);
// Whether a thread of this id still exists.
bool thread_exists(pid_t tid);

// Runs `probe` in a child process (a fork) and returns its result (0-126), -1 if the child
// died of a signal or ran past `timeout_ms` (it is killed), or kProbeUnknown if there was no
// child to ask: for reading data that might crash or hang whoever reads it. The caller must be
// the only thread that could hold a lock the probe takes (start-up).
inline constexpr int kProbeUnknown = 127;
int probe_in_child(const std::function<int()>& probe, int timeout_ms);

// Wall-clock time in nanoseconds since the epoch: for timestamps that users see.
std::int64_t now_ns();
// Nanoseconds of a clock that never steps: for timeouts and ages.
std::int64_t monotonic_ns();

}  // namespace smos::os
