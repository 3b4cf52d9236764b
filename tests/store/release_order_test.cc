// ReleaseOrder: a process's requests are served after the releases that commit what it wrote,
// however the daemon's workers share out the requests. These tests play the device and its
// workers: they hand it request headers as the kernel numbers them, and ask for turns from
// other threads. (Which operations ask is fs.cc's choice; the mount tests cover that.)
#include "os/release_order.h"

#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

namespace smos::test {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kFh = 7;
// Long enough that a request that should wait visibly has not returned yet.
constexpr milliseconds kHeld{60};

std::vector<char> Request(std::uint32_t opcode, std::uint64_t unique, pid_t pid,
                          std::uint64_t fh = 0) {
  fuse_in_header in{};
  in.opcode = opcode;
  in.unique = unique;
  in.pid = static_cast<std::uint32_t>(pid);
  std::vector<char> bytes(sizeof in);
  if (opcode == FUSE_RELEASE) {
    fuse_release_in release{};
    release.fh = fh;
    bytes.resize(sizeof in + sizeof release);
    std::memcpy(bytes.data() + sizeof in, &release, sizeof release);
    in.pid = 0;  // as the kernel sends it
  }
  in.len = static_cast<std::uint32_t>(bytes.size());
  std::memcpy(bytes.data(), &in, sizeof in);
  return bytes;
}

class ReleaseOrderTest : public ::testing::Test {
 protected:
  // Holes in the numbering are given up only after kLost here, so that no test's timing
  // depends on it but the ones about holes.
  static constexpr milliseconds kLost{10000};

  void Receive(const std::vector<char>& request) { order_.received(request.data(), request.size()); }

  // wait_turn() of request `unique` of thread `pid`, on a thread of its own.
  std::future<bool> WaitTurn(std::uint64_t unique, pid_t pid) {
    return std::async(std::launch::async, [this, unique, pid] { return order_.wait_turn(unique, pid); });
  }
  static bool Returned(std::future<bool>& f, milliseconds within) {
    return f.wait_for(within) == std::future_status::ready;
  }
  // Asks for a turn here, and says whether it came at once.
  bool TurnAtOnce(std::uint64_t unique, pid_t pid) {
    const auto start = Clock::now();
    return order_.wait_turn(unique, pid) && Clock::now() - start < kHeld;
  }

  // The request of `turn` is held back while the release numbered `release` is missing, and
  // while it is served; it goes on once the store has served it.
  void ExpectHeldUntilTheLateReleaseIsServed(std::future<bool>& turn, std::uint64_t release) {
    EXPECT_FALSE(Returned(turn, kHeld)) << "served before the release was received";
    Receive(Request(FUSE_RELEASE, release, 0, kFh));
    EXPECT_FALSE(Returned(turn, kHeld)) << "served while the release was being served";
    order_.released(kFh);
    ASSERT_TRUE(Returned(turn, milliseconds(2000)));
    EXPECT_TRUE(turn.get());
  }

  // INIT is the first request; the kernel numbers the rest in steps of two.
  void SetUp() override { Receive(Request(FUSE_INIT, 2, 0)); }

  os::ReleaseOrder order_{milliseconds(10000), kLost};
  const pid_t self_ = ::gettid();
  const pid_t other_process_ = ::getppid();
};

TEST_F(ReleaseOrderTest, TheClosersNextRequestWaitsUntilItsReleaseIsServed) {
  order_.expect(kFh, self_);
  Receive(Request(FUSE_RELEASE, 4, 0, kFh));
  Receive(Request(FUSE_LOOKUP, 6, self_));
  std::future<bool> turn = WaitTurn(6, self_);
  EXPECT_FALSE(Returned(turn, kHeld)) << "served before the release";
  order_.released(kFh);
  ASSERT_TRUE(Returned(turn, milliseconds(2000)));
  EXPECT_TRUE(turn.get());
}

TEST_F(ReleaseOrderTest, ARequestWaitsForAReleaseThatAnotherWorkerHasNotShownYet) {
  // Worker A took the release from the device first, but this worker's request got here
  // before A called received().
  order_.expect(kFh, self_);
  Receive(Request(FUSE_LOOKUP, 6, self_));
  std::future<bool> turn = WaitTurn(6, self_);
  ExpectHeldUntilTheLateReleaseIsServed(turn, 4);
}

TEST_F(ReleaseOrderTest, AReleaseStillOrdersWhenManyLaterRequestsOvertakeIt) {
  // The worker holding the release was descheduled while others took a thousand requests.
  order_.expect(kFh, self_);
  std::uint64_t unique = 4;  // the release's
  for (int i = 0; i < 1000; ++i) Receive(Request(FUSE_GETATTR, unique += 2, other_process_));
  const std::uint64_t mine = unique += 2;
  Receive(Request(FUSE_LOOKUP, mine, self_));
  std::future<bool> turn = WaitTurn(mine, self_);
  ExpectHeldUntilTheLateReleaseIsServed(turn, 4);
}

TEST_F(ReleaseOrderTest, AWaiterGoesOnOnceItsReleaseIsServedWhateverElseIsMissing) {
  // Number 4 is another process's request, still in a worker's hands; 6 is the release.
  order_.expect(kFh, self_);
  Receive(Request(FUSE_LOOKUP, 8, self_));
  std::future<bool> turn = WaitTurn(8, self_);
  EXPECT_FALSE(Returned(turn, kHeld));
  Receive(Request(FUSE_RELEASE, 6, 0, kFh));
  order_.released(kFh);
  EXPECT_TRUE(Returned(turn, milliseconds(2000))) << "waited for number 4";
}

TEST_F(ReleaseOrderTest, AnotherThreadOfTheClosersProcessWaitsToo) {
  order_.expect(kFh, self_);
  Receive(Request(FUSE_RELEASE, 4, 0, kFh));
  // A live thread: the group of a thread id that /proc no longer knows is taken as its own.
  std::atomic<bool> done{false};
  std::promise<pid_t> tid;
  std::thread live([&] {
    tid.set_value(::gettid());
    while (!done) std::this_thread::sleep_for(milliseconds(1));
  });
  const pid_t other_thread = tid.get_future().get();
  Receive(Request(FUSE_GETXATTR, 6, other_thread));
  std::future<bool> turn = WaitTurn(6, other_thread);
  EXPECT_FALSE(Returned(turn, kHeld));
  order_.released(kFh);
  EXPECT_TRUE(Returned(turn, milliseconds(2000)));
  done = true;
  live.join();
}

TEST_F(ReleaseOrderTest, OtherProcessesAndEarlierRequestsDoNotWait) {
  order_.expect(kFh, self_);
  Receive(Request(FUSE_LOOKUP, 4, self_));
  Receive(Request(FUSE_RELEASE, 6, 0, kFh));
  Receive(Request(FUSE_LOOKUP, 8, other_process_));
  EXPECT_TRUE(TurnAtOnce(8, other_process_));
  EXPECT_TRUE(TurnAtOnce(4, self_)) << "numbered before the release";
  order_.released(kFh);
  Receive(Request(FUSE_LOOKUP, 10, self_));
  EXPECT_TRUE(TurnAtOnce(10, self_)) << "after the release was served";
}

TEST_F(ReleaseOrderTest, ReleasesThatSettleNothingHoldNobodyBack) {
  // A reader's release, or a push's (committed at its flush): never expected.
  Receive(Request(FUSE_RELEASE, 4, 0, kFh));
  Receive(Request(FUSE_LOOKUP, 6, self_));
  EXPECT_TRUE(TurnAtOnce(6, self_));
  // The same with another handle of this process expected, whose release is not sent yet.
  order_.expect(kFh + 1, self_);
  Receive(Request(FUSE_RELEASE, 8, 0, kFh + 2));
  Receive(Request(FUSE_LOOKUP, 10, self_));
  EXPECT_TRUE(TurnAtOnce(10, self_));
  order_.released(kFh);
  order_.released(kFh + 1);
  order_.released(kFh + 2);
}

TEST_F(ReleaseOrderTest, AFileStillOpenElsewhereHoldsNobodyBack) {
  // The writer closed one of two descriptors of the file: no release follows the flush.
  order_.expect(kFh, self_);
  Receive(Request(FUSE_GETATTR, 4, self_));
  Receive(Request(FUSE_LOOKUP, 6, self_));
  EXPECT_TRUE(TurnAtOnce(6, self_));
  // Its release, when it comes, is waited for like any other.
  Receive(Request(FUSE_RELEASE, 8, 0, kFh));
  Receive(Request(FUSE_LOOKUP, 10, self_));
  std::future<bool> turn = WaitTurn(10, self_);
  EXPECT_FALSE(Returned(turn, kHeld));
  order_.released(kFh);
  EXPECT_TRUE(Returned(turn, milliseconds(2000)));
}

TEST(ReleaseOrderHoles, ANumberThatNeverArrivesHoldsARequestBackOnlyBriefly) {
  constexpr milliseconds kLostWait{100};
  os::ReleaseOrder order(milliseconds(10000), kLostWait);
  const pid_t self = ::gettid();
  for (const auto& request : {Request(FUSE_INIT, 2, 0), Request(FUSE_LOOKUP, 6, self)}) {
    order.received(request.data(), request.size());
  }
  // Number 4 was dropped by the kernel before any worker took it.
  order.expect(kFh, self);
  auto start = Clock::now();
  EXPECT_TRUE(order.wait_turn(6, self));
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, kLostWait);
  EXPECT_LT(waited, kLostWait + milliseconds(900));
  // Given up: the next request does not wait for it again.
  const auto next = Request(FUSE_LOOKUP, 8, self);
  order.received(next.data(), next.size());
  start = Clock::now();
  EXPECT_TRUE(order.wait_turn(8, self));
  EXPECT_LT(Clock::now() - start, kHeld);
}

TEST(ReleaseOrderHoles, AHoleIsGivenUpAfterLostWaitEvenWithNobodyWaiting) {
  // Through io_uring, most numbers never reach the device: only forgets do.
  constexpr milliseconds kLostWait{50};
  os::ReleaseOrder order(milliseconds(10000), kLostWait);
  const pid_t self = ::gettid();
  const auto receive = [&](std::uint32_t opcode, std::uint64_t unique) {
    const auto request = Request(opcode, unique, self);
    order.received(request.data(), request.size());
  };
  receive(FUSE_INIT, 2);
  receive(FUSE_FORGET, 10);
  std::this_thread::sleep_for(kLostWait + milliseconds(20));
  receive(FUSE_FORGET, 20);  // 4 to 8 are given up now, and 12 to 18 start their wait
  order.expect(kFh, self);
  const auto start = Clock::now();
  EXPECT_TRUE(order.wait_turn(12, self)) << "numbered below the holes still missing";
  EXPECT_LT(Clock::now() - start, kHeld);
  order.released(kFh);
}

TEST(ReleaseOrderGivingUp, ARequestGivesUpAfterMaxWaitOnceAndSaysSo) {
  os::ReleaseOrder order(milliseconds(50));
  const pid_t self = ::gettid();
  order.expect(kFh, self);
  for (const auto& request : {Request(FUSE_INIT, 2, 0), Request(FUSE_RELEASE, 4, 0, kFh),
                              Request(FUSE_LOOKUP, 6, self)}) {
    order.received(request.data(), request.size());
  }
  auto start = Clock::now();
  EXPECT_FALSE(order.wait_turn(6, self));
  EXPECT_GE(Clock::now() - start, milliseconds(50));
  // That release is never waited for again (libfuse may have dropped it).
  const auto next = Request(FUSE_LOOKUP, 8, self);
  order.received(next.data(), next.size());
  start = Clock::now();
  EXPECT_TRUE(order.wait_turn(8, self));
  EXPECT_LT(Clock::now() - start, kHeld);
}

}  // namespace
}  // namespace smos::test
