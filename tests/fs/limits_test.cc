// Limits: block_size (EFBIG), the memory budget and the entry table (ENOSPC). After every
// refusal, what was there before is still intact.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

constexpr off_t kBlock = 64 * 1024;

class BlockSizeTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    obj_ = MakeObject("obj", {{xattr::kBlockSize, std::to_string(kBlock)}});
  }
  std::string obj_;
};

TEST_F(BlockSizeTest, WritesAtOrPastBlockSizeFailWithEfbig) {
  std::string e = obj_ + "/e";
  const std::string head = Pattern(1000, 1);
  Fd fd = Open(e, O_RDWR | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteAll(fd.get(), head), kOk);

  EXPECT_EQ(ErrOf(::pwrite(fd.get(), "x", 1, kBlock)), Err(EFBIG));
  EXPECT_EQ(ErrOf(::pwrite(fd.get(), "x", 1, kBlock + 4096)), Err(EFBIG));
  EXPECT_EQ(ErrOf(::pwrite(fd.get(), "x", 1, 1ll << 40)), Err(EFBIG));
  ASSERT_EQ(::lseek(fd.get(), kBlock, SEEK_SET), kBlock);
  EXPECT_EQ(ErrOf(::write(fd.get(), "x", 1)), Err(EFBIG));

  // Nothing was lost: the bytes written before are there, and the entry did not grow.
  struct stat st;
  ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
  EXPECT_EQ(st.st_size, static_cast<off_t>(head.size()));
  // The last byte below the limit is fine.
  EXPECT_EQ(::pwrite(fd.get(), "z", 1, kBlock - 1), 1);
  ASSERT_EQ(fd.Close(), kOk);

  Text read = ReadFile(e);
  ASSERT_TRUE(read.ok()) << read.err;
  ASSERT_EQ(read.value.size(), static_cast<std::size_t>(kBlock));
  EXPECT_EQ(read.value.substr(0, head.size()), head);
  EXPECT_EQ(read.value.substr(head.size(), kBlock - 1 - head.size()),
            std::string(kBlock - 1 - head.size(), '\0'));
  EXPECT_EQ(read.value.back(), 'z');
}

TEST_F(BlockSizeTest, TruncatePastBlockSizeFailsWithEfbig) {
  std::string e = obj_ + "/e";
  Fd fd = Open(e, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteAll(fd.get(), "kept"), kOk);

  EXPECT_EQ(ErrOf(::ftruncate(fd.get(), kBlock + 1)), Err(EFBIG));
  EXPECT_EQ(ErrOf(::ftruncate(fd.get(), 1ll << 40)), Err(EFBIG));
  struct stat st;
  ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
  EXPECT_EQ(st.st_size, 4);

  // Exactly block_size bytes is the largest entry there can be.
  EXPECT_EQ(ErrOf(::ftruncate(fd.get(), kBlock)), kOk);
  ASSERT_EQ(fd.Close(), kOk);
  Text read = ReadFile(e);
  ASSERT_TRUE(read.ok()) << read.err;
  EXPECT_EQ(read.value.size(), static_cast<std::size_t>(kBlock));
  EXPECT_EQ(read.value.substr(0, 4), "kept");
}

class BudgetTest : public MountTest {
 protected:
  static constexpr std::size_t kBudget = 8 << 20;
  static constexpr std::size_t kChunk = 64 << 10;

  std::vector<std::string> DaemonArgs() const override { return {"--memory=8M"}; }
};

TEST_F(BudgetTest, WritesPastTheBudgetFailWithEnospcAndNothingIsLost) {
  std::string obj = MakeObject("obj");
  std::string big = obj + "/big";
  Fd fd = Open(big, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  std::string written;
  Err last = kOk;
  for (std::uint32_t i = 0; i < 2 * kBudget / kChunk && last.ok(); ++i) {
    std::string chunk = Pattern(kChunk, i);
    ssize_t n = ::write(fd.get(), chunk.data(), chunk.size());
    if (n < 0) {
      last = Err(errno);
    } else {
      written += chunk.substr(0, static_cast<std::size_t>(n));
    }
  }
  EXPECT_EQ(last, Err(ENOSPC));
  EXPECT_EQ(written.size(), kBudget) << "the whole budget, and not a byte more, is usable";
  struct stat st;
  ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), written.size());
  ASSERT_EQ(fd.Close(), kOk);

  // Everything accepted is there.
  Text read = ReadFile(big);
  ASSERT_TRUE(read.ok()) << read.err;
  EXPECT_EQ(read.value.size(), written.size());
  EXPECT_EQ(Checksum(read.value), Checksum(written));
  Space space = StatSpace(Path(""));
  EXPECT_EQ(space.total, kBudget);
  EXPECT_EQ(space.used, written.size());

  // With the budget used up, there is no room for another entry, or for a byte more.
  EXPECT_EQ(OpenErr(obj + "/more", O_WRONLY | O_CREAT), Err(ENOSPC));
  EXPECT_EQ(ReadFile(big).value.size(), written.size());

  // Deleting frees the memory for new entries.
  ASSERT_EQ(ErrOf(::unlink(big.c_str())), kOk);
  EXPECT_TRUE(Eventually([&] { return WriteFile(obj + "/more", Pattern(1 << 20, 9)) == kOk; }));
  EXPECT_TRUE(ReadFile(obj + "/more") == Pattern(1 << 20, 9));
}

TEST_F(BudgetTest, FtruncatePastTheBudgetFailsWithEnospc) {
  std::string obj = MakeObject("obj");
  std::string e = obj + "/e";
  Fd fd = Open(e, O_RDWR | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteAll(fd.get(), "head"), kOk);
  EXPECT_EQ(ErrOf(::ftruncate(fd.get(), 2 * kBudget)), Err(ENOSPC));
  struct stat st;
  ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
  EXPECT_EQ(st.st_size, 4);

  // A size that fits is backed by memory: writing all of it through mmap cannot fail.
  const std::size_t size = kBudget / 2;
  ASSERT_EQ(ErrOf(::ftruncate(fd.get(), size)), kOk);
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(map, MAP_FAILED) << LastErr();
  std::fill_n(static_cast<char*>(map) + 4, size - 4, 'm');
  EXPECT_EQ(ErrOf(::msync(map, size, MS_SYNC)), kOk);
  ASSERT_EQ(ErrOf(::munmap(map, size)), kOk);
  ASSERT_EQ(fd.Close(), kOk);
  Text read = ReadFile(e);
  ASSERT_TRUE(read.ok()) << read.err;
  EXPECT_TRUE(read.value == "head" + std::string(size - 4, 'm'));
}

TEST_F(BudgetTest, AZombieHoldsItsMemoryUntilItsLastReaderCloses) {
  std::string obj = MakeObject("obj");
  const std::size_t size = 6 << 20;
  ASSERT_EQ(WriteFile(obj + "/old", Pattern(size, 1)), kOk);
  Fd reader = Open(obj + "/old", O_RDONLY);
  ASSERT_TRUE(reader.ok());
  ASSERT_EQ(ErrOf(::unlink((obj + "/old").c_str())), kOk);

  // 6M + 6M do not fit in 8M while the zombie lives.
  Fd writer = Open(obj + "/new", O_RDWR | O_CREAT);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ(ErrOf(::ftruncate(writer.get(), size)), Err(ENOSPC));
  EXPECT_EQ(Checksum(ReadFd(reader.get()).value), Checksum(Pattern(size, 1)));

  ASSERT_EQ(reader.Close(), kOk);
  EXPECT_TRUE(Eventually([&] { return ::ftruncate(writer.get(), size) == 0; }))
      << "the zombie's memory never came back: " << LastErr();
  ASSERT_EQ(writer.Close(), kOk);
  EXPECT_EQ(ReadFile(obj + "/new").value.size(), size);
}

class EntryTableTest : public MountTest {
 protected:
  std::vector<std::string> DaemonArgs() const override { return {"--max-entries=4"}; }
};

TEST_F(EntryTableTest, AFullEntryTableFailsWithEnospc) {
  std::string a = MakeObject("a");
  std::string b = MakeObject("b");
  for (const std::string& e : {a + "/1", a + "/2", b + "/1", b + "/2"}) {
    ASSERT_EQ(WriteFile(e, e), kOk) << e;
  }
  EXPECT_EQ(OpenErr(b + "/3", O_WRONLY | O_CREAT), Err(ENOSPC));
  for (const std::string& e : {a + "/1", a + "/2", b + "/1", b + "/2"}) {
    EXPECT_EQ(ReadFile(e), e);
  }
  ASSERT_EQ(ErrOf(::unlink((a + "/1").c_str())), kOk);
  EXPECT_TRUE(Eventually([&] { return WriteFile(b + "/3", "3") == kOk; }));
  EXPECT_EQ(ReadFile(b + "/3"), "3");
}

}  // namespace
}  // namespace smos::test
