// Writes in flight: between prepare_write() and write_done() the FUSE layer copies into the slot
// file without the store's lock. A truncate, a commit or another write's failure must never
// make the entry's size, its slot file and the memory count disagree.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

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

}  // namespace
}  // namespace smos::test
