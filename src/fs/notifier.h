// Tells the kernel, from a thread of its own, that names it caches have moved on.
//
// A handler must not invalidate a name in a directory whose lock the kernel may hold while it
// waits for that very handler (lookup, create, unlink, rename all do). So invalidations are
// queued here and sent by one thread that holds no request. Correctness never waits for them:
// an open through a stale name gets ESTALE and the kernel walks the path again; they only keep
// stat(2) from showing a replaced or popped version for longer than a moment.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace smos::fs {

class Notifier {
 public:
  explicit Notifier(fuse_session* se);
  ~Notifier();  // sends what is queued, then stops
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Never blocks on the kernel. `done` runs on the notifier's thread a grace period after the
  // kernel has dropped the name (or never had it): a path walk that found the name in the
  // cache just before may still be on its way to open the old inode.
  void invalidate_entry(std::uint64_t parent, std::string name, std::function<void()> done);

  static constexpr std::chrono::milliseconds kGrace{100};

 private:
  void run();

  fuse_session* const se_;
  std::mutex mu_;  // guards queue_ and stop_
  std::condition_variable wake_;
  struct Job {
    std::uint64_t parent;
    std::string name;
    std::function<void()> done;
  };
  std::deque<Job> queue_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::function<void()>>> due_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the rest exists
};

}  // namespace smos::fs
