// CpuNudger: a CPU's nudger thread starts at its first nudge, and stop() joins them all. (That a
// nudge gets a waiting worker to run is a matter of timing, shown by bench/visibility.)
#include "os/cpu.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace smos::test {
namespace {

std::size_t ThreadsOfThisProcess() {
  return static_cast<std::size_t>(std::distance(
      std::filesystem::directory_iterator("/proc/self/task"), std::filesystem::directory_iterator()));
}

// A joined thread leaves /proc a moment after pthread_join() returns.
bool ThreadsBecome(std::size_t count) {
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
       std::chrono::steady_clock::now() < until;) {
    if (ThreadsOfThisProcess() == count) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

TEST(CpuNudgerTest, ACpusNudgerStartsAtItsFirstNudgeAndStopJoinsThemAll) {
  const std::size_t before = ThreadsOfThisProcess();
  {
    os::CpuNudger nudger;
    EXPECT_EQ(ThreadsOfThisProcess(), before) << "a nudger started before any nudge";
    nudger.nudge(0);
    nudger.nudge(0);
    EXPECT_EQ(ThreadsOfThisProcess(), before + 1);
    nudger.nudge(1);  // whether this machine has a CPU 1 or not: it cannot pin, and logs it
    EXPECT_EQ(ThreadsOfThisProcess(), before + 2);
    nudger.stop();
    EXPECT_TRUE(ThreadsBecome(before));
    nudger.nudge(0);  // after stop(): nothing
    EXPECT_EQ(ThreadsOfThisProcess(), before);
  }
  EXPECT_EQ(ThreadsOfThisProcess(), before);
}

}  // namespace
}  // namespace smos::test
