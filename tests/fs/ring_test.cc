// FUSE over io_uring (see os::FuseRing and FuseChannel). Every test runs twice: on a daemon
// that takes its requests from the ring (the default, where the kernel offers one) and on one
// started with --no-io-uring. The kernel offers the ring only while the fuse module's
// enable_uring parameter is on; scripts/test.sh turns it on for one of its two builds, and the
// ring half of these tests is skipped where it is off.
//
// The rest of the suite runs through whichever path the module parameter selects, so these
// tests cover what only the ring changes: the start-up report, replies that come from other
// threads than the one that took the request, and the order of a CPU's requests.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fs/mount_fixture.h"
#include "smos/control.h"

namespace smos::test {
namespace {

bool RingOffered() {
  std::ifstream in("/sys/module/fuse/parameters/enable_uring");
  std::string value;
  return static_cast<bool>(in >> value) && value == "Y";
}

// Pins the calling thread to one CPU.
bool PinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

// Holds this process, and the daemons it starts meanwhile, on CPU 0.
class OnCpu0 {
 public:
  OnCpu0() { held_ = ::sched_getaffinity(0, sizeof before_, &before_) == 0 && PinTo(0); }
  ~OnCpu0() {
    if (held_) ::sched_setaffinity(0, sizeof before_, &before_);
  }
  bool held() const { return held_; }

 private:
  cpu_set_t before_;
  bool held_ = false;
};

class RingTest : public ObjectTest, public ::testing::WithParamInterface<bool> {
 protected:
  std::vector<std::string> DaemonArgs() const override {
    if (ring()) return {};
    return {"--no-io-uring"};
  }
  void SetUp() override {
    if (ring() && !RingOffered()) {
      GTEST_SKIP() << "the fuse module's enable_uring is off: the kernel offers no ring";
    }
    ObjectTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // Offered, but not taken: a kernel before 6.16 (no epochs), or io_uring switched off.
    const std::string log = smosd_.Log();
    if (const std::size_t at = log.find("io_uring off ("); ring() && at != std::string::npos) {
      GTEST_SKIP() << log.substr(at, log.find('\n', at) - at);
    }
  }

  bool ring() const { return GetParam(); }

  // Starts n children that each run `pop` (a child's body: its exit status), and returns once
  // all of them are on their way.
  std::vector<std::unique_ptr<Child>> StartPoppers(int n, const std::function<int()>& pop) {
    std::vector<std::unique_ptr<Child>> poppers;
    for (int i = 0; i < n; ++i) {
      poppers.push_back(std::make_unique<Child>([&pop](Channel& channel) {
        channel.Signal();
        return pop();
      }));
    }
    for (auto& p : poppers) EXPECT_TRUE(p->Wait());
    return poppers;
  }

  // Starts another process that pushes and pops until StopLoad(), so that both CPUs' queues
  // are busy; with `hold`, also holds this process on CPU 0 until then (see OnCpu0).
  void StartLoad(bool hold = false) {
    const std::string obj = MakeObject("load");
    load_stop_ = smosd_.dir() + "/stop-load";
    load_ = std::make_unique<Child>([&](Channel& channel) {
      channel.Signal();
      while (::access(load_stop_.c_str(), F_OK) != 0) {
        if (!WriteFile(obj + "/" + control::kPush, "x").ok()) return ChildFail("push");
        Fd fd = Open(obj + "/" + control::kPop, O_RDONLY | O_NONBLOCK);
        if (!fd.ok()) return ChildFail("pop");
      }
      return 0;
    });
    ASSERT_TRUE(load_->Wait());
    if (hold) {
      hold_.emplace();
      ASSERT_TRUE(hold_->held()) << LastErr();
    }
  }
  // A test that stopped half-way leaves neither its hold nor its load to the next steps.
  void TearDown() override {
    hold_.reset();
    load_.reset();
    ObjectTest::TearDown();
  }
  void StopLoad() {
    hold_.reset();
    std::ofstream(load_stop_).put('\n');
    EXPECT_EQ(load_->Join(), 0);
  }

  // Writes `bytes` to `path`, in an object of capacity 1, and says whether they fitted. If
  // not (ENOSPC), counts it in *full, and waits until the object's entry before is gone.
  // After a failure the callers' loops stop (HasFailure()), rather than fail 500 times.
  bool WriteFits(const std::string& object, const std::string& path, const std::string& bytes,
                 int* full) {
    const Err written = WriteFile(path, bytes);
    if (written != Err(ENOSPC)) {
      EXPECT_EQ(written, kOk) << path;
      return written == kOk;
    }
    ++*full;
    EXPECT_TRUE(Eventually([&] { return GetXattr(object, xattr::kBytes) == "0"; }));
    return false;
  }

  std::string load_stop_;
  std::unique_ptr<Child> load_;
  std::optional<OnCpu0> hold_;
};

std::string ModeName(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "Ring" : "NoRing";
}

INSTANTIATE_TEST_SUITE_P(Modes, RingTest, ::testing::Bool(), ModeName);

TEST_P(RingTest, TheStartupLogSaysWhetherTheRingIsOn) {
  const std::string log = smosd_.Log();
  if (ring()) {
    EXPECT_NE(log.find(", io_uring on\n"), std::string::npos) << log;
    EXPECT_NE(log.find("FUSE ring: "), std::string::npos) << log;
  } else {
    EXPECT_NE(log.find(", io_uring off (disabled)\n"), std::string::npos) << log;
    EXPECT_EQ(log.find("FUSE ring: "), std::string::npos) << log;
  }
}

// A blocked pop's entry is parked while the worker goes on serving; its answer comes from the
// thread of the push that makes something poppable. More pops wait at once than a queue has
// entries to begin with, and every one gets its own entry.
TEST_P(RingTest, ManyBlockedPopsAreAnsweredFromOtherThreads) {
  constexpr int kPoppers = 24;
  auto poppers = StartPoppers(kPoppers, [this] {
    Fd fd = Open(obj_ + "/" + control::kPop, O_RDONLY);
    if (!fd.ok()) return ChildFail("pop");
    Text bytes = ReadFd(fd.get());
    if (!bytes.ok()) return ChildFail("read");
    // The payload says which push it was: report it through the exit status.
    return 10 + std::stoi(bytes.value);
  });
  // Until all of them wait in the daemon, a push may find a popper still on its way.
  ASSERT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kEntries) == "0"; }));
  ::usleep(200'000);
  for (int i = 0; i < kPoppers; ++i) {
    ASSERT_EQ(WriteFile(obj_ + "/" + control::kPush, std::to_string(i)), kOk);
  }
  std::set<int> got;
  for (auto& p : poppers) got.insert(p->Join() - 10);
  EXPECT_EQ(got.size(), static_cast<std::size_t>(kPoppers)) << "a push was popped twice";
  EXPECT_EQ(*got.begin(), 0);
  EXPECT_EQ(*got.rbegin(), kPoppers - 1);
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "0");
}

// A queue's threads must run on its CPU: a kick lands in the queue of the CPU it is made on.
// A daemon that may not run on every CPU declines the ring, says why, and serves through
// /dev/fuse.
TEST_P(RingTest, ADaemonThatMayNotRunOnEveryCpuDeclinesTheRing) {
  if (!ring()) GTEST_SKIP() << "about the ring";
  if (::sysconf(_SC_NPROCESSORS_ONLN) < 2) GTEST_SKIP() << "one CPU online";
  Smosd restricted;
  {
    OnCpu0 hold;
    ASSERT_TRUE(hold.held()) << LastErr();
    ASSERT_TRUE(restricted.Start());
  }
  const std::string log = restricted.Log();
  EXPECT_NE(log.find(", io_uring off (CPU 1 is outside smosd's CPU set)\n"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("FUSE ring: "), std::string::npos) << log;
  const std::string obj = restricted.Path("q");
  ASSERT_EQ(ErrOf(::mkdir(obj.c_str(), 0755)), kOk);
  ASSERT_EQ(WriteFile(obj + "/" + control::kPush, "served"), kOk);
  EXPECT_EQ(ReadFile(obj + "/" + control::kPop), "served");
}

// SIGTERM while pops wait in the daemon (their entries parked, kicks made): the daemon answers
// them with ENOTCONN and stops within the fixture's deadline (under ASan, with nothing leaked:
// an unanswered request is libfuse's memory), and no popper waits for good.
TEST_P(RingTest, SigtermWhilePopsWaitStopsTheDaemonAndFailsThePops) {
  auto poppers = StartPoppers(8, [this] {
    const Err err = OpenErr(obj_ + "/" + control::kPop, O_RDONLY);
    if (err == kOk) return 1;  // nothing was ever pushed
    // ENOTCONN from smosd (or from the kernel); a popper still on its way at the unmount gets
    // ECONNABORTED from the kernel, or finds the plain directory.
    if (err == Err(ENOTCONN)) return 0;
    return err == Err(ECONNABORTED) || err == Err(ENOENT) ? 3 : 2;
  });
  ::usleep(200'000);  // until they wait in the daemon (a late one fails with ENOTCONN anyway)
  const std::optional<int> status = smosd_.Stop(SIGTERM);
  ASSERT_TRUE(status.has_value()) << "smosd did not stop within 10 s";
  EXPECT_EQ(*status, 0);
  int answered = 0;
  for (auto& p : poppers) {
    const int result = p->Join();
    EXPECT_TRUE(result == 0 || result == 3)
        << result << ": 1, a pop of an empty object succeeded; 2, another errno";
    answered += result == 0;
  }
  EXPECT_GT(answered, 0) << "no waiting pop was answered ENOTCONN";
  // The store stays for the next start.
  ASSERT_TRUE(smosd_.StartAgain());
  EXPECT_EQ(StatErr(obj_), kOk);
}

// The writer closes on CPU 0, where a CPU-bound process keeps that CPU busy, and asks its next
// question from CPU 1. That question still waits for the release. Without os::ReleaseOrder,
// 3 and 16 of 200 did not through /dev/fuse; through the ring, the release build never missed
// (the scheduler tends to run CPU 0's worker as soon as the writer leaves that CPU), but the
// sanitized one did, in CI.
TEST_P(RingTest, AWriterThatMovesToAnotherCpuAfterCloseStillFindsItsEntryCommitted) {
  cpu_set_t allowed;
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0 || !CPU_ISSET(0, &allowed) ||
      !CPU_ISSET(1, &allowed)) {
    GTEST_SKIP() << "CPUs 0 and 1 are not both in this process's CPU set";
  }
  const std::string stop = smosd_.dir() + "/stop-spinning";
  Child spinner([&](Channel& parent) {
    if (!PinTo(0)) return ChildFail("sched_setaffinity");
    parent.Signal();
    while (::access(stop.c_str(), F_OK) != 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
      while (std::chrono::steady_clock::now() < until) {
      }
    }
    return 0;
  });
  ASSERT_TRUE(spinner.Wait());
  constexpr int kRounds = 200;
  Child writer([&](Channel&) {
    int uncommitted = 0;
    for (int i = 0; i < kRounds; ++i) {
      const std::string e = obj_ + "/moved" + std::to_string(i);
      if (!PinTo(0)) return ChildFail("sched_setaffinity");
      if (!WriteFile(e, "bytes").ok()) return ChildFail("write " + e);
      if (!PinTo(1)) return ChildFail("sched_setaffinity");
      if (GetXattr(e, xattr::kState) != "idle") ++uncommitted;
    }
    if (uncommitted != 0) {
      std::fprintf(stderr, "%d of %d entries were not committed for their writer right after "
                   "close()\n", uncommitted, kRounds);
    }
    return uncommitted == 0 ? 0 : 1;
  });
  EXPECT_EQ(writer.Join(), 0);
  std::ofstream(stop).put('\n');
  EXPECT_EQ(spinner.Join(), 0);
}

// close() queues the release, which commits the entry, before it returns. The ring serves a
// CPU's requests in order, so the writer's own next request already finds the entry committed.
// Without the ring, several threads take requests at once, and os::ReleaseOrder holds the
// writer's next request back until its release is served (as it does across the ring's
// queues).
TEST_P(RingTest, AWritersOwnRequestsAfterCloseFindTheEntryCommitted) {
  ASSERT_NO_FATAL_FAILURE(StartLoad());
  int uncommitted = 0;
  for (int i = 0; i < 500; ++i) {
    const std::string e = obj_ + "/e" + std::to_string(i);
    ASSERT_EQ(WriteFile(e, "bytes"), kOk);
    if (SetXattr(e, "user.late", "x") != Err(EPERM)) ++uncommitted;
  }
  StopLoad();
  EXPECT_EQ(uncommitted, 0) << "of 500 entries, the writer could still change this many after "
                               "close() returned";
}

// A reader's close() queues the release that makes its entry idle again. Readers send no FLUSH
// (that would cost every read-only close a round trip), so nothing holds requests back in
// general; but a request whose answer depends on it, a reader count or a pop, waits for the
// releases received before it. Through /dev/fuse, those are all that were sent before it. The
// ring serves a CPU's queue in order, and this process stays on one CPU: another CPU's queue
// may take the release later.
TEST_P(RingTest, AReadersOwnRequestsAfterCloseFindTheEntryIdle) {
  ASSERT_NO_FATAL_FAILURE(StartLoad(/*hold=*/true));
  int busy = 0;
  int skipped = 0;
  for (int i = 0; i < 500; ++i) {
    // A reader's own next question...
    const std::string e = obj_ + "/e" + std::to_string(i);
    const std::string bytes = std::to_string(i);
    ASSERT_EQ(WriteFile(e, bytes), kOk);
    ASSERT_EQ(ReadFile(e), bytes);
    if (GetXattr(e, xattr::kState) != "idle") ++busy;
    // ...and its next pop: the oldest entry, which it has just read. A pop skips the entries
    // that readers hold, so it would take the next one, or find none.
    ASSERT_EQ(WriteFile(obj_ + "/" + control::kPush, "newer"), kOk);
    Fd pop = Open(obj_ + "/" + control::kPop, O_RDONLY | O_NONBLOCK);
    ASSERT_TRUE(pop.ok()) << LastErr();
    if (!(ReadFd(pop.get()) == bytes)) {
      ++skipped;
      ASSERT_EQ(ErrOf(::unlink(e.c_str())), kOk);
    }
    ASSERT_EQ(pop.Close(), kOk);
    while (OpenErr(obj_ + "/" + control::kPop, O_RDONLY | O_NONBLOCK) == kOk) {
    }
  }
  StopLoad();
  EXPECT_EQ(busy, 0) << "of 500 entries, this many were still busy for their reader after "
                        "close() returned";
  EXPECT_EQ(skipped, 0) << "of 500 pops, this many skipped the entry just read and closed";
}

// A replay buffer at its capacity: read the oldest entry, delete it, write a new one. Deleted
// while a reader holds it, an entry lives on as a zombie, which counts towards the capacity;
// so the delete comes after the releases sent before it, and finds the entry idle.
TEST_P(RingTest, AnEntryReadClosedAndDeletedMakesRoomAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartLoad(/*hold=*/true));
  const std::string buffer = MakeObject("buffer", {{xattr::kCapacity, "1"}});
  int full = 0;
  int zombies = 0;
  for (int i = 0; i < 500; ++i) {
    const std::string e = buffer + "/e" + std::to_string(i);
    if (HasFailure()) break;
    if (!WriteFits(buffer, e, "bytes", &full)) continue;
    ASSERT_EQ(ReadFile(e), "bytes");
    ASSERT_EQ(ErrOf(::unlink(e.c_str())), kOk);
    if (GetXattr(buffer, xattr::kBytes) != "0") ++zombies;
  }
  StopLoad();
  EXPECT_EQ(full, 0) << "of 500 writes, this many found the buffer full of the entry before";
  EXPECT_EQ(zombies, 0) << "of 500 deletes, this many left a zombie of an entry read and closed";
}

// The same with a queue: a pop leaves its entry a zombie until the popper's release. A push,
// or a create by name, that finds no room asks again after the readers' releases; and neither
// user.smos.bytes nor df counts the zombie once the popper's close() returned.
TEST_P(RingTest, AQueueAtItsCapacityTakesAPushRightAfterAPop) {
  ASSERT_NO_FATAL_FAILURE(StartLoad(/*hold=*/true));
  const std::string queue = MakeObject("queue", {{xattr::kCapacity, "1"}});
  int full = 0;
  int zombies = 0;
  int counted = 0;
  // Larger than what the load holds at any moment (a few one-byte entries), to tell in df.
  constexpr std::size_t kSize = 32 * 1024;
  for (int i = 0; i < 500; ++i) {
    const std::string bytes = Pattern(kSize, i);
    const std::string name = i % 2 == 0 ? control::kPush : "e" + std::to_string(i);
    if (HasFailure()) break;
    if (!WriteFits(queue, queue + "/" + name, bytes, &full)) continue;
    ASSERT_EQ(ReadFile(queue + "/" + control::kPop), bytes);
    if (i % 4 == 1 && GetXattr(queue, xattr::kBytes) != "0") ++zombies;
    if (i % 4 == 3) {
      struct statvfs st {};
      ASSERT_EQ(ErrOf(::statvfs(queue.c_str(), &st)), kOk);
      if ((st.f_blocks - st.f_bfree) * st.f_frsize >= kSize) ++counted;
    }
  }
  StopLoad();
  EXPECT_EQ(full, 0) << "of 500 writes, this many found the queue full of the entry popped before";
  EXPECT_EQ(zombies, 0) << "of 125 pops, this many still counted in the memory in use after the "
                           "popper's close()";
  EXPECT_EQ(counted, 0) << "of 125 pops, this many still counted in df's memory in use after the "
                           "popper's close()";
}

// The same with the memory budget: a zombie holds memory until its reader's release, and a
// write that finds no room asks again after the readers' releases.
class RingBudgetTest : public RingTest {
 protected:
  static constexpr std::size_t kBudget = 1 << 20;

  std::vector<std::string> DaemonArgs() const override {
    std::vector<std::string> args = RingTest::DaemonArgs();
    args.push_back("--memory=" + std::to_string(kBudget));
    return args;
  }
};

INSTANTIATE_TEST_SUITE_P(Modes, RingBudgetTest, ::testing::Bool(), ModeName);

TEST_P(RingBudgetTest, AWriteRightAfterAReadersCloseHasTheZombiesMemory) {
  ASSERT_NO_FATAL_FAILURE(StartLoad(/*hold=*/true));
  const std::string bytes = Pattern(kBudget / 2 + 4096, 3);  // two do not fit
  const std::string next = obj_ + "/next";
  int full = 0;
  for (int i = 0; i < 200; ++i) {
    const std::string e = obj_ + "/e" + std::to_string(i);
    ASSERT_EQ(WriteFile(e, bytes), kOk);
    Fd writer = Open(next, O_WRONLY | O_CREAT);  // empty, so it fits
    ASSERT_TRUE(writer.ok()) << LastErr();
    Fd reader = Open(e, O_RDONLY);
    ASSERT_TRUE(reader.ok()) << LastErr();
    ASSERT_EQ(ErrOf(::unlink(e.c_str())), kOk);  // a zombie while its reader holds it
    ASSERT_EQ(reader.Close(), kOk);
    const Err written = WriteAll(writer.get(), bytes);  // needs the zombie's memory
    ASSERT_EQ(writer.Close(), kOk);
    if (written == Err(ENOSPC)) {
      ++full;
    } else {
      ASSERT_EQ(written, kOk);
      ASSERT_EQ(ReadFile(next), bytes);
    }
    ASSERT_EQ(ErrOf(::unlink(next.c_str())), kOk);
    ASSERT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "0"; }));
  }
  StopLoad();
  EXPECT_EQ(full, 0) << "of 200 writes, this many found the memory held by the entry just closed";
}

}  // namespace
}  // namespace smos::test
