// Opens that race with a rename, an unlink or a create of their name. The kernel opens the
// inode that its path walk found, and walks again once if the open answers ESTALE; these tests
// play that walk (a lookup, then an open of what it found) and the other process's change in
// between, and check that the open ends as on a local filesystem: with the name's current
// version, a new one, or ENOENT; never with ESTALE, and never leaving a hidden entry behind.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "store_fixture.h"

namespace smos::test {
namespace {

class StoreRacesTest : public StoreTest {
 protected:
  // Another process creates, writes and closes `name`: the inode of the version it commits.
  Ino PutByOther(Ino object, const std::string& name, const std::string& data) {
    Attr attr;
    OpenFile file;
    if (int err = store().create(object, name, 0644, O_CREAT | O_WRONLY | O_TRUNC, Other(), &attr,
                                 &file);
        err != 0) {
      ADD_FAILURE() << "create " << name << ": " << ErrName(err);
      return 0;
    }
    EXPECT_EQ(Write(file.fh, 0, data), 0);
    EXPECT_EQ(store().release(file.fh), 0);
    return attr.ino;
  }
};

// The kernel's path walk: the inode of `name` as `caller` finds it (a lookup, and the kernel's
// reference dropped at once, as the fixture's helpers do).
Ino Walk(Store& store, Ino object, const std::string& name, const Caller& caller) {
  Attr attr;
  if (store.lookup(object, name, caller, &attr) != 0) return 0;
  store.forget(attr.ino, 1);
  return attr.ino;
}

TEST_F(StoreRacesTest, ATruncatingOpenThatARenameOvertookReplacesWhatTheNameMeansOnItsRetry) {
  const Ino obj = MakeObject("o");
  const Ino walked = Put(obj, "n", "first");  // the writer's walk of "n" found this version
  ASSERT_EQ(store().rename(obj, "n", obj, "m", 0, Other()), 0);
  const Ino made_anew = PutByOther(obj, "n", "second");
  OpenFile writer;
  // Its open is a replace of the version it reached, now named "m": ESTALE.
  ASSERT_EQ(store().open(walked, O_WRONLY | O_TRUNC, Me(), &writer), ESTALE);
  // The retry walks "n" again: that replace is what it meant.
  const Ino retried = Walk(store(), obj, "n", Me());
  ASSERT_NE(retried, 0u);
  EXPECT_NE(retried, made_anew);
  ASSERT_EQ(store().open(retried, O_WRONLY | O_TRUNC, Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, "third"), 0);
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(ContentsOf(Walk(store(), obj, "n", Other()), Other()), "third");
  EXPECT_EQ(ContentsOf(Walk(store(), obj, "m", Other()), Other()), "first");
  // The replace made for "m" left nothing behind.
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "2");
  ASSERT_EQ(store().unlink(obj, "n", Me()), 0);
  ASSERT_EQ(store().unlink(obj, "m", Me()), 0);
  EXPECT_EQ(store().rmdir(kRootIno, "o"), 0);
}

TEST_F(StoreRacesTest, ATruncatingOpenOfAnUnlinkedVersionReplacesTheNameMadeAnewOnItsRetry) {
  const Ino obj = MakeObject("o");
  const Ino walked = Put(obj, "n", "first");
  ASSERT_EQ(store().unlink(obj, "n", Other()), 0);  // freed: nobody holds it
  OpenFile writer;
  ASSERT_EQ(store().open(walked, O_WRONLY | O_TRUNC, Me(), &writer), ESTALE);
  const Ino made_anew = PutByOther(obj, "n", "second");  // between the open and its retry
  const Ino retried = Walk(store(), obj, "n", Me());
  ASSERT_NE(retried, 0u);
  EXPECT_NE(retried, made_anew);
  ASSERT_EQ(store().open(retried, O_WRONLY | O_TRUNC, Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, "third"), 0);
  EXPECT_EQ(ContentsOf(made_anew, Other()), "second");  // until the commit
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(ContentsOf(Walk(store(), obj, "n", Other()), Other()), "third");
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1");
}

TEST_F(StoreRacesTest, ACreateOfANameCommittedSinceItsLookupReplacesIt) {
  const Ino obj = MakeObject("o");
  const Ino committed = Put(obj, "n", "first");  // after the kernel's lookup found no "n"
  Attr attr;
  OpenFile writer;
  ASSERT_EQ(store().create(obj, "n", 0644, O_CREAT | O_WRONLY | O_TRUNC, Me(), &attr, &writer),
            0);
  EXPECT_NE(attr.ino, committed);
  EXPECT_EQ(attr.size, 0u);
  ASSERT_EQ(Write(writer.fh, 0, "second"), 0);
  EXPECT_EQ(ContentsOf(Walk(store(), obj, "n", Other()), Other()), "first");
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(ContentsOf(Walk(store(), obj, "n", Other()), Other()), "second");
  EXPECT_TRUE(Gone(committed));
  // Without O_TRUNC, such a create is an open of the committed version: EPERM, as for any
  // writable open of one.
  EXPECT_EQ(store().create(obj, "n", 0644, O_CREAT | O_WRONLY, Me(), &attr, &writer), EPERM);
}

TEST_F(StoreRacesTest, AnOpenWhoseRetryFindsTheNameGoneAgainFailsWithEnoent) {
  const Ino obj = MakeObject("o");
  const Ino walked = Put(obj, "n", "first");
  ASSERT_EQ(store().unlink(obj, "n", Other()), 0);
  OpenFile reader;
  ASSERT_EQ(store().open(walked, O_RDONLY, Me(), &reader), ESTALE);
  PutByOther(obj, "n", "second");
  const Ino retried = Walk(store(), obj, "n", Me());
  ASSERT_NE(retried, 0u);
  ASSERT_EQ(store().unlink(obj, "n", Other()), 0);  // before the retry's open
  EXPECT_EQ(store().open(retried, O_RDONLY, Me(), &reader), ENOENT);
  // The next open is a walk of its own: a stale name sends it back again.
  EXPECT_EQ(store().open(retried, O_RDONLY, Me(), &reader), ESTALE);
}

// A redirect waits for its thread's retry; a thread that died before it holds no room.
TEST_F(StoreRacesTest, AReplaceWhoseThreadIsGoneHoldsNoRoom) {
  const Ino obj = MakeObject("o", {{xattr::kCapacity, "2"}});
  const Ino committed = Put(obj, "n", "first");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  const Caller dead{getuid(), getgid(), child};
  OpenFile writer;
  ASSERT_EQ(store().open(committed, O_WRONLY | O_TRUNC, dead, &writer), ESTALE);
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1");  // the redirect is hidden from everyone else
  Attr attr;
  ASSERT_EQ(store().create(obj, "x", 0644, O_CREAT | O_WRONLY, Me(), &attr, &writer), 0)
      << "the dead thread's redirect still held the object's second place";
  ASSERT_EQ(store().release(writer.fh), 0);
  ASSERT_EQ(store().unlink(obj, "n", Me()), 0);
  ASSERT_EQ(store().unlink(obj, "x", Me()), 0);
  EXPECT_EQ(store().rmdir(kRootIno, "o"), 0);
}

}  // namespace
}  // namespace smos::test
