// Releases in order.
//
// close(2) has the kernel queue the file's FUSE_RELEASE before it returns, but not wait for
// the reply; and the daemon's threads take requests in parallel (from /dev/fuse, or from one
// io_uring queue per CPU). So a request made after close(2) returned can be served before the
// release. That matters when the release is what commits the entry written (or, in explicit
// mode, discards it): the writer's own next lookup, getxattr or rename, or another process's,
// would still find the entry being written.
//
// ReleaseOrder puts those back in order:
//  - expect(): a writer's FLUSH, which close(2) waits for, says that the file's release will
//    commit or discard its entry, if this close was the last one of the file. Through the
//    ring, the release comes through the FLUSH's queue, whose worker serves it when the closer
//    blocks: a request of another CPU that waits for it nudges that CPU to switch tasks.
//  - received(): every request is shown here as a thread takes it, from /dev/fuse or a ring
//    queue. The kernel numbers requests (fuse_in_header::unique) as it queues them, so a
//    request made after close(2) returned has a higher number than the release. Threads take
//    them from /dev/fuse in that order; a ring queue of another CPU can take its own first.
//  - wait_turn(): before a request that observes entries is served, if such a release may be
//    on the way, it waits until every request numbered below it has been received, and then
//    until the expected releases among them are served. A release that was not received by
//    then was not sent before this request: its file is still open elsewhere (a dup(2), a
//    shell's redirection), and its entry is still being written.
//  - A release follows its FLUSH at once, unless the file stays open elsewhere; and every
//    close(2) flushes again. So a release expected for longer than settle_wait after its last
//    flush is not waited for in the numbering (it is still waited for once received): a file
//    kept open elsewhere does not hold every request back until it is closed.
//  - release_turn(), released(): the release handler serves expected releases in their
//    order, and reports once the store has served one.
//  - wait_released(): a reader's release is not expected (a reader has no FLUSH: that would
//    cost every read-only close a round trip), but it changes what a few requests answer: a
//    reader count, which entry a pop takes, and whether a deleted entry is freed or lives on
//    as a zombie (which counts towards capacity). Those wait until every release received
//    before them is served, and through /dev/fuse first until every request numbered below
//    them has been received. A number still missing after hole_wait (a request killed before
//    any thread took it, or a thread preempted that long between its read and received()) is
//    not waited for again, and the daemon logs it.
// A request waits at most max_wait for a release, and the daemon logs it if it gave up. A
// number that never arrives (a request the kernel dropped before sending it) is given up after
// lost_wait.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

namespace smos::os {

class ReleaseOrder {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ReleaseOrder(std::chrono::milliseconds max_wait = std::chrono::seconds(1),
                        std::chrono::milliseconds lost_wait = std::chrono::seconds(1),
                        std::chrono::milliseconds settle_wait = std::chrono::milliseconds(100),
                        std::chrono::milliseconds hole_wait = std::chrono::milliseconds(20))
      : max_wait_(max_wait),
        lost_wait_(lost_wait),
        settle_wait_(settle_wait),
        hole_wait_(hole_wait) {}

  // How a request that waits for a release flushed through the ring queue of `cpu` has that
  // CPU switch tasks (os::CpuNudger); false if it did not (the CPU is the caller's own). Set
  // before requests come.
  void set_nudge(std::function<bool(int cpu)> nudge) { nudge_ = std::move(nudge); }

  // The release of handle `fh`, flushed, commits or discards its entry. `cpu`: the CPU whose
  // ring queue the FLUSH came through, where the release will come too, and `flush` the FLUSH's
  // number; or -1 (/dev/fuse).
  void expect(std::uint64_t fh, int cpu = -1, std::uint64_t flush = 0);
  // Before the store serves the release of `fh`, if expected: returns once the expected
  // releases numbered before it are served (at most max_wait), so that they commit in the
  // order their files were closed.
  void release_turn(std::uint64_t fh);
  // The store has served the release of `fh`, expected or not.
  void released(std::uint64_t fh);
  // `request` (fuse_in_header first) was read from the device.
  void received(const void* request, std::size_t size);
  // Before serving request number `unique`, which observes entries: returns once it may be
  // served, true, or false if it gave up waiting for a release. `overtaking`: requests
  // numbered below it may be held back until it is answered (see FuseRing::overtaking()), so
  // it waits only for the releases already received.
  bool wait_turn(std::uint64_t unique, bool overtaking = false);
  // Before serving request number `unique`, whose answer depends on which files are open:
  // returns once every release received before it is served, true, or false if it gave up
  // waiting for one. `fill_holes`: first waits, at most hole_wait, until every request
  // numbered below it has been received (but numbers given up before). Only where requests
  // numbered below are always about to be (from /dev/fuse; a ring queue of another CPU takes
  // its own when it runs).
  bool wait_released(std::uint64_t unique, bool fill_holes);

  // Numbers received above a hole, at most (some 3 MiB): past this, the hole is given up.
  static constexpr std::size_t kMaxAbove = 65536;
  // A request that waits for a release nudges its CPU at most kNudges times, kNudgeEvery
  // apart, waits awake in between if it nudged, and then sleeps.
  static constexpr std::chrono::microseconds kNudgeEvery{100};
  static constexpr int kNudges = 5;

 private:
  using Releases = std::unordered_map<std::uint64_t, std::uint64_t>;  // fh -> its number
  // Waits until no expected release (and with `others`, no release at all) received is
  // numbered below `unique`, at most max_wait: then logs it, forgets those releases (libfuse
  // may have dropped one), and returns false.
  bool wait_served_before(std::unique_lock<std::mutex>& lock, std::uint64_t unique,
                          bool others);
  // Whether every number below `unique` was received, but those that wait_released() gave up.
  bool received_below(std::uint64_t unique) const;
  // Until when a release expected may still be sent (the past if none is).
  Clock::time_point settles_by() const;
  void note_seen(std::uint64_t unique);
  void advance_to(std::uint64_t unique);
  void update();

  const std::chrono::milliseconds max_wait_;
  const std::chrono::milliseconds lost_wait_;
  const std::chrono::milliseconds settle_wait_;
  const std::chrono::milliseconds hole_wait_;
  std::mutex mu_;
  std::condition_variable changed_;
  int waiting_ = 0;
  struct Flushed {
    Clock::time_point at;  // the last flush
    std::uint64_t unique;  // its request number
    int cpu;               // of the ring queue of the flush, or -1 (/dev/fuse)
  };
  // The CPUs (see Flushed) of the releases expected whose last flush is numbered below
  // `unique`. (Those flushed later concern releases numbered after it.)
  std::vector<int> cpus_flushed_before(std::uint64_t unique) const;
  std::function<bool(int)> nudge_;
  std::unordered_map<std::uint64_t, Flushed> expected_;  // fh -> its last flush
  Releases in_flight_;                    // received, expected
  Releases others_;                       // received, not expected
  std::atomic<bool> active_{false};       // expected_ or in_flight_ is not empty
  std::uint64_t seen_through_ = 0;    // every request numbered up to this one was received
  std::atomic<std::uint64_t> advances_{0};  // how often seen_through_ moved
  std::set<std::uint64_t> seen_above_;  // and these above it
  Clock::time_point hole_since_;        // when the lowest number missing was first missed
  std::uint64_t holes_skipped_through_ = 0;  // wait_released() waits for no number up to it
};

}  // namespace smos::os
