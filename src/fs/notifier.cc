#include "fs/notifier.h"

#include <cerrno>

#include <spdlog/spdlog.h>

namespace smos::fs {

Notifier::Notifier(fuse_session* se, std::function<bool()> new_epoch)
    : se_(se), new_epoch_(std::move(new_epoch)), thread_([this] { run(); }) {}

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
    std::deque<Job> jobs;
    jobs.swap(queue_);
    lock.unlock();
    const bool epoch = new_epoch_();  // one for all of them
    for (Job& job : jobs) {
      if (!epoch && dropping_) {
        int err =
            fuse_lowlevel_notify_inval_entry(se_, job.parent, job.name.data(), job.name.size());
        // ENOENT: the kernel did not cache it. ENOTCONN: unmounted under us.
        if (err != 0 && err != -ENOENT && err != -ENOTCONN) {
          spdlog::warn("invalidating {}/{}: {}", job.parent, job.name, err);
        }
      }
      if (job.then) job.then();
    }
    lock.lock();
  }
}

}  // namespace smos::fs
