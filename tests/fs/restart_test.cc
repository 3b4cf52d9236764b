// Restarts: after SIGKILL or a clean stop, the same --store brings back every object and
// committed entry (bytes, xattrs, mode, owner, times, inode numbers); write entries, zombies
// and reader counts do not survive. --reset starts empty. A crashed daemon's stale mount is
// cleared, or refused with a hint.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <sstream>
#include <string>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

// Everything about the store that a restart must keep: per object and entry, the inode,
// mode, owner, size, entry mtime, a checksum of the bytes, and every attribute except those
// that describe open handles (state, readers) or where the bytes live (segment).
std::map<std::string, std::string> Snapshot(const Smosd& smosd) {
  std::map<std::string, std::string> out;
  auto describe = [](const std::string& path, bool is_entry) {
    std::ostringstream s;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      s << "stat: " << LastErr();
      return s.str();
    }
    s << "ino=" << st.st_ino << " mode=" << std::oct << st.st_mode << std::dec
      << " uid=" << st.st_uid << " gid=" << st.st_gid;
    if (is_entry) {
      s << " size=" << st.st_size << " mtime=" << st.st_mtim.tv_sec << "." << st.st_mtim.tv_nsec
        << " sum=" << Checksum(ReadFile(path).value);
    }
    for (const std::string& name : ListXattr(path).names) {
      if (name == xattr::kState || name == xattr::kReaders || name == xattr::kSegment) continue;
      s << " " << name << "=" << GetXattr(path, name).value;
    }
    return s.str();
  };
  for (const std::string& obj : ListDir(smosd.mountpoint()).names) {
    std::string obj_path = smosd.Path(obj);
    out[obj] = describe(obj_path, false);
    for (const std::string& entry : ListDir(obj_path).names) {
      out[obj + "/" + entry] = describe(obj_path + "/" + entry, true);
    }
  }
  return out;
}

class RestartTest : public MountTest {
 protected:
  // A store with a bit of everything: objects with settings and user attributes, entries of
  // assorted sizes with user attributes, changed modes and owners, an empty object.
  void Populate() {
    std::string frames = MakeObject(
        "frames", {{xattr::kCapacity, "64"}, {xattr::kBlockSize, "4194304"}, {"user.note", "n"}});
    std::string ex = MakeObject("ex", {{xattr::kCommit, "explicit"}});
    MakeObject("empty");
    for (int i = 0; i < 4; ++i) {
      std::string e = frames + "/" + std::to_string(i);
      Fd fd = Open(e, O_WRONLY | O_CREAT);
      ASSERT_TRUE(fd.ok()) << e;
      ASSERT_EQ(WriteAll(fd.get(), Pattern(kSizes[i], i)), kOk);
      ASSERT_EQ(FSetXattr(fd.get(), "user.dtype", "uint8"), kOk);
      ASSERT_EQ(FSetXattr(fd.get(), "user.index", std::to_string(i)), kOk);
      ASSERT_EQ(fd.Close(), kOk);
    }
    ASSERT_EQ(WriteFile(frames + "/0", Pattern(kSizes[0], 10)), kOk);  // a replaced entry
    // The replaced version lives, and counts in user.smos.bytes and statfs, until the kernel
    // forgets its inode, which it does when it likes (through the ring, a FORGET comes by
    // /dev/fuse, not ordered with the requests here), and no restart keeps it. The snapshot to
    // compare against is taken once it is gone (found flaky under ASan and load).
    const std::string live_bytes =
        std::to_string(kSizes[0] + kSizes[1] + kSizes[2] + kSizes[3]);
    ASSERT_TRUE(Eventually([&] { return GetXattr(frames, xattr::kBytes).value == live_bytes; }))
        << "the replaced version of frames/0 was never freed";
    ASSERT_EQ(ErrOf(::chmod((frames + "/1").c_str(), 0600)), kOk);
    ASSERT_EQ(ErrOf(::chown((frames + "/2").c_str(), 1234, 5678)), kOk);
    ASSERT_EQ(ErrOf(::chmod(ex.c_str(), 0750)), kOk);
    Fd fd = Open(ex + "/e", O_WRONLY | O_CREAT);
    ASSERT_TRUE(fd.ok());
    ASSERT_EQ(WriteAll(fd.get(), "explicitly committed"), kOk);
    ASSERT_EQ(FSetXattr(fd.get(), xattr::kState, "idle"), kOk);
    ASSERT_EQ(fd.Close(), kOk);
  }

  // Checks that the store is exactly as Populate() left it (recorded in want).
  void ExpectRecovered(const std::map<std::string, std::string>& want) {
    // States first, before anything here opens the entries: a reader's release reaches the
    // daemon after its close() returns, so a count read after a read of our own would race it.
    for (int i = 1; i < 4; ++i) {
      std::string e = Path("frames/" + std::to_string(i));
      EXPECT_EQ(GetXattr(e, xattr::kState), "idle") << e;
      EXPECT_EQ(GetXattr(e, xattr::kReaders), "0") << e;
    }
    std::map<std::string, std::string> got = Snapshot(smosd_);
    for (const auto& [path, what] : want) EXPECT_EQ(got[path], what) << path;
    for (const auto& [path, what] : got) EXPECT_EQ(want.count(path), 1u) << "new: " << path;
    EXPECT_TRUE(ReadFile(Path("frames/0")) == Pattern(kSizes[0], 10));
    for (int i = 1; i < 4; ++i) {
      std::string e = Path("frames/" + std::to_string(i));
      EXPECT_TRUE(ReadFile(e) == Pattern(kSizes[i], i)) << e;
    }
    EXPECT_EQ(ReadFile(Path("ex/e")), "explicitly committed");
  }

  static constexpr std::size_t kSizes[4] = {(1 << 20) + 3, 0, 4096, 123};
};

TEST_F(RestartTest, ARestartAfterSigkillRecoversEveryCommittedEntry) {
  ASSERT_NO_FATAL_FAILURE(Populate());
  std::map<std::string, std::string> want = Snapshot(smosd_);
  std::uint64_t used = StatSpace(Path("")).used;

  // What must not survive: a reader count, a zombie, a new entry and a replace being written.
  Fd reader = Open(Path("frames/3"), O_RDONLY);
  ASSERT_TRUE(reader.ok());
  ASSERT_EQ(WriteFile(Path("frames/z"), Pattern(8192, 20)), kOk);
  Fd zombie = Open(Path("frames/z"), O_RDONLY);
  ASSERT_TRUE(zombie.ok());
  ASSERT_EQ(ErrOf(::unlink(Path("frames/z").c_str())), kOk);
  Fd writer = Open(Path("frames/w"), O_WRONLY | O_CREAT);
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(WriteAll(writer.get(), Pattern(8192, 21)), kOk);
  Fd replacer = Open(Path("frames/2"), O_WRONLY | O_TRUNC);
  ASSERT_TRUE(replacer.ok());
  ASSERT_EQ(WriteAll(replacer.get(), "not committed"), kOk);

  smosd_.Kill();
  for (Fd* fd : {&reader, &zombie, &writer, &replacer}) fd->Close();
  ASSERT_TRUE(smosd_.Unmount());
  ASSERT_TRUE(smosd_.StartAgain());

  ExpectRecovered(want);
  EXPECT_EQ(StatErr(Path("frames/w")), Err(ENOENT));
  EXPECT_EQ(StatErr(Path("frames/z")), Err(ENOENT));
  EXPECT_EQ(StatSpace(Path("")).used, used) << "the discarded entries' memory is not free";

  // The store goes on where it left off: the next commit takes the next seq, and gets an
  // inode number of its own.
  ASSERT_EQ(WriteFile(Path("frames/next"), "next"), kOk);
  EXPECT_EQ(GetXattr(Path("frames/next"), xattr::kSeq), "7");
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(Path("frames/next").c_str(), &st)), kOk);
  for (const auto& [path, what] : want) {
    EXPECT_EQ(what.find("ino=" + std::to_string(st.st_ino) + " "), std::string::npos) << path;
  }
}

TEST_F(RestartTest, AnEntryClosedJustBeforeACrashSurvivesIt) {
  // close() has returned, so the entry is committed, even if nobody has looked at it since.
  std::string obj = MakeObject("obj");
  ASSERT_EQ(WriteFile(obj + "/e", "closed"), kOk);
  smosd_.Kill();
  ASSERT_TRUE(smosd_.Unmount());
  ASSERT_TRUE(smosd_.StartAgain());
  EXPECT_EQ(ReadFile(obj + "/e"), "closed");
  EXPECT_EQ(GetXattr(obj + "/e", xattr::kSeq), "1");
}

TEST_F(RestartTest, WriteEntriesLostInACrashGiveBackTheirSlots) {
  std::string obj = MakeObject("obj", {{xattr::kCapacity, "2"}});
  ASSERT_EQ(WriteFile(obj + "/kept", "kept"), kOk);
  Fd writer = Open(obj + "/lost", O_WRONLY | O_CREAT);
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(WriteAll(writer.get(), "lost"), kOk);

  smosd_.Kill();
  writer.Close();
  ASSERT_TRUE(smosd_.Unmount());
  ASSERT_TRUE(smosd_.StartAgain());

  EXPECT_EQ(ListDir(obj).names, std::vector<std::string>{"kept"});
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "1");
  EXPECT_EQ(GetXattr(obj, xattr::kBytes), "4");
  EXPECT_EQ(WriteFile(obj + "/new", "new"), kOk);
  EXPECT_EQ(OpenErr(obj + "/more", O_WRONLY | O_CREAT), Err(ENOSPC));
  EXPECT_EQ(ReadFile(obj + "/kept"), "kept");
}

TEST_F(RestartTest, ACleanRestartKeepsEverything) {
  ASSERT_NO_FATAL_FAILURE(Populate());
  std::map<std::string, std::string> want = Snapshot(smosd_);
  ASSERT_TRUE(smosd_.Restart());
  ExpectRecovered(want);
  // Twice in a row, too.
  ASSERT_TRUE(smosd_.Restart());
  ExpectRecovered(want);
}

TEST_F(RestartTest, ResetStartsEmpty) {
  ASSERT_NO_FATAL_FAILURE(Populate());
  ASSERT_TRUE(smosd_.Stop().has_value());
  ASSERT_TRUE(smosd_.Start({}, /*reset=*/true));
  NameList root = ListDir(Path(""));
  EXPECT_EQ(root.err, kOk);
  EXPECT_TRUE(root.names.empty());
  EXPECT_EQ(StatSpace(Path("")).used, 0u);
  std::string obj = MakeObject("frames");
  ASSERT_EQ(WriteFile(obj + "/0", "fresh"), kOk);
  EXPECT_EQ(GetXattr(obj + "/0", xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(obj, xattr::kCapacity), "1024");
}

TEST_F(RestartTest, AStaleMountIsClearedOrRefusedWithAHint) {
  std::string obj = MakeObject("obj");
  ASSERT_EQ(WriteFile(obj + "/e", "survives"), kOk);
  ASSERT_EQ(ReadFile(obj + "/e"), "survives");
  smosd_.Kill();
  ASSERT_TRUE(smosd_.IsMounted());
  // ECONNABORTED: the request went to the daemon's io_uring while the kernel tore it down.
  const Err err = StatSpace(smosd_.mountpoint()).err;
  EXPECT_TRUE(err == Err(ENOTCONN) || err == Err(ECONNABORTED)) << "not a stale mount: " << err;

  ::testing::AssertionResult started = smosd_.StartAgain();
  if (!started) {
    EXPECT_NE(smosd_.Log().find("fusermount3 -uz"), std::string::npos)
        << "smosd refused the stale mount without saying how to clear it: " << started.message();
    ASSERT_TRUE(smosd_.Unmount());
    ASSERT_TRUE(smosd_.StartAgain());
  }
  EXPECT_EQ(ReadFile(obj + "/e"), "survives");
}

}  // namespace
}  // namespace smos::test
