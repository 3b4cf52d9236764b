// Commits: explicit mode, the sequence counter, immutability, and the atomic replace.
#include <cerrno>
#include <string>
#include <vector>

#include "smos/control.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

using StoreCommitTest = StoreTest;

TEST_F(StoreCommitTest, ExplicitModeDiscardsAnUncommittedEntryOnRelease) {
  Ino obj = MakeObject("o", {{xattr::kCommit, "explicit"}, {xattr::kCapacity, "1"}});
  const StoreStats before = store().stats();
  Attr attr;
  std::uint64_t fh = Create(obj, "e", &attr);
  ASSERT_EQ(Write(fh, 0, Pattern(8192, 1)), 0);
  EXPECT_EQ(store().stats().memory_used, 8192u);
  EXPECT_EQ(store().stats().free_entries, before.free_entries - 1);

  ASSERT_EQ(store().release(fh), 0);
  EXPECT_EQ(InoOf(obj, "e", Me()), 0u);
  EXPECT_EQ(InoOf(obj, "e", Other()), 0u);
  EXPECT_TRUE(Gone(attr.ino));
  EXPECT_EQ(store().stats().memory_used, 0u);
  EXPECT_EQ(store().stats().free_entries, before.free_entries);
  EXPECT_EQ(Xattr(obj, xattr::kBytes), "0");

  // The one entry of capacity is free again.
  std::uint64_t again = Create(obj, "f", &attr);
  ASSERT_NE(again, 0u);
  ASSERT_EQ(Write(again, 0, "kept"), 0);
  ASSERT_EQ(SetXattr(attr.ino, xattr::kState, "idle"), 0);
  ASSERT_EQ(store().release(again), 0);
  EXPECT_EQ(ContentsOf(InoOf(obj, "f", Other()), Other()), "kept");
}

TEST_F(StoreCommitTest, ExplicitModeIgnoresFlushes) {
  Ino obj = MakeObject("o", {{xattr::kCommit, "explicit"}});
  std::uint64_t fh = Create(obj, "e");
  ASSERT_EQ(Write(fh, 0, "x"), 0);
  ASSERT_EQ(store().flush(fh, Me()), 0);
  EXPECT_EQ(InoOf(obj, "e", Other()), 0u);
  EXPECT_EQ(Listing(obj), Names{});
  ASSERT_EQ(store().release(fh), 0);
  EXPECT_EQ(InoOf(obj, "e", Other()), 0u);
}

// The channel holds the closer's next requests back until such a release is served.
TEST_F(StoreCommitTest, OnlyAWritersReleaseOfAnEntryStillBeingWrittenSettlesIt) {
  Ino obj = MakeObject("o");
  Attr attr;
  std::uint64_t writer = Create(obj, "e", &attr);
  ASSERT_EQ(Write(writer, 0, "bytes"), 0);
  ASSERT_EQ(store().flush(writer, Me()), 0);
  EXPECT_TRUE(store().settles_at_release(writer));  // its release commits it

  Ino explicit_obj = MakeObject("x", {{xattr::kCommit, "explicit"}});
  std::uint64_t uncommitted = Create(explicit_obj, "e");
  EXPECT_TRUE(store().settles_at_release(uncommitted));  // its release discards it
  Attr committed_attr;
  std::uint64_t committed = Create(explicit_obj, "f", &committed_attr);
  ASSERT_EQ(SetXattr(committed_attr.ino, xattr::kState, "idle"), 0);
  EXPECT_FALSE(store().settles_at_release(committed));  // committed already

  ASSERT_EQ(store().release(writer), 0);
  std::uint64_t reader = OpenRead(attr.ino, Me());
  EXPECT_FALSE(store().settles_at_release(reader));
  EXPECT_FALSE(store().settles_at_release(writer));  // released: no such handle
  for (std::uint64_t fh : {reader, uncommitted, committed}) ASSERT_EQ(store().release(fh), 0);
}

TEST_F(StoreCommitTest, SettingStateIdleCommitsAtOnce) {
  Ino obj = MakeObject("o");
  Attr attr;
  std::uint64_t fh = Create(obj, "e", &attr);
  ASSERT_EQ(Write(fh, 0, "now"), 0);
  ASSERT_EQ(SetXattr(attr.ino, xattr::kState, "idle\n"), 0);
  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "idle");
  EXPECT_EQ(InoOf(obj, "e", Other()), attr.ino);
  IoSpan span;
  EXPECT_EQ(store().prepare_write(fh, 0, 1, &span), EPERM);
  ASSERT_EQ(store().release(fh), 0);
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), "1");
  EXPECT_EQ(ContentsOf(attr.ino, Other()), "now");
}

TEST_F(StoreCommitTest, EachCommitTakesTheNextSeq) {
  Ino obj = MakeObject("o", {{xattr::kCommit, "explicit"}});
  std::vector<Ino> inos;
  for (const char* name : {"a", "b", "c"}) {
    Attr attr;
    std::uint64_t fh = Create(obj, name, &attr);
    ASSERT_EQ(SetXattr(attr.ino, xattr::kState, "idle"), 0);
    ASSERT_EQ(store().release(fh), 0);
    inos.push_back(attr.ino);
  }
  EXPECT_EQ(Xattr(inos[0], xattr::kSeq), "1");
  EXPECT_EQ(Xattr(inos[1], xattr::kSeq), "2");
  EXPECT_EQ(Xattr(inos[2], xattr::kSeq), "3");

  // Committing a committed entry again changes nothing.
  EXPECT_EQ(SetXattr(inos[0], xattr::kState, "idle"), 0);
  EXPECT_EQ(Xattr(inos[0], xattr::kSeq), "1");
  // Sequence numbers count per object.
  Ino other = MakeObject("p");
  EXPECT_EQ(Xattr(Put(other, "a", "x"), xattr::kSeq), "1");
}

TEST_F(StoreCommitTest, OnlyIdleIsAStateToSet) {
  Ino obj = MakeObject("o");
  Attr attr;
  std::uint64_t fh = Create(obj, "e", &attr);
  for (const char* value : {"busy", "zombie", "write", "", "IDLE"}) {
    EXPECT_EQ(SetXattr(attr.ino, xattr::kState, value), EINVAL) << value;
  }
  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "write");
  ASSERT_EQ(store().release(fh), 0);
}

TEST_F(StoreCommitTest, ACommittedEntryCannotBeOpenedForWriting) {
  Ino obj = MakeObject("o");
  Ino ino = Put(obj, "e", "fixed");
  OpenFile file;
  EXPECT_EQ(store().open(ino, O_WRONLY, Me(), &file), EPERM);
  EXPECT_EQ(store().open(ino, O_RDWR, Me(), &file), EPERM);
  EXPECT_EQ(store().open(ino, O_WRONLY | O_APPEND, Other(), &file), EPERM);
  Attr attr;
  EXPECT_EQ(store().create(obj, "e", 0644, kCreateFlags, Me(), &attr, &file), EPERM);
  EXPECT_EQ(ContentsOf(ino, Other()), "fixed");
}

TEST_F(StoreCommitTest, ACommittedEntryCannotBeTruncated) {
  Ino obj = MakeObject("o");
  Ino ino = Put(obj, "e", "fixed");
  SetAttr change;
  change.size = 0;
  Attr attr;
  EXPECT_EQ(store().setattr(ino, change, std::nullopt, Me(), &attr), EPERM);
  change.size = 100;
  EXPECT_EQ(store().setattr(ino, change, std::nullopt, Other(), &attr), EPERM);
  ASSERT_EQ(GetAttr(ino, &attr), 0);
  EXPECT_EQ(attr.size, 5u);
  EXPECT_EQ(store().stats().memory_used, 5u);
}

// touch(1) of .push opens it, then sets the times of what it opened (futimens comes without
// a handle): that is the push's writer changing its own entry, and the close pushes an empty
// entry, as `: > .push` does. cp -p does the same with fchmod. Nothing else changes a control
// file.
TEST_F(StoreCommitTest, APushsWriterMayChangeItsEntrysAttributesButNothingElseOfAControlFile) {
  Ino obj = MakeObject("o");
  Put(obj, "e", "x");
  Attr ticket;
  ASSERT_EQ(store().lookup(obj, control::kPush, Me(), &ticket), 0);
  OpenFile push;
  ASSERT_EQ(store().open(ticket.ino, O_WRONLY | O_CREAT, Me(), &push), 0);
  SetAttr times;
  times.atime_ns = times.mtime_ns = 1'000'000'000;
  Attr attr;
  EXPECT_EQ(store().setattr(ticket.ino, times, std::nullopt, Other(), &attr), EPERM)
      << "not the push's writer";
  ASSERT_EQ(store().setattr(ticket.ino, times, std::nullopt, Me(), &attr), 0);
  EXPECT_EQ(attr.times.mtime_ns, 1'000'000'000);
  SetAttr mode;
  mode.mode = 0600;
  EXPECT_EQ(store().setattr(ticket.ino, mode, std::nullopt, Other(), &attr), EPERM);
  ASSERT_EQ(store().setattr(ticket.ino, mode, std::nullopt, Me(), &attr), 0);
  ASSERT_EQ(store().flush(push.fh, Me()), 0);
  ASSERT_EQ(store().release(push.fh), 0);
  ASSERT_EQ(Listing(obj), (Names{"00000000000000000002", "e"}));
  ASSERT_EQ(GetAttr(InoOf(obj, "00000000000000000002", Other()), &attr), 0);
  EXPECT_EQ(attr.size, 0u);
  EXPECT_EQ(attr.times.mtime_ns, 1'000'000'000);
  EXPECT_EQ(attr.mode & 07777, 0600u);

  // .pop and .latest, opened or not, and .push unopened.
  for (const char* name : {control::kPop, control::kLatest, control::kPush}) {
    SCOPED_TRACE(name);
    ASSERT_EQ(store().lookup(obj, name, Me(), &ticket), 0);
    EXPECT_EQ(store().setattr(ticket.ino, times, std::nullopt, Me(), &attr), EPERM);
    EXPECT_EQ(store().setattr(ticket.ino, mode, std::nullopt, Me(), &attr), EPERM);
    if (name == control::kPush) continue;
    OpenFile reader;
    ASSERT_EQ(store().open(ticket.ino, O_RDONLY, Me(), &reader), 0);
    EXPECT_EQ(store().setattr(ticket.ino, times, reader.fh, Me(), &attr), EPERM);
    EXPECT_EQ(store().setattr(ticket.ino, times, std::nullopt, Me(), &attr), EPERM);
    ASSERT_EQ(store().release(reader.fh), 0);
  }
  EXPECT_EQ(Listing(obj), Names{"00000000000000000002"}) << "the pop took the oldest, e";
}

// A push names its entry by its seq. A committed entry that took such a name by hand (a cp
// of another queue's entries) is not replaced by the push that reaches that seq: the push takes
// the next free seq (found by QA).
TEST_F(StoreCommitTest, APushSkipsASeqWhoseNameIsTaken) {
  Ino obj = MakeObject("o");
  Put(obj, "00000000000000000002", "copied by hand");  // commits as seq 1
  ASSERT_EQ(Push(obj, "pushed"), 0);
  EXPECT_EQ(Listing(obj), (Names{"00000000000000000002", "00000000000000000003"}));
  EXPECT_EQ(ContentsOf(InoOf(obj, "00000000000000000002", Other()), Other()), "copied by hand");
  EXPECT_EQ(ContentsOf(InoOf(obj, "00000000000000000003", Other()), Other()), "pushed");
}

TEST_F(StoreCommitTest, UserXattrsAreFrozenAtCommit) {
  Ino obj = MakeObject("o");
  Attr attr;
  std::uint64_t fh = Create(obj, "e", &attr);
  ASSERT_EQ(SetXattr(attr.ino, "user.dtype", "float32"), 0);
  ASSERT_EQ(SetXattr(attr.ino, "user.tmp", "1"), 0);
  ASSERT_EQ(RemoveXattr(attr.ino, "user.tmp"), 0);
  ASSERT_EQ(store().release(fh), 0);

  EXPECT_EQ(SetXattr(attr.ino, "user.dtype", "int8"), EPERM);
  EXPECT_EQ(SetXattr(attr.ino, "user.shape", "1,2"), EPERM);
  EXPECT_EQ(RemoveXattr(attr.ino, "user.dtype"), EPERM);
  EXPECT_EQ(Xattr(attr.ino, "user.dtype"), "float32");
  EXPECT_EQ(Xattr(attr.ino, "user.tmp"), "<ENODATA>");
  EXPECT_EQ(Xattr(attr.ino, "user.shape"), "<ENODATA>");
}

TEST_F(StoreCommitTest, TruncatingOpenReplacesAtomically) {
  Ino obj = MakeObject("o");
  const std::string old_bytes = Pattern(5000, 1);
  const std::string new_bytes = Pattern(7000, 2);
  Ino old_ino = Put(obj, "w", old_bytes);
  std::uint64_t reader = OpenRead(old_ino, Other());

  // The first open sends the kernel back for the name, which now leads this thread (only) to
  // a new version, with an inode of its own.
  OpenFile writer;
  EXPECT_EQ(store().open(old_ino, O_WRONLY | O_TRUNC, Me(), &writer), ESTALE);
  Ino writing_ino;
  ASSERT_EQ(Replace(obj, "w", Me(), &writer, &writing_ino), 0);
  EXPECT_NE(writing_ino, old_ino);
  EXPECT_EQ(InoOf(obj, "w", Other()), old_ino);
  EXPECT_EQ(Xattr(writing_ino, xattr::kState), "write");
  ASSERT_EQ(Write(writer.fh, 0, new_bytes), 0);

  // Until the commit, everyone else gets the old version.
  Attr attr;
  ASSERT_EQ(store().lookup(obj, "w", Other(), &attr), 0);
  store().forget(attr.ino, 1);
  EXPECT_EQ(attr.ino, old_ino);
  EXPECT_EQ(attr.size, old_bytes.size());
  EXPECT_EQ(ContentsOf(old_ino, Other()), old_bytes);
  EXPECT_EQ(Xattr(old_ino, xattr::kState), "busy");
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1");

  ASSERT_EQ(store().release(writer.fh), 0);
  ASSERT_EQ(store().lookup(obj, "w", Other(), &attr), 0);
  store().forget(attr.ino, 1);
  const Ino new_ino = attr.ino;
  EXPECT_EQ(new_ino, writing_ino);
  EXPECT_EQ(attr.size, new_bytes.size());
  EXPECT_EQ(ContentsOf(new_ino, Other()), new_bytes);
  EXPECT_EQ(Xattr(new_ino, xattr::kSeq), "2");
  EXPECT_EQ(Listing(obj), Names{"w"});
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1");

  // The old version lives on for its reader, unchanged.
  EXPECT_EQ(Xattr(old_ino, xattr::kState), "zombie");
  EXPECT_EQ(Contents(reader), old_bytes);
  EXPECT_EQ(store().stats().memory_used, old_bytes.size() + new_bytes.size());
  ASSERT_EQ(store().release(reader), 0);
  EXPECT_TRUE(Gone(old_ino));
  EXPECT_EQ(store().stats().memory_used, new_bytes.size());
}

TEST_F(StoreCommitTest, AReplacedVersionLivesWhileTheKernelMayStillOpenIt) {
  Ino obj = MakeObject("o");
  const Ino old_ino = Put(obj, "w", "old");
  Attr attr;
  ASSERT_EQ(store().lookup(obj, "w", Other(), &attr), 0);  // the kernel now caches the name
  OpenFile writer;
  ASSERT_EQ(Replace(obj, "w", Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, "new!"), 0);
  Store::StaleName stale;
  ASSERT_EQ(store().flush(writer.fh, Me(), &stale), 0);
  EXPECT_EQ(stale.parent, obj) << "a closed replace makes the cached name stale";
  EXPECT_EQ(stale.name, "w");
  ASSERT_EQ(store().release(writer.fh), 0);

  // An open through the name the kernel cached is sent back for the current version...
  OpenFile file;
  EXPECT_EQ(store().open(old_ino, O_RDONLY, Other(), &file), ESTALE);
  // ...and if that walk's lookup raced with the replace and found the old one, it gets it, whole.
  EXPECT_EQ(ContentsOf(old_ino, Other()), "old");
  EXPECT_EQ(store().open(old_ino, O_RDONLY, Other(), &file), ESTALE) << "a new open(2)";
  EXPECT_EQ(store().stats().memory_used, 3u + 4u);
  store().forget(old_ino, 1);
  EXPECT_TRUE(Gone(old_ino)) << "forgotten by the kernel, the old version is freed";
  EXPECT_EQ(store().stats().memory_used, 4u);
}

TEST_F(StoreCommitTest, AFlushedReplaceTakesTheNameAtItsRelease) {
  Ino obj = MakeObject("o");
  Ino old_ino = Put(obj, "w", "old");
  OpenFile writer;
  ASSERT_EQ(Replace(obj, "w", Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, "new!"), 0);
  ASSERT_EQ(store().flush(writer.fh, Me()), 0);
  EXPECT_EQ(InoOf(obj, "w", Other()), old_ino) << "a descriptor may still write";
  EXPECT_EQ(ContentsOf(old_ino, Other()), "old");

  ASSERT_EQ(store().release(writer.fh), 0);
  const Ino new_ino = InoOf(obj, "w", Other());
  EXPECT_NE(new_ino, old_ino);
  EXPECT_EQ(ContentsOf(new_ino, Other()), "new!");
  EXPECT_TRUE(Gone(old_ino));
  EXPECT_EQ(store().stats().memory_used, 4u);
}

TEST_F(StoreCommitTest, TruncatingAReplacingHandleResizesTheNewVersion) {
  Ino obj = MakeObject("o");
  Ino old_ino = Put(obj, "w", "old bytes");
  OpenFile writer;
  Ino new_ino;
  ASSERT_EQ(Replace(obj, "w", Me(), &writer, &new_ino), 0);
  SetAttr change;
  change.size = 4096;
  Attr attr;
  ASSERT_EQ(store().setattr(new_ino, change, writer.fh, Me(), &attr), 0);
  EXPECT_EQ(attr.size, 4096u);
  EXPECT_EQ(store().setattr(old_ino, change, std::nullopt, Me(), &attr), EPERM)
      << "committed versions never change";
  EXPECT_EQ(ContentsOf(old_ino, Other()), "old bytes") << "the old version is untouched";
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(ContentsOf(InoOf(obj, "w", Other()), Other()), std::string(4096, '\0'));
}

TEST_F(StoreCommitTest, AReplaceWithoutReadersFreesTheOldVersionAtCommit) {
  Ino obj = MakeObject("o", {{xattr::kCapacity, "2"}});
  Ino old_ino = Put(obj, "w", Pattern(3000, 1));
  OpenFile writer;
  ASSERT_EQ(Replace(obj, "w", Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, "new"), 0);
  ASSERT_EQ(store().release(writer.fh), 0);

  EXPECT_TRUE(Gone(old_ino));
  EXPECT_EQ(store().stats().memory_used, 3u);
  EXPECT_EQ(ContentsOf(InoOf(obj, "w", Other()), Other()), "new");
  EXPECT_NE(Put(obj, "second", "x"), 0u) << "the old version's place in capacity is free";
}

TEST_F(StoreCommitTest, AnUncommittedReplaceIsDiscardedInExplicitMode) {
  Ino obj = MakeObject("o", {{xattr::kCommit, "explicit"}});
  Attr attr;
  std::uint64_t fh = Create(obj, "w", &attr);
  ASSERT_EQ(Write(fh, 0, "old"), 0);
  ASSERT_EQ(SetXattr(attr.ino, xattr::kState, "idle"), 0);
  ASSERT_EQ(store().release(fh), 0);

  OpenFile writer;
  ASSERT_EQ(Replace(obj, "w", Me(), &writer), 0);
  ASSERT_EQ(Write(writer.fh, 0, "half-written"), 0);
  ASSERT_EQ(store().release(writer.fh), 0);
  EXPECT_EQ(InoOf(obj, "w", Other()), attr.ino);
  EXPECT_EQ(ContentsOf(attr.ino, Other()), "old");
  EXPECT_EQ(store().stats().memory_used, 3u);
}

TEST_F(StoreCommitTest, AVersionStillOpenElsewhereOutlivesAnotherVersionsCommit) {
  Ino obj = MakeObject("o");
  Attr mine_attr;
  const std::uint64_t mine = Create(obj, "w", &mine_attr);
  ASSERT_EQ(Write(mine, 0, "mine"), 0);
  ASSERT_EQ(store().flush(mine, Me()), 0);  // a dup's close: the file stays open
  Attr theirs_attr;
  OpenFile theirs;
  ASSERT_EQ(store().create(obj, "w", 0644, kCreateFlags | O_TRUNC, Other(), &theirs_attr, &theirs),
            0);
  ASSERT_EQ(Write(theirs.fh, 0, "theirs"), 0);
  ASSERT_EQ(store().flush(theirs.fh, Other()), 0);
  ASSERT_EQ(store().release(theirs.fh), 0);
  EXPECT_EQ(ContentsOf(InoOf(obj, "w", Other()), Other()), "theirs");
  EXPECT_EQ(Xattr(mine_attr.ino, xattr::kState), "write") << "still open, still being written";

  ASSERT_EQ(Write(mine, 4, "!"), 0);
  ASSERT_EQ(store().flush(mine, Me()), 0);  // the last close, after theirs
  ASSERT_EQ(store().release(mine), 0);
  EXPECT_EQ(ContentsOf(InoOf(obj, "w", Other()), Other()), "mine!");
  store().forget(mine_attr.ino, 1);
  store().forget(theirs_attr.ino, 1);
  EXPECT_EQ(store().stats().memory_used, 5u) << "theirs is freed";
}

TEST_F(StoreCommitTest, TheNameEndsWithTheVersionClosedLastWhateverTheReleaseOrder) {
  Ino obj = MakeObject("o");
  Attr attr;
  const std::uint64_t first = Create(obj, "w", &attr);
  ASSERT_EQ(Write(first, 0, "first"), 0);
  ASSERT_EQ(store().flush(first, Me()), 0);  // closed, but its release is still on its way
  OpenFile second;
  ASSERT_EQ(Replace(obj, "w", Me(), &second), 0) << "a version of its own";
  ASSERT_EQ(Write(second.fh, 0, "second"), 0);
  ASSERT_EQ(store().flush(second.fh, Me()), 0);
  ASSERT_EQ(store().release(second.fh), 0);
  ASSERT_EQ(store().release(first), 0);  // the late release of the version closed first
  EXPECT_EQ(ContentsOf(InoOf(obj, "w", Other()), Other()), "second");
  EXPECT_EQ(Xattr(InoOf(obj, "w", Other()), xattr::kSeq), "1");
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), "2") << "committed, and replaced at once";
  EXPECT_EQ(Xattr(attr.ino, xattr::kState), "zombie");
  store().forget(attr.ino, 1);  // the kernel's reference from the create
  EXPECT_EQ(store().stats().memory_used, 6u) << "the first version is freed";
}

}  // namespace
}  // namespace smos::test
