// Tells the kernel, from a thread of its own, that names it caches have moved on.
//
// A handler must not invalidate a name in a directory whose lock the kernel may hold while it
// waits for that very handler (lookup, create, unlink, rename all do). So invalidations are
// queued here and sent by one thread that holds no request. Correctness never waits for them:
// an open through a stale name gets ESTALE and the kernel walks the path again; they only keep
// stat(2) from showing a replaced or popped version for longer than a moment.
//
// Where the kernel knows epochs (6.16+), one new epoch stands for every name queued: the kernel
// looks each cached name up again before its next use. That takes no lock. Dropping a name
// (FUSE_NOTIFY_INVAL_ENTRY) takes its directory's, which a lookup that the daemon will never
// answer (it was killed, or is stopping) can hold for good: the notifier would wait in the
// kernel, unkillable, and keep the device, and with it every caller, from being let go.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace smos::fs {

class Notifier {
 public:
  // `new_epoch` asks the kernel for a new epoch, and says whether the kernel takes them; where
  // it does not, names are dropped one by one.
  Notifier(fuse_session* se, std::function<bool()> new_epoch);
  ~Notifier();  // sends what is queued, then stops
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Never blocks on the kernel. `then`, if any, runs on the notifier's thread once the kernel
  // has dropped the name (or said it had none).
  void invalidate_entry(std::uint64_t parent, std::string name,
                        std::function<void()> then = nullptr);
  // Once requests are no longer served, dropping a name could wait for good on a lookup that
  // holds its directory: from now on, only the continuations run.
  void stop_dropping() { dropping_ = false; }

 private:
  void run();

  fuse_session* const se_;
  const std::function<bool()> new_epoch_;
  std::mutex mu_;  // guards queue_ and stop_
  std::condition_variable wake_;
  struct Job {
    std::uint64_t parent;
    std::string name;
    std::function<void()> then;
  };
  std::deque<Job> queue_;
  bool stop_ = false;
  std::atomic<bool> dropping_{true};
  std::thread thread_;  // last: starts once the rest exists
};

}  // namespace smos::fs
