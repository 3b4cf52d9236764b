// Passthrough as the store decides it: which opens get a backing file, and what the kernel's
// rule of one backing file per inode, and no mix with cached opens, asks of the store.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "smos/control.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

// Hands out ids as the kernel would, and remembers which are registered.
class FakeBackingFiles : public Store::BackingFiles {
 public:
  int open(int fd) override {
    if (fd < 0) return -EBADF;
    registered.push_back(++last);
    return last;
  }
  void close(int id) override { std::erase(registered, id); }

  int last = 0;
  std::vector<int> registered;
};

class StorePassthroughTest : public StoreTest {
 protected:
  // Every entry is big enough for passthrough, but in StoreSmallPassthroughTest.
  virtual std::uint64_t MinSize() const { return 0; }
  StoreOptions Options() const override {
    StoreOptions o = StoreTest::Options();
    o.passthrough_min_size = MinSize();
    return o;
  }
  void SetUp() override {
    StoreTest::SetUp();
    store().set_backing_files(&backing_);
  }
  void TearDown() override {
    store().set_backing_files(nullptr);
    StoreTest::TearDown();
  }
  Ino Ticket(Ino obj, const char* name, const Caller& caller) {
    Attr attr;
    EXPECT_EQ(store().lookup(obj, name, caller, &attr), 0);
    return attr.ino;
  }

  FakeBackingFiles backing_;
};

TEST_F(StorePassthroughTest, ReadersOfACommittedEntryShareItsBackingFile) {
  Ino obj = MakeObject("o");
  const Ino e = Put(obj, "e", "bytes");
  OpenFile a, b;
  ASSERT_EQ(store().open(e, O_RDONLY, Other(), &a), 0);
  ASSERT_EQ(store().open(e, O_RDONLY, Me(), &b), 0);
  EXPECT_GT(a.backing_id, 0);
  EXPECT_EQ(b.backing_id, a.backing_id) << "registered once per slot";
  EXPECT_EQ(backing_.registered.size(), 1u);
  ASSERT_EQ(store().release(a.fh), 0);
  ASSERT_EQ(store().release(b.fh), 0);
  ASSERT_EQ(store().unlink(obj, "e", Me()), 0);
  EXPECT_TRUE(backing_.registered.empty()) << "unregistered when the entry is freed";
}

class StoreSmallPassthroughTest : public StorePassthroughTest {
 protected:
  std::uint64_t MinSize() const override { return 8; }
};

TEST_F(StoreSmallPassthroughTest, SmallEntriesAreReadThroughTheDaemon) {
  Ino obj = MakeObject("o");
  const Ino small = Put(obj, "small", "1234567");  // 7 bytes: below the minimum of 8
  const Ino big = Put(obj, "big", "12345678");
  OpenFile a, b;
  ASSERT_EQ(store().open(small, O_RDONLY, Other(), &a), 0);
  ASSERT_EQ(store().open(big, O_RDONLY, Other(), &b), 0);
  EXPECT_EQ(a.backing_id, 0);
  EXPECT_GT(b.backing_id, 0);
  EXPECT_EQ(backing_.registered.size(), 1u);
  ASSERT_EQ(store().release(a.fh), 0);
  ASSERT_EQ(store().release(b.fh), 0);
  // Pops likewise: the small one is popped first, and without a backing file.
  Attr attr;
  ASSERT_EQ(store().lookup(obj, control::kPop, Other(), &attr), 0);
  ASSERT_EQ(store().open(attr.ino, O_RDONLY, Other(), &a), 0);
  EXPECT_EQ(a.backing_id, 0);
  EXPECT_EQ(a.cache_fill.length, 7u) << "a small pop without a backing file fills the cache";
  ASSERT_EQ(store().release(a.fh), 0);
}

TEST_F(StorePassthroughTest, WritersNeverGetOneAndKeepReadersOffIt) {
  Ino obj = MakeObject("o", {{xattr::kCommit, "explicit"}});
  Attr attr;
  const std::uint64_t writer = Create(obj, "e", &attr);
  ASSERT_EQ(Write(writer, 0, "bytes"), 0);
  ASSERT_EQ(SetXattr(attr.ino, xattr::kState, "idle"), 0);
  OpenFile early;
  ASSERT_EQ(store().open(attr.ino, O_RDONLY, Other(), &early), 0);
  EXPECT_EQ(early.backing_id, 0) << "the writer may have mapped the inode: no mix";
  ASSERT_EQ(store().release(writer), 0);
  OpenFile late;
  ASSERT_EQ(store().open(attr.ino, O_RDONLY, Other(), &late), 0);
  EXPECT_EQ(late.backing_id, 0) << "a cached reader is still open";
  ASSERT_EQ(store().release(early.fh), 0);
  ASSERT_EQ(store().release(late.fh), 0);
  OpenFile last;
  ASSERT_EQ(store().open(attr.ino, O_RDONLY, Other(), &last), 0);
  EXPECT_GT(last.backing_id, 0) << "now every open of the inode can be passthrough";
  ASSERT_EQ(store().release(last.fh), 0);
}

TEST_F(StorePassthroughTest, ASecondOpenOfAPopTicketFailsBeforeClaimingAnything) {
  Ino obj = MakeObject("o");
  Put(obj, "a", "1");
  Put(obj, "b", "2");
  const Ino ticket = Ticket(obj, control::kPop, Other());
  OpenFile first;
  ASSERT_EQ(store().open(ticket, O_RDONLY, Other(), &first), 0);
  EXPECT_GT(first.backing_id, 0);
  OpenFile second;
  EXPECT_EQ(store().open(ticket, O_RDONLY, Other(), &second), EBUSY)
      << "the kernel allows one backing file per inode (reopening /proc/self/fd/N)";
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1") << "b is still there";
  ASSERT_EQ(store().release(first.fh), 0);
}

// Past 64 KiB, a pop without a backing file is read direct; its ticket is still its own while
// it is open: a second open (through /proc/self/fd/N) fails before anything is claimed.
TEST_F(StorePassthroughTest, WithoutBackingFilesALargePopReadsDirectAndKeepsItsTicket) {
  store().set_backing_files(nullptr);
  Ino obj = MakeObject("o");
  const std::string a(64 * 1024 + 1, 'a');
  Put(obj, "a", a);
  Put(obj, "b", "2");
  const Ino ticket = Ticket(obj, control::kPop, Other());
  OpenFile first, second;
  ASSERT_EQ(store().open(ticket, O_RDONLY, Other(), &first), 0);
  EXPECT_TRUE(first.direct_io);
  EXPECT_FALSE(first.keep_cache);
  EXPECT_EQ(first.cache_fill.fd, -1);
  EXPECT_TRUE(Contents(first.fh) == a);
  EXPECT_EQ(store().open(ticket, O_RDONLY, Other(), &second), EBUSY);
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1") << "b is still there";
  ASSERT_EQ(store().release(first.fh), 0);
}

// A pop of up to 64 KiB without a backing file goes to its inode's page cache at the open, and
// the inode is then its alone until it closes.
TEST_F(StorePassthroughTest, ASmallPopFillsThePageCacheAndKeepsItsTicket) {
  store().set_backing_files(nullptr);
  Ino obj = MakeObject("o");
  const std::string a(64 * 1024, 'a');
  Put(obj, "a", a);
  Put(obj, "b", "2");
  const Ino ticket = Ticket(obj, control::kPop, Other());
  OpenFile first;
  ASSERT_EQ(store().open(ticket, O_RDONLY, Other(), &first), 0);
  EXPECT_FALSE(first.direct_io);
  EXPECT_TRUE(first.keep_cache);
  EXPECT_TRUE(first.rebound);
  ASSERT_GE(first.cache_fill.fd, 0);
  EXPECT_EQ(first.cache_fill.offset, 0u);
  ASSERT_EQ(first.cache_fill.length, a.size());
  std::string filled(a.size(), '\0');
  ASSERT_EQ(::pread(first.cache_fill.fd, filled.data(), filled.size(), 0),
            static_cast<ssize_t>(filled.size()));
  EXPECT_TRUE(filled == a) << "the span is the popped entry's bytes";

  OpenFile second;
  EXPECT_EQ(store().open(ticket, O_RDONLY, Other(), &second), EBUSY)
      << "the inode's page cache holds the first pop (reopening /proc/self/fd/N)";
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1") << "b is still there";
  ASSERT_EQ(store().release(first.fh), 0);

  OpenFile next;
  ASSERT_EQ(store().open(ticket, O_RDONLY, Other(), &next), 0) << "closed, the ticket is free";
  EXPECT_EQ(next.cache_fill.length, 1u);
  EXPECT_EQ(Contents(next.fh), "2");
  ASSERT_EQ(store().release(next.fh), 0);
}

// Callers from outside smosd's pid namespace all come as pid 0: each lookup of theirs gets a
// ticket of its own, so that two of them never open one.
TEST_F(StorePassthroughTest, CallersWithoutAPidGetATicketEachAndPopConcurrently) {
  store().set_backing_files(nullptr);
  Ino obj = MakeObject("o");
  Put(obj, "a", "1");
  Put(obj, "b", "2");
  Caller nobody = Other();
  nobody.pid = 0;
  const Ino first = Ticket(obj, control::kPop, nobody);
  const Ino second = Ticket(obj, control::kPop, nobody);
  EXPECT_NE(first, second);
  OpenFile a, b;
  ASSERT_EQ(store().open(first, O_RDONLY, nobody, &a), 0);
  ASSERT_EQ(store().open(second, O_RDONLY, nobody, &b), 0);
  EXPECT_EQ(Contents(a.fh), "1");
  EXPECT_EQ(Contents(b.fh), "2");
  ASSERT_EQ(store().release(a.fh), 0);
  ASSERT_EQ(store().release(b.fh), 0);
  EXPECT_NE(Ticket(obj, control::kPop, nobody), first) << "not handed out again either";
}

// A push's ticket is its entry's while it is open: a second open (through /proc/self/fd/N)
// fails before another entry is made on the same inode.
TEST_F(StorePassthroughTest, ASecondOpenOfAnOpenPushTicketCreatesNothing) {
  Ino obj = MakeObject("o");
  const Ino ticket = Ticket(obj, control::kPush, Other());
  OpenFile first, second;
  ASSERT_EQ(store().open(ticket, O_WRONLY, Other(), &first), 0);
  EXPECT_EQ(store().open(ticket, O_WRONLY, Other(), &second), EBUSY);
  ASSERT_EQ(Write(first.fh, 0, "pushed"), 0);
  ASSERT_EQ(store().release(first.fh), 0);
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1") << "the first push only";
  OpenFile next;
  ASSERT_EQ(store().open(ticket, O_WRONLY, Other(), &next), 0) << "closed, the ticket is free";
  ASSERT_EQ(store().release(next.fh), 0);
}

// Nothing is truncated by a read-only open: EPERM, and nothing is claimed.
TEST_F(StorePassthroughTest, AReadOnlyOpenWithOTruncIsRefused) {
  Ino obj = MakeObject("o");
  const Ino e = Put(obj, "e", "bytes");
  OpenFile file;
  EXPECT_EQ(store().open(e, O_RDONLY | O_TRUNC, Other(), &file), EPERM);
  EXPECT_EQ(store().open(Ticket(obj, control::kPop, Other()), O_RDONLY | O_TRUNC, Other(), &file),
            EPERM);
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1");
  EXPECT_EQ(ContentsOf(e, Other()), "bytes");
}

TEST_F(StorePassthroughTest, AFailedRegistrationTurnsPassthroughOffForGood) {
  class Refusing : public Store::BackingFiles {
   public:
    int open(int) override {
      ++calls;
      return -EOPNOTSUPP;
    }
    void close(int) override {}
    int calls = 0;
  } refusing;
  store().set_backing_files(&refusing);
  Ino obj = MakeObject("o");
  const Ino e = Put(obj, "e", "bytes");
  for (int i = 0; i < 2; ++i) {
    OpenFile file;
    ASSERT_EQ(store().open(e, O_RDONLY, Other(), &file), 0);
    EXPECT_EQ(file.backing_id, 0);
    EXPECT_EQ(Contents(file.fh), "bytes");
    ASSERT_EQ(store().release(file.fh), 0);
  }
  EXPECT_EQ(refusing.calls, 1);
}

}  // namespace
}  // namespace smos::test
