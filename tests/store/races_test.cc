// Opens that race with a rename, an unlink or a create of their name. The kernel opens the
// inode that its path walk found, and walks again once if the open answers ESTALE; these tests
// play that walk (a lookup, then an open of what it found) and the other process's change in
// between. A truncating open must not need a second ESTALE where the store can help it, and
// must never leave a hidden entry behind.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

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

TEST_F(StoreRacesTest, AReplaceWhoseNameWasRenamedAwayLeavesNothingBehind) {
  const Ino obj = MakeObject("o");
  const Ino walked = Put(obj, "n", "first");  // the writer's walk of "n" found this version
  ASSERT_EQ(store().rename(obj, "n", obj, "m", 0, Other()), 0);
  OpenFile writer;
  // A replace of the version it reached, now named "m": ESTALE, with a new version of "m"
  // waiting for this thread.
  ASSERT_EQ(store().open(walked, O_WRONLY | O_TRUNC, Me(), &writer), ESTALE);
  // The retry walks "n", which is gone: the version made for "m" waits for nobody.
  EXPECT_EQ(Walk(store(), obj, "n", Me()), 0u);
  EXPECT_EQ(Walk(store(), obj, "m", Me()), walked) << "the thread sees an empty new version";
  EXPECT_EQ(Xattr(obj, xattr::kBytes), "5");
  ASSERT_EQ(store().unlink(obj, "m", Me()), 0);
  EXPECT_EQ(store().rmdir(kRootIno, "o"), 0);
}

TEST_F(StoreRacesTest, ATruncatingOpenOfAVersionFreedSinceReplacesTheNameMadeAnew) {
  const Ino obj = MakeObject("o");
  const Ino walked = Put(obj, "n", "first");
  Attr known;  // the kernel's lookup, whose reference it keeps: it may open the inode later
  ASSERT_EQ(store().lookup(obj, "n", Me(), &known), 0);
  ASSERT_EQ(store().unlink(obj, "n", Other()), 0);  // freed: nobody holds it
  EXPECT_TRUE(Gone(walked));
  const Ino made_anew = PutByOther(obj, "n", "second");
  OpenFile writer;
  ASSERT_EQ(store().open(walked, O_WRONLY | O_TRUNC, Me(), &writer), ESTALE);
  const Ino retried = Walk(store(), obj, "n", Me());
  ASSERT_NE(retried, 0u);
  EXPECT_NE(retried, made_anew);
  ASSERT_EQ(store().open(retried, O_WRONLY | O_TRUNC, Me(), &writer), 0)
      << "the retry would need a second ESTALE, which the kernel does not retry";
  ASSERT_EQ(Write(writer.fh, 0, "third"), 0);
  EXPECT_EQ(ContentsOf(made_anew, Other()), "second");  // until the commit
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(ContentsOf(Walk(store(), obj, "n", Other()), Other()), "third");
  EXPECT_EQ(Listing(obj), Names{"n"});
  // A read-only open of it is just sent back.
  OpenFile reader;
  EXPECT_EQ(store().open(walked, O_RDONLY, Me(), &reader), ESTALE);
}

TEST_F(StoreRacesTest, ATruncatingOpenOfAnUnlinkedVersionReplacesTheNameMadeAnew) {
  const Ino obj = MakeObject("o");
  const Ino walked = Put(obj, "n", "first");
  const std::uint64_t holder = OpenRead(walked, Other());  // a zombie, once unlinked
  ASSERT_EQ(store().unlink(obj, "n", Other()), 0);
  PutByOther(obj, "n", "second");
  OpenFile writer;
  ASSERT_EQ(store().open(walked, O_WRONLY | O_TRUNC, Me(), &writer), ESTALE);
  const Ino retried = Walk(store(), obj, "n", Me());
  ASSERT_EQ(store().open(retried, O_WRONLY | O_TRUNC, Me(), &writer), 0);
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(ContentsOf(Walk(store(), obj, "n", Other()), Other()), "");
  ASSERT_EQ(store().release(holder), 0);
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
  // The kernel checked only the object's permission for the create: a caller that may not
  // write the entry is sent back, and the kernel's retry checks the entry's.
  const Caller stranger{4242, 4242, 0};  // pid 0: /proc shows no groups nor capabilities
  EXPECT_EQ(store().create(obj, "n", 0644, O_CREAT | O_WRONLY | O_TRUNC, stranger, &attr, &writer),
            ESTALE);
}

// A create that finds the name committed, and opens it, answers with its inode: the kernel
// takes a reference as for a lookup, so a later replace tells the kernel to drop the name.
TEST_F(StoreRacesTest, ACreateThatOpensACommittedNameCountsTheKernelsReference) {
  const Ino obj = MakeObject("o");
  const Ino committed = Put(obj, "n", "first");  // the fixture drops its references
  std::vector<std::string> told;
  store().set_name_listener([&](Ino parent, const std::string& name) {
    if (parent == obj) told.push_back(name);
  });
  Attr attr;
  OpenFile reader;
  ASSERT_EQ(store().create(obj, "n", 0644, O_CREAT | O_RDONLY, Me(), &attr, &reader), 0);
  EXPECT_EQ(attr.ino, committed);
  ASSERT_EQ(store().release(reader.fh), 0);
  PutByOther(obj, "n", "second");
  EXPECT_EQ(told, std::vector<std::string>{"n"});
  store().set_name_listener(nullptr);
  store().forget(committed, 1);  // the kernel lets the old version go
  EXPECT_TRUE(Gone(committed));
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
