// The four-stage lifecycle: write -> idle <-> busy -> zombie, commit modes, the sequence
// counter and capacity.
#include <signal.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

using LifecycleTest = MountTest;

TEST_F(LifecycleTest, EachCommitTakesTheNextSequenceNumberOfItsObject) {
  std::string obj = MakeObject("obj");
  std::string other = MakeObject("other");
  ASSERT_EQ(WriteFile(obj + "/a", "a"), kOk);
  ASSERT_EQ(WriteFile(obj + "/b", "b"), kOk);
  ASSERT_EQ(WriteFile(other + "/x", "x"), kOk);
  EXPECT_EQ(GetXattr(obj + "/a", xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(obj + "/b", xattr::kSeq), "2");
  EXPECT_EQ(GetXattr(other + "/x", xattr::kSeq), "1");

  Fd pending = Open(obj + "/c", O_WRONLY | O_CREAT);
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(FGetXattr(pending.get(), xattr::kSeq), "0");
  ASSERT_EQ(pending.Close(), kOk);
  EXPECT_EQ(GetXattr(obj + "/c", xattr::kSeq), "3");

  ASSERT_EQ(WriteFile(obj + "/a", "a2"), kOk);  // a replace is a commit, too
  EXPECT_EQ(GetXattr(obj + "/a", xattr::kSeq), "4");
  // Deleting does not give numbers back.
  ASSERT_EQ(ErrOf(::unlink((obj + "/b").c_str())), kOk);
  ASSERT_EQ(WriteFile(obj + "/d", "d"), kOk);
  EXPECT_EQ(GetXattr(obj + "/d", xattr::kSeq), "5");
}

TEST_F(LifecycleTest, ReadersMakeAnEntryBusyUntilTheLastOneCloses) {
  std::string obj = MakeObject("obj");
  std::string e = obj + "/e";
  ASSERT_EQ(WriteFile(e, "data"), kOk);
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(GetXattr(e, xattr::kReaders), "0");

  Fd first = Open(e, O_RDONLY);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(GetXattr(e, xattr::kState), "busy");
  EXPECT_EQ(GetXattr(e, xattr::kReaders), "1");
  Fd second = Open(e, O_RDONLY);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(GetXattr(e, xattr::kReaders), "2");
  EXPECT_EQ(FGetXattr(first.get(), xattr::kState), "busy");

  ASSERT_EQ(first.Close(), kOk);
  EXPECT_TRUE(Eventually([&] { return GetXattr(e, xattr::kReaders) == "1"; }))
      << GetXattr(e, xattr::kReaders);
  EXPECT_EQ(GetXattr(e, xattr::kState), "busy");
  ASSERT_EQ(second.Close(), kOk);
  EXPECT_TRUE(Eventually([&] { return GetXattr(e, xattr::kReaders) == "0"; }))
      << GetXattr(e, xattr::kReaders);
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(ReadFile(e), "data");
}

TEST_F(LifecycleTest, UnlinkWithAReaderLeavesAZombieThatKeepsItsBytes) {
  std::string obj = MakeObject("obj");
  std::string e = obj + "/e";
  const std::string bytes = Pattern(3 * 4096 + 5, 7);
  ASSERT_EQ(WriteFile(e, bytes), kOk);
  std::uint64_t used_before = StatSpace(Path("")).used;

  Fd reader = Open(e, O_RDONLY);
  ASSERT_TRUE(reader.ok());
  void* map = ::mmap(nullptr, bytes.size(), PROT_READ, MAP_SHARED, reader.get(), 0);
  ASSERT_NE(map, MAP_FAILED) << LastErr();
  ASSERT_EQ(ErrOf(::unlink(e.c_str())), kOk);

  // The name is gone at once...
  EXPECT_EQ(StatErr(e), Err(ENOENT));
  EXPECT_EQ(OpenErr(e, O_RDONLY), Err(ENOENT));
  EXPECT_TRUE(ListDir(obj).names.empty());
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "0");
  // ...but the reader's handle and mapping stay valid and unchanged.
  EXPECT_EQ(FGetXattr(reader.get(), xattr::kState), "zombie");
  EXPECT_TRUE(ReadFd(reader.get()) == bytes);
  EXPECT_EQ(std::string(static_cast<const char*>(map), bytes.size()), bytes);
  // A new entry under the same name is another entry.
  ASSERT_EQ(WriteFile(e, "new"), kOk);
  EXPECT_EQ(ReadFile(e), "new");
  EXPECT_TRUE(ReadFd(reader.get()) == bytes);
  EXPECT_EQ(std::string(static_cast<const char*>(map), bytes.size()), bytes);

  ASSERT_EQ(ErrOf(::munmap(map, bytes.size())), kOk);
  ASSERT_EQ(reader.Close(), kOk);
  // Once the last reader is gone, the zombie's memory is free again.
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj, xattr::kBytes) == "3"; }))
      << GetXattr(obj, xattr::kBytes);
  EXPECT_TRUE(Eventually([&] { return StatSpace(Path("")).used < used_before; }))
      << "statfs still reports " << StatSpace(Path("")).used << " bytes in use";
}

TEST_F(LifecycleTest, SettingStateToIdleCommitsAtOnce) {
  std::string obj = MakeObject("obj");
  std::string e = obj + "/e";
  Fd fd = Open(e, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteAll(fd.get(), "sealed"), kOk);
  ASSERT_EQ(FSetXattr(fd.get(), xattr::kState, "idle"), kOk);

  // Visible to another process while the writer still holds its descriptor.
  Child reader([&](Channel&) { return ReadFile(e) == "sealed" ? 0 : ChildFail("read " + e); });
  EXPECT_EQ(reader.Join(), 0);
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
  // And immutable.
  EXPECT_EQ(ErrOf(::write(fd.get(), "more", 4)), Err(EPERM));
  EXPECT_EQ(ErrOf(::ftruncate(fd.get(), 1)), Err(EPERM));
  fd.Close();
  EXPECT_EQ(ReadFile(e), "sealed");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
}

TEST_F(LifecycleTest, SettingStateOnACommittedEntryIsANoOpForIdleAndEinvalOtherwise) {
  std::string obj = MakeObject("obj");
  std::string e = obj + "/e";
  ASSERT_EQ(WriteFile(e, "x"), kOk);
  EXPECT_EQ(SetXattr(e, xattr::kState, "idle"), kOk);
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
  for (const char* bad : {"busy", "write", "zombie", "bogus", ""}) {
    EXPECT_EQ(SetXattr(e, xattr::kState, bad), Err(EINVAL)) << "'" << bad << "'";
  }
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(ReadFile(e), "x");

  // The same values on an entry in write state.
  Fd fd = Open(obj + "/w", O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  for (const char* bad : {"busy", "zombie", "bogus"}) {
    EXPECT_EQ(FSetXattr(fd.get(), xattr::kState, bad), Err(EINVAL)) << "'" << bad << "'";
  }
  EXPECT_EQ(FGetXattr(fd.get(), xattr::kState), "write");
}

class ExplicitCommitTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    obj_ = MakeObject("obj", {{xattr::kCapacity, "2"}, {xattr::kCommit, "explicit"}});
  }
  std::string obj_;
};

TEST_F(ExplicitCommitTest, OnlySettingStateCommits) {
  std::string e = obj_ + "/e";
  Fd fd = Open(e, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteAll(fd.get(), "explicit"), kOk);
  ASSERT_EQ(SetXattr(e, xattr::kState, "idle"), kOk);
  ASSERT_EQ(fd.Close(), kOk);
  EXPECT_EQ(ReadFile(e), "explicit");
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
}

TEST_F(ExplicitCommitTest, CloseWithoutCommitDiscardsTheEntryAndFreesItsSlot) {
  std::string e = obj_ + "/e";
  for (int round = 0; round < 5; ++round) {
    Fd fd = Open(e, O_WRONLY | O_CREAT);
    ASSERT_TRUE(fd.ok()) << "round " << round << ": " << LastErr();
    ASSERT_EQ(WriteAll(fd.get(), Pattern(4096, round)), kOk);
    ASSERT_EQ(fd.Close(), kOk);
    // Gone for the writer itself and for everyone else.
    EXPECT_TRUE(Eventually([&] { return StatErr(e) == Err(ENOENT); })) << "round " << round;
    Child other([&](Channel&) { return StatErr(e) == Err(ENOENT) ? 0 : 1; });
    EXPECT_EQ(other.Join(), 0) << "round " << round;
  }
  EXPECT_TRUE(ListDir(obj_).names.empty());
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "0");
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "0"; }))
      << GetXattr(obj_, xattr::kBytes);

  // No slot leaked: all of the capacity is still there.
  for (const char* name : {"a", "b"}) {
    std::string path = obj_ + "/" + name;
    Fd fd = Open(path, O_WRONLY | O_CREAT);
    ASSERT_TRUE(fd.ok()) << name << ": " << LastErr();
    ASSERT_EQ(FSetXattr(fd.get(), xattr::kState, "idle"), kOk);
  }
  EXPECT_EQ(OpenErr(obj_ + "/c", O_WRONLY | O_CREAT), Err(ENOSPC));
}

TEST_F(ExplicitCommitTest, TheWriterItselfFindsAnUncommittedEntryGoneAsSoonAsItCloses) {
  // The release that discards the entry is sent after close() returns; the writer's next
  // request must still be served after it, even with other processes keeping smosd busy.
  std::string obj = MakeObject("writers", {{xattr::kCapacity, "3"}, {xattr::kCommit, "explicit"}});
  std::vector<std::unique_ptr<Child>> writers;
  for (int i = 0; i < 3; ++i) {
    writers.push_back(std::make_unique<Child>([&obj, i](Channel&) {
      int failures = 0;
      for (int round = 0; round < 300; ++round) {
        const std::string e = obj + "/w" + std::to_string(i);
        Fd fd = Open(e, O_WRONLY | O_CREAT);
        if (!fd.ok()) return ChildFail("open " + e);
        if (!WriteAll(fd.get(), "never committed").ok() || !fd.Close().ok()) {
          return ChildFail("write " + e);
        }
        if (Err err = StatErr(e); err != Err(ENOENT)) {
          std::fprintf(stderr, "round %d: stat %s right after close: %s\n", round, e.c_str(),
                       err.ok() ? "found" : ::strerror(err.value()));
          ++failures;
        }
      }
      return failures == 0 ? 0 : 1;
    }));
  }
  for (auto& writer : writers) EXPECT_EQ(writer->Join(), 0);
  EXPECT_TRUE(ListDir(obj).names.empty());
}

TEST_F(ExplicitCommitTest, ACrashedWritersEntryNeverBecomesVisible) {
  std::string e = obj_ + "/e";
  Child writer([&](Channel& parent) {
    Fd fd = Open(e, O_WRONLY | O_CREAT);
    if (!fd.ok() || !WriteAll(fd.get(), "half-written").ok()) return ChildFail("write");
    parent.Signal();
    ::pause();  // until killed
    return 0;
  });
  ASSERT_TRUE(writer.Wait());
  ::kill(writer.pid(), SIGKILL);
  EXPECT_EQ(writer.Join(), 128 + SIGKILL);

  EXPECT_EQ(StatErr(e), Err(ENOENT));
  EXPECT_TRUE(ListDir(obj_).names.empty());
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "0"; }))
      << GetXattr(obj_, xattr::kBytes);
  // Its slot is free again.
  EXPECT_TRUE(Eventually([&] {
    Fd fd = Open(obj_ + "/a", O_WRONLY | O_CREAT | O_EXCL);
    if (!fd.ok()) return false;
    return FSetXattr(fd.get(), xattr::kState, "idle").ok();
  }));
  Fd b = Open(obj_ + "/b", O_WRONLY | O_CREAT);
  ASSERT_TRUE(b.ok()) << LastErr();
  ASSERT_EQ(FSetXattr(b.get(), xattr::kState, "idle"), kOk);
  EXPECT_EQ(OpenErr(obj_ + "/c", O_WRONLY | O_CREAT), Err(ENOSPC));
  EXPECT_EQ(ListDir(obj_).names, (std::vector<std::string>{"a", "b"}));
}

TEST_F(LifecycleTest, TheWriterItselfFindsItsEntryCommittedAsSoonAsItCloses) {
  // The release that commits the entry is sent after close() returns; the writer's next
  // requests must still be served after it, even with other processes keeping smosd busy:
  // the entry is idle, and can be renamed (an entry being written cannot).
  std::string obj = MakeObject("obj");
  std::vector<std::unique_ptr<Child>> writers;
  for (int i = 0; i < 4; ++i) {
    writers.push_back(std::make_unique<Child>([&obj, i](Channel&) {
      int failures = 0;
      for (int round = 0; round < 1000; ++round) {
        const std::string e = obj + "/w" + std::to_string(i) + "-" + std::to_string(round);
        const std::string data = Pattern(100 + round, round);
        if (!WriteFile(e, data).ok()) return ChildFail("write " + e);
        if (Text state = GetXattr(e, xattr::kState); state != "idle") {
          std::fprintf(stderr, "%s right after close: state %s\n", e.c_str(),
                       state.value.c_str());
          ++failures;
        }
        if (::rename(e.c_str(), (e + ".done").c_str()) != 0) {
          std::fprintf(stderr, "rename %s right after close: %s\n", e.c_str(),
                       ::strerror(errno));
          ++failures;
        } else if (ReadFile(e + ".done") != data || ::unlink((e + ".done").c_str()) != 0) {
          return ChildFail("read " + e + ".done");
        }
      }
      return failures == 0 ? 0 : 1;
    }));
  }
  for (auto& writer : writers) EXPECT_EQ(writer->Join(), 0);
  EXPECT_TRUE(ListDir(obj).names.empty());
}

TEST_F(LifecycleTest, AnotherProcessFindsTheEntryCommittedAsSoonAsTheWriterCloses) {
  // The writer's release is on its way when close() returns; a request that another process
  // makes after that must be served after it, even with other processes keeping smosd busy.
  std::string obj = MakeObject("obj");
  const std::string busy = MakeObject("busy");
  constexpr int kRounds = 1000;
  std::vector<std::unique_ptr<Child>> others;
  for (int i = 0; i < 3; ++i) {
    others.push_back(std::make_unique<Child>([&busy, i](Channel&) {
      const std::string e = busy + "/" + std::to_string(i);
      for (int round = 0; round < 2 * kRounds; ++round) {
        if (!WriteFile(e, "x").ok() || ::unlink(e.c_str()) != 0) return ChildFail("write " + e);
      }
      return 0;
    }));
  }
  Child writer([&obj](Channel& channel) {
    for (int round = 0; round < kRounds; ++round) {
      const std::string e = obj + "/e" + std::to_string(round);
      if (!WriteFile(e, Pattern(100, round)).ok()) return ChildFail("write " + e);
      channel.Signal();
      if (!channel.Wait()) return ChildFail("wait");
    }
    return 0;
  });
  int failures = 0;
  for (int round = 0; round < kRounds && writer.Wait(); ++round) {
    const std::string e = obj + "/e" + std::to_string(round);
    if (Text state = GetXattr(e, xattr::kState); state != "idle") {
      ADD_FAILURE() << "round " << round << ": " << e << " right after close: state "
                    << (state.ok() ? state.value : ::strerror(state.err.value()));
      if (++failures == 5) break;
    }
    writer.Signal();
  }
  EXPECT_EQ(writer.Join(), 0);
  for (auto& other : others) EXPECT_EQ(other->Join(), 0);
  EXPECT_EQ(ListDir(obj).names.size(), static_cast<std::size_t>(kRounds));
}

TEST_F(LifecycleTest, CreateBeyondCapacityFailsWithEnospc) {
  std::string obj = MakeObject("obj", {{xattr::kCapacity, "3"}});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(WriteFile(obj + "/e" + std::to_string(i), "v" + std::to_string(i)), kOk) << i;
  }
  EXPECT_EQ(OpenErr(obj + "/e3", O_WRONLY | O_CREAT), Err(ENOSPC));
  EXPECT_EQ(OpenErr(obj + "/e3", O_RDWR | O_CREAT | O_EXCL), Err(ENOSPC));

  // Nothing was lost, and nothing half-made was left behind.
  EXPECT_EQ(ListDir(obj).names, (std::vector<std::string>{"e0", "e1", "e2"}));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ReadFile(obj + "/e" + std::to_string(i)), "v" + std::to_string(i));
  }
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "3");

  ASSERT_EQ(ErrOf(::unlink((obj + "/e1").c_str())), kOk);
  EXPECT_EQ(WriteFile(obj + "/e3", "v3"), kOk);
  EXPECT_EQ(ReadFile(obj + "/e3"), "v3");
}

TEST_F(LifecycleTest, EntriesInWriteStateCountTowardsCapacity) {
  std::string obj = MakeObject("obj", {{xattr::kCapacity, "1"}});
  Fd writer = Open(obj + "/a", O_WRONLY | O_CREAT);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ(OpenErr(obj + "/b", O_WRONLY | O_CREAT), Err(ENOSPC));
  ASSERT_EQ(WriteAll(writer.get(), "a"), kOk);
  ASSERT_EQ(writer.Close(), kOk);
  EXPECT_EQ(ReadFile(obj + "/a"), "a");
  EXPECT_EQ(StatErr(obj + "/b"), Err(ENOENT));
}

}  // namespace
}  // namespace smos::test
