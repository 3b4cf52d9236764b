// rename of entries, and the calls that have no meaning in an object: link, symlink, mknod.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

class RenameTest : public ObjectTest {
 protected:
  void SetUp() override {
    ObjectTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    other_ = MakeObject("other");
  }
  Err Rename(const std::string& from, const std::string& to, unsigned flags = 0) {
    return ErrOf(::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
  }
  std::string other_;
};

TEST_F(RenameTest, ACommittedEntryCanBeRenamedWithinItsObject) {
  ASSERT_EQ(WriteFile(obj_ + "/a", "payload"), kOk);
  Fd writer = Open(obj_ + "/w", O_WRONLY | O_CREAT);
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(FSetXattr(writer.get(), "user.tag", "t"), kOk);
  ASSERT_EQ(writer.Close(), kOk);
  struct stat before;
  ASSERT_EQ(ErrOf(::stat((obj_ + "/a").c_str(), &before)), kOk);

  ASSERT_EQ(Rename(obj_ + "/a", obj_ + "/b"), kOk);
  ASSERT_EQ(Rename(obj_ + "/w", obj_ + "/v"), kOk);

  EXPECT_EQ(StatErr(obj_ + "/a"), Err(ENOENT));
  EXPECT_EQ(ReadFile(obj_ + "/b"), "payload");
  struct stat after;
  ASSERT_EQ(ErrOf(::stat((obj_ + "/b").c_str(), &after)), kOk);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(GetXattr(obj_ + "/b", xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(obj_ + "/v", "user.tag"), "t");
  EXPECT_EQ(ListDir(obj_).names, (std::vector<std::string>{"b", "v"}));
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "2");
}

TEST_F(RenameTest, RenameAcrossObjectsOrIntoTheRootFailsWithExdev) {
  ASSERT_EQ(WriteFile(obj_ + "/a", "stays"), kOk);
  EXPECT_EQ(Rename(obj_ + "/a", other_ + "/a"), Err(EXDEV));
  EXPECT_EQ(Rename(obj_ + "/a", Path("a")), Err(EXDEV));
  EXPECT_EQ(ReadFile(obj_ + "/a"), "stays");
  EXPECT_TRUE(ListDir(other_).names.empty());
  EXPECT_EQ(ListDir(Path("")).names, (std::vector<std::string>{"obj", "other"}));
}

TEST_F(RenameTest, RenameOfAnEntryInWriteStateFailsWithEbusy) {
  Fd writer = Open(obj_ + "/w", O_WRONLY | O_CREAT);
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(WriteAll(writer.get(), "pending"), kOk);
  EXPECT_EQ(Rename(obj_ + "/w", obj_ + "/x"), Err(EBUSY));
  ASSERT_EQ(writer.Close(), kOk);
  EXPECT_EQ(ReadFile(obj_ + "/w"), "pending");
  EXPECT_EQ(StatErr(obj_ + "/x"), Err(ENOENT));
}

TEST_F(RenameTest, RenameOntoACommittedEntryReplacesIt) {
  ASSERT_EQ(WriteFile(obj_ + "/old", "old bytes"), kOk);
  ASSERT_EQ(WriteFile(obj_ + "/new", "new bytes"), kOk);
  Fd reader = Open(obj_ + "/old", O_RDONLY);
  ASSERT_TRUE(reader.ok());

  ASSERT_EQ(Rename(obj_ + "/new", obj_ + "/old"), kOk);
  EXPECT_EQ(ReadFile(obj_ + "/old"), "new bytes");
  EXPECT_EQ(StatErr(obj_ + "/new"), Err(ENOENT));
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"old"});
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
  // The replaced entry lives on for its reader.
  EXPECT_EQ(ReadFd(reader.get()), "old bytes");
  EXPECT_EQ(FGetXattr(reader.get(), xattr::kState), "zombie");
}

TEST_F(RenameTest, NoReplaceIsHonouredAndExchangeIsEinval) {
  ASSERT_EQ(WriteFile(obj_ + "/a", "A"), kOk);
  ASSERT_EQ(WriteFile(obj_ + "/b", "B"), kOk);
  EXPECT_EQ(Rename(obj_ + "/a", obj_ + "/b", RENAME_NOREPLACE), Err(EEXIST));
  EXPECT_EQ(Rename(obj_ + "/a", obj_ + "/b", RENAME_EXCHANGE), Err(EINVAL));
  EXPECT_EQ(ReadFile(obj_ + "/a"), "A");
  EXPECT_EQ(ReadFile(obj_ + "/b"), "B");
  EXPECT_EQ(Rename(obj_ + "/a", obj_ + "/c", RENAME_NOREPLACE), kOk);
  EXPECT_EQ(ReadFile(obj_ + "/c"), "A");
}

TEST_F(RenameTest, LinkSymlinkAndMknodInAnObjectFailWithEperm) {
  ASSERT_EQ(WriteFile(obj_ + "/a", "A"), kOk);
  EXPECT_EQ(ErrOf(::link((obj_ + "/a").c_str(), (obj_ + "/hard").c_str())), Err(EPERM));
  EXPECT_EQ(ErrOf(::link((obj_ + "/a").c_str(), (other_ + "/hard").c_str())), Err(EPERM));
  EXPECT_EQ(ErrOf(::symlink("a", (obj_ + "/soft").c_str())), Err(EPERM));
  EXPECT_EQ(ErrOf(::mknod((obj_ + "/reg").c_str(), S_IFREG | 0644, 0)), Err(EPERM));
  EXPECT_EQ(ErrOf(::mknod((obj_ + "/chr").c_str(), S_IFCHR | 0600, ::makedev(1, 3))), Err(EPERM));
  EXPECT_EQ(ErrOf(::mkfifo((obj_ + "/fifo").c_str(), 0600)), Err(EPERM));
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"a"});
  EXPECT_EQ(ReadFile(obj_ + "/a"), "A");
}

}  // namespace
}  // namespace smos::test
