// FUSE passthrough (see Store::open, Store::backing_of and FuseChannel): readers of committed
// entries and pops are served by the kernel straight from their slot files. Every test runs
// twice, on a daemon with passthrough (the default) and on one started with --no-passthrough:
// what a reader sees must not depend on which path serves it.
//
// Whether an open was answered with a backing file is read from the daemon's debug log
// ("FUSE channel: open reply with backing file N"), which it writes before it sends the reply.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fs/mount_fixture.h"
#include "smos/control.h"

namespace smos::test {
namespace {

constexpr char kBackingReply[] = "FUSE channel: open reply with backing file";

// A read-only shared mapping of the first `size` bytes of fd; unmapped on destruction.
class Mapping {
 public:
  Mapping(int fd, std::size_t size)
      : size_(size), addr_(::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0)) {}
  ~Mapping() { Unmap(); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  bool ok() const { return addr_ != MAP_FAILED; }
  const char* data() const { return static_cast<const char*>(addr_); }
  std::size_t size() const { return size_; }
  Err Unmap() {
    if (!ok()) return kOk;
    Err err = ErrOf(::munmap(addr_, size_));
    addr_ = MAP_FAILED;
    return err;
  }

 private:
  std::size_t size_;
  void* addr_;
};

// Whether the mapping holds exactly `bytes`, looked at in a forked child, so that a SIGBUS
// fails the test instead of killing it. Empty if so, else what went wrong.
std::string MappingMismatch(const Mapping& map, const std::string& bytes) {
  if (!map.ok()) return "not mapped";
  if (map.size() != bytes.size()) return "mapped " + std::to_string(map.size()) + " bytes";
  Child child([&](Channel&) {
    const char* data = map.data();
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      if (data[i] != bytes[i]) {
        std::fprintf(stderr, "child %d: mapping differs at byte %zu of %zu\n",
                     static_cast<int>(::getpid()), i, bytes.size());
        return 2;
      }
    }
    return 0;
  });
  const int status = child.Join();
  if (status == 0) return "";
  if (status == 2) return "the mapping holds other bytes (see the child's message)";
  if (status == 128 + SIGBUS) return "SIGBUS reading the mapping";
  return "the checking child ended with status " + std::to_string(status);
}

// The same for a fresh shared mapping of fd, unmapped afterwards.
std::string MappedMismatch(int fd, const std::string& bytes) {
  Mapping map(fd, bytes.size());
  if (!map.ok()) return "mmap: " + std::string(std::strerror(errno));
  return MappingMismatch(map, bytes);
}

// Everything read(2) gives from fd's current offset on, in reads of an odd size.
Text ReadSequentially(int fd) {
  Text text;
  std::vector<char> buf(65537);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Text{Err(errno), {}};
    }
    if (n == 0) return text;
    text.value.append(buf.data(), static_cast<std::size_t>(n));
  }
}

struct SlotFile {
  std::string path;
  off_t size;
};

class PassthroughTest : public ObjectTest, public ::testing::WithParamInterface<bool> {
 protected:
  std::vector<std::string> DaemonArgs() const override {
    // Every entry is big enough for passthrough here (see SmallEntriesAreReadThroughTheDaemon).
    std::vector<std::string> args = {"--log-level=debug", "--passthrough-min-size=0"};
    if (!passthrough()) args.push_back("--no-passthrough");
    return args;
  }
  bool passthrough() const { return GetParam(); }

  // Creates path with bytes and waits until the daemon has the writer's release as well, which
  // commits it: the writer's own process sees the entry in `write` state until then. A reader
  // that opened before would find the writer still open, and get the page cache instead of
  // passthrough.
  Err Commit(const std::string& path, std::string_view bytes,
             int flags = O_WRONLY | O_CREAT | O_TRUNC) {
    if (Err err = WriteFile(path, bytes, flags); !err.ok()) return err;
    if (!Eventually([&] { return GetXattr(path, xattr::kState) == "idle"; })) return Err(ETIME);
    return kOk;
  }
  // Opens path for reading, by passthrough if it is on: tries again (after the earlier
  // readers' releases reached the daemon) until an open is answered with a backing file.
  Fd OpenByPassthrough(const std::string& path) {
    Fd fd;
    Eventually([&] {
      if (!Eventually([&] { return GetXattr(path, xattr::kReaders) == "0"; })) return true;
      const int before = BackingReplies();
      fd = Open(path, O_RDONLY);
      if (!fd.ok() || !passthrough() || BackingReplies() > before) return true;
      fd.Close();
      return false;
    });
    return fd;
  }

  // How many opens the daemon has answered with a backing file so far.
  int BackingReplies() const {
    const std::string log = smosd_.Log();
    int count = 0;
    for (std::size_t at = log.find(kBackingReply); at != std::string::npos;
         at = log.find(kBackingReply, at + 1)) {
      ++count;
    }
    return count;
  }
  // How many backing-file replies `opens` opens of committed entries should have added.
  int Expected(int opens) const { return passthrough() ? opens : 0; }

  // The slot files of this store in /dev/shm, with their sizes.
  std::vector<SlotFile> SlotFiles() const {
    const std::string prefix = "/dev/shm/" + smosd_.store() + ".slot.";
    std::vector<SlotFile> slots;
    for (const std::string& file : smosd_.StoreFiles()) {
      if (file.rfind(prefix, 0) != 0) continue;
      struct stat st;
      if (::stat(file.c_str(), &st) != 0) continue;  // removed in the meantime
      slots.push_back({file, st.st_size});
    }
    return slots;
  }

  // /dev/shm against the live entries (paths through the mount): every slot file with bytes in
  // it is the segment of a live entry, and every live entry's segment is there with its size.
  // Slot files of freed entries that a reader got by passthrough are removed; with passthrough,
  // and every entry read through the mount, no other slot file is left. Without it, freed slots
  // keep an empty file each; at most `slots_ever` of them.
  void ExpectSlotFilesMatch(const std::vector<std::string>& live, std::size_t slots_ever) {
    std::set<std::string> segments;
    for (const std::string& path : live) {
      Text segment = GetXattr(path, xattr::kSegment);
      ASSERT_TRUE(segment.ok()) << path << ": " << segment.err;
      segments.insert(segment.value);
      struct stat entry, slot;
      ASSERT_EQ(ErrOf(::stat(path.c_str(), &entry)), kOk) << path;
      ASSERT_EQ(ErrOf(::stat(segment.value.c_str(), &slot)), kOk) << segment.value;
      EXPECT_EQ(slot.st_size, entry.st_size) << path << " in " << segment.value;
    }
    EXPECT_EQ(segments.size(), live.size()) << "two live entries share a segment";
    std::vector<SlotFile> slots = SlotFiles();
    std::string listing;
    for (const SlotFile& s : slots) listing += "\n  " + s.path + " " + std::to_string(s.size);
    for (const SlotFile& s : slots) {
      if (segments.count(s.path) == 0) {
        EXPECT_EQ(s.size, 0) << s.path << " holds bytes but is no live entry's segment";
      }
    }
    if (passthrough()) {
      EXPECT_EQ(slots.size(), live.size())
          << "slot files besides the live entries' ones:" << listing;
    } else {
      EXPECT_LE(slots.size(), slots_ever) << listing;
    }
  }

  void ReadWhileTheWriterIsOpen(bool writer_maps);

  void TearDown() override {
    // A failed registration turns passthrough off for good, and quietly: not in these tests.
    if (passthrough()) {
      EXPECT_EQ(smosd_.Log().find("no passthrough from now on"), std::string::npos);
    }
    ObjectTest::TearDown();
  }
};

std::string ModeName(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "Passthrough" : "NoPassthrough";
}

INSTANTIATE_TEST_SUITE_P(Modes, PassthroughTest, ::testing::Bool(), ModeName);

// ---------------------------------------------------------------------------------------------
// 1. Which path is on

TEST_P(PassthroughTest, TheStartupLogSaysWhetherPassthroughIsOn) {
  const std::string log = smosd_.Log();
  std::vector<std::string> lines;
  for (std::size_t at = log.find("FUSE channel: "); at != std::string::npos;
       at = log.find("FUSE channel: ", at + 1)) {
    std::string line = log.substr(at, log.find('\n', at) - at);
    if (line.find("passthrough") != std::string::npos &&
        line.find(kBackingReply) == std::string::npos) {
      lines.push_back(line);
    }
  }
  ASSERT_EQ(lines.size(), 1u) << "want one start-up line of the channel; log:\n" << log;
  const std::string want = passthrough() ? "passthrough on," : "passthrough off (disabled),";
  EXPECT_NE(lines[0].find(want), std::string::npos) << lines[0];
}

TEST_P(PassthroughTest, OnlyWithPassthroughDoReadersGetABackingFile) {
  const std::string e = obj_ + "/e";
  const std::string bytes = Pattern(100'000, 1);
  ASSERT_EQ(Commit(e, bytes), kOk);
  const int before = BackingReplies();
  Fd a = Open(e, O_RDONLY);
  ASSERT_TRUE(a.ok()) << LastErr();
  Fd b = Open(e, O_RDONLY);  // a second reader of the same inode: the same backing file
  ASSERT_TRUE(b.ok()) << LastErr();
  EXPECT_EQ(BackingReplies() - before, Expected(2));
  EXPECT_TRUE(ReadFd(a.get()) == bytes);
  EXPECT_TRUE(ReadFd(b.get()) == bytes);
  EXPECT_EQ(GetXattr(e, xattr::kReaders), "2");
  EXPECT_EQ(GetXattr(e, xattr::kState), "busy");
}

// By default (--passthrough-min-size=64K) an entry under 64 KiB is read through the daemon,
// popped or not, and one of 64 KiB is not.
class SmallEntryTest : public PassthroughTest {
 protected:
  std::vector<std::string> DaemonArgs() const override {
    std::vector<std::string> args = {"--log-level=debug"};
    if (!passthrough()) args.push_back("--no-passthrough");
    return args;
  }
};

INSTANTIATE_TEST_SUITE_P(Default, SmallEntryTest, ::testing::Bool(), ModeName);

TEST_P(SmallEntryTest, SmallEntriesAreReadThroughTheDaemon) {
  const std::string small = Pattern(64 * 1024 - 1, 1);
  const std::string big = Pattern(64 * 1024, 2);
  ASSERT_EQ(Commit(obj_ + "/small", small), kOk);
  ASSERT_EQ(Commit(obj_ + "/big", big), kOk);
  int before = BackingReplies();
  EXPECT_TRUE(ReadFile(obj_ + "/small") == small);
  EXPECT_EQ(BackingReplies(), before);
  EXPECT_TRUE(ReadFile(obj_ + "/big") == big);
  EXPECT_EQ(BackingReplies(), before + Expected(1));

  const std::string queue = MakeObject("queue");
  ASSERT_EQ(WriteFile(queue + "/" + control::kPush, small), kOk);
  ASSERT_EQ(WriteFile(queue + "/" + control::kPush, big), kOk);
  before = BackingReplies();
  EXPECT_TRUE(ReadFile(queue + "/" + control::kPop) == small);
  EXPECT_EQ(BackingReplies(), before);
  EXPECT_TRUE(ReadFile(queue + "/" + control::kPop) == big);
  EXPECT_EQ(BackingReplies(), before + Expected(1));
}

// A pop of up to 64 KiB is stored in its ticket's page cache at the open (Store::open_popped):
// what it reads was fixed then. Root changes the segment file behind the daemon's back, which
// only a test would do, and the pop still reads what it popped.
TEST_P(SmallEntryTest, ASmallPopReadsTheBytesItsOpenStored) {
  const std::string queue = MakeObject("queue");
  const std::string bytes = Pattern(4096, 3);
  ASSERT_EQ(WriteFile(queue + "/" + control::kPush, bytes), kOk);
  Fd fd = Open(queue + "/" + control::kPop, O_RDONLY);
  ASSERT_TRUE(fd.ok()) << LastErr();
  Text segment = FGetXattr(fd.get(), xattr::kSegment);
  ASSERT_TRUE(segment.ok()) << segment.err;
  ASSERT_EQ(WriteFile(segment.value, std::string(bytes.size(), 'x'), O_WRONLY), kOk);
  char buf[4096];
  ASSERT_EQ(::read(fd.get(), buf, sizeof buf), static_cast<ssize_t>(sizeof buf));
  EXPECT_TRUE(std::string(buf, sizeof buf) == bytes) << "the read asked the daemon";
  EXPECT_EQ(::read(fd.get(), buf, sizeof buf), 0);
}

// One thread's pops all go through one ticket inode (Store::lookup_control), whose page cache
// and size the next pop must not inherit: larger, smaller and empty ones in turn. Each is
// mapped and read to its end first, to the end of its last page, before anything reads past
// its end (which would have the kernel ask for the size again).
TEST_P(SmallEntryTest, OneThreadsSmallPopsOfEverySizeGiveExactlyTheirBytes) {
  const std::string queue = MakeObject("queue");
  const std::size_t sizes[] = {64 * 1024, 4096, 5000, 1, 0, 8192, 4097, 100, 64 * 1024 - 1, 3};
  std::vector<std::string> all;
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    all.push_back(Pattern(sizes[i], static_cast<std::uint32_t>(400 + i)));
    ASSERT_EQ(WriteFile(queue + "/" + control::kPush, all.back()), kOk);
  }
  const std::size_t page = static_cast<std::size_t>(::getpagesize());
  std::set<ino_t> tickets;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const std::string& bytes = all[i];
    SCOPED_TRACE("pop of size " + std::to_string(bytes.size()));
    Fd fd = Open(queue + "/" + control::kPop, O_RDONLY | O_NONBLOCK);
    ASSERT_TRUE(fd.ok()) << LastErr();
    if (!bytes.empty()) {
      const std::size_t whole = (bytes.size() + page - 1) / page * page;
      Mapping map(fd.get(), whole);
      ASSERT_TRUE(map.ok()) << LastErr();
      EXPECT_EQ(MappingMismatch(map, bytes + std::string(whole - bytes.size(), '\0')), "")
          << "its bytes, then zeros to the end of the page";
    }
    std::string exact(bytes.size(), '\0');
    ASSERT_EQ(::pread(fd.get(), exact.data(), exact.size(), 0),
              static_cast<ssize_t>(exact.size()));
    EXPECT_TRUE(exact == bytes);
    char past[2];
    EXPECT_EQ(::pread(fd.get(), past, sizeof past, static_cast<off_t>(bytes.size())), 0);
    Text sequential = ReadSequentially(fd.get());
    ASSERT_TRUE(sequential.ok()) << sequential.err;
    EXPECT_TRUE(sequential.value == bytes);
    struct stat st;
    ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), bytes.size());
    tickets.insert(st.st_ino);
    ASSERT_EQ(fd.Close(), kOk);
    // Once the release is in, the next lookup hands this thread the same ticket again.
    const std::size_t left = all.size() - 1 - i;
    ASSERT_TRUE(Eventually([&] { return StatSpace(Path("")).entries == left; }));
  }
  // (Memory pressure may have the kernel forget a ticket, and the next lookup make another.)
  EXPECT_LT(tickets.size(), all.size()) << "no pop reused a ticket: the test proves less";
  EXPECT_EQ(OpenErr(queue + "/" + control::kPop, O_RDONLY | O_NONBLOCK), Err(EAGAIN));
}

// Reopening an open pop or push through /proc/self/fd would make its inode stand for a second
// entry (a small pop's one page cache cannot also hold its bytes): EBUSY, and nothing is
// claimed or created.
TEST_P(SmallEntryTest, ReopeningAnOpenPopOrPushIsRefusedAndLosesNothing) {
  const std::string queue = MakeObject("queue");
  ASSERT_EQ(WriteFile(queue + "/" + control::kPush, "first"), kOk);
  ASSERT_EQ(WriteFile(queue + "/" + control::kPush, "second"), kOk);
  Fd fd = Open(queue + "/" + control::kPop, O_RDONLY);
  ASSERT_TRUE(fd.ok()) << LastErr();
  EXPECT_EQ(OpenErr("/proc/self/fd/" + std::to_string(fd.get()), O_RDONLY), Err(EBUSY));
  EXPECT_EQ(GetXattr(queue, xattr::kEntries), "1");
  EXPECT_TRUE(ReadFd(fd.get()) == "first");
  EXPECT_TRUE(ReadFile(queue + "/" + control::kPop) == "second");

  // A push likewise: its descriptor goes on naming its own entry.
  Fd push = Open(queue + "/" + control::kPush, O_WRONLY);
  ASSERT_TRUE(push.ok()) << LastErr();
  const Text name = FGetXattr(push.get(), xattr::kName);
  ASSERT_TRUE(name.ok()) << name.err;
  EXPECT_EQ(OpenErr("/proc/self/fd/" + std::to_string(push.get()), O_WRONLY), Err(EBUSY));
  EXPECT_EQ(FGetXattr(push.get(), xattr::kName).value, name.value);
  ASSERT_EQ(WriteAll(push.get(), "third"), kOk);
  ASSERT_EQ(push.Close(), kOk);
  EXPECT_TRUE(ReadFile(queue + "/" + control::kPop) == "third");
  EXPECT_EQ(GetXattr(queue, xattr::kEntries), "0");
}

// A read-only open with O_TRUNC truncates nothing: EPERM, before the kernel would empty the
// inode's size and page cache under another reader's mapping, or a pop were claimed.
TEST_P(SmallEntryTest, AReadOnlyOpenWithOTruncIsRefusedAndChangesNothing) {
  const std::string e = obj_ + "/e";
  const std::string bytes = Pattern(5000, 7);
  ASSERT_EQ(Commit(e, bytes), kOk);
  Fd reader = Open(e, O_RDONLY);
  ASSERT_TRUE(reader.ok()) << LastErr();
  Mapping map(reader.get(), bytes.size());
  ASSERT_TRUE(map.ok()) << LastErr();
  EXPECT_EQ(OpenErr(e, O_RDONLY | O_TRUNC), Err(EPERM));
  EXPECT_EQ(MappingMismatch(map, bytes), "");
  EXPECT_TRUE(ReadFile(e) == bytes);

  const std::string queue = MakeObject("queue");
  ASSERT_EQ(WriteFile(queue + "/" + control::kPush, bytes), kOk);
  EXPECT_EQ(OpenErr(queue + "/" + control::kPop, O_RDONLY | O_TRUNC), Err(EPERM));
  EXPECT_EQ(GetXattr(queue, xattr::kEntries), "1");
  EXPECT_TRUE(ReadFile(queue + "/" + control::kPop) == bytes);
}

// With passthrough, a mapping through the mount is the slot file's own memory: a change made to
// the segment file directly (only root may, and only a test would) shows in it at once. (Without
// passthrough the mapping is of the mount's page cache; that is not asserted here.)
TEST_P(PassthroughTest, WithPassthroughAMappingIsTheSlotFilesOwnMemory) {
  const std::string e = obj_ + "/e";
  const std::string bytes = Pattern(3 * 4096 + 5, 2);
  ASSERT_EQ(Commit(e, bytes), kOk);
  Fd fd = Open(e, O_RDONLY);
  ASSERT_TRUE(fd.ok()) << LastErr();
  Mapping map(fd.get(), bytes.size());
  ASSERT_TRUE(map.ok()) << LastErr();
  ASSERT_EQ(MappingMismatch(map, bytes), "");
  if (!passthrough()) return;

  Text segment = FGetXattr(fd.get(), xattr::kSegment);
  ASSERT_TRUE(segment.ok()) << segment.err;
  Fd slot = Open(segment.value, O_RDWR);
  ASSERT_TRUE(slot.ok()) << segment.value << ": " << LastErr();
  std::string poked = bytes;
  poked.replace(4096, 4, "POKE");
  ASSERT_EQ(ErrOf(::pwrite(slot.get(), "POKE", 4, 4096)), kOk);
  EXPECT_EQ(MappingMismatch(map, poked), "") << "the mapping is not of the slot file";
  EXPECT_TRUE(ReadFd(fd.get()) == poked) << "read(2) is not served from the slot file";
}

// ---------------------------------------------------------------------------------------------
// 2. Reads and mappings return exactly the committed bytes

const std::size_t kSizes[] = {0, 1, 4095, 4096, 4097, (3u << 20) + 17, 8u << 20};

TEST_P(PassthroughTest, ReadAndMmapOfCommittedEntriesGiveExactlyTheirBytes) {
  for (std::size_t i = 0; i < std::size(kSizes); ++i) {
    SCOPED_TRACE("size " + std::to_string(kSizes[i]));
    const std::string e = obj_ + "/e" + std::to_string(i);
    const std::string bytes = Pattern(kSizes[i], static_cast<std::uint32_t>(100 + i));
    ASSERT_EQ(Commit(e, bytes), kOk);

    const int before = BackingReplies();
    Fd fd = Open(e, O_RDONLY);
    ASSERT_TRUE(fd.ok()) << LastErr();
    EXPECT_EQ(BackingReplies() - before, Expected(1));
    struct stat st;
    ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), bytes.size());

    Text sequential = ReadSequentially(fd.get());
    ASSERT_TRUE(sequential.ok()) << sequential.err;
    EXPECT_EQ(sequential.value.size(), bytes.size());
    EXPECT_TRUE(sequential.value == bytes) << "read(2) gave other bytes";
    EXPECT_TRUE(ReadFd(fd.get()) == bytes) << "pread(2) gave other bytes";
    if (bytes.size() > 1) {
      // A read across a page boundary (or the middle), and one past the end.
      const off_t at = bytes.size() > 4096 ? 4095 : static_cast<off_t>(bytes.size() / 2);
      char two[2];
      ASSERT_EQ(::pread(fd.get(), two, 2, at), 2);
      EXPECT_EQ(std::string(two, 2), bytes.substr(at, 2));
    }
    char past;
    EXPECT_EQ(::pread(fd.get(), &past, 1, static_cast<off_t>(bytes.size())), 0);

    if (!bytes.empty()) {
      Mapping map(fd.get(), bytes.size());
      ASSERT_TRUE(map.ok()) << LastErr();
      EXPECT_EQ(MappingMismatch(map, bytes), "");
      // A second process maps the same entry through its own descriptor.
      Fd other = Open(e, O_RDONLY);
      ASSERT_TRUE(other.ok()) << LastErr();
      Mapping their_map(other.get(), bytes.size());
      ASSERT_TRUE(their_map.ok()) << LastErr();
      EXPECT_EQ(MappingMismatch(their_map, bytes), "");
    }
    EXPECT_EQ(fd.Close(), kOk);
    // And by name, with the reader gone.
    EXPECT_TRUE(ReadFile(e) == bytes);
  }
}

TEST_P(PassthroughTest, ReadAndMmapOfPopsGiveExactlyTheirBytes) {
  std::vector<std::string> bytes;
  for (std::size_t i = 0; i < std::size(kSizes); ++i) {
    bytes.push_back(Pattern(kSizes[i], static_cast<std::uint32_t>(200 + i)));
    // Named in seq order, so that the pops come in this order.
    ASSERT_EQ(Commit(obj_ + "/e" + std::to_string(i), bytes.back()), kOk);
  }
  // Hold every pop open until the end: pops of several entries at once, each its own.
  std::vector<Fd> pops;
  std::vector<std::unique_ptr<Mapping>> maps;
  for (std::size_t i = 0; i < std::size(kSizes); ++i) {
    SCOPED_TRACE("pop of size " + std::to_string(kSizes[i]));
    const int before = BackingReplies();
    Fd fd = Open(obj_ + "/" + control::kPop, O_RDONLY | O_NONBLOCK);
    ASSERT_TRUE(fd.ok()) << LastErr();
    EXPECT_EQ(BackingReplies() - before, Expected(1));
    EXPECT_EQ(FGetXattr(fd.get(), xattr::kName), "e" + std::to_string(i));

    // Mapped before anything asks for its size: the mapping must not depend on an fstat.
    if (!bytes[i].empty()) {
      maps.push_back(std::make_unique<Mapping>(fd.get(), bytes[i].size()));
      ASSERT_TRUE(maps.back()->ok()) << LastErr();
      EXPECT_EQ(MappingMismatch(*maps.back(), bytes[i]), "");
    }
    struct stat st;
    ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), bytes[i].size());
    Text sequential = ReadSequentially(fd.get());
    ASSERT_TRUE(sequential.ok()) << sequential.err;
    EXPECT_EQ(sequential.value.size(), bytes[i].size());
    EXPECT_TRUE(sequential.value == bytes[i]) << "read(2) gave other bytes";
    EXPECT_TRUE(ReadFd(fd.get()) == bytes[i]) << "pread(2) gave other bytes";
    pops.push_back(std::move(fd));
  }
  EXPECT_EQ(OpenErr(obj_ + "/" + control::kPop, O_RDONLY | O_NONBLOCK), Err(EAGAIN));
  EXPECT_TRUE(ListDir(obj_).names.empty());
  // Still all whole, with every other pop open and mapped.
  for (std::size_t i = 0, m = 0; i < pops.size(); ++i) {
    EXPECT_TRUE(ReadFd(pops[i].get()) == bytes[i]) << "pop " << i;
    if (!bytes[i].empty()) {
      EXPECT_EQ(MappingMismatch(*maps[m++], bytes[i]), "") << "pop " << i;
    }
  }
  maps.clear();
  pops.clear();
  // Every entry freed, the empty one too (its release may come last: no byte count shows it).
  EXPECT_TRUE(Eventually([&] { return StatSpace(Path("")).entries == 0; }))
      << StatSpace(Path("")).entries << " entries still in use";
  ExpectSlotFilesMatch({}, std::size(kSizes));
}

// A pop that waited for its entry is answered from the thread that committed it.
TEST_P(PassthroughTest, APopThatWaitedReadsAndMapsItsEntry) {
  const std::string bytes = Pattern((1u << 20) + 4095, 300);
  Child popper([&](Channel& parent) {
    parent.Signal();
    Fd fd = Open(obj_ + "/" + control::kPop, O_RDONLY);  // blocks until the commit below
    if (!fd.ok()) return ChildFail("pop");
    if (FGetXattr(fd.get(), xattr::kName) != "e") return ChildFail("name of the pop");
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ChildFail("fstat");
    if (static_cast<std::size_t>(st.st_size) != bytes.size()) return 3;
    if (!(ReadSequentially(fd.get()) == bytes)) return 4;
    void* map = ::mmap(nullptr, bytes.size(), PROT_READ, MAP_SHARED, fd.get(), 0);
    if (map == MAP_FAILED) return ChildFail("mmap");
    if (std::memcmp(map, bytes.data(), bytes.size()) != 0) return 5;
    return 0;
  });
  ASSERT_TRUE(popper.Wait());
  // Give the pop time to block (if it has not, it finds the entry: the same test, less hard).
  ::usleep(100'000);
  const int before = BackingReplies();
  // (Not Commit(): the pop takes the name at once. A pop is served by passthrough even while
  // the writer's release is on its way: it has an inode of its own.)
  ASSERT_EQ(WriteFile(obj_ + "/e", bytes), kOk);
  const int status = popper.Join();
  EXPECT_EQ(status, 0) << "3: fstat size, 4: read bytes, 5: mapped bytes, "
                       << 128 + SIGBUS << ": SIGBUS";
  EXPECT_EQ(BackingReplies() - before, Expected(1));
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "0"; }))
      << GetXattr(obj_, xattr::kBytes);
  EXPECT_TRUE(ListDir(obj_).names.empty());
}

// ---------------------------------------------------------------------------------------------
// 3. A mapping outlives its descriptor, its entry and the reuse of its slot

class MappingLifetimeTest : public PassthroughTest {
 protected:
  static constexpr std::size_t kVictimSize = (1u << 20) + 100;  // not a whole number of pages
  static constexpr int kRounds = 24;

  // Creates and commits kRounds entries of other bytes and sizes, reads each back through the
  // mount, and deletes three of every four right away, so that slots are freed and reused
  // again and again. Returns the segments the new entries had; `kept` gets the names kept.
  std::set<std::string> Churn(std::vector<std::string>* kept) {
    std::set<std::string> segments;
    for (int i = 0; i < kRounds; ++i) {
      const std::string path = obj_ + "/new" + std::to_string(i);
      const std::string bytes = ChurnBytes(i);
      EXPECT_EQ(Commit(path, bytes), kOk) << path;
      Text segment = GetXattr(path, xattr::kSegment);
      EXPECT_TRUE(segment.ok()) << path << ": " << segment.err;
      segments.insert(segment.value);
      EXPECT_TRUE(ReadFile(path) == bytes) << path;
      if (i % 4 == 3) {
        kept->push_back(path);
      } else {
        EXPECT_EQ(ErrOf(::unlink(path.c_str())), kOk) << path;
      }
    }
    return segments;
  }
  // `map` holds `bytes` of an entry, in slot file `segment`, whose handles are all closed and
  // whose name is gone. Churns slots, checks the mapping kept its bytes, then unmaps it.
  void ExpectTheMappingOutlivesItsEntry(Mapping& map, const std::string& bytes,
                                         const std::string& segment) {
    if (passthrough()) {
      // The mapping holds the slot file, not a handle: the entry is freed once the descriptor
      // is released, and the next entry created gets its slot.
      ASSERT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "0"; }))
          << GetXattr(obj_, xattr::kBytes);
    }
    std::vector<std::string> kept;
    const std::set<std::string> reused = Churn(&kept);
    if (passthrough()) {
      EXPECT_EQ(reused.count(segment), 1u)
          << "the slot " << segment << " was never reused: nothing was tested";
    }
    EXPECT_EQ(MappingMismatch(map, bytes), "");
    ExpectKeptWhole(kept);
    ASSERT_EQ(map.Unmap(), kOk);
    ExpectNothingLeaked(kept);
  }
  static std::string ChurnBytes(int i) {
    const std::size_t sizes[] = {7, kVictimSize / 2, kVictimSize, 2 * kVictimSize + 3};
    return Pattern(sizes[i % 4], static_cast<std::uint32_t>(1000 + i));
  }
  static int ChurnIndex(const std::string& path) {
    return std::stoi(path.substr(path.rfind("new") + 3));
  }
  // The kept entries still hold their own bytes.
  void ExpectKeptWhole(const std::vector<std::string>& kept) {
    for (const std::string& path : kept) {
      EXPECT_TRUE(ReadFile(path) == ChurnBytes(ChurnIndex(path))) << path;
    }
  }
  // Once the mapping is gone (and, without passthrough, the handle it held released): only
  // the kept entries use memory and slot files. Once they are removed too: no memory in use,
  // no slot file left with bytes in it (nor, with passthrough, at all).
  void ExpectNothingLeaked(const std::vector<std::string>& kept) {
    std::size_t kept_bytes = 0;
    for (const std::string& path : kept) kept_bytes += ChurnBytes(ChurnIndex(path)).size();
    EXPECT_TRUE(Eventually([&] {
      return GetXattr(obj_, xattr::kBytes) == std::to_string(kept_bytes);
    })) << GetXattr(obj_, xattr::kBytes) << " bytes in use, want " << kept_bytes;
    ExpectSlotFilesMatch(kept, kRounds + 1);
    for (const std::string& path : kept) EXPECT_EQ(ErrOf(::unlink(path.c_str())), kOk) << path;
    EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "0"; }))
        << GetXattr(obj_, xattr::kBytes);
    EXPECT_TRUE(Eventually([&] { return StatSpace(Path("")).used == 0; }))
        << StatSpace(Path("")).used << " bytes still in use";
    ExpectSlotFilesMatch({}, kRounds + 1);
  }
};

INSTANTIATE_TEST_SUITE_P(Modes, MappingLifetimeTest, ::testing::Bool(), ModeName);

TEST_P(MappingLifetimeTest, AMappingOfADeletedEntryKeepsItsBytesWhenTheSlotIsReused) {
  const std::string victim = obj_ + "/victim";
  const std::string bytes = Pattern(kVictimSize, 7);
  ASSERT_EQ(Commit(victim, bytes), kOk);

  Fd fd = Open(victim, O_RDONLY);
  ASSERT_TRUE(fd.ok()) << LastErr();
  Text segment = FGetXattr(fd.get(), xattr::kSegment);
  ASSERT_TRUE(segment.ok()) << segment.err;
  Mapping map(fd.get(), bytes.size());
  ASSERT_TRUE(map.ok()) << LastErr();
  // Fault in the first half only; the rest is first touched after the slot's reuse.
  {
    Child toucher([&](Channel&) {
      return std::memcmp(map.data(), bytes.data(), bytes.size() / 2) == 0 ? 0 : 2;
    });
    ASSERT_EQ(toucher.Join(), 0);
  }
  ASSERT_EQ(fd.Close(), kOk);
  ASSERT_EQ(ErrOf(::unlink(victim.c_str())), kOk);
  ASSERT_EQ(StatErr(victim), Err(ENOENT));

  ExpectTheMappingOutlivesItsEntry(map, bytes, segment.value);
}

TEST_P(MappingLifetimeTest, AMappingOfAPopKeepsItsBytesWhenTheSlotIsReused) {
  const std::string bytes = Pattern(kVictimSize, 8);
  ASSERT_EQ(Commit(obj_ + "/victim", bytes), kOk);

  Fd fd = Open(obj_ + "/" + control::kPop, O_RDONLY | O_NONBLOCK);
  ASSERT_TRUE(fd.ok()) << LastErr();
  ASSERT_EQ(FGetXattr(fd.get(), xattr::kName), "victim");
  Text segment = FGetXattr(fd.get(), xattr::kSegment);
  ASSERT_TRUE(segment.ok()) << segment.err;
  struct stat st;
  ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), bytes.size());
  Mapping map(fd.get(), bytes.size());
  ASSERT_TRUE(map.ok()) << LastErr();
  {
    Child toucher([&](Channel&) {
      return std::memcmp(map.data(), bytes.data(), bytes.size() / 2) == 0 ? 0 : 2;
    });
    ASSERT_EQ(toucher.Join(), 0);
  }
  ASSERT_EQ(fd.Close(), kOk);  // the pop's entry is freed with its last handle

  ExpectTheMappingOutlivesItsEntry(map, bytes, segment.value);
}

// ---------------------------------------------------------------------------------------------
// 4. A writer still open at the commit: readers fall back to the page cache

// The writer commits explicitly and keeps its descriptor (and, if `writer_maps`, the shared
// mapping it wrote the bytes through) open while others open and read the entry.
void PassthroughTest::ReadWhileTheWriterIsOpen(bool writer_maps) {
  const std::string obj = MakeObject("explicit", {{xattr::kCommit, "explicit"}});
  const std::string e = obj + "/e";
  const std::string bytes = Pattern((2u << 20) + 333, 9);
  Child writer([&](Channel& parent) {
    Fd fd = Open(e, O_RDWR | O_CREAT);
    if (!fd.ok()) return ChildFail("open " + e);
    void* map = MAP_FAILED;
    if (writer_maps) {
      if (::ftruncate(fd.get(), static_cast<off_t>(bytes.size())) != 0) {
        return ChildFail("ftruncate " + e);
      }
      map = ::mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
      if (map == MAP_FAILED) return ChildFail("mmap " + e);
      std::memcpy(map, bytes.data(), bytes.size());
      if (::msync(map, bytes.size(), MS_SYNC) != 0) return ChildFail("msync " + e);
    } else if (!WriteAll(fd.get(), bytes).ok()) {
      return ChildFail("write " + e);
    }
    if (!FSetXattr(fd.get(), xattr::kState, "idle").ok()) return ChildFail("commit " + e);
    parent.Signal();
    if (!parent.Wait()) return ChildFail("no word from the parent");
    if (map != MAP_FAILED && ::munmap(map, bytes.size()) != 0) return ChildFail("munmap " + e);
    if (!fd.Close().ok()) return ChildFail("close " + e);
    return 0;
  });
  ASSERT_TRUE(writer.Wait()) << "the writer did not commit";
  ASSERT_EQ(GetXattr(e, xattr::kState), "idle");

  // Committed, its writer's descriptor still open: no passthrough, on either path.
  const int before = BackingReplies();
  Fd a = Open(e, O_RDONLY);
  ASSERT_TRUE(a.ok()) << LastErr();
  Fd b = Open(e, O_RDONLY);
  ASSERT_TRUE(b.ok()) << LastErr();
  EXPECT_EQ(BackingReplies(), before) << "a reader got passthrough while the writer is open";
  EXPECT_TRUE(ReadSequentially(a.get()) == bytes);
  EXPECT_TRUE(ReadFd(b.get()) == bytes);
  EXPECT_EQ(MappedMismatch(a.get(), bytes), "");
  Child other([&](Channel&) { return ReadFile(e) == bytes ? 0 : ChildFail("read " + e); });
  EXPECT_EQ(other.Join(), 0);

  // The writer goes; the readers on the page cache stay, and so must the next reader.
  writer.Signal();
  ASSERT_EQ(writer.Join(), 0);
  EXPECT_TRUE(Eventually([&] { return GetXattr(e, xattr::kReaders) == "2"; }))
      << GetXattr(e, xattr::kReaders);
  Fd c = Open(e, O_RDONLY);
  ASSERT_TRUE(c.ok()) << LastErr();
  EXPECT_EQ(BackingReplies(), before) << "passthrough mixed with readers on the page cache";
  EXPECT_TRUE(ReadFd(c.get()) == bytes);
  EXPECT_EQ(MappedMismatch(c.get(), bytes), "");
  EXPECT_TRUE(ReadFd(a.get()) == bytes);

  // All of them gone: new readers work, by passthrough if it is on.
  ASSERT_EQ(a.Close(), kOk);
  ASSERT_EQ(b.Close(), kOk);
  ASSERT_EQ(c.Close(), kOk);
  ASSERT_TRUE(Eventually([&] { return GetXattr(e, xattr::kReaders) == "0"; }))
      << GetXattr(e, xattr::kReaders);
  // (The writer's release reaches the daemon some time after the writer exits.)
  const int before_d = BackingReplies();
  Fd d = OpenByPassthrough(e);
  ASSERT_TRUE(d.ok()) << LastErr();
  EXPECT_EQ(BackingReplies() - before_d, Expected(1)) << "no passthrough once all are closed";
  const int before_f = BackingReplies();
  Fd f = Open(e, O_RDONLY);
  ASSERT_TRUE(f.ok()) << LastErr();
  EXPECT_EQ(BackingReplies() - before_f, Expected(1));
  EXPECT_TRUE(ReadSequentially(d.get()) == bytes);
  EXPECT_TRUE(ReadFd(f.get()) == bytes);
  EXPECT_EQ(MappedMismatch(d.get(), bytes), "");
  // Another process, by name, while these are open.
  Child reader([&](Channel&) { return ReadFile(e) == bytes ? 0 : ChildFail("read " + e); });
  EXPECT_EQ(reader.Join(), 0);
}

TEST_P(PassthroughTest, ReadersWhileTheWriterIsStillOpenReadItsBytes) {
  ReadWhileTheWriterIsOpen(/*writer_maps=*/false);
}

TEST_P(PassthroughTest, ReadersWhileTheWriterStillMapsItReadItsBytes) {
  ReadWhileTheWriterIsOpen(/*writer_maps=*/true);
}

// ---------------------------------------------------------------------------------------------
// 5. A replace while a (passthrough) reader holds the old version

TEST_P(PassthroughTest, AReplaceLeavesTheOldVersionToItsReaderAndTheNewOneToNewOpens) {
  const std::string e = obj_ + "/e";
  const std::string old_bytes = Pattern(200'000, 10);
  const std::string new_bytes = Pattern(300'001, 11);
  ASSERT_EQ(Commit(e, old_bytes), kOk);

  const int before = BackingReplies();
  Fd old_reader = Open(e, O_RDONLY);
  ASSERT_TRUE(old_reader.ok()) << LastErr();
  EXPECT_EQ(BackingReplies() - before, Expected(1));
  EXPECT_TRUE(ReadFd(old_reader.get()) == old_bytes);

  Fd replace = Open(e, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(replace.ok()) << LastErr();
  ASSERT_EQ(WriteAll(replace.get(), new_bytes), kOk);
  // Mid-replace: the old version, for its reader and for a new one in another process (the
  // replacing process itself sees its own version in progress).
  EXPECT_TRUE(ReadFd(old_reader.get()) == old_bytes);
  {
    Child other([&](Channel&) { return ReadFile(e) == old_bytes ? 0 : ChildFail("read " + e); });
    EXPECT_EQ(other.Join(), 0);
  }
  ASSERT_EQ(replace.Close(), kOk);
  // Its release commits it (see Commit()).
  ASSERT_TRUE(Eventually([&] {
    return GetXattr(e, xattr::kSeq) == "2" && GetXattr(e, xattr::kState) == "idle";
  })) << GetXattr(e, xattr::kSeq) << " " << GetXattr(e, xattr::kState);

  // Committed: the old reader keeps the old version, whole...
  EXPECT_TRUE(ReadFd(old_reader.get()) == old_bytes) << "the old reader lost its version";
  struct stat st;
  ASSERT_EQ(ErrOf(::fstat(old_reader.get(), &st)), kOk);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), old_bytes.size());
  EXPECT_EQ(FGetXattr(old_reader.get(), xattr::kState), "zombie");

  // ...and new opens get the new one, by passthrough if it is on.
  const int before_new = BackingReplies();
  Fd new_reader = Open(e, O_RDONLY);
  ASSERT_TRUE(new_reader.ok()) << LastErr();
  EXPECT_EQ(BackingReplies() - before_new, Expected(1));
  ASSERT_EQ(ErrOf(::fstat(new_reader.get(), &st)), kOk);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), new_bytes.size());
  EXPECT_TRUE(ReadSequentially(new_reader.get()) == new_bytes);
  EXPECT_EQ(MappedMismatch(new_reader.get(), new_bytes), "");
  Child other([&](Channel&) { return ReadFile(e) == new_bytes ? 0 : ChildFail("read " + e); });
  EXPECT_EQ(other.Join(), 0);
  EXPECT_TRUE(ReadFd(old_reader.get()) == old_bytes);

  // The old reader goes: its version is freed, and the name still gives the new one.
  ASSERT_EQ(old_reader.Close(), kOk);
  ASSERT_EQ(new_reader.Close(), kOk);
  EXPECT_TRUE(Eventually([&] {
    return GetXattr(obj_, xattr::kBytes) == std::to_string(new_bytes.size());
  })) << GetXattr(obj_, xattr::kBytes);
  EXPECT_TRUE(ReadFile(e) == new_bytes);
  ExpectSlotFilesMatch({e}, 2);
}

// The same, with the old version mapped through the mount rather than read.
TEST_P(PassthroughTest, AReplaceLeavesAMappingOfTheOldVersionAlone) {
  const std::string e = obj_ + "/e";
  const std::string old_bytes = Pattern(200'000, 12);
  const std::string new_bytes = Pattern(50'001, 13);
  ASSERT_EQ(Commit(e, old_bytes), kOk);

  Fd old_reader = Open(e, O_RDONLY);
  ASSERT_TRUE(old_reader.ok()) << LastErr();
  Mapping map(old_reader.get(), old_bytes.size());
  ASSERT_TRUE(map.ok()) << LastErr();
  ASSERT_EQ(MappingMismatch(map, old_bytes), "");

  ASSERT_EQ(Commit(e, new_bytes, O_WRONLY | O_TRUNC), kOk);
  EXPECT_EQ(MappingMismatch(map, old_bytes), "");
  EXPECT_TRUE(ReadFile(e) == new_bytes);
  EXPECT_TRUE(ReadFd(old_reader.get()) == old_bytes);
  ASSERT_EQ(old_reader.Close(), kOk);
  EXPECT_EQ(MappingMismatch(map, old_bytes), "");
  ASSERT_EQ(map.Unmap(), kOk);
  EXPECT_TRUE(Eventually([&] {
    return GetXattr(obj_, xattr::kBytes) == std::to_string(new_bytes.size());
  })) << GetXattr(obj_, xattr::kBytes);
}

}  // namespace
}  // namespace smos::test
