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
                                std::function<void()> then) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(Job{parent, std::move(name), std::move(then)});
  }
  wake_.notify_one();
}

void Notifier::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, with nothing left to send
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    int err = fuse_lowlevel_notify_inval_entry(se_, job.parent, job.name.data(), job.name.size());
    // ENOENT: the kernel did not cache it. ENOTCONN: unmounted under us.
    if (err != 0 && err != -ENOENT && err != -ENOTCONN) {
      spdlog::warn("invalidating {}/{}: {}", job.parent, job.name, err);
    }
    if (job.then) job.then();
    lock.lock();
  }
}

}  // namespace smos::fs
