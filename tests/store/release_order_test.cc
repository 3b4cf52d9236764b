// ReleaseOrder: a process's requests are served after the releases that commit what it wrote,
// however the daemon's workers share out the requests. These tests play the device: they
// hand it request headers, in the order the kernel numbers them, from several threads.
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
  void Receive(const std::vector<char>& request) { order_.received(request.data(), request.size()); }

  // wait_turn() of `request` on another thread: its result, once it returns.
  std::future<bool> WaitTurn(std::vector<char> request) {
    return std::async(std::launch::async, [this, request] {
      return order_.wait_turn(request.data(), request.size());
    });
  }
  static bool Returned(std::future<bool>& f, milliseconds within) {
    return f.wait_for(within) == std::future_status::ready;
  }

  // INIT is the first request; the kernel numbers the rest in steps of two.
  void SetUp() override { Receive(Request(FUSE_INIT, 2, 0)); }

  os::ReleaseOrder order_;
  const pid_t self_ = ::gettid();
};

TEST_F(ReleaseOrderTest, TheClosersNextRequestWaitsUntilItsReleaseIsServed) {
  order_.expect(kFh, self_);
  Receive(Request(FUSE_RELEASE, 4, 0, kFh));
  const auto lookup = Request(FUSE_LOOKUP, 6, self_);
  Receive(lookup);
  std::future<bool> turn = WaitTurn(lookup);
  EXPECT_FALSE(Returned(turn, kHeld)) << "served before the release";
  order_.released(kFh);
  ASSERT_TRUE(Returned(turn, milliseconds(2000)));
  EXPECT_TRUE(turn.get());
}

TEST_F(ReleaseOrderTest, ARequestWaitsForAReleaseThatAnotherWorkerHasNotShownYet) {
  // Worker A took the release from the device first, but this worker's request got here
  // before A called received().
  order_.expect(kFh, self_);
  const auto lookup = Request(FUSE_LOOKUP, 6, self_);
  Receive(lookup);
  std::future<bool> turn = WaitTurn(lookup);
  EXPECT_FALSE(Returned(turn, kHeld));
  Receive(Request(FUSE_RELEASE, 4, 0, kFh));
  EXPECT_FALSE(Returned(turn, kHeld)) << "served while the release was being served";
  order_.released(kFh);
  ASSERT_TRUE(Returned(turn, milliseconds(2000)));
  EXPECT_TRUE(turn.get());
}

TEST_F(ReleaseOrderTest, AnotherThreadOfTheClosersProcessWaitsToo) {
  order_.expect(kFh, self_);
  Receive(Request(FUSE_RELEASE, 4, 0, kFh));
  // A live thread: a thread id whose group /proc can no longer tell counts as a process.
  std::atomic<bool> done{false};
  std::promise<pid_t> tid;
  std::thread live([&] {
    tid.set_value(::gettid());
    while (!done) std::this_thread::sleep_for(milliseconds(1));
  });
  const pid_t other_thread = tid.get_future().get();
  const auto getxattr = Request(FUSE_GETXATTR, 6, other_thread);
  Receive(getxattr);
  std::future<bool> turn = WaitTurn(getxattr);
  EXPECT_FALSE(Returned(turn, kHeld));
  order_.released(kFh);
  EXPECT_TRUE(Returned(turn, milliseconds(2000)));
  done = true;
  live.join();
}

TEST_F(ReleaseOrderTest, OtherProcessesIoAndEarlierRequestsDoNotWait) {
  order_.expect(kFh, self_);
  Receive(Request(FUSE_RELEASE, 6, 0, kFh));
  const std::vector<std::vector<char>> free_to_go = {
      Request(FUSE_LOOKUP, 8, ::getppid()),  // another process
      Request(FUSE_READ, 10, self_),         // I/O on a file that is open
      Request(FUSE_WRITE, 12, self_),
      Request(FUSE_FLUSH, 14, self_),
      Request(FUSE_FORGET, 16, self_),
      Request(FUSE_LOOKUP, 4, self_),  // numbered before the release
  };
  for (const auto& request : free_to_go) {
    Receive(request);
    const auto start = Clock::now();
    EXPECT_TRUE(order_.wait_turn(request.data(), request.size()));
    EXPECT_LT(Clock::now() - start, kHeld);
  }
  order_.released(kFh);
}

TEST_F(ReleaseOrderTest, ReleasesThatSettleNothingHoldNobodyBack) {
  // A reader's release, or a push's (committed at its flush): never expected.
  Receive(Request(FUSE_RELEASE, 4, 0, kFh));
  const auto lookup = Request(FUSE_LOOKUP, 6, self_);
  Receive(lookup);
  const auto start = Clock::now();
  EXPECT_TRUE(order_.wait_turn(lookup.data(), lookup.size()));
  EXPECT_LT(Clock::now() - start, kHeld);
  order_.released(kFh);
}

TEST_F(ReleaseOrderTest, AFileStillOpenElsewhereHoldsNobodyBack) {
  // The writer closed one of two descriptors of the file: no release follows the flush.
  order_.expect(kFh, self_);
  Receive(Request(FUSE_GETATTR, 4, self_));
  const auto lookup = Request(FUSE_LOOKUP, 6, self_);
  Receive(lookup);
  const auto start = Clock::now();
  EXPECT_TRUE(order_.wait_turn(lookup.data(), lookup.size()));
  EXPECT_LT(Clock::now() - start, kHeld);
  // Its release, when it comes, is waited for like any other.
  Receive(Request(FUSE_RELEASE, 8, 0, kFh));
  const auto later = Request(FUSE_LOOKUP, 10, self_);
  Receive(later);
  std::future<bool> turn = WaitTurn(later);
  EXPECT_FALSE(Returned(turn, kHeld));
  order_.released(kFh);
  EXPECT_TRUE(Returned(turn, milliseconds(2000)));
}

TEST_F(ReleaseOrderTest, ANumberThatNeverArrivesHoldsARequestBackOnlyBriefly) {
  // Request 4 was dropped by the kernel before any worker took it.
  order_.expect(kFh, self_);
  const auto lookup = Request(FUSE_LOOKUP, 6, self_);
  Receive(lookup);
  const auto start = Clock::now();
  EXPECT_TRUE(order_.wait_turn(lookup.data(), lookup.size()));
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, os::ReleaseOrder::kLostWait);
  EXPECT_LT(waited, os::ReleaseOrder::kLostWait + milliseconds(900));
  // Taken as lost: the next request does not wait for it again.
  const auto next = Request(FUSE_LOOKUP, 8, self_);
  Receive(next);
  const auto again = Clock::now();
  EXPECT_TRUE(order_.wait_turn(next.data(), next.size()));
  EXPECT_LT(Clock::now() - again, kHeld);
}

TEST_F(ReleaseOrderTest, HolesLeftByRequestsSentElsewhereCostAtMostOneShortWait) {
  // Through io_uring, most numbers never reach the device.
  std::uint64_t unique = 4;
  for (std::size_t i = 0; i <= os::ReleaseOrder::kLostAfter; ++i) {
    unique += 4;  // every other number goes elsewhere
    Receive(Request(FUSE_GETATTR, unique, ::getppid()));
  }
  order_.expect(kFh, self_);
  unique += 2;
  const auto lookup = Request(FUSE_LOOKUP, unique, self_);
  Receive(lookup);
  // Holes below the last kLostAfter numbers are given up at once, those among them after
  // kLostWait.
  const auto start = Clock::now();
  EXPECT_TRUE(order_.wait_turn(lookup.data(), lookup.size()));
  EXPECT_LT(Clock::now() - start, os::ReleaseOrder::kLostWait + milliseconds(900));
}

TEST_F(ReleaseOrderTest, ARequestGivesUpAfterMaxWaitAndSaysSo) {
  os::ReleaseOrder order(milliseconds(50));
  const auto init = Request(FUSE_INIT, 2, 0);
  order.received(init.data(), init.size());
  order.expect(kFh, self_);
  const auto release = Request(FUSE_RELEASE, 4, 0, kFh);
  order.received(release.data(), release.size());
  const auto lookup = Request(FUSE_LOOKUP, 6, self_);
  order.received(lookup.data(), lookup.size());
  const auto start = Clock::now();
  EXPECT_FALSE(order.wait_turn(lookup.data(), lookup.size()));
  EXPECT_GE(Clock::now() - start, milliseconds(50));
}

}  // namespace
}  // namespace smos::test
