// The namespace: objects in the root, entries in objects, and renames.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include "store_fixture.h"

namespace smos::test {
namespace {

using StoreNamesTest = StoreTest;

TEST_F(StoreNamesTest, MkdirMakesAnObjectInTheRoot) {
  Attr attr;
  ASSERT_EQ(store().mkdir(kRootIno, "frames", 0750, Me(), &attr), 0);
  EXPECT_EQ(attr.mode, S_IFDIR | 0750u);
  EXPECT_EQ(attr.uid, getuid());
  EXPECT_EQ(InoOf(kRootIno, "frames", Other()), attr.ino);
  EXPECT_EQ(Listing(kRootIno), Names{"frames"});
  EXPECT_EQ(store().mkdir(kRootIno, "frames", 0755, Me(), &attr), EEXIST);
  EXPECT_EQ(store().mkdir(kRootIno, std::string(256, 'n'), 0755, Me(), &attr), ENAMETOOLONG);
}

TEST_F(StoreNamesTest, ObjectsDoNotNest) {
  Ino obj = MakeObject("o");
  Attr attr;
  EXPECT_EQ(store().mkdir(obj, "inner", 0755, Me(), &attr), EPERM);
  EXPECT_EQ(Listing(obj), Names{});
}

TEST_F(StoreNamesTest, TheRootHoldsNoEntries) {
  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(kRootIno, "file", 0644, kCreateFlags, Me(), &attr, &file), EPERM);
  EXPECT_EQ(Listing(kRootIno), Names{});
}

TEST_F(StoreNamesTest, EntryNamesAreAtMost255Bytes) {
  Ino obj = MakeObject("o");
  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(obj, std::string(256, 'n'), 0644, kCreateFlags, Me(), &attr, &file),
            ENAMETOOLONG);
  EXPECT_NE(Put(obj, std::string(255, 'n'), "x"), 0u);
  EXPECT_EQ(Listing(obj), Names{std::string(255, 'n')});
  EXPECT_EQ(store().rename(obj, std::string(255, 'n'), obj, std::string(256, 'm'), 0, Me()),
            ENAMETOOLONG);
  EXPECT_EQ(store().rename(kRootIno, "o", kRootIno, std::string(256, 'p'), 0, Me()),
            ENAMETOOLONG);
  EXPECT_EQ(Listing(obj), Names{std::string(255, 'n')});
  EXPECT_EQ(ContentsOf(InoOf(obj, std::string(255, 'n'), Other()), Other()), "x");
  EXPECT_EQ(Listing(kRootIno), Names{"o"});
}

TEST_F(StoreNamesTest, RmdirOfANonEmptyObjectFailsWithEnotempty) {
  Ino obj = MakeObject("o");
  ASSERT_NE(Put(obj, "e", "x"), 0u);
  EXPECT_EQ(store().rmdir(kRootIno, "o"), ENOTEMPTY);
  ASSERT_EQ(store().unlink(obj, "e", Me()), 0);

  std::uint64_t fh = Create(obj, "pending");
  EXPECT_EQ(store().rmdir(kRootIno, "o"), ENOTEMPTY) << "a write entry counts";
  ASSERT_EQ(store().release(fh), 0);
  ASSERT_EQ(store().unlink(obj, "pending", Me()), 0);

  ASSERT_EQ(store().rmdir(kRootIno, "o"), 0);
  EXPECT_EQ(InoOf(kRootIno, "o", Me()), 0u);
  EXPECT_EQ(store().rmdir(kRootIno, "o"), ENOENT);
}

TEST_F(StoreNamesTest, AZombieDoesNotBlockRmdirAndOutlivesItsObject) {
  Ino obj = MakeObject("o");
  Ino ino = Put(obj, "e", "still here");
  std::uint64_t reader = OpenRead(ino, Other());
  ASSERT_EQ(store().unlink(obj, "e", Me()), 0);
  ASSERT_EQ(store().rmdir(kRootIno, "o"), 0);
  ASSERT_NE(MakeObject("o2"), 0u);  // may take the removed object's record

  EXPECT_EQ(Contents(reader), "still here");
  EXPECT_EQ(Xattr(ino, xattr::kState), "zombie");
  ASSERT_EQ(store().release(reader), 0);
  EXPECT_EQ(store().stats().memory_used, 0u);
}

TEST_F(StoreNamesTest, AnEntryRenamesWithinItsObject) {
  Ino obj = MakeObject("o");
  Ino ino = Put(obj, "old", "bytes");
  ASSERT_EQ(store().rename(obj, "old", obj, "new", 0, Me()), 0);
  EXPECT_EQ(InoOf(obj, "old", Other()), 0u);
  EXPECT_EQ(InoOf(obj, "new", Other()), ino);
  EXPECT_EQ(Listing(obj), Names{"new"});
  EXPECT_EQ(ContentsOf(ino, Other()), "bytes");
  EXPECT_EQ(store().rename(obj, "old", obj, "other", 0, Me()), ENOENT);
}

TEST_F(StoreNamesTest, RenameOntoACommittedEntryReplacesIt) {
  Ino obj = MakeObject("o");
  Ino source = Put(obj, "source", "new");
  Ino target = Put(obj, "target", "old");
  std::uint64_t reader = OpenRead(target, Other());
  ASSERT_EQ(store().rename(obj, "source", obj, "target", 0, Me()), 0);
  EXPECT_EQ(InoOf(obj, "target", Other()), source);
  EXPECT_EQ(Listing(obj), Names{"target"});
  EXPECT_EQ(Xattr(target, xattr::kState), "zombie");
  EXPECT_EQ(Contents(reader), "old");
  ASSERT_EQ(store().release(reader), 0);
  EXPECT_EQ(store().stats().memory_used, 3u);
}

TEST_F(StoreNamesTest, RenameNoreplaceKeepsAnExistingTarget) {
  Ino obj = MakeObject("o");
  Ino source = Put(obj, "source", "s");
  Ino target = Put(obj, "target", "t");
  EXPECT_EQ(store().rename(obj, "source", obj, "target", RENAME_NOREPLACE, Me()), EEXIST);
  EXPECT_EQ(InoOf(obj, "source", Other()), source);
  EXPECT_EQ(InoOf(obj, "target", Other()), target);
  EXPECT_EQ(store().rename(obj, "source", obj, "free", RENAME_NOREPLACE, Me()), 0);
  EXPECT_EQ(store().rename(obj, "free", obj, "target", RENAME_EXCHANGE, Me()), EINVAL);
}

TEST_F(StoreNamesTest, AnEntryInWriteStateCannotBeRenamed) {
  Ino obj = MakeObject("o");
  std::uint64_t fh = Create(obj, "pending");
  EXPECT_EQ(store().rename(obj, "pending", obj, "other", 0, Me()), EBUSY);
  EXPECT_EQ(store().rename(obj, "pending", obj, "other", 0, Other()), ENOENT);
  ASSERT_EQ(store().release(fh), 0);
  EXPECT_NE(InoOf(obj, "pending", Other()), 0u);
}

TEST_F(StoreNamesTest, AnEntryCannotLeaveItsObject) {
  Ino a = MakeObject("a");
  Ino b = MakeObject("b");
  Ino ino = Put(a, "e", "x");
  EXPECT_EQ(store().rename(a, "e", b, "e", 0, Me()), EXDEV);
  EXPECT_EQ(store().rename(a, "e", kRootIno, "e", 0, Me()), EXDEV) << "smos(7): into the root";
  EXPECT_EQ(InoOf(a, "e", Other()), ino);
  EXPECT_EQ(Listing(b), Names{});
  EXPECT_EQ(Listing(kRootIno), (Names{"a", "b"}));
}

TEST_F(StoreNamesTest, AnObjectRenamesWithinTheRoot) {
  Ino obj = MakeObject("old");
  Ino ino = Put(obj, "e", "x");
  ASSERT_EQ(store().rename(kRootIno, "old", kRootIno, "new", 0, Me()), 0);
  EXPECT_EQ(InoOf(kRootIno, "old", Me()), 0u);
  EXPECT_EQ(InoOf(kRootIno, "new", Me()), obj);
  EXPECT_EQ(InoOf(obj, "e", Other()), ino);
  EXPECT_EQ(Listing(kRootIno), Names{"new"});
  Attr attr;
  EXPECT_EQ(store().mkdir(kRootIno, "old", 0755, Me(), &attr), 0) << "the old name is free";
}

TEST_F(StoreNamesTest, AnObjectRenameReplacesOnlyAnEmptyObject) {
  Ino source = MakeObject("source");
  Ino full = MakeObject("full");
  ASSERT_NE(Put(full, "e", "x"), 0u);
  ASSERT_NE(MakeObject("empty"), 0u);
  EXPECT_EQ(store().rename(kRootIno, "source", kRootIno, "full", 0, Me()), ENOTEMPTY);
  EXPECT_EQ(store().rename(kRootIno, "source", kRootIno, "empty", RENAME_NOREPLACE, Me()),
            EEXIST);
  ASSERT_EQ(store().rename(kRootIno, "source", kRootIno, "empty", 0, Me()), 0);
  EXPECT_EQ(InoOf(kRootIno, "empty", Me()), source);
  EXPECT_EQ(Listing(kRootIno), (Names{"empty", "full"}));
}

}  // namespace
}  // namespace smos::test
