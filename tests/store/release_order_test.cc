// ReleaseOrder: requests made after a close(2) returned are served after the release that
// commits what it wrote, however the daemon's workers share out the requests. These tests play the device and its
// workers: they hand it request headers as the kernel numbers them, and ask for turns from
// other threads. (Which operations ask is fs.cc's choice; the mount tests cover that.)
#include "os/release_order.h"

#include <gtest/gtest.h>
#include <linux/fuse.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace smos::test {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kFh = 7;
// Long enough that a request that should wait visibly has not returned yet.
constexpr milliseconds kHeld{60};

std::vector<char> Request(std::uint32_t opcode, std::uint64_t unique, std::uint64_t fh = 0) {
  fuse_in_header in{};
  in.opcode = opcode;
  in.unique = unique;
  in.pid = static_cast<std::uint32_t>(::getpid());
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
  // Holes in the numbering are given up only after kLost here, and releases are expected and
  // holes waited for as long, so that no test's timing depends on them but the ones about
  // those.
  static constexpr milliseconds kLost{10000};

  void Receive(const std::vector<char>& request) { order_.received(request.data(), request.size()); }

  // wait_turn() of request `unique`, on a thread of its own.
  std::future<bool> WaitTurn(std::uint64_t unique) {
    return std::async(std::launch::async, [this, unique] { return order_.wait_turn(unique); });
  }
  static bool Returned(std::future<bool>& f, milliseconds within) {
    return f.wait_for(within) == std::future_status::ready;
  }
  // Asks for a turn here, and says whether it came at once.
  bool TurnAtOnce(std::uint64_t unique) {
    const auto start = Clock::now();
    return order_.wait_turn(unique) && Clock::now() - start < kHeld;
  }

  // The request of `turn` is held back while the release numbered `release` is missing, and
  // while it is served; it goes on once the store has served it.
  void ExpectHeldUntilTheLateReleaseIsServed(std::future<bool>& turn, std::uint64_t release) {
    EXPECT_FALSE(Returned(turn, kHeld)) << "served before the release was received";
    Receive(Request(FUSE_RELEASE, release, kFh));
    EXPECT_FALSE(Returned(turn, kHeld)) << "served while the release was being served";
    order_.released(kFh);
    ASSERT_TRUE(Returned(turn, milliseconds(2000)));
    EXPECT_TRUE(turn.get());
  }

  // INIT is the first request; the kernel numbers the rest in steps of two.
  void SetUp() override { Receive(Request(FUSE_INIT, 2)); }

  os::ReleaseOrder order_{milliseconds(10000), kLost, kLost, kLost};
};

TEST_F(ReleaseOrderTest, ARequestMadeAfterACloseWaitsUntilItsReleaseIsServed) {
  order_.expect(kFh);
  Receive(Request(FUSE_RELEASE, 4, kFh));
  Receive(Request(FUSE_LOOKUP, 6));
  std::future<bool> turn = WaitTurn(6);
  EXPECT_FALSE(Returned(turn, kHeld)) << "served before the release";
  order_.released(kFh);
  ASSERT_TRUE(Returned(turn, milliseconds(2000)));
  EXPECT_TRUE(turn.get());
}

TEST_F(ReleaseOrderTest, ARequestWaitsForAReleaseThatAnotherWorkerHasNotShownYet) {
  // Worker A took the release from the device first, but this worker's request got here
  // before A called received().
  order_.expect(kFh);
  Receive(Request(FUSE_LOOKUP, 6));
  std::future<bool> turn = WaitTurn(6);
  ExpectHeldUntilTheLateReleaseIsServed(turn, 4);
}

TEST_F(ReleaseOrderTest, AReleaseStillOrdersWhenManyLaterRequestsOvertakeIt) {
  // The worker holding the release was descheduled while others took a thousand requests.
  order_.expect(kFh);
  std::uint64_t unique = 4;  // the release's
  for (int i = 0; i < 1000; ++i) Receive(Request(FUSE_GETATTR, unique += 2));
  const std::uint64_t mine = unique += 2;
  Receive(Request(FUSE_LOOKUP, mine));
  std::future<bool> turn = WaitTurn(mine);
  ExpectHeldUntilTheLateReleaseIsServed(turn, 4);
}

TEST_F(ReleaseOrderTest, AWaiterGoesOnOnceItsReleaseIsServedWhateverElseIsMissing) {
  // Number 4 is a request still in a worker's hands; 6 is the release.
  order_.expect(kFh);
  Receive(Request(FUSE_LOOKUP, 8));
  std::future<bool> turn = WaitTurn(8);
  EXPECT_FALSE(Returned(turn, kHeld));
  Receive(Request(FUSE_RELEASE, 6, kFh));
  order_.released(kFh);
  EXPECT_TRUE(Returned(turn, milliseconds(2000))) << "waited for number 4";
}

TEST_F(ReleaseOrderTest, EveryRequestNumberedAfterTheReleaseWaitsForIt) {
  // The writer's next request, another process's, each taken by a worker of its own.
  order_.expect(kFh);
  Receive(Request(FUSE_RELEASE, 4, kFh));
  Receive(Request(FUSE_GETXATTR, 6));
  Receive(Request(FUSE_READDIR, 8));
  std::future<bool> first = WaitTurn(6);
  std::future<bool> second = WaitTurn(8);
  EXPECT_FALSE(Returned(first, kHeld));
  EXPECT_FALSE(Returned(second, milliseconds(0)));
  order_.released(kFh);
  EXPECT_TRUE(Returned(first, milliseconds(2000)));
  EXPECT_TRUE(Returned(second, milliseconds(2000)));
}

// Through the ring, a release waits in its CPU's queue until the worker there runs, which the
// closer may not let it do for a time slice: a request that waits for a release flushed before
// it nudges that CPU, a few times (ReleaseOrder::kNudges), awake for a moment after each, and
// then sleeps. Flushes numbered after it concern releases numbered after it, and nudge nothing.
class ReleaseOrderNudgeTest : public ReleaseOrderTest {
 protected:
  // Nudges are recorded; a nudge of `own_cpu` is refused, as FuseChannel refuses to nudge the
  // waiter's own CPU.
  void SetUp() override {
    ReleaseOrderTest::SetUp();
    order_.set_nudge([this](int cpu) {
      std::lock_guard lock(mu_);
      nudged_.push_back(cpu);
      return cpu != own_cpu_;
    });
  }
  std::vector<int> Nudges() {
    std::lock_guard lock(mu_);
    return nudged_;
  }
  // Waits until `count` nudges were made; says whether they were, within 10 s.
  bool NudgedTimes(std::size_t count) {
    for (const auto until = Clock::now() + milliseconds(10000); Clock::now() < until;) {
      if (Nudges().size() >= count) return true;
      std::this_thread::sleep_for(milliseconds(1));
    }
    return false;
  }
  // wait_turn(unique) on a thread of its own, which notes the CPU time it used.
  std::future<bool> WaitTurnTimed(std::uint64_t unique) {
    return std::async(std::launch::async, [this, unique] {
      const bool served = order_.wait_turn(unique);
      struct rusage usage;
      ::getrusage(RUSAGE_THREAD, &usage);
      cpu_ms_ = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3 +
                (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;
      return served;
    });
  }

  std::mutex mu_;
  std::vector<int> nudged_;
  int own_cpu_ = -1;
  double cpu_ms_ = -1;
};

TEST_F(ReleaseOrderNudgeTest, ARequestThatWaitsForAReleaseNudgesItsQueueAFewTimes) {
  Receive(Request(FUSE_FLUSH, 4));
  order_.expect(kFh, /*cpu=*/3, /*flush=*/4);
  Receive(Request(FUSE_FLUSH, 6));
  order_.expect(kFh + 1);  // through /dev/fuse: no CPU to nudge
  Receive(Request(FUSE_FLUSH, 8));
  order_.expect(kFh + 4, 3, 8);  // one nudge for both of CPU 3
  Receive(Request(FUSE_LOOKUP, 14));  // the releases of kFh and kFh + 1 are 10 and 12
  std::future<bool> turn = WaitTurnTimed(14);
  ASSERT_TRUE(NudgedTimes(1));
  // Meanwhile, other files are flushed through CPUs 3 and 4, again and again.
  for (std::uint64_t flush = 16; flush < 16 + 2 * 60; flush += 4) {
    order_.expect(kFh + 2, 3, flush);
    order_.expect(kFh + 3, 4, flush + 2);
    std::this_thread::sleep_for(milliseconds(1));
  }
  ASSERT_TRUE(NudgedTimes(os::ReleaseOrder::kNudges));
  std::this_thread::sleep_for(kHeld);
  EXPECT_FALSE(Returned(turn, milliseconds(0)));
  EXPECT_EQ(Nudges(), std::vector<int>(os::ReleaseOrder::kNudges, 3));
  Receive(Request(FUSE_RELEASE, 10, kFh));
  Receive(Request(FUSE_RELEASE, 12, kFh + 1));
  order_.released(kFh);
  order_.released(kFh + 1);
  order_.released(kFh + 4);  // still open elsewhere: never received
  ASSERT_TRUE(Returned(turn, milliseconds(2000)));
  EXPECT_TRUE(turn.get());
  EXPECT_LT(cpu_ms_, 20) << "the waiter spun for much of its wait";
}

// What counts is the numbering, not the time: a FLUSH numbered before the request but served
// after it began waiting (by another thread) is for a release that may be numbered before it.
TEST_F(ReleaseOrderNudgeTest, AFlushNumberedBeforeButServedLaterIsNudged) {
  order_.expect(kFh + 1);  // flushed through /dev/fuse: something to wait for
  Receive(Request(FUSE_LOOKUP, 10));  // 4 is kFh's FLUSH, 6 and 8 the two releases
  std::future<bool> turn = WaitTurnTimed(10);
  EXPECT_FALSE(Returned(turn, kHeld));
  Receive(Request(FUSE_FLUSH, 4));
  order_.expect(kFh, 3, 4);
  EXPECT_TRUE(NudgedTimes(1));
  Receive(Request(FUSE_RELEASE, 6, kFh));
  Receive(Request(FUSE_RELEASE, 8, kFh + 1));
  order_.released(kFh);
  order_.released(kFh + 1);
  ASSERT_TRUE(Returned(turn, milliseconds(2000)));
  EXPECT_TRUE(turn.get());
}

// The waiter's own CPU is not nudged (that would only preempt the waiter), and a waiter that
// nudged nothing does not stay awake or try again: it sleeps until the release comes.
TEST_F(ReleaseOrderNudgeTest, ARequestThatCanNudgeNothingSleeps) {
  own_cpu_ = 3;
  Receive(Request(FUSE_FLUSH, 4));
  order_.expect(kFh, 3, 4);
  Receive(Request(FUSE_LOOKUP, 8));  // the release of kFh is 6
  std::future<bool> turn = WaitTurnTimed(8);
  ASSERT_TRUE(NudgedTimes(1));
  // Wake it again and again.
  for (std::uint64_t flush = 10; flush < 10 + 2 * 300; flush += 2) {
    order_.expect(kFh + 1, 4, flush);
    std::this_thread::sleep_for(microseconds(200));
  }
  EXPECT_FALSE(Returned(turn, milliseconds(0)));
  EXPECT_EQ(Nudges(), std::vector<int>{3});
  Receive(Request(FUSE_RELEASE, 6, kFh));
  order_.released(kFh);
  ASSERT_TRUE(Returned(turn, milliseconds(2000)));
  EXPECT_TRUE(turn.get());
  EXPECT_LT(cpu_ms_, 20) << "the waiter spun though it nudged nothing";
}

TEST_F(ReleaseOrderTest, RequestsNumberedBeforeTheReleaseDoNotWait) {
  order_.expect(kFh);
  Receive(Request(FUSE_LOOKUP, 4));
  Receive(Request(FUSE_RELEASE, 6, kFh));
  Receive(Request(FUSE_LOOKUP, 8));
  EXPECT_TRUE(TurnAtOnce(4)) << "made while the file was still open";
  std::future<bool> turn = WaitTurn(8);
  EXPECT_FALSE(Returned(turn, kHeld));
  order_.released(kFh);
  EXPECT_TRUE(Returned(turn, milliseconds(2000)));
  Receive(Request(FUSE_LOOKUP, 10));
  EXPECT_TRUE(TurnAtOnce(10)) << "after the release was served";
}

TEST_F(ReleaseOrderTest, ARequestThatOvertookItsQueueWaitsOnlyForReleasesReceived) {
  // A ring queue's new entry took request 10 while 4 and 8 wait in the kernel for its answer.
  order_.expect(kFh);
  Receive(Request(FUSE_RELEASE, 6, kFh));
  Receive(Request(FUSE_LOOKUP, 10));
  std::future<bool> turn =
      std::async(std::launch::async, [this] { return order_.wait_turn(10, true); });
  EXPECT_FALSE(Returned(turn, kHeld)) << "served before the release received";
  order_.released(kFh);
  ASSERT_TRUE(Returned(turn, milliseconds(2000))) << "waited for 4 and 8";
  EXPECT_TRUE(turn.get());
  order_.expect(kFh + 1);  // its release may be 4 or 8: not waited for
  const auto start = Clock::now();
  EXPECT_TRUE(order_.wait_turn(10, true));
  EXPECT_LT(Clock::now() - start, kHeld);
  order_.released(kFh + 1);
}

TEST_F(ReleaseOrderTest, ExpectedReleasesAreServedInTheirOrder) {
  order_.expect(kFh);
  order_.expect(kFh + 1);
  Receive(Request(FUSE_RELEASE, 4, kFh));
  Receive(Request(FUSE_RELEASE, 6, kFh + 1));
  auto second = std::async(std::launch::async, [this] { order_.release_turn(kFh + 1); });
  EXPECT_EQ(second.wait_for(kHeld), std::future_status::timeout) << "served before the first";
  const auto start = Clock::now();
  order_.release_turn(kFh);  // nothing before it
  EXPECT_LT(Clock::now() - start, kHeld);
  order_.released(kFh);
  EXPECT_EQ(second.wait_for(milliseconds(2000)), std::future_status::ready);
  order_.released(kFh + 1);
  order_.release_turn(kFh + 2);  // not expected: no wait
}

TEST_F(ReleaseOrderTest, ReleasesThatSettleNothingHoldNobodyBack) {
  // A reader's release, or a push's (committed at its flush): never expected.
  Receive(Request(FUSE_RELEASE, 4, kFh));
  Receive(Request(FUSE_LOOKUP, 6));
  EXPECT_TRUE(TurnAtOnce(6));
  // The same with another handle expected, whose release is not sent yet.
  order_.expect(kFh + 1);
  Receive(Request(FUSE_RELEASE, 8, kFh + 2));
  Receive(Request(FUSE_LOOKUP, 10));
  EXPECT_TRUE(TurnAtOnce(10));
  order_.released(kFh);
  order_.released(kFh + 1);
  order_.released(kFh + 2);
}

TEST_F(ReleaseOrderTest, AFileStillOpenElsewhereHoldsNobodyBack) {
  // The writer closed one of two descriptors of the file: no release follows the flush.
  order_.expect(kFh);
  Receive(Request(FUSE_GETATTR, 4));
  Receive(Request(FUSE_LOOKUP, 6));
  EXPECT_TRUE(TurnAtOnce(6));
  // Its release, when it comes, is waited for like any other.
  Receive(Request(FUSE_RELEASE, 8, kFh));
  Receive(Request(FUSE_LOOKUP, 10));
  std::future<bool> turn = WaitTurn(10);
  EXPECT_FALSE(Returned(turn, kHeld));
  order_.released(kFh);
  EXPECT_TRUE(Returned(turn, milliseconds(2000)));
}

TEST_F(ReleaseOrderTest, AReadersReleaseHoldsBackOnlyTheRequestsThatAskAfterIt) {
  // Never expected (a reader has no FLUSH), but a reader count or a pop asks after it.
  Receive(Request(FUSE_RELEASE, 4, kFh));
  Receive(Request(FUSE_GETXATTR, 6));
  EXPECT_TRUE(TurnAtOnce(6)) << "wait_turn() waits only for the releases expected";
  auto asked = std::async(std::launch::async, [this] { return order_.wait_released(6, true); });
  EXPECT_FALSE(Returned(asked, kHeld)) << "served while the release was being served";
  const auto start = Clock::now();
  EXPECT_TRUE(order_.wait_released(4, true)) << "numbered before the release";
  EXPECT_LT(Clock::now() - start, kHeld);
  order_.released(kFh);
  ASSERT_TRUE(Returned(asked, milliseconds(2000)));
  EXPECT_TRUE(asked.get());
}

TEST_F(ReleaseOrderTest, ARequestAskingAfterReleasesWaitsForNumbersStillInAnotherWorkersHands) {
  // Number 4, a reader's release, was taken from /dev/fuse first, but not shown yet.
  Receive(Request(FUSE_GETXATTR, 6));
  auto asked = std::async(std::launch::async, [this] { return order_.wait_released(6, true); });
  EXPECT_FALSE(Returned(asked, kHeld)) << "served before the release was received";
  Receive(Request(FUSE_RELEASE, 4, kFh));
  EXPECT_FALSE(Returned(asked, kHeld)) << "served while the release was being served";
  order_.released(kFh);
  ASSERT_TRUE(Returned(asked, milliseconds(2000)));
  EXPECT_TRUE(asked.get());
  // A ring queue's worker does not wait for another queue's numbers.
  Receive(Request(FUSE_GETXATTR, 10));
  const auto start = Clock::now();
  EXPECT_TRUE(order_.wait_released(10, false));
  EXPECT_LT(Clock::now() - start, kHeld);
}

TEST(ReleaseOrderHoles, ARequestAskingAfterReleasesWaitsForAMissingNumberOnlyForHoleWait) {
  constexpr milliseconds kHoleWait{200};
  os::ReleaseOrder order(milliseconds(10000), milliseconds(10000), milliseconds(10000),
                         kHoleWait);
  for (const auto& request : {Request(FUSE_INIT, 2), Request(FUSE_GETXATTR, 6)}) {
    order.received(request.data(), request.size());
  }
  const auto receive = [&](std::uint64_t unique) {
    const auto request = Request(FUSE_GETXATTR, unique);
    order.received(request.data(), request.size());
  };
  receive(6);
  const auto wait = [&](std::uint64_t unique) {
    const auto start = Clock::now();
    EXPECT_TRUE(order.wait_released(unique, true));
    return Clock::now() - start;
  };
  auto waited = wait(6);
  EXPECT_GE(waited, kHoleWait - milliseconds(5));
  EXPECT_LT(waited, kHoleWait + milliseconds(900));
  // Given up: the next requests do not wait for it again...
  receive(8);
  EXPECT_LT(wait(8), kHeld);
  EXPECT_LT(wait(6), kHeld);
  // ...but for a number missing above it, they do.
  receive(12);
  waited = wait(12);
  EXPECT_GE(waited, kHoleWait - milliseconds(5));
  EXPECT_LT(waited, kHoleWait + milliseconds(900));
}

TEST(ReleaseOrderGivingUp, ARequestAskingAfterReleasesGivesUpOnAllOfThemAfterOneMaxWait) {
  constexpr milliseconds kMaxWait{400};
  os::ReleaseOrder order(kMaxWait, milliseconds(10000), milliseconds(10000),
                         milliseconds(10000));
  order.expect(kFh);
  for (const auto& request : {Request(FUSE_INIT, 2), Request(FUSE_RELEASE, 4, kFh),
                              Request(FUSE_RELEASE, 6, kFh + 1), Request(FUSE_GETXATTR, 8),
                              Request(FUSE_GETXATTR, 10)}) {
    order.received(request.data(), request.size());
  }
  auto start = Clock::now();
  EXPECT_FALSE(order.wait_released(8, true)) << "neither release was served";
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, kMaxWait);
  EXPECT_LT(waited, 2 * kMaxWait - milliseconds(10)) << "one max_wait for both releases";
  // Both are forgotten: nobody waits for them again.
  start = Clock::now();
  EXPECT_TRUE(order.wait_released(10, true));
  EXPECT_LT(Clock::now() - start, kHeld);
  order.released(kFh);
  order.released(kFh + 1);
}

TEST(ReleaseOrderHoles, ANumberThatNeverArrivesHoldsARequestBackOnlyBriefly) {
  constexpr milliseconds kLostWait{100};
  os::ReleaseOrder order(milliseconds(10000), kLostWait, milliseconds(10000));
  for (const auto& request : {Request(FUSE_INIT, 2), Request(FUSE_LOOKUP, 6)}) {
    order.received(request.data(), request.size());
  }
  // Number 4 was dropped by the kernel before any worker took it.
  order.expect(kFh);
  auto start = Clock::now();
  EXPECT_TRUE(order.wait_turn(6));
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, kLostWait);
  EXPECT_LT(waited, kLostWait + milliseconds(900));
  // Given up: the next request does not wait for it again.
  const auto next = Request(FUSE_LOOKUP, 8);
  order.received(next.data(), next.size());
  start = Clock::now();
  EXPECT_TRUE(order.wait_turn(8));
  EXPECT_LT(Clock::now() - start, kHeld);
}

TEST(ReleaseOrderHoles, AHoleIsGivenUpAfterLostWaitEvenWithNobodyWaiting) {
  // Through io_uring, most numbers never reach the device: only forgets do.
  constexpr milliseconds kLostWait{50};
  os::ReleaseOrder order(milliseconds(10000), kLostWait, milliseconds(10000));
  const auto receive = [&](std::uint32_t opcode, std::uint64_t unique) {
    const auto request = Request(opcode, unique);
    order.received(request.data(), request.size());
  };
  receive(FUSE_INIT, 2);
  receive(FUSE_FORGET, 10);
  std::this_thread::sleep_for(kLostWait + milliseconds(20));
  receive(FUSE_FORGET, 20);  // 4 to 8 are given up now, and 12 to 18 start their wait
  order.expect(kFh);
  const auto start = Clock::now();
  EXPECT_TRUE(order.wait_turn(12)) << "numbered below the holes still missing";
  EXPECT_LT(Clock::now() - start, kHeld);
  order.released(kFh);
}

TEST(ReleaseOrderSettling, AFileKeptOpenElsewhereStopsHoldingRequestsBackAfterSettleWait) {
  constexpr milliseconds kSettleWait{100};
  os::ReleaseOrder order(milliseconds(10000), milliseconds(10000), kSettleWait);
  const auto receive = [&](std::uint32_t opcode, std::uint64_t unique, std::uint64_t fh = 0) {
    const auto request = Request(opcode, unique, fh);
    order.received(request.data(), request.size());
  };
  receive(FUSE_INIT, 2);
  // A close of one of two descriptors: no release follows. Number 4 is in another worker's
  // hands, and might be it.
  order.expect(kFh);
  receive(FUSE_LOOKUP, 6);
  auto start = Clock::now();
  EXPECT_TRUE(order.wait_turn(6));
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, kSettleWait - milliseconds(5));
  EXPECT_LT(waited, kSettleWait + milliseconds(900));
  // The next request does not wait for that hole any more...
  receive(FUSE_LOOKUP, 8);
  start = Clock::now();
  EXPECT_TRUE(order.wait_turn(8));
  EXPECT_LT(Clock::now() - start, kSettleWait);
  // ...until the file is closed again, its last close this time.
  order.expect(kFh);
  receive(FUSE_RELEASE, 12, kFh);
  receive(FUSE_LOOKUP, 14);
  auto turn = std::async(std::launch::async, [&] { return order.wait_turn(14); });
  EXPECT_EQ(turn.wait_for(kSettleWait * 2), std::future_status::timeout)
      << "served before the release";
  order.released(kFh);
  EXPECT_EQ(turn.wait_for(milliseconds(2000)), std::future_status::ready);
}

TEST(ReleaseOrderGivingUp, ARequestGivesUpAfterMaxWaitOnceAndSaysSo) {
  os::ReleaseOrder order(milliseconds(50), milliseconds(10000), milliseconds(10000));
  order.expect(kFh);
  for (const auto& request : {Request(FUSE_INIT, 2), Request(FUSE_RELEASE, 4, kFh),
                              Request(FUSE_LOOKUP, 6)}) {
    order.received(request.data(), request.size());
  }
  auto start = Clock::now();
  EXPECT_FALSE(order.wait_turn(6));
  EXPECT_GE(Clock::now() - start, milliseconds(50));
  // That release is never waited for again (libfuse may have dropped it).
  const auto next = Request(FUSE_LOOKUP, 8);
  order.received(next.data(), next.size());
  start = Clock::now();
  EXPECT_TRUE(order.wait_turn(8));
  EXPECT_LT(Clock::now() - start, kHeld);
}

}  // namespace
}  // namespace smos::test
