// Writes in flight: between prepare_write() and write_done() the FUSE layer copies into the slot
// file without the store's lock. A truncate, a commit or another write's failure must never
// make the entry's size, its slot file and the memory count disagree.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "smos/control.h"
#include "smos/xattr.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

using namespace std::chrono_literals;

class StoreWritesTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    obj_ = MakeObject("o");
    fh_ = Create(obj_, "e", &attr_);
    ASSERT_NE(fh_, 0u);
  }

  // The length of the entry's slot file, as stat(2) of its segment gives it.
  off_t SlotLength() {
    struct stat st {};
    EXPECT_EQ(stat(Xattr(attr_.ino, xattr::kSegment).c_str(), &st), 0);
    return st.st_size;
  }

  // Runs `op` on a thread of its own; checks that it is still waiting while a write is in
  // flight, then lets the write land and waits for `op`.
  template <typename Op>
  void WhileAWriteIsInFlight(const IoSpan& span, std::string_view bytes, Op op) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      op();
      done = true;
    });
    std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(done) << "it went ahead of a write in flight";
    ASSERT_EQ(pwrite(span.fd, bytes.data(), bytes.size(), static_cast<off_t>(span.offset)),
              static_cast<ssize_t>(bytes.size()));
    store().write_done(fh_, true);
    t.join();
  }

  Ino obj_ = 0;
  Attr attr_;
  std::uint64_t fh_ = 0;
};

TEST_F(StoreWritesTest, AFailedWriteBesideOneThatSucceededKeepsTheAcknowledgedBytes) {
  IoSpan first, second;
  ASSERT_EQ(store().prepare_write(fh_, 0, 4096, &first), 0);
  ASSERT_EQ(store().prepare_write(fh_, 4096, 4096, &second), 0);
  store().write_done(fh_, false);  // the first one failed (tmpfs out of pages, say)
  const std::string bytes(4096, 'b');
  ASSERT_EQ(pwrite(second.fd, bytes.data(), bytes.size(), 4096), 4096);
  store().write_done(fh_, true);  // and its caller was told 4096 bytes were written

  Attr attr;
  ASSERT_EQ(GetAttr(attr_.ino, &attr), 0);
  EXPECT_EQ(attr.size, 8192u);
  EXPECT_EQ(SlotLength(), 8192);
  EXPECT_EQ(store().stats().memory_used, 8192u);
  ASSERT_EQ(store().release(fh_), 0);  // commits

  ASSERT_EQ(Reopen(), 0);
  ASSERT_EQ(GetAttr(attr_.ino, &attr), 0) << "recovery found the slot and the size apart";
  EXPECT_EQ(ContentsOf(attr_.ino, Me()), std::string(4096, '\0') + bytes);
}

TEST_F(StoreWritesTest, AFailedWriteAloneShrinksTheEntryBack) {
  ASSERT_EQ(Write(fh_, 0, "abcd"), 0);
  IoSpan span;
  ASSERT_EQ(store().prepare_write(fh_, 8192, 4096, &span), 0);
  EXPECT_EQ(store().stats().memory_used, 12288u) << "the gap before it is reserved";
  store().write_done(fh_, false);
  Attr attr;
  ASSERT_EQ(GetAttr(attr_.ino, &attr), 0);
  EXPECT_EQ(attr.size, static_cast<std::uint64_t>(SlotLength()));
  EXPECT_EQ(attr.size, 8192u);
  EXPECT_EQ(store().stats().memory_used, 8192u);
}

TEST_F(StoreWritesTest, ATruncateWaitsForAWriteInFlight) {
  IoSpan span;
  ASSERT_EQ(store().prepare_write(fh_, 0, 8192, &span), 0);
  WhileAWriteIsInFlight(span, std::string(8192, 'a'), [&] {
    SetAttr change;
    change.size = 0;
    Attr out;
    EXPECT_EQ(store().setattr(attr_.ino, change, fh_, Me(), &out), 0);
  });
  Attr attr;
  ASSERT_EQ(GetAttr(attr_.ino, &attr), 0);
  EXPECT_EQ(attr.size, 0u);
  EXPECT_EQ(SlotLength(), 0);
  EXPECT_EQ(store().stats().memory_used, 0u);
  ASSERT_EQ(store().release(fh_), 0);
  ASSERT_EQ(Reopen(), 0);
  EXPECT_EQ(GetAttr(attr_.ino, &attr), 0) << "recovery found the slot and the size apart";
}

TEST_F(StoreWritesTest, ACommitWaitsForAWriteInFlight) {
  IoSpan span;
  ASSERT_EQ(store().prepare_write(fh_, 0, 4, &span), 0);
  WhileAWriteIsInFlight(span, "abcd",
                        [&] { EXPECT_EQ(SetXattr(attr_.ino, xattr::kState, "idle"), 0); });
  EXPECT_EQ(Xattr(attr_.ino, xattr::kState), "idle");
  EXPECT_EQ(ContentsOf(attr_.ino, Me()), "abcd");
  ASSERT_EQ(store().release(fh_), 0);
}

// A close does not commit a replace or a push whose last write or truncate failed: `cp big
// obj/e` that fails with EFBIG or ENOSPC must not put a truncated copy in the place of a whole
// one, nor `cat big > obj/.push` queue a truncated message. A new named entry keeps what was
// accepted, as a file would.
class StoreFailedWritesTest : public StoreTest {
 protected:
  StoreOptions Options() const override {
    StoreOptions o = StoreTest::Options();
    o.default_block_size = 8192;
    return o;
  }
  void SetUp() override {
    StoreTest::SetUp();
    obj_ = MakeObject("o");
  }
  // Writes `bytes`, then fails a write at the block size, as `cp` of a larger file does.
  void WriteThenFail(std::uint64_t fh, std::string_view bytes) {
    ASSERT_EQ(Write(fh, 0, bytes), 0);
    EXPECT_EQ(Write(fh, 8192, "y"), EFBIG);
  }
  // Commits "e" as "old" (its inode in *old), then opens a replace of it (the handle in *writer).
  void ReplaceOld(Ino* old, OpenFile* writer) {
    *old = Put(obj_, "e", "old");
    ASSERT_EQ(Replace(obj_, "e", Me(), writer), 0);
  }
  Ino obj_ = 0;
};

TEST_F(StoreFailedWritesTest, ANewEntryKeepsWhatWasAccepted) {
  const std::uint64_t fh = Create(obj_, "e");
  WriteThenFail(fh, "accepted");
  ASSERT_EQ(store().flush(fh, Me()), 0);
  ASSERT_EQ(store().release(fh), 0);
  EXPECT_EQ(ContentsOf(InoOf(obj_, "e", Other()), Other()), "accepted");
}

TEST_F(StoreFailedWritesTest, AFailedReplaceLeavesTheOldVersion) {
  Ino old;
  OpenFile writer;
  ASSERT_NO_FATAL_FAILURE(ReplaceOld(&old, &writer));
  WriteThenFail(writer.fh, "new");
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(InoOf(obj_, "e", Other()), old);
  EXPECT_EQ(ContentsOf(old, Other()), "old");
  EXPECT_EQ(store().stats().memory_used, 3u);

  // The same when the failure was a truncate.
  ASSERT_EQ(Replace(obj_, "e", Me(), &writer), 0);
  SetAttr grow;
  grow.size = 1 << 20;
  Attr out;
  EXPECT_EQ(store().setattr(InoOf(obj_, "e", Me()), grow, writer.fh, Me(), &out), EFBIG);
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(InoOf(obj_, "e", Other()), old);
}

TEST_F(StoreFailedWritesTest, AReplaceWhoseWriterCarriedOnAfterTheErrorCommits) {
  Ino old;
  OpenFile writer;
  ASSERT_NO_FATAL_FAILURE(ReplaceOld(&old, &writer));
  WriteThenFail(writer.fh, "new");
  ASSERT_EQ(Write(writer.fh, 3, "er"), 0);  // it dealt with the error
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(ContentsOf(InoOf(obj_, "e", Other()), Other()), "newer");
}

TEST_F(StoreFailedWritesTest, AFailedPushIsNotQueued) {
  Attr ticket;
  ASSERT_EQ(store().lookup(obj_, control::kPush, Me(), &ticket), 0);
  OpenFile push;
  ASSERT_EQ(store().open(ticket.ino, O_WRONLY, Me(), &push), 0);
  WriteThenFail(push.fh, "part of a message");
  ASSERT_EQ(store().flush(push.fh, Me()), 0);
  ASSERT_EQ(store().release(push.fh), 0);
  EXPECT_EQ(Listing(obj_), Names{});
  EXPECT_EQ(store().stats().memory_used, 0u);
}

TEST_F(StoreFailedWritesTest, AFailedReplaceIsNotCommittedByARestart) {
  Ino old;
  OpenFile writer;
  ASSERT_NO_FATAL_FAILURE(ReplaceOld(&old, &writer));
  WriteThenFail(writer.fh, "new");
  ASSERT_EQ(store().flush(writer.fh, Me()), 0);  // closed; the daemon dies before the release
  ASSERT_EQ(Reopen(), 0);
  EXPECT_EQ(InoOf(obj_, "e", Other()), old);
  EXPECT_EQ(ContentsOf(old, Other()), "old");
}

TEST_F(StoreFailedWritesTest, AnExplicitCommitStillPublishesIt) {
  Put(obj_, "e", "old");
  OpenFile writer;
  Ino ino = 0;
  ASSERT_EQ(Replace(obj_, "e", Me(), &writer, &ino), 0);
  WriteThenFail(writer.fh, "part");
  ASSERT_EQ(SetXattr(ino, xattr::kState, "idle"), 0);  // its writer knows better
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(ContentsOf(InoOf(obj_, "e", Other()), Other()), "part");
}

TEST_F(StoreFailedWritesTest, AFailureBesideAWriteInFlightIsNotForgotten) {
  Ino old;
  OpenFile writer;
  ASSERT_NO_FATAL_FAILURE(ReplaceOld(&old, &writer));
  IoSpan earlier, later;
  ASSERT_EQ(store().prepare_write(writer.fh, 0, 4096, &earlier), 0);  // in flight
  EXPECT_EQ(store().prepare_write(writer.fh, 8192, 1, &later), EFBIG);  // the writer is told
  const std::string bytes(4096, 'a');
  ASSERT_EQ(pwrite(earlier.fd, bytes.data(), bytes.size(), 0), 4096);
  store().write_done(writer.fh, true);  // finishing after the failure is not carrying on
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(InoOf(obj_, "e", Other()), old);
}

TEST_F(StoreFailedWritesTest, AFailedReplaceStaysOneIfItsOldVersionIsUnlinkedMeanwhile) {
  Ino old;
  OpenFile writer;
  ASSERT_NO_FATAL_FAILURE(ReplaceOld(&old, &writer));
  WriteThenFail(writer.fh, "trunc");
  ASSERT_EQ(store().unlink(obj_, "e", Other()), 0);
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(Listing(obj_), Names{}) << "the failed copy took the name";
}

// A child process's close of a push it inherited is no close of the writer's: a restart
// before the writer's own close must not publish half a message.
TEST_F(StoreFailedWritesTest, AChildsCloseOfAPushIsNotCountedByARestart) {
  Attr ticket;
  ASSERT_EQ(store().lookup(obj_, control::kPush, Me(), &ticket), 0);
  OpenFile push;
  ASSERT_EQ(store().open(ticket.ino, O_WRONLY, Me(), &push), 0);
  ASSERT_EQ(Write(push.fh, 0, "first half, "), 0);
  ASSERT_EQ(store().flush(push.fh, Other()), 0);
  EXPECT_EQ(Listing(obj_), Names{}) << "committed by the child's close";
  ASSERT_EQ(Reopen(), 0);
  EXPECT_EQ(Listing(obj_), Names{}) << "committed by the restart";
}

}  // namespace
}  // namespace smos::test
