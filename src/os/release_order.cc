#include "os/release_order.h"

#include <linux/fuse.h>

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "os/process.h"

namespace smos::os {

namespace {
// The kernel numbers ordinary requests in steps of two; an interrupt takes its request's
// number plus one.
constexpr std::uint64_t kStep = 2;

// Requests whose answer can depend on whether a release was served. Reads, writes and flushes
// go to a file that is open, and so not being released; forgets and interrupts answer nothing.
bool observes_entries(std::uint32_t opcode) {
  switch (opcode) {
    case FUSE_READ:
    case FUSE_WRITE:
    case FUSE_FLUSH:
    case FUSE_RELEASE:
    case FUSE_RELEASEDIR:
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    case FUSE_INTERRUPT:
    case FUSE_NOTIFY_REPLY:
    case FUSE_INIT:
    case FUSE_DESTROY:
      return false;
    default:
      return true;
  }
}

fuse_in_header header_of(const void* request) {
  fuse_in_header in;
  std::memcpy(&in, request, sizeof in);
  return in;
}
}  // namespace

void ReleaseOrder::expect(std::uint64_t fh, pid_t closer) {
  // Its pid is the closer's: the RELEASE itself comes with none.
  const pid_t tgid = thread_group_of(closer);
  std::lock_guard lock(mu_);
  expected_[fh] = Release{0, tgid};
  active_.store(true, std::memory_order_release);
}

void ReleaseOrder::released(std::uint64_t fh) {
  std::lock_guard lock(mu_);
  const bool served = in_flight_.erase(fh) != 0;
  if (expected_.erase(fh) == 0 && !served) return;
  active_.store(!expected_.empty() || !in_flight_.empty(), std::memory_order_release);
  if (served) changed_.notify_all();
}

void ReleaseOrder::received(const void* request, std::size_t size) {
  if (size < sizeof(fuse_in_header)) return;
  const fuse_in_header in = header_of(request);
  if (in.unique % kStep != 0) return;  // an interrupt
  std::lock_guard lock(mu_);
  note_seen(in.unique);
  if (in.opcode != FUSE_RELEASE || size < sizeof in + sizeof(fuse_release_in)) return;
  fuse_release_in release;
  std::memcpy(&release, static_cast<const char*>(request) + sizeof in, sizeof release);
  auto it = expected_.find(release.fh);
  if (it == expected_.end()) return;
  Release r = it->second;
  r.unique = in.unique;
  expected_.erase(it);
  in_flight_[release.fh] = r;
}

void ReleaseOrder::note_seen(std::uint64_t unique) {
  if (seen_through_ != 0 && unique <= seen_through_) return;  // after a number taken as lost
  if (seen_through_ == 0 || unique == seen_through_ + kStep) {  // (the first is INIT's)
    advance_to(unique);
    return;
  }
  seen_above_.insert(unique);
  // Requests sent through io_uring, or dropped by the kernel before any worker took them,
  // leave holes for good.
  if (seen_above_.size() > kLostAfter) advance_to(*seen_above_.begin());
}

void ReleaseOrder::advance_to(std::uint64_t unique) {
  seen_through_ = std::max(seen_through_, unique);
  while (!seen_above_.empty() && *seen_above_.begin() <= seen_through_ + kStep) {
    seen_through_ = std::max(seen_through_, *seen_above_.begin());
    seen_above_.erase(seen_above_.begin());
  }
  if (active_.load(std::memory_order_relaxed)) changed_.notify_all();
}

bool ReleaseOrder::waits_for(const std::unordered_map<std::uint64_t, Release>& releases,
                             pid_t tgid, std::uint64_t unique) const {
  for (const auto& [fh, r] : releases) {
    if (r.tgid == tgid && r.unique < unique) return true;
  }
  return false;
}

bool ReleaseOrder::wait_turn(const void* request, std::size_t size) {
  if (!active_.load(std::memory_order_acquire) || size < sizeof(fuse_in_header)) return true;
  const fuse_in_header in = header_of(request);
  if (!observes_entries(in.opcode) || in.unique % kStep != 0) return true;
  const pid_t tgid = thread_group_of(static_cast<pid_t>(in.pid));
  std::unique_lock lock(mu_);
  // A release of this process that is flushed but not received may be in another worker's
  // hands, taken from the device before this request: wait until all before it are received.
  if (waits_for(expected_, tgid, in.unique) &&
      !changed_.wait_for(lock, kLostWait, [&] { return seen_through_ + kStep >= in.unique; })) {
    spdlog::debug("FUSE channel: requests before {} never arrived; going on without them",
                  in.unique);
    advance_to(in.unique - kStep);
  }
  if (changed_.wait_for(lock, max_wait_, [&] { return !waits_for(in_flight_, tgid, in.unique); })) {
    return true;
  }
  spdlog::warn("FUSE channel: request {} (opcode {}) of pid {} waited {} ms for its process's "
               "release, and goes ahead without it",
               in.unique, in.opcode, in.pid, max_wait_.count());
  return false;
}

}  // namespace smos::os
