#include "fs/notifier.h"

#include <cerrno>

#include <spdlog/spdlog.h>

namespace smos::fs {

Notifier::Notifier(fuse_session* se) : se_(se), thread_([this] { run(); }) {}

Notifier::~Notifier() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void Notifier::invalidate_entry(std::uint64_t parent, std::string name,
                                std::function<void()> done) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(Job{parent, std::move(name), std::move(done)});
  }
  wake_.notify_one();
}

void Notifier::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    // Callbacks whose grace period is over run first; when stopping, all of them do.
    while (!due_.empty() && (stop_ || due_.front().first <= std::chrono::steady_clock::now())) {
      std::function<void()> done = std::move(due_.front().second);
      due_.pop_front();
      lock.unlock();
      done();
      lock.lock();
    }
    if (queue_.empty()) {
      if (stop_ && due_.empty()) return;
      if (due_.empty()) {
        wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      } else {
        wake_.wait_until(lock, due_.front().first);
      }
      continue;
    }
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    int err = fuse_lowlevel_notify_inval_entry(se_, job.parent, job.name.data(), job.name.size());
    // ENOENT: the kernel did not cache it. ENOTCONN: unmounted under us.
    if (err != 0 && err != -ENOENT && err != -ENOTCONN) {
      spdlog::warn("invalidating {}/{}: {}", job.parent, job.name, err);
    }
    lock.lock();
    if (job.done) due_.emplace_back(std::chrono::steady_clock::now() + kGrace, std::move(job.done));
  }
}

}  // namespace smos::fs
