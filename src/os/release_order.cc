#include "os/release_order.h"

#include <linux/fuse.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

namespace smos::os {

namespace {
// The kernel numbers requests in steps of two; an interrupt takes its request's number plus
// one, and a forget takes a number as it is read.
constexpr std::uint64_t kStep = 2;
}  // namespace

void ReleaseOrder::expect(std::uint64_t fh, int cpu, std::uint64_t flush) {
  std::lock_guard lock(mu_);
  expected_[fh] = {Clock::now(), flush, cpu};
  update();
}

std::vector<int> ReleaseOrder::cpus_flushed_before(std::uint64_t unique) const {
  std::vector<int> cpus;
  for (const auto& [fh, flushed] : expected_) {
    if (flushed.cpu >= 0 && flushed.unique < unique &&
        std::find(cpus.begin(), cpus.end(), flushed.cpu) == cpus.end()) {
      cpus.push_back(flushed.cpu);
    }
  }
  return cpus;
}

void ReleaseOrder::release_turn(std::uint64_t fh) {
  if (!active_.load(std::memory_order_acquire)) return;
  std::unique_lock lock(mu_);
  const auto it = in_flight_.find(fh);
  if (it == in_flight_.end()) return;
  const std::uint64_t unique = it->second;
  ++waiting_;
  wait_served_before(lock, unique, false);
  --waiting_;
}

void ReleaseOrder::released(std::uint64_t fh) {
  std::lock_guard lock(mu_);
  if (in_flight_.erase(fh) + expected_.erase(fh) + others_.erase(fh) != 0) update();
}

void ReleaseOrder::received(const void* request, std::size_t size) {
  fuse_in_header in;
  if (size < sizeof in) return;
  std::memcpy(&in, request, sizeof in);
  if (in.unique % kStep != 0) return;  // an interrupt
  std::lock_guard lock(mu_);
  note_seen(in.unique);
  if (in.opcode != FUSE_RELEASE || size < sizeof in + sizeof(fuse_release_in)) return;
  fuse_release_in release;
  std::memcpy(&release, static_cast<const char*>(request) + sizeof in, sizeof release);
  (expected_.erase(release.fh) != 0 ? in_flight_ : others_)[release.fh] = in.unique;
  update();
}

void ReleaseOrder::note_seen(std::uint64_t unique) {
  if (seen_through_ != 0 && unique <= seen_through_) return;  // after a number given up
  if (seen_through_ == 0 || unique == seen_through_ + kStep) {  // (the first is INIT's)
    advance_to(unique);
    return;
  }
  const Clock::time_point now = Clock::now();
  if (seen_above_.empty()) hole_since_ = now;
  seen_above_.insert(unique);
  if (now - hole_since_ > lost_wait_ || seen_above_.size() > kMaxAbove) {
    advance_to(*seen_above_.begin());
  }
}

void ReleaseOrder::advance_to(std::uint64_t unique) {
  seen_through_ = std::max(seen_through_, unique);
  advances_.fetch_add(1, std::memory_order_release);
  while (!seen_above_.empty() && *seen_above_.begin() <= seen_through_ + kStep) {
    seen_through_ = std::max(seen_through_, *seen_above_.begin());
    seen_above_.erase(seen_above_.begin());
  }
  if (!seen_above_.empty()) hole_since_ = Clock::now();
  if (waiting_ > 0) changed_.notify_all();
}

void ReleaseOrder::update() {
  active_.store(!expected_.empty() || !in_flight_.empty(), std::memory_order_release);
  if (waiting_ > 0) changed_.notify_all();
}

ReleaseOrder::Clock::time_point ReleaseOrder::settles_by() const {
  Clock::time_point last = Clock::time_point::min();
  for (const auto& [fh, flushed] : expected_) last = std::max(last, flushed.at);
  return last == Clock::time_point::min() ? last : last + settle_wait_;
}

bool ReleaseOrder::wait_turn(std::uint64_t unique, bool overtaking) {
  if (!active_.load(std::memory_order_acquire)) return true;
  std::unique_lock lock(mu_);
  ++waiting_;
  // A release that is flushed but not received may be in another worker's hands, taken
  // before this request: wait until all before it are received.
  const Clock::time_point start = Clock::now();
  const Clock::time_point lost_by = start + lost_wait_;
  int nudges = 0;
  Clock::time_point awake_until = start;
  while (!overtaking && seen_through_ + kStep < unique) {
    const Clock::time_point now = Clock::now();
    if (now >= settles_by()) break;
    if (now >= lost_by) {
      spdlog::warn("FUSE channel: requests numbered before {} never arrived in {} ms; going on "
                   "without them", unique, lost_wait_.count());
      advance_to(unique - kStep);
      break;
    }
    // Or still in the ring queue of its closer's CPU, whose worker the closer keeps from
    // running if it computes on: have that CPU switch, and wait awake meanwhile, as this CPU
    // would otherwise go idle, and a virtual CPU that halts takes tens of microseconds to wake.
    if (std::vector<int> cpus; nudge_ && now >= awake_until && nudges < kNudges &&
                               !(cpus = cpus_flushed_before(unique)).empty()) {
      ++nudges;
      lock.unlock();
      bool nudged = false;
      for (int cpu : cpus) nudged = nudge_(cpu) || nudged;
      lock.lock();
      if (nudged) {
        awake_until = Clock::now() + kNudgeEvery;
      } else {
        nudges = kNudges;  // its own CPU's queue: it serves it once this thread sleeps
      }
      continue;  // what it waits for may have come meanwhile
    }
    if (Clock::now() < awake_until) {
      const std::uint64_t advances = advances_.load(std::memory_order_acquire);
      lock.unlock();
      while (advances_.load(std::memory_order_acquire) == advances && Clock::now() < awake_until) {
        std::this_thread::yield();
      }
      lock.lock();
      continue;
    }
    changed_.wait_until(lock, std::min(lost_by, settles_by()));
  }
  const bool served = wait_served_before(lock, unique, false);
  --waiting_;
  return served;
}

bool ReleaseOrder::wait_released(std::uint64_t unique, bool fill_holes) {
  std::unique_lock lock(mu_);
  ++waiting_;
  if (fill_holes &&
      !changed_.wait_for(lock, hole_wait_, [&] { return received_below(unique); })) {
    spdlog::warn("FUSE channel: requests numbered before {} were not all taken in {} ms; going "
                 "on without them (a reader's close among them may show late)",
                 unique, hole_wait_.count());
    holes_skipped_through_ = std::max(holes_skipped_through_, unique - kStep);
  }
  const bool served = wait_served_before(lock, unique, true);
  --waiting_;
  return served;
}

bool ReleaseOrder::received_below(std::uint64_t unique) const {
  std::uint64_t next = std::max(seen_through_, holes_skipped_through_) + kStep;
  for (auto it = seen_above_.lower_bound(next); next < unique; ++it, next += kStep) {
    if (it == seen_above_.end() || *it != next) return false;
  }
  return true;
}

bool ReleaseOrder::wait_served_before(std::unique_lock<std::mutex>& lock, std::uint64_t unique,
                                      bool others) {
  const auto numbered_below = [unique](const auto& item) { return item.second < unique; };
  const auto none_below = [&](const Releases& releases) {
    return std::none_of(releases.begin(), releases.end(), numbered_below);
  };
  if (changed_.wait_for(lock, max_wait_, [&] {
        return none_below(in_flight_) && (!others || none_below(others_));
      })) {
    return true;
  }
  spdlog::warn("FUSE channel: request {} waited {} ms for the releases numbered before it, and "
               "goes ahead without them", unique, max_wait_.count());
  // Never wait for these again (a release that libfuse dropped would hold everyone back for
  // good).
  std::erase_if(in_flight_, numbered_below);
  if (others) std::erase_if(others_, numbered_below);
  update();
  return false;
}

}  // namespace smos::os
