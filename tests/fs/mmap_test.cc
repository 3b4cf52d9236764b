// mmap of entries through the mount, and of their shared-memory segments directly.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

// A read-only shared mapping of a whole file; unmapped on destruction.
class Mapping {
 public:
  Mapping(int fd, std::size_t size)
      : size_(size), addr_(::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0)) {}
  ~Mapping() {
    if (ok()) ::munmap(addr_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  bool ok() const { return addr_ != MAP_FAILED; }
  std::string bytes() const { return std::string(static_cast<const char*>(addr_), size_); }

 private:
  std::size_t size_;
  void* addr_;
};

using MmapTest = ObjectTest;

TEST_F(MmapTest, ASharedMappingOfAnEntryHoldsItsCommittedBytes) {
  std::string e = obj_ + "/e";
  const std::string bytes = Pattern((1 << 20) + 123, 5);
  ASSERT_EQ(WriteFile(e, bytes), kOk);

  Fd fd = Open(e, O_RDONLY);
  ASSERT_TRUE(fd.ok());
  Mapping map(fd.get(), bytes.size());
  ASSERT_TRUE(map.ok()) << LastErr();
  EXPECT_TRUE(map.bytes() == bytes);

  // Another process maps the same bytes.
  Child other([&](Channel&) {
    Fd theirs = Open(e, O_RDONLY);
    if (!theirs.ok()) return ChildFail("open");
    Mapping their_map(theirs.get(), bytes.size());
    if (!their_map.ok()) return ChildFail("mmap");
    return their_map.bytes() == bytes ? 0 : 2;
  });
  EXPECT_EQ(other.Join(), 0);
}

TEST_F(MmapTest, FtruncateThenMmapWritesAnEntryOfKnownSize) {
  std::string e = obj_ + "/e";
  const std::size_t size = (1 << 20) + 4096;
  const std::string bytes = Pattern(size, 3);
  Fd fd = Open(e, O_RDWR | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(ErrOf(::ftruncate(fd.get(), size)), kOk);
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(map, MAP_FAILED) << LastErr();
  std::copy(bytes.begin(), bytes.end(), static_cast<char*>(map));
  EXPECT_EQ(ErrOf(::msync(map, size, MS_SYNC)), kOk);
  ASSERT_EQ(ErrOf(::munmap(map, size)), kOk);
  ASSERT_EQ(fd.Close(), kOk);

  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  Text read = ReadFile(e);
  ASSERT_TRUE(read.ok()) << read.err;
  EXPECT_EQ(read.value.size(), size);
  EXPECT_TRUE(read.value == bytes) << "the mapped writes did not all arrive";
}

TEST_F(MmapTest, TheSegmentIsAnAbsolutePathHoldingExactlyTheEntrysBytes) {
  std::string e = obj_ + "/e";
  const std::string bytes = Pattern(100'000, 8);
  ASSERT_EQ(WriteFile(e, bytes), kOk);
  Fd lease = Open(e, O_RDONLY);  // the open handle keeps the segment's bytes ours
  ASSERT_TRUE(lease.ok());

  Text segment = FGetXattr(lease.get(), xattr::kSegment);
  ASSERT_TRUE(segment.ok()) << segment.err;
  EXPECT_EQ(GetXattr(e, xattr::kSegment), segment.value);
  ASSERT_FALSE(segment.value.empty());
  EXPECT_EQ(segment.value[0], '/') << segment.value;

  struct stat st;
  ASSERT_EQ(ErrOf(::stat(segment.value.c_str(), &st)), kOk) << segment.value;
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), bytes.size());

  Fd direct = Open(segment.value, O_RDONLY);
  ASSERT_TRUE(direct.ok()) << LastErr();
  Mapping map(direct.get(), bytes.size());
  ASSERT_TRUE(map.ok()) << LastErr();
  EXPECT_TRUE(map.bytes() == bytes);
  EXPECT_TRUE(ReadFd(direct.get()) == bytes);
}

TEST_F(MmapTest, EachEntryHasItsOwnSegment) {
  ASSERT_EQ(WriteFile(obj_ + "/a", "aaaa"), kOk);
  ASSERT_EQ(WriteFile(obj_ + "/b", ""), kOk);
  Fd a = Open(obj_ + "/a", O_RDONLY);
  Fd b = Open(obj_ + "/b", O_RDONLY);
  ASSERT_TRUE(a.ok() && b.ok());
  Text seg_a = FGetXattr(a.get(), xattr::kSegment);
  Text seg_b = FGetXattr(b.get(), xattr::kSegment);
  ASSERT_TRUE(seg_a.ok() && seg_b.ok());
  EXPECT_NE(seg_a.value, seg_b.value);
  EXPECT_EQ(ReadFile(seg_a.value), "aaaa");
  EXPECT_EQ(ReadFile(seg_b.value), "");
}

}  // namespace
}  // namespace smos::test
