// Entries: create, the write state and who sees it, commit on close, immutability, read and
// delete.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

using EntriesTest = ObjectTest;

TEST_F(EntriesTest, CloseCommitsANewEntry) {
  std::string e = Entry("e");
  Fd fd = Open(e, O_WRONLY | O_CREAT, 0640);
  ASSERT_TRUE(fd.ok()) << LastErr();
  ASSERT_EQ(WriteAll(fd.get(), "hello"), kOk);
  EXPECT_EQ(FGetXattr(fd.get(), xattr::kState), "write");
  EXPECT_EQ(FGetXattr(fd.get(), xattr::kSeq), "0");
  ASSERT_EQ(fd.Close(), kOk);

  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(GetXattr(e, xattr::kReaders), "0");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
  EXPECT_EQ(ReadFile(e), "hello");
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(e.c_str(), &st)), kOk);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 5);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"e"});
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
}

TEST_F(EntriesTest, ReadWriteCreateWorksToo) {
  std::string e = Entry("e");
  Fd fd = Open(e, O_RDWR | O_CREAT);
  ASSERT_TRUE(fd.ok()) << LastErr();
  ASSERT_EQ(WriteAll(fd.get(), "read-write"), kOk);
  EXPECT_EQ(ReadFd(fd.get()), "read-write");
  ASSERT_EQ(fd.Close(), kOk);
  EXPECT_EQ(ReadFile(e), "read-write");
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
}

TEST_F(EntriesTest, TheWriterSeesItsEntryInWriteState) {
  std::string e = Entry("e");
  Fd fd = Open(e, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteAll(fd.get(), "12345"), kOk);

  struct stat st;
  ASSERT_EQ(ErrOf(::stat(e.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_size, 5);
  EXPECT_EQ(GetXattr(e, xattr::kState), "write");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "0");
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "0");
  ASSERT_EQ(fd.Close(), kOk);
}

TEST_F(EntriesTest, AWriteEntryIsInvisibleToOtherProcessesUntilClose) {
  std::string e = Entry("e");
  auto writer = StartWriter(e, "secret");
  ASSERT_TRUE(writer->Wait()) << "the writer did not get to write";

  EXPECT_EQ(OpenErr(e, O_RDONLY), Err(ENOENT));
  EXPECT_EQ(StatErr(e), Err(ENOENT));
  EXPECT_EQ(GetXattr(e, xattr::kState).err, Err(ENOENT));
  NameList names = ListDir(obj_);
  EXPECT_EQ(names.err, kOk);
  EXPECT_FALSE(Contains(names.names, "e"));
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "0");
  // Still invisible after all that probing.
  EXPECT_EQ(OpenErr(e, O_RDONLY), Err(ENOENT));

  writer->Signal();
  ASSERT_TRUE(writer->Wait()) << "the writer did not close";
  EXPECT_EQ(writer->Join(), 0);

  // After close() returns, everyone sees the entry, and it is immutable.
  EXPECT_EQ(ReadFile(e), "secret");
  EXPECT_TRUE(Contains(ListDir(obj_).names, "e"));
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
  EXPECT_EQ(OpenErr(e, O_WRONLY), Err(EPERM));
  EXPECT_EQ(ErrOf(::truncate(e.c_str(), 0)), Err(EPERM));
  EXPECT_EQ(ReadFile(e), "secret");
}

TEST_F(EntriesTest, ExclusiveCreateOfACommittedNameFailsWithEexist) {
  std::string e = Entry("e");
  ASSERT_EQ(WriteFile(e, "first"), kOk);
  EXPECT_EQ(OpenErr(e, O_WRONLY | O_CREAT | O_EXCL), Err(EEXIST));
  EXPECT_EQ(OpenErr(e, O_RDWR | O_CREAT | O_EXCL), Err(EEXIST));
  EXPECT_EQ(ReadFile(e), "first");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
}

TEST_F(EntriesTest, ExclusiveCreateOfANameBeingWrittenFailsWithEexist) {
  std::string e = Entry("e");
  auto writer = StartWriter(e, "theirs");
  ASSERT_TRUE(writer->Wait());
  EXPECT_EQ(OpenErr(e, O_WRONLY | O_CREAT | O_EXCL), Err(EEXIST));
  writer->Signal();
  ASSERT_TRUE(writer->Wait());
  EXPECT_EQ(writer->Join(), 0);
  EXPECT_EQ(ReadFile(e), "theirs");
  // And its own process, too: a second exclusive create by the writer.
  std::string f = Entry("f");
  Fd fd = Open(f, O_WRONLY | O_CREAT | O_EXCL);
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(OpenErr(f, O_WRONLY | O_CREAT | O_EXCL), Err(EEXIST));
  ASSERT_EQ(WriteAll(fd.get(), "mine"), kOk);
  ASSERT_EQ(fd.Close(), kOk);
  EXPECT_EQ(ReadFile(f), "mine");
}

TEST_F(EntriesTest, ACommittedEntryIsImmutable) {
  std::string e = Entry("e");
  ASSERT_EQ(WriteFile(e, "frozen"), kOk);

  EXPECT_EQ(OpenErr(e, O_WRONLY), Err(EPERM));
  EXPECT_EQ(OpenErr(e, O_RDWR), Err(EPERM));
  EXPECT_EQ(OpenErr(e, O_WRONLY | O_APPEND), Err(EPERM));
  EXPECT_EQ(OpenErr(e, O_WRONLY | O_CREAT), Err(EPERM));  // what `>>` does
  EXPECT_EQ(ErrOf(::truncate(e.c_str(), 0)), Err(EPERM));
  EXPECT_EQ(ErrOf(::truncate(e.c_str(), 100)), Err(EPERM));

  EXPECT_EQ(ReadFile(e), "frozen");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
}

// fallocate(2) grows an entry being written, as ftruncate does (fallocate(1), and
// posix_fallocate, which glibc would otherwise emulate by writing zeros through the mount).
TEST_F(EntriesTest, FallocateGrowsAnEntryBeingWritten) {
  std::string e = Entry("e");
  Fd fd = Open(e, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(::write(fd.get(), "abc", 3), 3);
  ASSERT_EQ(ErrOf(::fallocate(fd.get(), 0, 0, 1 << 20)), kOk);
  struct stat st;
  ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_EQ(ErrOf(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, 2 << 20)), Err(EOPNOTSUPP));
  EXPECT_EQ(::posix_fallocate(fd.get(), 0, 2 << 20), 0);
  fd = Fd();
  ASSERT_EQ(ErrOf(::stat(e.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_size, 2 << 20);
  EXPECT_EQ(ReadFile(e).value, "abc" + std::string((2 << 20) - 3, '\0'));
  EXPECT_EQ(GetXattr(obj_, xattr::kBytes), std::to_string(2 << 20));
  Fd reader = Open(e, O_RDONLY);
  EXPECT_EQ(ErrOf(::fallocate(reader.get(), 0, 0, 4 << 20)), Err(EBADF));
}

TEST_F(EntriesTest, AnEntryCommitsAtTheLastCloseOfItsFileNotAtADuplicates) {
  // What a shell does for `cmd > name`: it closes its own descriptor of the file before cmd
  // writes a byte. Another process that looks in that moment must not commit the entry.
  const std::string e = Entry("e");
  Child writer([&e](Channel& channel) {
    Fd fd = Open(e, O_WRONLY | O_CREAT | O_TRUNC);
    if (!fd.ok()) return ChildFail("open");
    Fd dup(::dup(fd.get()));
    if (!dup.ok() || !fd.Close().ok()) return ChildFail("dup and close");
    channel.Signal();
    if (!channel.Wait()) return ChildFail("wait");
    if (!WriteAll(dup.get(), "all of it").ok()) return ChildFail("write after the first close");
    if (!dup.Close().ok()) return ChildFail("last close");
    channel.Signal();
    return 0;
  });
  ASSERT_TRUE(writer.Wait());
  EXPECT_EQ(StatErr(e), Err(ENOENT)) << "still being written";
  EXPECT_TRUE(ListDir(obj_).names.empty());
  writer.Signal();
  ASSERT_TRUE(writer.Wait());
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(ReadFile(e), "all of it");
  EXPECT_EQ(writer.Join(), 0);
}

TEST_F(EntriesTest, AWriteThroughADupAfterTheCommitFailsWithEperm) {
  std::string e = Entry("e");
  Fd first = Open(e, O_WRONLY | O_CREAT);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(WriteAll(first.get(), "abc"), kOk);
  Fd second(::dup(first.get()));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(first.Close(), kOk);
  ASSERT_EQ(FSetXattr(second.get(), xattr::kState, "idle"), kOk);  // commits at once

  EXPECT_EQ(ErrOf(::write(second.get(), "def", 3)), Err(EPERM));
  EXPECT_EQ(ErrOf(::ftruncate(second.get(), 0)), Err(EPERM));
  second.Close();
  EXPECT_EQ(ReadFile(e), "abc");
}

TEST_F(EntriesTest, ReadPreadAndStatGiveTheCommittedBytes) {
  for (std::size_t size : {0ul, 1ul, 4095ul, 4096ul, 4097ul, (1ul << 20) + 7}) {
    SCOPED_TRACE("size " + std::to_string(size));
    std::string e = Entry("e" + std::to_string(size));
    std::string bytes = Pattern(size, static_cast<std::uint32_t>(size));
    ASSERT_EQ(WriteFile(e, bytes), kOk);

    struct stat st;
    ASSERT_EQ(ErrOf(::stat(e.c_str(), &st)), kOk);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), size);
    Text read = ReadFile(e);
    ASSERT_TRUE(read.ok()) << read.err;
    EXPECT_TRUE(read.value == bytes) << "read back " << read.value.size() << " bytes";

    Fd fd = Open(e, O_RDONLY);
    ASSERT_TRUE(fd.ok());
    char buf[100];
    off_t middle = static_cast<off_t>(size / 2);
    ssize_t n = ::pread(fd.get(), buf, sizeof buf, middle);
    ASSERT_GE(n, 0) << ErrOf(n);
    EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)), bytes.substr(middle, sizeof buf));
    EXPECT_EQ(::pread(fd.get(), buf, sizeof buf, static_cast<off_t>(size)), 0);
    EXPECT_EQ(::pread(fd.get(), buf, sizeof buf, static_cast<off_t>(size) + 4096), 0);
  }
}

TEST_F(EntriesTest, ReaddirListsTheCommittedEntriesWithTheirSizes) {
  ASSERT_EQ(WriteFile(Entry("a"), "1"), kOk);
  ASSERT_EQ(WriteFile(Entry("b"), "22"), kOk);
  ASSERT_EQ(WriteFile(Entry("c"), "333"), kOk);
  NameList names = ListDir(obj_);
  ASSERT_EQ(names.err, kOk);
  ASSERT_EQ(names.names, (std::vector<std::string>{"a", "b", "c"}));
  for (std::size_t i = 0; i < names.names.size(); ++i) {
    struct stat st;
    ASSERT_EQ(ErrOf(::stat(Entry(names.names[i]).c_str(), &st)), kOk);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), i + 1) << names.names[i];
  }
}

TEST_F(EntriesTest, MissingEntriesAreEnoent) {
  std::string e = Entry("nope");
  EXPECT_EQ(OpenErr(e, O_RDONLY), Err(ENOENT));
  EXPECT_EQ(StatErr(e), Err(ENOENT));
  EXPECT_EQ(ErrOf(::unlink(e.c_str())), Err(ENOENT));
  EXPECT_EQ(GetXattr(e, xattr::kState).err, Err(ENOENT));
}

TEST_F(EntriesTest, UnlinkRemovesTheNameAndFreesTheMemory) {
  std::string e = Entry("e");
  ASSERT_EQ(WriteFile(e, Pattern(8192, 1)), kOk);
  ASSERT_EQ(WriteFile(Entry("other"), "stays"), kOk);
  ASSERT_EQ(ErrOf(::unlink(e.c_str())), kOk);

  EXPECT_EQ(StatErr(e), Err(ENOENT));
  EXPECT_EQ(OpenErr(e, O_RDONLY), Err(ENOENT));
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"other"});
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "5"; }))
      << GetXattr(obj_, xattr::kBytes);
  EXPECT_EQ(ReadFile(Entry("other")), "stays");
  // The name can be used again.
  ASSERT_EQ(WriteFile(e, "again"), kOk);
  EXPECT_EQ(ReadFile(e), "again");
}

TEST_F(EntriesTest, UnlinkOfAWriteEntryByItsWriterDiscardsIt) {
  std::string e = Entry("e");
  Fd fd = Open(e, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteAll(fd.get(), Pattern(4096, 2)), kOk);
  ASSERT_EQ(ErrOf(::unlink(e.c_str())), kOk);
  EXPECT_EQ(StatErr(e), Err(ENOENT));
  ASSERT_EQ(fd.Close(), kOk);

  EXPECT_EQ(StatErr(e), Err(ENOENT));
  EXPECT_TRUE(ListDir(obj_).names.empty());
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "0");
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "0"; }))
      << GetXattr(obj_, xattr::kBytes);
}

}  // namespace
}  // namespace smos::test
