#include "os/cpu.h"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <spdlog/spdlog.h>

namespace smos::os {

std::vector<unsigned> cpu_list(const char* path) {
  std::vector<unsigned> cpus;
  if (std::FILE* f = std::fopen(path, "re")) {
    unsigned first = 0;
    unsigned last = 0;
    while (std::fscanf(f, "%u", &first) == 1) {
      last = first;
      if (std::fscanf(f, "-%u", &last) < 0) break;
      for (unsigned cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
      if (std::fgetc(f) != ',') break;
    }
    std::fclose(f);
  }
  return cpus;
}

unsigned possible_cpus() {
  const std::vector<unsigned> cpus = cpu_list("/sys/devices/system/cpu/possible");
  return cpus.empty() ? 0 : *std::max_element(cpus.begin(), cpus.end()) + 1;
}

void pin_to_cpu(unsigned cpu, const char* who) {
  cpu_set_t* cpus = CPU_ALLOC(cpu + 1);
  const std::size_t size = CPU_ALLOC_SIZE(cpu + 1);
  CPU_ZERO_S(size, cpus);
  CPU_SET_S(cpu, size, cpus);
  if (int err = pthread_setaffinity_np(pthread_self(), size, cpus); err != 0) {
    spdlog::warn("{}: cannot run on CPU {}: {}", who, cpu, std::strerror(err));
  }
  CPU_FREE(cpus);
}

void schedule_as(int policy, const char* who) {
  struct {  // struct sched_attr, its first version; <linux/sched/types.h> clashes with glibc's
    std::uint32_t size, sched_policy;
    std::uint64_t sched_flags;
    std::int32_t sched_nice;
    std::uint32_t sched_priority;
    std::uint64_t sched_runtime, sched_deadline, sched_period;
  } attr{};
  static_assert(sizeof attr == 48);  // SCHED_ATTR_SIZE_VER0
  attr.size = sizeof attr;
  attr.sched_policy = static_cast<std::uint32_t>(policy);
  attr.sched_runtime = 100'000;  // ns, the shortest slice allowed
  errno = 0;
  attr.sched_nice = ::getpriority(PRIO_PROCESS, 0);  // the thread's own: keep it
  if (errno != 0 || ::syscall(SYS_sched_setattr, 0, &attr, 0) != 0) {
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      spdlog::warn("{}: cannot use {}: {}", who, policy == SCHED_BATCH ? "SCHED_BATCH" : "SCHED_OTHER",
                   std::strerror(errno));
    }
  }
}

void CpuNudger::nudge(unsigned cpu) {
  std::lock_guard lock(mu_);
  if (stopped_.load(std::memory_order_relaxed)) return;
  if (cpu >= nudgers_.size()) nudgers_.resize(cpu + 1);
  std::unique_ptr<Nudger>& nudger = nudgers_[cpu];
  if (!nudger) {
    const auto now = std::chrono::steady_clock::now();
    if (now < retry_at_) return;
    auto fresh = std::make_unique<Nudger>();
    fresh->fd = ::eventfd(0, EFD_CLOEXEC);
    try {
      if (fresh->fd < 0) throw std::system_error(errno, std::generic_category());
      fresh->thread = std::thread([this, cpu, fd = fresh->fd] { run(cpu, fd); });
    } catch (const std::system_error& e) {
      spdlog::warn("nudger of CPU {}: cannot start: {}; waits for a busy CPU may take a time "
                   "slice", cpu, e.what());
      if (fresh->fd >= 0) ::close(fresh->fd);
      retry_at_ = now + std::chrono::seconds(1);
      return;
    }
    nudger = std::move(fresh);
  }
  ::eventfd_write(nudger->fd, 1);
}

void CpuNudger::run(unsigned cpu, int fd) const {
  pin_to_cpu(cpu, "nudger");
  schedule_as(SCHED_OTHER, "nudger");
  eventfd_t count;
  while (!stopped_.load(std::memory_order_acquire)) {
    if (::eventfd_read(fd, &count) != 0 && errno != EINTR) {
      spdlog::warn("nudger of CPU {}: {}; it nudges no more", cpu, std::strerror(errno));
      return;
    }
  }
}

void CpuNudger::stop() {
  std::lock_guard lock(mu_);
  if (stopped_.exchange(true)) return;
  for (auto& nudger : nudgers_) {
    if (!nudger) continue;
    ::eventfd_write(nudger->fd, 1);
    nudger->thread.join();
    ::close(nudger->fd);
  }
  nudgers_.clear();
}

}  // namespace smos::os
