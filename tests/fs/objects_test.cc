// The root directory and objects: what may live in the root, mkdir/rmdir/rename of objects,
// and the object attributes.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

using ObjectsTest = MountTest;

TEST_F(ObjectsTest, RootRefusesFilesLinksDevicesAndFifos) {
  std::string obj = MakeObject("obj");
  ASSERT_EQ(WriteFile(obj + "/e", "bytes"), kOk);

  EXPECT_EQ(OpenErr(Path("file"), O_WRONLY | O_CREAT), Err(EPERM));
  EXPECT_EQ(OpenErr(Path("file"), O_RDWR | O_CREAT | O_EXCL), Err(EPERM));
  EXPECT_EQ(ErrOf(::symlink("obj", Path("link").c_str())), Err(EPERM));
  EXPECT_EQ(ErrOf(::mknod(Path("dev").c_str(), S_IFCHR | 0600, ::makedev(1, 3))), Err(EPERM));
  EXPECT_EQ(ErrOf(::mknod(Path("reg").c_str(), S_IFREG | 0600, 0)), Err(EPERM));
  EXPECT_EQ(ErrOf(::mkfifo(Path("fifo").c_str(), 0600)), Err(EPERM));
  EXPECT_EQ(ErrOf(::link((obj + "/e").c_str(), Path("hard").c_str())), Err(EPERM));

  NameList root = ListDir(Path(""));
  EXPECT_EQ(root.err, kOk);
  EXPECT_EQ(root.names, std::vector<std::string>{"obj"});
}

TEST_F(ObjectsTest, MkdirCreatesAnObjectWithDefaultSettings) {
  std::string obj = Path("frames");
  ASSERT_EQ(ErrOf(::mkdir(obj.c_str(), 0755)), kOk);

  struct stat st;
  ASSERT_EQ(ErrOf(::stat(obj.c_str(), &st)), kOk);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(GetXattr(obj, xattr::kCapacity), "1024");
  EXPECT_EQ(GetXattr(obj, xattr::kBlockSize), "1073741824");
  EXPECT_EQ(GetXattr(obj, xattr::kCommit), "close");
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "0");
  EXPECT_EQ(GetXattr(obj, xattr::kBytes), "0");
  NameList names = ListDir(obj);
  EXPECT_EQ(names.err, kOk);
  EXPECT_TRUE(names.names.empty());
  EXPECT_EQ(ListDir(Path("")).names, std::vector<std::string>{"frames"});
}

TEST_F(ObjectsTest, MkdirOfAnExistingObjectFailsWithEexist) {
  std::string obj = MakeObject("obj", {{xattr::kCapacity, "5"}});
  ASSERT_EQ(WriteFile(obj + "/e", "kept"), kOk);

  EXPECT_EQ(ErrOf(::mkdir(obj.c_str(), 0755)), Err(EEXIST));
  // Nothing of the existing object was touched.
  EXPECT_EQ(ReadFile(obj + "/e"), "kept");
  EXPECT_EQ(GetXattr(obj, xattr::kCapacity), "5");
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "1");
}

TEST_F(ObjectsTest, MkdirInsideAnObjectFailsWithEperm) {
  std::string obj = MakeObject("obj");
  EXPECT_EQ(ErrOf(::mkdir((obj + "/nested").c_str(), 0755)), Err(EPERM));
  EXPECT_TRUE(ListDir(obj).names.empty());
}

TEST_F(ObjectsTest, MissingObjectsAreEnoent) {
  EXPECT_EQ(StatErr(Path("nope")), Err(ENOENT));
  EXPECT_EQ(OpenErr(Path("nope/e"), O_WRONLY | O_CREAT), Err(ENOENT));
  EXPECT_EQ(ErrOf(::rmdir(Path("nope").c_str())), Err(ENOENT));
  EXPECT_EQ(GetXattr(Path("nope"), xattr::kCapacity).err, Err(ENOENT));
}

TEST_F(ObjectsTest, NamesLongerThan255BytesFailWithEnametoolong) {
  std::string longest(255, 'n');
  std::string too_long(256, 'n');
  EXPECT_EQ(ErrOf(::mkdir(Path(too_long).c_str(), 0755)), Err(ENAMETOOLONG));
  ASSERT_EQ(ErrOf(::mkdir(Path(longest).c_str(), 0755)), kOk);
  EXPECT_EQ(WriteFile(Path(longest + "/" + too_long), "x"), Err(ENAMETOOLONG));
  EXPECT_EQ(WriteFile(Path(longest + "/" + longest), "x"), kOk);
  EXPECT_EQ(ReadFile(Path(longest + "/" + longest)), "x");
}

TEST_F(ObjectsTest, RmdirOfANonEmptyObjectFailsWithEnotemptyAndRmRWorks) {
  std::string obj = MakeObject("obj");
  ASSERT_EQ(WriteFile(obj + "/a", "alpha"), kOk);
  ASSERT_EQ(WriteFile(obj + "/b", "beta"), kOk);

  EXPECT_EQ(ErrOf(::rmdir(obj.c_str())), Err(ENOTEMPTY));
  EXPECT_EQ(ReadFile(obj + "/a"), "alpha");
  EXPECT_EQ(ReadFile(obj + "/b"), "beta");

  EXPECT_EQ(RemoveTree(obj), kOk);
  EXPECT_EQ(StatErr(obj), Err(ENOENT));
  EXPECT_TRUE(ListDir(Path("")).names.empty());
  // The name is free again, and the new object starts empty.
  ASSERT_EQ(ErrOf(::mkdir(obj.c_str(), 0755)), kOk);
  EXPECT_TRUE(ListDir(obj).names.empty());
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "0");
}

TEST_F(ObjectsTest, RmdirWithAnEntryInWriteStateFailsWithEnotempty) {
  std::string obj = MakeObject("obj");
  Fd writer = Open(obj + "/pending", O_WRONLY | O_CREAT);
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(WriteAll(writer.get(), "half"), kOk);

  EXPECT_EQ(ErrOf(::rmdir(obj.c_str())), Err(ENOTEMPTY));
  ASSERT_EQ(writer.Close(), kOk);
  EXPECT_EQ(ReadFile(obj + "/pending"), "half");
}

TEST_F(ObjectsTest, RmdirIsNotBlockedByZombies) {
  std::string obj = MakeObject("obj");
  ASSERT_EQ(WriteFile(obj + "/e", "still readable"), kOk);
  Fd reader = Open(obj + "/e", O_RDONLY);
  ASSERT_TRUE(reader.ok());
  ASSERT_EQ(ErrOf(::unlink((obj + "/e").c_str())), kOk);

  EXPECT_EQ(ErrOf(::rmdir(obj.c_str())), kOk);
  EXPECT_EQ(StatErr(obj), Err(ENOENT));
  EXPECT_EQ(ReadFd(reader.get()), "still readable");
}

TEST_F(ObjectsTest, RenameOfAnObjectKeepsItsEntriesAndSettings) {
  std::string old_path = MakeObject("old", {{xattr::kCapacity, "9"}, {"user.note", "n"}});
  ASSERT_EQ(WriteFile(old_path + "/e", "payload"), kOk);
  struct stat before;
  ASSERT_EQ(ErrOf(::stat(old_path.c_str(), &before)), kOk);

  std::string new_path = Path("new");
  ASSERT_EQ(ErrOf(::rename(old_path.c_str(), new_path.c_str())), kOk);

  EXPECT_EQ(StatErr(old_path), Err(ENOENT));
  struct stat after;
  ASSERT_EQ(ErrOf(::stat(new_path.c_str(), &after)), kOk);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(ReadFile(new_path + "/e"), "payload");
  EXPECT_EQ(GetXattr(new_path, xattr::kCapacity), "9");
  EXPECT_EQ(GetXattr(new_path, "user.note"), "n");
  EXPECT_EQ(ListDir(Path("")).names, std::vector<std::string>{"new"});
}

TEST_F(ObjectsTest, RenameOntoAnEmptyObjectReplacesIt) {
  std::string src = MakeObject("src");
  std::string dst = MakeObject("dst");
  ASSERT_EQ(WriteFile(src + "/e", "moved"), kOk);

  ASSERT_EQ(ErrOf(::rename(src.c_str(), dst.c_str())), kOk);
  EXPECT_EQ(ReadFile(dst + "/e"), "moved");
  EXPECT_EQ(ListDir(Path("")).names, std::vector<std::string>{"dst"});
}

TEST_F(ObjectsTest, RenameOntoANonEmptyObjectFailsWithEnotempty) {
  std::string src = MakeObject("src");
  std::string dst = MakeObject("dst");
  ASSERT_EQ(WriteFile(src + "/a", "from src"), kOk);
  ASSERT_EQ(WriteFile(dst + "/b", "from dst"), kOk);

  EXPECT_EQ(ErrOf(::rename(src.c_str(), dst.c_str())), Err(ENOTEMPTY));
  EXPECT_EQ(ReadFile(src + "/a"), "from src");
  EXPECT_EQ(ReadFile(dst + "/b"), "from dst");
  EXPECT_EQ(ListDir(Path("")).names, (std::vector<std::string>{"dst", "src"}));
}

TEST_F(ObjectsTest, SettingsCanBeChangedBeforeTheFirstEntry) {
  std::string obj = MakeObject("obj");
  EXPECT_EQ(SetXattr(obj, xattr::kCapacity, "64"), kOk);
  EXPECT_EQ(SetXattr(obj, xattr::kBlockSize, "65536"), kOk);
  EXPECT_EQ(SetXattr(obj, xattr::kCommit, "explicit"), kOk);
  EXPECT_EQ(GetXattr(obj, xattr::kCapacity), "64");
  EXPECT_EQ(GetXattr(obj, xattr::kBlockSize), "65536");
  EXPECT_EQ(GetXattr(obj, xattr::kCommit), "explicit");
  EXPECT_EQ(SetXattr(obj, xattr::kCommit, "close"), kOk);
  EXPECT_EQ(GetXattr(obj, xattr::kCommit), "close");
}

TEST_F(ObjectsTest, CapacityAndBlockSizeAreBusyOnceTheFirstEntryExists) {
  std::string obj = MakeObject("obj", {{xattr::kCapacity, "8"}, {xattr::kBlockSize, "4096"}});
  Fd writer = Open(obj + "/first", O_WRONLY | O_CREAT);
  ASSERT_TRUE(writer.ok());
  // Already while the first entry is being written.
  EXPECT_EQ(SetXattr(obj, xattr::kCapacity, "16"), Err(EBUSY));
  EXPECT_EQ(SetXattr(obj, xattr::kBlockSize, "8192"), Err(EBUSY));
  ASSERT_EQ(writer.Close(), kOk);

  EXPECT_EQ(SetXattr(obj, xattr::kCapacity, "16"), Err(EBUSY));
  EXPECT_EQ(SetXattr(obj, xattr::kBlockSize, "8192"), Err(EBUSY));
  EXPECT_EQ(GetXattr(obj, xattr::kCapacity), "8");
  EXPECT_EQ(GetXattr(obj, xattr::kBlockSize), "4096");
}

TEST_F(ObjectsTest, MalformedSettingsFailWithEinval) {
  std::string obj = MakeObject("obj", {{xattr::kCapacity, "12"}, {xattr::kBlockSize, "8192"}});
  for (const char* bad : {"", "abc", "-1", "12abc", "1.5", "99999999999999999999999"}) {
    EXPECT_EQ(SetXattr(obj, xattr::kCapacity, bad), Err(EINVAL)) << "capacity '" << bad << "'";
    EXPECT_EQ(SetXattr(obj, xattr::kBlockSize, bad), Err(EINVAL)) << "block_size '" << bad << "'";
  }
  for (const char* bad : {"", "sometimes", "CLOSE!", "idle"}) {
    EXPECT_EQ(SetXattr(obj, xattr::kCommit, bad), Err(EINVAL)) << "commit '" << bad << "'";
  }
  EXPECT_EQ(GetXattr(obj, xattr::kCapacity), "12");
  EXPECT_EQ(GetXattr(obj, xattr::kBlockSize), "8192");
  EXPECT_EQ(GetXattr(obj, xattr::kCommit), "close");
}

TEST_F(ObjectsTest, ReadOnlyAndUnknownSmosAttributesFailWithEperm) {
  std::string obj = MakeObject("obj");
  EXPECT_EQ(SetXattr(obj, xattr::kEntries, "5"), Err(EPERM));
  EXPECT_EQ(SetXattr(obj, xattr::kBytes, "5"), Err(EPERM));
  EXPECT_EQ(SetXattr(obj, "user.smos.no_such_thing", "1"), Err(EPERM));
  EXPECT_EQ(SetXattr(obj, xattr::kState, "idle"), Err(EPERM));
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "0");
  EXPECT_EQ(GetXattr(obj, xattr::kBytes), "0");
}

TEST_F(ObjectsTest, EntriesCountsCommittedEntriesAndBytesTheMemoryInUse) {
  std::string obj = MakeObject("obj");
  ASSERT_EQ(WriteFile(obj + "/a", Pattern(4096, 1)), kOk);
  ASSERT_EQ(WriteFile(obj + "/b", Pattern(8192, 2)), kOk);
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "2");
  EXPECT_EQ(GetXattr(obj, xattr::kBytes), "12288");

  // An entry in write state uses memory but is not committed.
  Fd writer = Open(obj + "/c", O_WRONLY | O_CREAT);
  ASSERT_TRUE(writer.ok());
  ASSERT_EQ(WriteAll(writer.get(), Pattern(4096, 3)), kOk);
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "2");
  EXPECT_EQ(GetXattr(obj, xattr::kBytes), "16384");
  ASSERT_EQ(writer.Close(), kOk);
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "3");

  ASSERT_EQ(ErrOf(::unlink((obj + "/b").c_str())), kOk);
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "2");
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj, xattr::kBytes) == "8192"; }))
      << GetXattr(obj, xattr::kBytes).value;
}

TEST_F(ObjectsTest, UserAttributesOnObjectsCanBeSetAnyTime) {
  std::string obj = MakeObject("obj");
  EXPECT_EQ(SetXattr(obj, "user.before", "1"), kOk);
  ASSERT_EQ(WriteFile(obj + "/e", "x"), kOk);
  EXPECT_EQ(SetXattr(obj, "user.after", "2"), kOk);
  EXPECT_EQ(SetXattr(obj, "user.before", "changed"), kOk);
  EXPECT_EQ(GetXattr(obj, "user.before"), "changed");
  EXPECT_EQ(GetXattr(obj, "user.after"), "2");
  EXPECT_EQ(RemoveXattr(obj, "user.after"), kOk);
  EXPECT_EQ(GetXattr(obj, "user.after").err, Err(ENODATA));

  NameList names = ListXattr(obj);
  EXPECT_EQ(names.err, kOk);
  EXPECT_TRUE(Contains(names.names, "user.before"));
  EXPECT_FALSE(Contains(names.names, "user.after"));
}

class ObjectTableTest : public MountTest {
 protected:
  std::vector<std::string> DaemonArgs() const override { return {"--max-objects=3"}; }
};

TEST_F(ObjectTableTest, FullObjectTableFailsWithEnospc) {
  for (const char* name : {"a", "b", "c"}) {
    ASSERT_EQ(ErrOf(::mkdir(Path(name).c_str(), 0755)), kOk) << name;
  }
  ASSERT_EQ(WriteFile(Path("a/e"), "kept"), kOk);
  EXPECT_EQ(ErrOf(::mkdir(Path("d").c_str(), 0755)), Err(ENOSPC));
  EXPECT_EQ(ListDir(Path("")).names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ReadFile(Path("a/e")), "kept");

  ASSERT_EQ(ErrOf(::rmdir(Path("b").c_str())), kOk);
  EXPECT_EQ(ErrOf(::mkdir(Path("d").c_str(), 0755)), kOk);
}

}  // namespace
}  // namespace smos::test
