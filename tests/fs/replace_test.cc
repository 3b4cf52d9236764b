// Atomic replace: open(O_WRONLY|O_TRUNC) of a committed name writes a new version, which
// takes the name only when it commits.
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

class ReplaceTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    obj_ = MakeObject("obj");
    entry_ = obj_ + "/e";
    ASSERT_EQ(WriteFile(entry_, kOld), kOk);
  }
  // Creates path in an object in explicit mode and commits it with data.
  void CommitExplicitly(const std::string& path, std::string_view data) {
    Fd fd = Open(path, O_WRONLY | O_CREAT);
    ASSERT_TRUE(fd.ok()) << LastErr();
    ASSERT_EQ(WriteAll(fd.get(), data), kOk);
    ASSERT_EQ(FSetXattr(fd.get(), xattr::kState, "idle"), kOk);
    ASSERT_EQ(fd.Close(), kOk);
  }

  static constexpr char kOld[] = "old version";
  static constexpr char kNew[] = "the new version, longer";
  std::string obj_;
  std::string entry_;
};

TEST_F(ReplaceTest, OthersReadTheOldVersionUntilTheNewOneCommits) {
  Fd old_reader = Open(entry_, O_RDONLY);
  ASSERT_TRUE(old_reader.ok());
  auto writer = StartWriter(entry_, kNew, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(writer->Wait()) << "the writer did not get to write";

  // Mid-replace: the name still means the old version, for new and old readers alike.
  EXPECT_EQ(ReadFile(entry_), kOld);
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(entry_.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_size, static_cast<off_t>(sizeof kOld - 1));
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "1");
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"e"});
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
  EXPECT_EQ(ReadFd(old_reader.get()), kOld);

  writer->Signal();
  ASSERT_TRUE(writer->Wait()) << "the writer did not close";
  EXPECT_EQ(writer->Join(), 0);

  // Committed: the name means the new version...
  EXPECT_EQ(ReadFile(entry_), kNew);
  ASSERT_EQ(ErrOf(::stat(entry_.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_size, static_cast<off_t>(sizeof kNew - 1));
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "2");
  EXPECT_EQ(GetXattr(entry_, xattr::kState), "idle");
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"e"});
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
  // ...and the old one lives on, unchanged, for its reader.
  EXPECT_EQ(ReadFd(old_reader.get()), kOld);
  EXPECT_EQ(FGetXattr(old_reader.get(), xattr::kState), "zombie");

  ASSERT_EQ(old_reader.Close(), kOk);
  EXPECT_TRUE(Eventually([&] {
    return GetXattr(obj_, xattr::kBytes) == std::to_string(sizeof kNew - 1);
  })) << "the old version's memory was not freed: "
      << GetXattr(obj_, xattr::kBytes);
}

TEST_F(ReplaceTest, TheReplacingWriterSeesItsNewVersion) {
  Fd fd = Open(entry_, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(fd.ok()) << LastErr();
  EXPECT_EQ(FGetXattr(fd.get(), xattr::kState), "write");
  ASSERT_EQ(WriteAll(fd.get(), kNew), kOk);
  // fstat(2) of the replacing descriptor is not checked: it reports the old version until the
  // commit (see smos(7), BUGS): the kernel has one inode for both versions.
  ASSERT_EQ(fd.Close(), kOk);
  EXPECT_EQ(ReadFile(entry_), kNew);
}

TEST_F(ReplaceTest, ShellRedirectionReplaces) {
  // What `echo x > e` does: O_WRONLY|O_CREAT|O_TRUNC.
  ASSERT_EQ(WriteFile(entry_, kNew, O_WRONLY | O_CREAT | O_TRUNC), kOk);
  EXPECT_EQ(ReadFile(entry_), kNew);
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "2");
}

TEST_F(ReplaceTest, SettingStateToIdleCommitsAReplace) {
  std::string obj = MakeObject("explicit", {{xattr::kCommit, "explicit"}});
  std::string e = obj + "/e";
  ASSERT_NO_FATAL_FAILURE(CommitExplicitly(e, kOld));

  Fd replace = Open(e, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(replace.ok()) << LastErr();
  ASSERT_EQ(WriteAll(replace.get(), kNew), kOk);
  ASSERT_EQ(FSetXattr(replace.get(), xattr::kState, "idle"), kOk);
  // Committed while the writer still holds its descriptor.
  Child reader([&](Channel&) { return ReadFile(e) == kNew ? 0 : ChildFail("read " + e); });
  EXPECT_EQ(reader.Join(), 0);
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "2");
  ASSERT_EQ(replace.Close(), kOk);
  EXPECT_EQ(ReadFile(e), kNew);
}

TEST_F(ReplaceTest, AnUncommittedReplaceInExplicitModeLeavesTheOldVersion) {
  std::string obj = MakeObject("explicit", {{xattr::kCommit, "explicit"}});
  std::string e = obj + "/e";
  ASSERT_NO_FATAL_FAILURE(CommitExplicitly(e, kOld));

  Fd replace = Open(e, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(replace.ok()) << LastErr();
  ASSERT_EQ(WriteAll(replace.get(), kNew), kOk);
  ASSERT_EQ(replace.Close(), kOk);  // without a commit: discarded

  EXPECT_TRUE(Eventually([&] { return ReadFile(e) == kOld; })) << ReadFile(e);
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "1");
  EXPECT_TRUE(Eventually([&] {
    return GetXattr(obj, xattr::kBytes) == std::to_string(sizeof kOld - 1);
  })) << GetXattr(obj, xattr::kBytes);
}

TEST_F(ReplaceTest, ReplacingNeedsOnlyTheVersionsThatExist) {
  // Many replaces in a row leave one version and its memory behind.
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(WriteFile(entry_, Pattern(4096, i)), kOk) << i;
  }
  EXPECT_TRUE(ReadFile(entry_) == Pattern(4096, 19));
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "21");
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"e"});
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "4096"; }))
      << GetXattr(obj_, xattr::kBytes);
}

}  // namespace
}  // namespace smos::test
