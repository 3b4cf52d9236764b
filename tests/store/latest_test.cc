// .latest: an alias inode per newest entry, which the kernel may cache, and which an open
// checks against the object's newest entry.
#include <fcntl.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "smos/control.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

using StoreLatestTest = StoreTest;

// What lookup(".latest") gives `caller`, as the kernel would keep it (one reference).
Attr LookUpLatest(Store& store, Ino obj, const Caller& caller) {
  Attr attr;
  EXPECT_EQ(store.lookup(obj, control::kLatest, caller, &attr), 0);
  return attr;
}

TEST_F(StoreLatestTest, AnAliasStandsForTheNewestEntryAndMayBeCached) {
  Ino obj = MakeObject("o");
  Put(obj, "a", "first");
  const Ino b = Put(obj, "b", "second");
  const Attr alias = LookUpLatest(store(), obj, Other());
  EXPECT_NE(alias.ino, b) << "an inode of its own";
  EXPECT_TRUE(alias.stable_name);
  EXPECT_TRUE(alias.immutable);
  EXPECT_EQ(alias.size, 6u);
  EXPECT_EQ(ContentsOf(alias.ino, Other()), "second");
  EXPECT_EQ(Xattr(alias.ino, xattr::kSeq), "2");
  EXPECT_EQ(LookUpLatest(store(), obj, Me()).ino, alias.ino) << "one alias while it is newest";
}

TEST_F(StoreLatestTest, AStaleAliasSendsTheOpenBackForTheNewOne) {
  Ino obj = MakeObject("o");
  Put(obj, "a", "first");
  const Attr stale = LookUpLatest(store(), obj, Other());
  Put(obj, "b", "second");

  OpenFile file;
  EXPECT_EQ(store().open(stale.ino, O_RDONLY, Other(), &file), ESTALE);
  const Attr fresh = LookUpLatest(store(), obj, Other());
  EXPECT_NE(fresh.ino, stale.ino);
  EXPECT_EQ(ContentsOf(fresh.ino, Other()), "second");

  // A new open through the stale alias, by another thread, is sent back again.
  EXPECT_EQ(store().open(stale.ino, O_RDONLY, Me(), &file), ESTALE);
}

TEST_F(StoreLatestTest, TheWalkThatCameBackIsServedEvenIfOvertakenAgain) {
  Ino obj = MakeObject("o");
  Put(obj, "a", "first");
  const Attr stale = LookUpLatest(store(), obj, Other());
  Put(obj, "b", "second");
  OpenFile file;
  ASSERT_EQ(store().open(stale.ino, O_RDONLY, Other(), &file), ESTALE);
  const Attr again = LookUpLatest(store(), obj, Other());
  Put(obj, "c", "third");  // between the walk's lookup and its open

  ASSERT_EQ(store().open(again.ino, O_RDONLY, Other(), &file), 0)
      << "the kernel retries only once: ESTALE now would fail the open(2)";
  EXPECT_EQ(Contents(file.fh), "second") << "what was newest during this open(2)";
  ASSERT_EQ(store().release(file.fh), 0);
  EXPECT_EQ(store().open(again.ino, O_RDONLY, Other(), &file), ESTALE)
      << "the next open(2) is a new one";
}

TEST_F(StoreLatestTest, AnAliasKeepsItsEntryUntilTheKernelForgetsIt) {
  Ino obj = MakeObject("o");
  Put(obj, "a", std::string(1000, 'a'));
  const Attr alias = LookUpLatest(store(), obj, Other());
  ASSERT_EQ(store().unlink(obj, "a", Me()), 0);
  EXPECT_EQ(store().stats().memory_used, 1000u) << "the kernel may still stat the alias";
  Attr attr;
  ASSERT_EQ(store().getattr(alias.ino, &attr), 0);
  EXPECT_EQ(attr.nlink, 0u);
  OpenFile file;
  EXPECT_EQ(store().open(alias.ino, O_RDONLY, Other(), &file), ESTALE);

  store().forget(alias.ino, 1);
  EXPECT_EQ(store().stats().memory_used, 0u);
  EXPECT_EQ(store().getattr(alias.ino, &attr), ESTALE);
  EXPECT_EQ(store().lookup(obj, control::kLatest, Other(), &attr), 0) << "an empty object's";
  EXPECT_EQ(store().open(attr.ino, O_RDONLY, Other(), &file), ENOENT);
}

TEST_F(StoreLatestTest, AnEmptyObjectsLatestSendsTheOpenBackOnceAnEntryCommits) {
  Ino obj = MakeObject("o");
  const Attr empty = LookUpLatest(store(), obj, Other());
  EXPECT_EQ(empty.size, 0u);
  EXPECT_FALSE(empty.stable_name);
  OpenFile file;
  EXPECT_EQ(store().open(empty.ino, O_RDONLY, Other(), &file), ENOENT);
  Put(obj, "a", "now");
  EXPECT_EQ(store().open(empty.ino, O_RDONLY, Other(), &file), ESTALE);
}

TEST_F(StoreLatestTest, TheKernelIsToldToDropTheNameWhenTheNewestChanges) {
  Ino obj = MakeObject("o");
  std::vector<std::string> told;
  store().set_name_listener([&](Ino parent, const std::string& name) {
    if (parent == obj) told.push_back(name);
  });
  Put(obj, "a", "1");
  EXPECT_TRUE(told.empty()) << "nothing cached yet";
  LookUpLatest(store(), obj, Other());
  Put(obj, "b", "2");
  EXPECT_EQ(told, std::vector<std::string>{control::kLatest});
  Put(obj, "c", "3");
  EXPECT_EQ(told.size(), 1u) << "once per alias";
  store().set_name_listener(nullptr);
}

}  // namespace
}  // namespace smos::test
