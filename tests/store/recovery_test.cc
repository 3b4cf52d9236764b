// Reattaching to a store, as a restarted daemon does: committed state survives, nothing else.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "os/segment.h"
#include "store/layout.h"
#include "store/meta.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

using StoreRecoveryTest = StoreTest;

TEST_F(StoreRecoveryTest, CommittedStateSurvivesAReattach) {
  Ino frames = MakeObject("frames", {{xattr::kCapacity, "4"}, {xattr::kBlockSize, "64K"},
                                     {"user.note", "camera 1"}},
                          0750);
  Ino params = MakeObject("params", {{xattr::kCommit, "explicit"}});
  const std::string zero = Pattern(1000, 1);
  const std::string one = Pattern(50000, 2);
  const std::string weights = Pattern(3000, 3);

  Attr zero_attr;
  std::uint64_t fh = Create(frames, "0", &zero_attr, 0640);
  ASSERT_EQ(Write(fh, 0, zero), 0);
  ASSERT_EQ(SetXattr(zero_attr.ino, "user.dtype", "float32"), 0);
  ASSERT_EQ(store().release(fh), 0);
  Ino one_ino = Put(frames, "1", one, 0600);
  Attr weights_attr;
  fh = Create(params, "weights", &weights_attr, 0444);
  ASSERT_EQ(Write(fh, 0, weights), 0);
  ASSERT_EQ(SetXattr(weights_attr.ino, "user.shape", "30,100"), 0);
  ASSERT_EQ(SetXattr(weights_attr.ino, xattr::kState, "idle"), 0);
  ASSERT_EQ(store().release(fh), 0);
  // Left in write state: the restart must discard it.
  std::uint64_t pending = Create(frames, "pending");
  ASSERT_EQ(Write(pending, 0, Pattern(7000, 4)), 0);
  std::uint64_t reader = OpenRead(one_ino, Other());
  ASSERT_NE(reader, 0u);

  ASSERT_EQ(Reopen(), 0);

  EXPECT_EQ(Listing(kRootIno), (Names{"frames", "params"}));
  Attr attr;
  ASSERT_EQ(store().lookup(kRootIno, "frames", Other(), &attr), 0);
  EXPECT_EQ(attr.ino, frames);
  EXPECT_EQ(attr.mode, S_IFDIR | 0750u);
  EXPECT_EQ(InoOf(kRootIno, "params", Other()), params);
  EXPECT_EQ(Xattr(frames, xattr::kCapacity), "4");
  EXPECT_EQ(Xattr(frames, xattr::kBlockSize), "65536");
  EXPECT_EQ(Xattr(frames, xattr::kCommit), "close");
  EXPECT_EQ(Xattr(frames, "user.note"), "camera 1");
  EXPECT_EQ(Xattr(frames, xattr::kEntries), "2");
  EXPECT_EQ(Xattr(frames, xattr::kBytes), std::to_string(zero.size() + one.size()));
  EXPECT_EQ(Xattr(params, xattr::kCommit), "explicit");
  EXPECT_EQ(Xattr(params, xattr::kBytes), std::to_string(weights.size()));

  EXPECT_EQ(Listing(frames), (Names{"0", "1"}));
  ASSERT_EQ(store().lookup(frames, "0", Other(), &attr), 0);
  EXPECT_EQ(attr.ino, zero_attr.ino);
  EXPECT_EQ(attr.mode, S_IFREG | 0640u);
  EXPECT_EQ(attr.size, zero.size());
  EXPECT_TRUE(attr.immutable);
  EXPECT_EQ(ContentsOf(zero_attr.ino, Other()), zero);
  EXPECT_EQ(Xattr(zero_attr.ino, "user.dtype"), "float32");
  EXPECT_EQ(Xattr(zero_attr.ino, xattr::kSeq), "1");
  EXPECT_EQ(Xattr(zero_attr.ino, xattr::kState), "idle");

  ASSERT_EQ(store().lookup(frames, "1", Other(), &attr), 0);
  EXPECT_EQ(attr.ino, one_ino);
  EXPECT_EQ(attr.mode, S_IFREG | 0600u);
  EXPECT_EQ(Xattr(one_ino, xattr::kSeq), "2");
  EXPECT_EQ(Xattr(one_ino, xattr::kReaders), "0") << "readers start from zero";
  EXPECT_EQ(Xattr(one_ino, xattr::kState), "idle");
  EXPECT_EQ(ContentsOf(one_ino, Other()), one);

  ASSERT_EQ(store().lookup(params, "weights", Other(), &attr), 0);
  EXPECT_EQ(attr.ino, weights_attr.ino);
  EXPECT_EQ(attr.mode, S_IFREG | 0444u);
  EXPECT_EQ(ContentsOf(weights_attr.ino, Other()), weights);
  EXPECT_EQ(Xattr(weights_attr.ino, "user.shape"), "30,100");
  EXPECT_EQ(Xattr(weights_attr.ino, xattr::kSeq), "1");

  EXPECT_EQ(store().lookup(frames, "pending", Me(), &attr), ENOENT);
  EXPECT_EQ(store().release(pending), EBADF) << "handles do not survive a restart";
  EXPECT_EQ(store().release(reader), EBADF);

  const StoreStats stats = store().stats();
  EXPECT_EQ(stats.memory_used, zero.size() + one.size() + weights.size());
  EXPECT_EQ(stats.free_entries, options().max_entries - 3);
}

TEST_F(StoreRecoveryTest, CountersContinueAfterAReattach) {
  Ino obj = MakeObject("o", {{xattr::kCapacity, "3"}});
  Ino a = Put(obj, "a", "a");
  Ino b = Put(obj, "b", "b");
  ASSERT_EQ(store().unlink(obj, "b", Me()), 0);
  ASSERT_NE(Put(obj, "c", "c"), 0u);
  std::uint64_t pending = Create(obj, "pending");
  ASSERT_NE(pending, 0u);

  ASSERT_EQ(Reopen(), 0);
  EXPECT_EQ(SetXattr(obj, xattr::kCapacity, "10"), EBUSY)
      << "the object had entries before the restart";
  Attr attr;
  std::uint64_t fh = Create(obj, "d", &attr);
  ASSERT_NE(fh, 0u) << "the discarded write entry no longer counts toward capacity";
  EXPECT_GT(attr.ino, b) << "inode numbers are never reused";
  ASSERT_EQ(store().release(fh), 0);
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), "4") << "seq continues after b (2) and c (3)";
  OpenFile file;
  EXPECT_EQ(store().create(obj, "e", 0644, kCreateFlags, Me(), &attr, &file), ENOSPC);
  EXPECT_EQ(InoOf(obj, "a", Other()), a);

  Attr object;
  ASSERT_EQ(store().mkdir(kRootIno, "new", 0755, Me(), &object), 0);
  EXPECT_GT(object.ino, attr.ino);
}

// Once close() has returned, the entry is visible to everyone (docs/design.md, "Lifecycle
// details"), so a restart before the kernel's asynchronous release must not lose it.
TEST_F(StoreRecoveryTest, AClosedWriteEntryIsCommittedByAReattach) {
  Ino obj = MakeObject("o");
  ASSERT_NE(Put(obj, "first", "1"), 0u);
  Attr closed;
  std::uint64_t fh = Create(obj, "closed", &closed);
  ASSERT_EQ(Write(fh, 0, "closed bytes"), 0);
  ASSERT_EQ(store().flush(fh, Me()), 0);
  Attr open;
  fh = Create(obj, "open", &open);
  ASSERT_EQ(Write(fh, 0, "still writing"), 0);

  ASSERT_EQ(Reopen(), 0);
  EXPECT_EQ(InoOf(obj, "closed", Other()), closed.ino);
  EXPECT_EQ(ContentsOf(closed.ino, Other()), "closed bytes");
  EXPECT_EQ(Xattr(closed.ino, xattr::kState), "idle");
  EXPECT_EQ(Xattr(closed.ino, xattr::kSeq), "2");
  EXPECT_EQ(InoOf(obj, "open", Me()), 0u);
  EXPECT_TRUE(Gone(open.ino));
  EXPECT_EQ(store().stats().memory_used, 1u + 12u);
}

TEST_F(StoreRecoveryTest, AClosedReplaceWinsAtAReattach) {
  Ino obj = MakeObject("o");
  Ino old_ino = Put(obj, "w", "old");
  OpenFile writer;
  ASSERT_EQ(Replace(obj, "w", Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, "newer"), 0);
  ASSERT_EQ(store().flush(writer.fh, Me()), 0);

  ASSERT_EQ(Reopen(), 0);
  const Ino ino = InoOf(obj, "w", Other());
  EXPECT_NE(ino, old_ino);
  EXPECT_EQ(ContentsOf(ino, Other()), "newer");
  EXPECT_EQ(Xattr(ino, xattr::kSeq), "2");
  EXPECT_TRUE(Gone(old_ino));
  EXPECT_EQ(store().stats().memory_used, 5u);
  EXPECT_EQ(store().stats().free_entries, options().max_entries - 1);
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1");
}

TEST_F(StoreRecoveryTest, ZombiesAreFreedByAReattach) {
  Ino obj = MakeObject("o");
  const std::string kept = Pattern(2000, 1);
  Ino kept_ino = Put(obj, "kept", kept);
  Ino gone = Put(obj, "gone", Pattern(3000, 2));
  std::uint64_t reader = OpenRead(gone, Other());
  ASSERT_NE(reader, 0u);
  ASSERT_EQ(store().unlink(obj, "gone", Me()), 0);
  // An old version that a replace left behind for its reader.
  ASSERT_NE(OpenRead(kept_ino, Other()), 0u);
  OpenFile writer;
  ASSERT_EQ(Replace(obj, "kept", Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, "replaced"), 0);
  ASSERT_EQ(store().release(writer.fh), 0);
  ASSERT_EQ(Xattr(kept_ino, xattr::kState), "zombie");

  ASSERT_EQ(Reopen(), 0);
  Attr attr;
  EXPECT_TRUE(Gone(gone));
  EXPECT_TRUE(Gone(kept_ino));
  ASSERT_EQ(store().lookup(obj, "kept", Other(), &attr), 0);
  EXPECT_EQ(ContentsOf(attr.ino, Other()), "replaced");
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), "3");
  EXPECT_EQ(store().stats().memory_used, 8u);
  EXPECT_EQ(store().stats().free_entries, options().max_entries - 1);
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1");
}

TEST_F(StoreRecoveryTest, AnEntryWhoseSlotFileIsGoneIsDroppedByAReattach) {
  Ino obj = MakeObject("o");
  Ino lost = Put(obj, "lost", Pattern(5000, 1));
  const std::string kept = Pattern(3000, 2);
  Ino kept_ino = Put(obj, "kept", kept);
  ASSERT_EQ(unlink(Xattr(lost, xattr::kSegment).c_str()), 0);

  ASSERT_EQ(Reopen(), 0);
  EXPECT_EQ(InoOf(obj, "lost", Other()), 0u);
  EXPECT_EQ(Listing(obj), Names{"kept"});
  EXPECT_EQ(ContentsOf(kept_ino, Other()), kept);
  EXPECT_EQ(store().stats().memory_used, kept.size());
  EXPECT_EQ(store().stats().free_entries, options().max_entries - 1);
  EXPECT_NE(Put(obj, "lost", "again"), 0u);
}

TEST_F(StoreRecoveryTest, ResetStartsEmpty) {
  Ino obj = MakeObject("o");
  ASSERT_NE(Put(obj, "e", Pattern(1000, 1)), 0u);
  ASSERT_EQ(Reopen(/*reset=*/true), 0);
  EXPECT_EQ(Listing(kRootIno), Names{});
  EXPECT_EQ(InoOf(kRootIno, "o", Me()), 0u);
  EXPECT_TRUE(Gone(obj));
  EXPECT_EQ(store().stats().memory_used, 0u);
  EXPECT_EQ(store().stats().free_entries, options().max_entries);
  Ino again = MakeObject("o");
  EXPECT_EQ(Xattr(again, xattr::kEntries), "0");
}

TEST_F(StoreRecoveryTest, ALiveStoreCannotBeOpenedTwice) {
  Ino obj = MakeObject("o");
  std::unique_ptr<Store> second;
  std::string message;
  EXPECT_EQ(Store::open(options(), &second, &message), EBUSY);
  EXPECT_EQ(second, nullptr);
  EXPECT_NE(message, "");
  StoreOptions reset = options();
  reset.reset = true;
  EXPECT_EQ(Store::open(reset, &second, &message), EBUSY) << "not even to reset it";
  EXPECT_NE(Put(obj, "e", "x"), 0u) << "the first store is untouched";
  EXPECT_EQ(ContentsOf(InoOf(obj, "e", Other()), Other()), "x");
}

TEST_F(StoreRecoveryTest, ASegmentOfAnotherLayoutVersionIsRefusedAndKeptUntilAReset) {
  Ino obj = MakeObject("o");
  Put(obj, "a", "kept");
  Close();
  // A daemon of another layout version made this segment: patch the version behind the magic.
  const std::string path = os::shm_path(MetaSegment::meta_name(options().name));
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  const auto size = static_cast<std::size_t>(st.st_size);
  auto* base = static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(base, MAP_FAILED);
  const std::uint64_t magic = layout::kMagic;
  void* at = ::memmem(base, size, &magic, sizeof magic);
  ASSERT_NE(at, nullptr);
  const std::uint32_t other_version = layout::kVersion + 1;
  std::memcpy(static_cast<char*>(at) + sizeof magic, &other_version, sizeof other_version);
  ::munmap(base, size);
  ::close(fd);

  std::unique_ptr<Store> refused;
  std::string message;
  StoreOptions again = options();
  again.reset = false;
  EXPECT_EQ(Store::open(again, &refused, &message), EINVAL);
  EXPECT_NE(message.find("layout version " + std::to_string(other_version)), std::string::npos)
      << message;
  EXPECT_NE(message.find("--reset"), std::string::npos) << message;
  struct stat still;
  EXPECT_EQ(::stat(path.c_str(), &still), 0) << "a refused store is not removed";

  ASSERT_EQ(Reopen(/*reset=*/true), 0);
  EXPECT_EQ(InoOf(obj, "a", Other()), 0u) << "a reset starts empty";
}

}  // namespace
}  // namespace smos::test
