// The limits on entries: capacity, the store's memory budget, and the block size.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include <cerrno>
#include <string>
#include <vector>

#include "smos/control.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

using StoreCapacityTest = StoreTest;

TEST_F(StoreCapacityTest, EntriesInEveryStateCountUntilFreed) {
  Ino obj = MakeObject("o", {{xattr::kCapacity, "3"}});
  ASSERT_NE(Put(obj, "a", "a"), 0u);
  ASSERT_NE(Put(obj, "b", "b"), 0u);
  std::uint64_t writing = Create(obj, "c");
  ASSERT_NE(writing, 0u);

  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(obj, "d", 0644, kCreateFlags, Me(), &attr, &file), ENOSPC);
  const Ino a = InoOf(obj, "a", Other());
  EXPECT_EQ(Replace(obj, "a", Me(), &file), ENOSPC)
      << "a replace needs a free entry too";
  EXPECT_EQ(InoOf(obj, "a", Other()), a) << "the failed replace took the name";
  EXPECT_EQ(ContentsOf(a, Other()), "a");
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "2") << "committed ones";

  // A write entry counts until its release commits it.
  ASSERT_EQ(store().release(writing), 0);
  EXPECT_EQ(store().create(obj, "d", 0644, kCreateFlags, Me(), &attr, &file), ENOSPC);

  // An unlinked entry with no readers is freed at once.
  ASSERT_EQ(store().unlink(obj, "a", Me()), 0);
  ASSERT_NE(Put(obj, "d", "d"), 0u);

  // A zombie counts until its last reader releases it.
  std::uint64_t reader = OpenRead(InoOf(obj, "b", Other()), Other());
  ASSERT_EQ(store().unlink(obj, "b", Me()), 0);
  EXPECT_EQ(store().create(obj, "e", 0644, kCreateFlags, Me(), &attr, &file), ENOSPC);
  ASSERT_EQ(store().release(reader), 0);
  ASSERT_NE(Put(obj, "e", "e"), 0u);
  EXPECT_EQ(Listing(obj), (Names{"c", "d", "e"}));
}

TEST_F(StoreCapacityTest, ObjectsHaveTheirOwnCapacity) {
  Ino full = MakeObject("full", {{xattr::kCapacity, "1"}});
  Ino roomy = MakeObject("roomy");
  EXPECT_EQ(Xattr(roomy, xattr::kCapacity), std::to_string(options().default_capacity));
  ASSERT_NE(Put(full, "a", "a"), 0u);
  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(full, "b", 0644, kCreateFlags, Me(), &attr, &file), ENOSPC);
  EXPECT_NE(Put(roomy, "b", "b"), 0u);
}

TEST_F(StoreCapacityTest, AFullEntryTableFailsWithEnospc) {
  const std::uint64_t max_entries = options().max_entries;
  const std::string capacity = std::to_string(max_entries);
  Ino a = MakeObject("a", {{xattr::kCapacity, capacity}});
  Ino b = MakeObject("b", {{xattr::kCapacity, capacity}});
  for (std::uint64_t i = 0; i < max_entries; ++i) {
    ASSERT_NE(Put(i % 2 ? b : a, std::to_string(i), ""), 0u) << i;
  }
  EXPECT_EQ(store().stats().free_entries, 0u);
  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(a, "more", 0644, kCreateFlags, Me(), &attr, &file), ENOSPC);
  ASSERT_EQ(store().unlink(b, "1", Me()), 0);
  EXPECT_NE(Put(a, "more", ""), 0u) << "the table is shared by all objects";
}

class StoreMemoryBudgetTest : public StoreTest {
 protected:
  static constexpr std::uint64_t kBudget = 1 << 20;

  StoreOptions Options() const override {
    StoreOptions o = StoreTest::Options();
    o.memory_budget = kBudget;
    return o;
  }
};

TEST_F(StoreMemoryBudgetTest, WritesPastTheBudgetFailWithEnospc) {
  Ino obj = MakeObject("o");
  const std::string first = Pattern(768 << 10, 1);
  Ino first_ino = Put(obj, "first", first);
  EXPECT_EQ(store().stats().memory_budget, kBudget);
  EXPECT_EQ(store().stats().memory_used, first.size());

  Attr attr;
  std::uint64_t fh = Create(obj, "second", &attr);
  EXPECT_EQ(Write(fh, 0, Pattern(512 << 10, 2)), ENOSPC);
  EXPECT_EQ(store().stats().memory_used, first.size()) << "a failed write takes nothing";
  ASSERT_EQ(Write(fh, 0, Pattern(256 << 10, 3)), 0) << "up to the budget exactly";
  EXPECT_EQ(store().stats().memory_used, kBudget);
  EXPECT_EQ(Write(fh, 256 << 10, "x"), ENOSPC);
  SetAttr grow;
  grow.size = (256 << 10) + 1;
  EXPECT_EQ(store().setattr(attr.ino, grow, fh, Me(), &attr), ENOSPC);
  EXPECT_EQ(ContentsOf(first_ino, Other()), first) << "existing bytes are intact";

  // Memory that an unlink frees is there for the next write.
  ASSERT_EQ(store().unlink(obj, "first", Me()), 0);
  EXPECT_EQ(Write(fh, 256 << 10, Pattern(512 << 10, 4)), 0);
  EXPECT_EQ(store().stats().memory_used, 768u << 10);
  ASSERT_EQ(store().release(fh), 0);
}

// Running out of the budget is a failed write like EFBIG (writes_test.cc): a close commits
// neither the replace nor the push it cut short.
TEST_F(StoreMemoryBudgetTest, AReplaceThatRunsOutOfMemoryLeavesTheOldVersion) {
  Ino obj = MakeObject("o");
  const std::string old = Pattern(512 << 10, 1);
  const Ino old_ino = Put(obj, "e", old);
  OpenFile writer;
  ASSERT_EQ(Replace(obj, "e", Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, Pattern(256 << 10, 2)), 0);
  EXPECT_EQ(Write(writer.fh, 256 << 10, Pattern(512 << 10, 3)), ENOSPC);
  ASSERT_EQ(store().flush(writer.fh, Me()), 0);
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(InoOf(obj, "e", Other()), old_ino);
  EXPECT_EQ(ContentsOf(old_ino, Other()), old);
  EXPECT_EQ(store().stats().memory_used, old.size()) << "the cut copy was freed";
}

TEST_F(StoreMemoryBudgetTest, APushThatRunsOutOfMemoryIsNotQueued) {
  Ino obj = MakeObject("o");
  const std::string first = Pattern(768 << 10, 1);
  Put(obj, "first", first);
  Attr ticket;
  ASSERT_EQ(store().lookup(obj, control::kPush, Me(), &ticket), 0);
  OpenFile push;
  ASSERT_EQ(store().open(ticket.ino, O_WRONLY, Me(), &push), 0);
  ASSERT_EQ(Write(push.fh, 0, "the head of a message"), 0);
  EXPECT_EQ(Write(push.fh, 21, Pattern(512 << 10, 2)), ENOSPC);
  ASSERT_EQ(store().flush(push.fh, Me()), 0);
  ASSERT_EQ(store().release(push.fh), 0);
  EXPECT_EQ(Listing(obj), Names{"first"});
  EXPECT_EQ(store().stats().memory_used, first.size());

  // The queue goes on: the next push is queued (the cut one's seq, 2, was reserved at its
  // open, and is not used again).
  ASSERT_EQ(Push(obj, "whole"), 0);
  EXPECT_EQ(Listing(obj), (Names{"00000000000000000003", "first"}));
}

// fallocate(2) grows a write entry as ftruncate does, within the same limits; there is
// nothing else to allocate.
TEST_F(StoreMemoryBudgetTest, FallocateGrowsAWriteEntryWithinTheLimits) {
  Ino obj = MakeObject("o", {{xattr::kBlockSize, "512K"}});
  Attr attr;
  const std::uint64_t fh = Create(obj, "e", &attr);
  ASSERT_EQ(Write(fh, 0, "head"), 0);
  ASSERT_EQ(store().fallocate(fh, 0, 4096, 4096), 0);
  ASSERT_EQ(GetAttr(attr.ino, &attr), 0);
  EXPECT_EQ(attr.size, 8192u);
  EXPECT_EQ(store().stats().memory_used, 8192u);
  EXPECT_EQ(store().fallocate(fh, 0, 0, 100), 0) << "within the entry: nothing to do";
  EXPECT_EQ(store().fallocate(fh, FALLOC_FL_KEEP_SIZE, 0, 1 << 16), EOPNOTSUPP);
  EXPECT_EQ(store().fallocate(fh, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4), EOPNOTSUPP);
  EXPECT_EQ(store().fallocate(fh, 0, 512 << 10, 1), EFBIG) << "past the block size";
  EXPECT_EQ(store().fallocate(fh, 0, ~0ull - 1, 4), EINVAL);
  ASSERT_EQ(GetAttr(attr.ino, &attr), 0);
  EXPECT_EQ(attr.size, 8192u) << "a failed fallocate changes nothing";
  const std::uint64_t other = Create(obj, "other");
  ASSERT_EQ(Write(other, 0, Pattern(512 << 10, 1)), 0);
  const std::uint64_t third = Create(obj, "third");
  ASSERT_EQ(Write(third, 0, Pattern(500 << 10, 2)), 0);
  EXPECT_EQ(store().fallocate(fh, 0, 0, 64 << 10), ENOSPC) << "past the budget";
  ASSERT_EQ(store().release(fh), 0);
  EXPECT_EQ(ContentsOf(InoOf(obj, "e", Other()), Other()), "head" + std::string(8188, '\0'));
  ASSERT_EQ(store().release(other), 0);
  ASSERT_EQ(store().release(third), 0);

  // Not through a read-only handle, nor once the entry is committed.
  const std::uint64_t reader = OpenRead(InoOf(obj, "e", Other()), Other());
  EXPECT_EQ(store().fallocate(reader, 0, 0, 1 << 14), EBADF);
  ASSERT_EQ(store().release(reader), 0);
  const std::uint64_t committed = Create(obj, "f", &attr);
  ASSERT_EQ(SetXattr(attr.ino, xattr::kState, "idle"), 0);
  EXPECT_EQ(store().fallocate(committed, 0, 0, 1 << 14), EPERM);
  ASSERT_EQ(store().release(committed), 0);
}

TEST_F(StoreMemoryBudgetTest, AZombieHoldsItsMemoryUntilReleased) {
  Ino obj = MakeObject("o");
  Ino ino = Put(obj, "big", Pattern(kBudget, 1));
  std::uint64_t reader = OpenRead(ino, Other());
  ASSERT_EQ(store().unlink(obj, "big", Me()), 0);
  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(obj, "next", 0644, kCreateFlags, Me(), &attr, &file), ENOSPC)
      << "the budget is exhausted: no room for a new entry";
  ASSERT_EQ(store().release(reader), 0);
  std::uint64_t fh = Create(obj, "next");
  EXPECT_EQ(Write(fh, 0, "x"), 0);
  ASSERT_EQ(store().release(fh), 0);
}

TEST_F(StoreMemoryBudgetTest, ShrinkingReturnsMemory) {
  Ino obj = MakeObject("o");
  Attr attr;
  std::uint64_t fh = Create(obj, "e", &attr);
  SetAttr change;
  change.size = kBudget;
  ASSERT_EQ(store().setattr(attr.ino, change, fh, Me(), &attr), 0);
  change.size = 10;
  ASSERT_EQ(store().setattr(attr.ino, change, fh, Me(), &attr), 0);
  EXPECT_EQ(attr.size, 10u);
  EXPECT_EQ(store().stats().memory_used, 10u);
  EXPECT_EQ(Xattr(obj, xattr::kBytes), "10");
  ASSERT_EQ(store().release(fh), 0);
}

class StoreBlockSizeTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    if (HasFatalFailure()) return;
    obj_ = MakeObject("o", {{xattr::kBlockSize, "4K"}});
    fh_ = Create(obj_, "e", &attr_);
  }
  void TearDown() override {
    if (fh_ != 0) {
      EXPECT_EQ(store().release(fh_), 0);
    }
    StoreTest::TearDown();
  }

  Ino obj_ = 0;
  Attr attr_;
  std::uint64_t fh_ = 0;
};

TEST_F(StoreBlockSizeTest, AWriteAtOrPastTheBlockSizeFailsWithEfbig) {
  EXPECT_EQ(Xattr(obj_, xattr::kBlockSize), "4096");
  IoSpan span;
  EXPECT_EQ(store().prepare_write(fh_, 4096, 1, &span), EFBIG);
  EXPECT_EQ(store().prepare_write(fh_, 1 << 20, 1, &span), EFBIG);
  EXPECT_EQ(store().stats().memory_used, 0u);
}

TEST_F(StoreBlockSizeTest, AWriteAcrossTheBlockSizeIsCutShort) {
  IoSpan span;
  ASSERT_EQ(store().prepare_write(fh_, 4000, 200, &span), 0);
  EXPECT_EQ(span.offset, 4000u);
  EXPECT_EQ(span.length, 96u);
  Attr attr;
  ASSERT_EQ(GetAttr(attr_.ino, &attr), 0);
  EXPECT_EQ(attr.size, 4096u);
  store().write_done(fh_, false);  // nothing was written
  ASSERT_EQ(GetAttr(attr_.ino, &attr), 0);
  EXPECT_EQ(attr.size, 4000u) << "the gap before the write is reserved, the write's span is not";
  EXPECT_EQ(Write(fh_, 4000, std::string(200, 'x')), EFBIG) << "write(2) in a loop";
}

TEST_F(StoreBlockSizeTest, TruncatePastTheBlockSizeFailsWithEfbig) {
  SetAttr change;
  Attr attr;
  change.size = 4097;
  EXPECT_EQ(store().setattr(attr_.ino, change, fh_, Me(), &attr), EFBIG);
  change.size = 4096;
  ASSERT_EQ(store().setattr(attr_.ino, change, fh_, Me(), &attr), 0);
  EXPECT_EQ(attr.size, 4096u);
}

// A successful truncate or write has its bytes backed by memory already, so that nothing can
// fail (or raise SIGBUS) later for want of it.
TEST_F(StoreBlockSizeTest, TruncateBacksTheBytesWithMemory) {
  SetAttr change;
  change.size = 4096;
  Attr attr;
  ASSERT_EQ(store().setattr(attr_.ino, change, fh_, Me(), &attr), 0);
  struct stat st;
  ASSERT_EQ(stat(Xattr(attr_.ino, xattr::kSegment).c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 4096);
  EXPECT_GE(st.st_blocks * 512, 4096);
  EXPECT_EQ(store().stats().memory_used, 4096u);
}

TEST_F(StoreBlockSizeTest, AnEntryThatCouldNotBeMadeLeavesTheLayoutOpenToChange) {
  // A typed entry is born at full size: one larger than the budget is never made.
  Ino typed = MakeObject("typed", {{xattr::kTracks, "a:uint8:100000000"}});
  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(typed, "e", 0644, O_CREAT | O_WRONLY, Me(), &attr, &file), ENOSPC);
  EXPECT_EQ(SetXattr(typed, xattr::kTracks, "a:uint8:1000"), 0) << "no entry was ever made";
  EXPECT_EQ(SetXattr(typed, xattr::kCapacity, "2"), 0);
  EXPECT_EQ(store().stats().memory_used, 0u);
}

}  // namespace
}  // namespace smos::test
