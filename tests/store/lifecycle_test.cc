// The four stages of an entry in the default (close) commit mode: write, idle, busy, zombie.
#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <string>
#include <vector>

#include "smos/control.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

class StoreLifecycleTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    if (!HasFatalFailure()) obj_ = MakeObject("frames");
  }

  Ino obj_ = 0;
};

TEST_F(StoreLifecycleTest, AWriteEntryIsVisibleOnlyToItsWriter) {
  Attr attr;
  std::uint64_t fh = Create(obj_, "0", &attr);
  ASSERT_NE(fh, 0u);
  ASSERT_EQ(Write(fh, 0, "hello"), 0);
  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "write");
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), "0");

  Attr seen;
  EXPECT_EQ(store().lookup(obj_, "0", Other(), &seen), ENOENT);
  OpenFile file;
  EXPECT_EQ(store().open(attr.ino, O_RDONLY, Other(), &file), ENOENT);
  EXPECT_EQ(Listing(obj_), Names{});
  EXPECT_EQ(Xattr(obj_, xattr::kEntries), "0");

  ASSERT_EQ(store().lookup(obj_, "0", Me(), &seen), 0);
  EXPECT_EQ(seen.ino, attr.ino);
  EXPECT_EQ(seen.size, 5u);
  EXPECT_FALSE(seen.immutable);
  ASSERT_EQ(store().release(fh), 0);
}

TEST_F(StoreLifecycleTest, AReadWriteCreateMakesAWriteEntryToo) {
  Attr attr;
  OpenFile file;
  ASSERT_EQ(store().create(obj_, "e", 0644, O_CREAT | O_RDWR, Me(), &attr, &file), 0);
  ASSERT_EQ(Write(file.fh, 0, "rw"), 0);
  EXPECT_EQ(Contents(file.fh), "rw");
  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "write");
  ASSERT_EQ(store().release(file.fh), 0);
  EXPECT_EQ(ContentsOf(attr.ino, Other()), "rw");
}

TEST_F(StoreLifecycleTest, ReleaseCommitsTheEntry) {
  Attr attr;
  std::uint64_t fh = Create(obj_, "0", &attr, 0640);
  ASSERT_NE(fh, 0u);
  ASSERT_EQ(Write(fh, 0, "hello"), 0);
  ASSERT_EQ(store().release(fh), 0);

  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "idle");
  EXPECT_EQ(Xattr(attr.ino, xattr::kReaders), "0");
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), "1");
  Attr seen;
  ASSERT_EQ(store().lookup(obj_, "0", Other(), &seen), 0);
  EXPECT_EQ(seen.ino, attr.ino);
  EXPECT_EQ(seen.size, 5u);
  EXPECT_EQ(seen.mode, S_IFREG | 0640u);
  EXPECT_EQ(seen.nlink, 1u);
  EXPECT_TRUE(seen.immutable);
  EXPECT_EQ(Listing(obj_), Names{"0"});
  EXPECT_EQ(Xattr(obj_, xattr::kEntries), "1");
  EXPECT_EQ(ContentsOf(attr.ino, Other()), "hello");
}

TEST_F(StoreLifecycleTest, ReadersMakeAnEntryBusyUntilTheyRelease) {
  Ino ino = Put(obj_, "e", "data");
  ASSERT_NE(ino, 0u);
  std::uint64_t first = OpenRead(ino, Other());
  EXPECT_EQ(Xattr(ino, xattr::kState), "busy");
  EXPECT_EQ(Xattr(ino, xattr::kReaders), "1");
  std::uint64_t second = OpenRead(ino, Me());
  EXPECT_EQ(Xattr(ino, xattr::kReaders), "2");

  ASSERT_EQ(store().release(first), 0);
  EXPECT_EQ(Xattr(ino, xattr::kState), "busy");
  EXPECT_EQ(Xattr(ino, xattr::kReaders), "1");
  ASSERT_EQ(store().release(second), 0);
  EXPECT_EQ(Xattr(ino, xattr::kState), "idle");
  EXPECT_EQ(Xattr(ino, xattr::kReaders), "0");
  EXPECT_EQ(store().release(second), EBADF) << "a handle is released once";
}

// Which is why a pop asks only after the releases sent before it (fs::op_open, pops()).
TEST_F(StoreLifecycleTest, APopSkipsTheEntriesThatReadersHold) {
  Ino held = Put(obj_, "held", "older");
  Put(obj_, "free", "newer");
  std::uint64_t reader = OpenRead(held, Other());
  Attr pop;
  ASSERT_EQ(store().lookup(obj_, control::kPop, Other(), &pop), 0);
  Attr latest;
  ASSERT_EQ(store().lookup(obj_, control::kLatest, Other(), &latest), 0);
  EXPECT_TRUE(store().pops(pop.ino));
  EXPECT_FALSE(store().pops(latest.ino));
  EXPECT_FALSE(store().pops(held));
  EXPECT_FALSE(store().pops(obj_));
  OpenFile popped;
  ASSERT_EQ(store().open(pop.ino, O_RDONLY | O_NONBLOCK, Other(), &popped), 0);
  EXPECT_EQ(Contents(popped.fh), "newer");
  ASSERT_EQ(store().release(popped.fh), 0);
  ASSERT_EQ(store().release(reader), 0);
  ASSERT_EQ(store().lookup(obj_, control::kPop, Other(), &pop), 0);
  ASSERT_EQ(store().open(pop.ino, O_RDONLY | O_NONBLOCK, Other(), &popped), 0);
  EXPECT_EQ(Contents(popped.fh), "older");
  ASSERT_EQ(store().release(popped.fh), 0);
}

// A stopping daemon answers the pops that wait, and those that would wait after that (a ring
// worker may still serve one before the unmount): no pop is left for the kernel to abort.
TEST_F(StoreLifecycleTest, OnceWaitersAreFailedNoPopWaits) {
  Attr pop;
  ASSERT_EQ(store().lookup(obj_, control::kPop, Other(), &pop), 0);
  int answer = -1;
  Store::Waiter waiter{1, nullptr, [&](int err, const OpenFile&) { answer = err; }};
  OpenFile popped;
  ASSERT_EQ(store().open(pop.ino, O_RDONLY, Other(), &popped, &waiter), EINPROGRESS);
  store().fail_all_waiters(ENOTCONN);
  EXPECT_EQ(answer, ENOTCONN);
  Attr later;
  ASSERT_EQ(store().lookup(obj_, control::kPop, Me(), &later), 0);
  Store::Waiter late{2, nullptr, [&](int, const OpenFile&) { ADD_FAILURE() << "it waited"; }};
  EXPECT_EQ(store().open(later.ino, O_RDONLY, Me(), &popped, &late), ENOTCONN);
  EXPECT_EQ(store().open(later.ino, O_RDONLY | O_NONBLOCK, Me(), &popped), EAGAIN);
  Put(obj_, "e", "still served");  // what can be popped still is
  ASSERT_EQ(store().open(later.ino, O_RDONLY, Me(), &popped, &late), 0);
  EXPECT_EQ(Contents(popped.fh), "still served");
  ASSERT_EQ(store().release(popped.fh), 0);
}

TEST_F(StoreLifecycleTest, UnlinkWithoutReadersFreesTheMemoryAtOnce) {
  const std::string data = Pattern(10000, 1);
  Ino ino = Put(obj_, "e", data);
  EXPECT_EQ(store().stats().memory_used, data.size());
  EXPECT_EQ(Xattr(obj_, xattr::kBytes), std::to_string(data.size()));

  ASSERT_EQ(store().unlink(obj_, "e", Other()), 0);
  EXPECT_EQ(InoOf(obj_, "e", Me()), 0u);
  EXPECT_TRUE(Gone(ino));
  EXPECT_EQ(store().stats().memory_used, 0u);
  EXPECT_EQ(Xattr(obj_, xattr::kBytes), "0");
  EXPECT_EQ(store().unlink(obj_, "e", Other()), ENOENT);
}

TEST_F(StoreLifecycleTest, UnlinkWithAReaderLeavesAZombieUntilItsRelease) {
  const std::string data = Pattern(10000, 2);
  Ino ino = Put(obj_, "e", data);
  std::uint64_t reader = OpenRead(ino, Other());
  ASSERT_NE(reader, 0u);

  ASSERT_EQ(store().unlink(obj_, "e", Me()), 0);
  Attr attr;
  EXPECT_EQ(store().lookup(obj_, "e", Other(), &attr), ENOENT);
  EXPECT_EQ(store().lookup(obj_, "e", Me(), &attr), ENOENT);
  EXPECT_EQ(Listing(obj_), Names{});
  EXPECT_EQ(Xattr(obj_, xattr::kEntries), "0");
  EXPECT_EQ(Xattr(ino, xattr::kState), "zombie");
  ASSERT_EQ(GetAttr(ino, &attr), 0);
  EXPECT_EQ(attr.nlink, 0u);
  EXPECT_EQ(Contents(reader), data) << "the reader's handle still reads the bytes";
  EXPECT_EQ(store().stats().memory_used, data.size());
  EXPECT_EQ(Xattr(obj_, xattr::kBytes), std::to_string(data.size()));

  ASSERT_EQ(store().release(reader), 0);
  EXPECT_TRUE(Gone(ino));
  EXPECT_EQ(store().stats().memory_used, 0u);
  EXPECT_EQ(Xattr(obj_, xattr::kBytes), "0");
}

TEST_F(StoreLifecycleTest, TheWriterCanDiscardItsWriteEntry) {
  Attr attr;
  std::uint64_t fh = Create(obj_, "e", &attr);
  ASSERT_EQ(Write(fh, 0, Pattern(4096, 3)), 0);
  ASSERT_EQ(store().unlink(obj_, "e", Me()), 0);
  EXPECT_EQ(InoOf(obj_, "e", Me()), 0u);
  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "zombie");
  IoSpan span;
  EXPECT_EQ(store().prepare_write(fh, 0, 1, &span), EPERM);

  ASSERT_EQ(store().release(fh), 0);
  EXPECT_EQ(InoOf(obj_, "e", Other()), 0u) << "the release of a discarded entry commits nothing";
  EXPECT_EQ(store().stats().memory_used, 0u);
}

// A flush is any close(2) of a descriptor, a duplicate's too: the entry commits at its release,
// the last close. (The channel holds back the requests made after that close until then.)
TEST_F(StoreLifecycleTest, AFlushedEntryStaysPrivateUntilItsRelease) {
  Attr attr;
  std::uint64_t fh = Create(obj_, "e", &attr);
  ASSERT_EQ(Write(fh, 0, "abc"), 0);
  ASSERT_EQ(store().flush(fh, Me()), 0);
  EXPECT_EQ(InoOf(obj_, "e", Me()), attr.ino) << "the writer sees what it writes";
  EXPECT_EQ(InoOf(obj_, "e", Other()), 0u);
  EXPECT_EQ(Listing(obj_), Names{});
  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "write");
  ASSERT_EQ(Write(fh, 3, "def"), 0) << "through a descriptor still open";

  ASSERT_EQ(store().release(fh), 0);
  EXPECT_EQ(InoOf(obj_, "e", Other()), attr.ino);
  EXPECT_EQ(Listing(obj_), Names{"e"});
  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "idle");
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), "1");
  EXPECT_EQ(ContentsOf(attr.ino, Other()), "abcdef");
}

TEST_F(StoreLifecycleTest, TheWriterReadsWhatItWrote) {
  Attr attr;
  std::uint64_t fh = Create(obj_, "e", &attr);
  ASSERT_EQ(Write(fh, 0, "0123456789"), 0);
  ASSERT_EQ(Write(fh, 4, "xy"), 0);
  ASSERT_EQ(Write(fh, 12, "z"), 0);
  EXPECT_EQ(Contents(fh), std::string("0123xy6789\0\0z", 13));
  IoSpan span;
  ASSERT_EQ(store().prepare_read(fh, 11, 100, &span), 0);
  EXPECT_EQ(span.offset, 11u);
  EXPECT_EQ(span.length, 2u) << "reads are clamped to the entry";
  ASSERT_EQ(store().prepare_read(fh, 50, 100, &span), 0);
  EXPECT_EQ(span.length, 0u);
  ASSERT_EQ(store().release(fh), 0);
}

TEST_F(StoreLifecycleTest, AReadOnlyHandleCannotWrite) {
  Ino ino = Put(obj_, "e", "data");
  std::uint64_t reader = OpenRead(ino, Other());
  IoSpan span;
  EXPECT_EQ(store().prepare_write(reader, 0, 1, &span), EBADF);
  ASSERT_EQ(store().release(reader), 0);
}

TEST_F(StoreLifecycleTest, OExclFailsForANameThatIsCommittedOrBeingWritten) {
  ASSERT_NE(Put(obj_, "done", "x"), 0u);
  std::uint64_t pending = Create(obj_, "pending");
  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(obj_, "done", 0644, kCreateFlags | O_EXCL, Other(), &attr, &file),
            EEXIST);
  EXPECT_EQ(store().create(obj_, "pending", 0644, kCreateFlags | O_EXCL, Other(), &attr, &file),
            EEXIST);
  ASSERT_EQ(store().release(pending), 0);
}

}  // namespace
}  // namespace smos::test
