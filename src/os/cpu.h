// CPUs, and how smosd's own threads are scheduled on them.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace smos::os {

// The CPUs in a list such as /sys/devices/system/cpu/online ("0-3,8,10-11").
std::vector<unsigned> cpu_list(const char* path);
// num_possible_cpus(): one more than the highest CPU number there can be; 0 if unknown.
unsigned possible_cpus();

// Holds the calling thread on `cpu`; logs if it cannot (`who` names the thread).
void pin_to_cpu(unsigned cpu, const char* who);
// Gives the calling thread `policy` (SCHED_OTHER or SCHED_BATCH) and the shortest slice the
// kernel allows, 100 us (Linux 6.12+; older kernels ignore it). The scheduler then picks the
// thread ahead of tasks with longer slices whenever its CPU switches, and under SCHED_OTHER a
// thread that wakes preempts such a task at once (PREEMPT_SHORT), where it would otherwise wait
// until that task's slice is over (RUN_TO_PARITY). Keeps the thread's nice value. Logs once if
// the kernel refuses.
void schedule_as(int policy, const char* who);

// Has a CPU switch tasks now: its nudger, a thread held there that runs SCHED_OTHER with the
// shortest slice, wakes, which preempts the task running there, and blocks again at once. A
// thread of smosd's that is runnable on that CPU with a slice as short (a ring worker), or
// that has waited longer than the task preempted, runs next. For a thread that waits for
// another that a CPU-bound task keeps from running. A CPU's nudger starts at its first nudge.
class CpuNudger {
 public:
  CpuNudger() = default;
  ~CpuNudger() { stop(); }
  CpuNudger(const CpuNudger&) = delete;
  CpuNudger& operator=(const CpuNudger&) = delete;

  // Nudges `cpu`. Does nothing after stop(), or if its nudger cannot start (logged; tried again
  // a second later).
  void nudge(unsigned cpu);
  // Stops and joins the nudgers.
  void stop();

 private:
  struct Nudger {
    int fd = -1;  // an eventfd: a count wakes the nudger
    std::thread thread;
  };
  void run(unsigned cpu, int fd) const;

  std::atomic<bool> stopped_{false};
  std::mutex mu_;  // guards what follows; held while nudging, so stop() closes no fd in use
  // A nudger could not start (logged): none is tried again before this.
  std::chrono::steady_clock::time_point retry_at_{};
  std::vector<std::unique_ptr<Nudger>> nudgers_;  // by CPU number, null until its first nudge
};

}  // namespace smos::os
