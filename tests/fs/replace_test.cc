// Atomic replace: open(O_WRONLY|O_TRUNC) of a committed name writes a new version, which
// takes the name only when it commits.
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fs/child.h"
#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

// A T in a shared anonymous mapping, made before a fork: the parent and its Child processes
// see the same one. For counters and flags (lock-free atomics) between processes.
template <typename T>
class Shared {
 public:
  Shared() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("mmap");
      std::abort();
    }
    value_ = new (p) T();
  }
  ~Shared() {
    value_->~T();
    ::munmap(value_, sizeof(T));
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  T* operator->() const { return value_; }

 private:
  T* value_;
};

// How a Child ended, for messages: "exit 0", "SIGBUS".
std::string Status(int status) {
  if (status > 128) {
    const char* name = sigabbrev_np(status - 128);
    return name ? std::string("SIG") + name : "signal " + std::to_string(status - 128);
  }
  return "exit " + std::to_string(status);
}

class ReplaceTest : public ObjectTest {
 protected:
  void SetUp() override {
    ObjectTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_EQ(WriteFile(entry_, kOld), kOk);
  }
  // Creates path in an object in explicit mode and commits it with data.
  void CommitExplicitly(const std::string& path, std::string_view data) {
    Fd fd = Open(path, O_WRONLY | O_CREAT);
    ASSERT_TRUE(fd.ok()) << LastErr();
    ASSERT_EQ(WriteAll(fd.get(), data), kOk);
    ASSERT_EQ(FSetXattr(fd.get(), xattr::kState, "idle"), kOk);
    ASSERT_EQ(fd.Close(), kOk);
  }

  static constexpr char kOld[] = "old version";
  static constexpr char kNew[] = "the new version, longer";
};

TEST_F(ReplaceTest, OthersReadTheOldVersionUntilTheNewOneCommits) {
  Fd old_reader = Open(entry_, O_RDONLY);
  ASSERT_TRUE(old_reader.ok());
  auto writer = StartWriter(entry_, kNew, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(writer->Wait()) << "the writer did not get to write";

  // Mid-replace: the name still means the old version, for new and old readers alike.
  EXPECT_EQ(ReadFile(entry_), kOld);
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(entry_.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_size, static_cast<off_t>(sizeof kOld - 1));
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "1");
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"e"});
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
  EXPECT_EQ(ReadFd(old_reader.get()), kOld);

  writer->Signal();
  ASSERT_TRUE(writer->Wait()) << "the writer did not close";
  EXPECT_EQ(writer->Join(), 0);

  // Committed: the name means the new version...
  EXPECT_EQ(ReadFile(entry_), kNew);
  ASSERT_EQ(ErrOf(::stat(entry_.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_size, static_cast<off_t>(sizeof kNew - 1));
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "2");
  EXPECT_EQ(GetXattr(entry_, xattr::kState), "idle");
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"e"});
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), "1");
  // ...and the old one lives on, unchanged, for its reader.
  EXPECT_EQ(ReadFd(old_reader.get()), kOld);
  EXPECT_EQ(FGetXattr(old_reader.get(), xattr::kState), "zombie");

  ASSERT_EQ(old_reader.Close(), kOk);
  EXPECT_TRUE(Eventually([&] {
    return GetXattr(obj_, xattr::kBytes) == std::to_string(sizeof kNew - 1);
  })) << "the old version's memory was not freed: "
      << GetXattr(obj_, xattr::kBytes);
}

TEST_F(ReplaceTest, TheReplacingWriterSeesItsNewVersion) {
  Fd fd = Open(entry_, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(fd.ok()) << LastErr();
  EXPECT_EQ(FGetXattr(fd.get(), xattr::kState), "write");
  ASSERT_EQ(WriteAll(fd.get(), kNew), kOk);
  ASSERT_EQ(fd.Close(), kOk);
  EXPECT_EQ(ReadFile(entry_), kNew);
}

TEST_F(ReplaceTest, ShellRedirectionReplaces) {
  // What `echo x > e` does: O_WRONLY|O_CREAT|O_TRUNC.
  ASSERT_EQ(WriteFile(entry_, kNew, O_WRONLY | O_CREAT | O_TRUNC), kOk);
  EXPECT_EQ(ReadFile(entry_), kNew);
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "2");
}

TEST_F(ReplaceTest, SettingStateToIdleCommitsAReplace) {
  std::string obj = MakeObject("explicit", {{xattr::kCommit, "explicit"}});
  std::string e = obj + "/e";
  ASSERT_NO_FATAL_FAILURE(CommitExplicitly(e, kOld));

  Fd replace = Open(e, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(replace.ok()) << LastErr();
  ASSERT_EQ(WriteAll(replace.get(), kNew), kOk);
  ASSERT_EQ(FSetXattr(replace.get(), xattr::kState, "idle"), kOk);
  // Committed while the writer still holds its descriptor.
  Child reader([&](Channel&) { return ReadFile(e) == kNew ? 0 : ChildFail("read " + e); });
  EXPECT_EQ(reader.Join(), 0);
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "2");
  ASSERT_EQ(replace.Close(), kOk);
  EXPECT_EQ(ReadFile(e), kNew);
}

TEST_F(ReplaceTest, AnUncommittedReplaceInExplicitModeLeavesTheOldVersion) {
  std::string obj = MakeObject("explicit", {{xattr::kCommit, "explicit"}});
  std::string e = obj + "/e";
  ASSERT_NO_FATAL_FAILURE(CommitExplicitly(e, kOld));

  Fd replace = Open(e, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(replace.ok()) << LastErr();
  ASSERT_EQ(WriteAll(replace.get(), kNew), kOk);
  ASSERT_EQ(replace.Close(), kOk);  // without a commit: discarded

  EXPECT_TRUE(Eventually([&] { return ReadFile(e) == kOld; })) << ReadFile(e);
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "1");
  EXPECT_TRUE(Eventually([&] {
    return GetXattr(obj, xattr::kBytes) == std::to_string(sizeof kOld - 1);
  })) << GetXattr(obj, xattr::kBytes);
}

TEST_F(ReplaceTest, ReplacingNeedsOnlyTheVersionsThatExist) {
  // Many replaces in a row leave one version and its memory behind.
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(WriteFile(entry_, Pattern(4096, i)), kOk) << i;
  }
  EXPECT_TRUE(ReadFile(entry_) == Pattern(4096, 19));
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "21");
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"e"});
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == "4096"; }))
      << GetXattr(obj_, xattr::kBytes);
}

// A truncating reopen of a read-only descriptor through /proc/self/fd leads to the committed
// version itself, which a replace answers with ESTALE, and the kernel does not walk such a path
// again: the new version it made waits for a retry that never comes. Once its thread is gone,
// it holds no room: the object takes another entry, and rmdir succeeds once the rest is gone.
TEST_F(ReplaceTest, AReplaceThroughProcSelfFdLeavesNothingBehindOnceItsThreadIsGone) {
  const std::string capped = MakeObject("capped", {{xattr::kCapacity, "2"}});
  const std::string entry = capped + "/e";
  const std::string other = capped + "/other";
  ASSERT_EQ(WriteFile(entry, "v1"), kOk);
  Child reopener([&](Channel&) {
    Fd fd = Open(entry, O_RDONLY);
    if (!fd.ok()) return ChildFail("open");
    const Err err = OpenErr("/proc/self/fd/" + std::to_string(fd.get()), O_WRONLY | O_TRUNC);
    return err == Err(ESTALE) ? 0 : ChildFail("the reopen did not fail with ESTALE");
  });
  ASSERT_EQ(reopener.Join(), 0);
  EXPECT_EQ(WriteFile(other, "x"), kOk);
  EXPECT_EQ(ReadFile(entry), "v1");
  ASSERT_EQ(ErrOf(::unlink(entry.c_str())), kOk);
  ASSERT_EQ(ErrOf(::unlink(other.c_str())), kOk);
  EXPECT_EQ(ErrOf(::rmdir(capped.c_str())), kOk);
}

// The tests below run twice: with FUSE passthrough for readers where the kernel offers it (the
// default), and without it, when readers of a committed version share the kernel's page cache.
class ReplaceModeTest : public ReplaceTest, public ::testing::WithParamInterface<bool> {
 protected:
  std::vector<std::string> DaemonArgs() const override {
    if (GetParam()) return {};
    return {"--no-passthrough"};
  }
};

std::string ModeName(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "passthrough" : "no_passthrough";
}

INSTANTIATE_TEST_SUITE_P(Modes, ReplaceModeTest, ::testing::Bool(), ModeName);

// The replacing descriptor is the new version's own inode: fstat(2) follows the new version as
// it is written, while everyone else still sees the old version, under the old inode.
TEST_P(ReplaceModeTest, FstatOfAReplacingDescriptorShowsTheNewVersion) {
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(entry_.c_str(), &st)), kOk);
  const ino_t old_ino = st.st_ino;
  const off_t old_size = sizeof kOld - 1;
  ASSERT_EQ(st.st_size, old_size);
  // What stat(2) by name in another process says: 0 if (ino, size), else 2 or 3. Only another
  // process will do: this one's own lookups lead to the version it is writing.
  auto others_see = [&](ino_t ino, off_t size) {
    Child other([&](Channel&) {
      struct stat theirs;
      if (::stat(entry_.c_str(), &theirs) != 0) return ChildFail("stat " + entry_);
      if (theirs.st_ino != ino) return 2;
      return theirs.st_size == size ? 0 : 3;
    });
    return other.Join();
  };

  Fd fd = Open(entry_, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(fd.ok()) << LastErr();
  ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
  const ino_t new_ino = st.st_ino;
  EXPECT_NE(new_ino, old_ino) << "the new version has an inode of its own";
  EXPECT_EQ(st.st_size, 0) << "O_TRUNC: the new version starts empty";
  EXPECT_EQ(others_see(old_ino, old_size), 0) << "2: another inode, 3: another size";

  // Every size on the way differs from the old version's.
  const std::string bytes = Pattern(70000, 7);
  off_t written = 0;
  for (off_t chunk : {5, 4091, 65904}) {
    ASSERT_EQ(WriteAll(fd.get(), std::string_view(bytes).substr(written, chunk)), kOk);
    written += chunk;
    ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
    EXPECT_EQ(st.st_size, written);
    EXPECT_EQ(st.st_ino, new_ino);
    EXPECT_EQ(others_see(old_ino, old_size), 0) << "after " << written << " bytes";
  }
  ASSERT_EQ(ErrOf(::ftruncate(fd.get(), 100000)), kOk);
  ASSERT_EQ(ErrOf(::fstat(fd.get(), &st)), kOk);
  EXPECT_EQ(st.st_size, 100000);
  EXPECT_EQ(others_see(old_ino, old_size), 0) << "after ftruncate";

  // The commit gives the name the new version's inode, for everyone.
  ASSERT_EQ(fd.Close(), kOk);
  EXPECT_EQ(others_see(new_ino, 100000), 0) << "2: another inode, 3: another size";
  ASSERT_EQ(ErrOf(::stat(entry_.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_ino, new_ino);
  EXPECT_EQ(st.st_size, 100000);
  EXPECT_TRUE(ReadFile(entry_) == bytes + std::string(100000 - bytes.size(), '\0'));
}

// A reader that maps the entry through the mount keeps its version's bytes and size while
// another process replaces the name again and again: a replace never opens, truncates or writes
// the old version's inode, so the mapping takes no SIGBUS and never changes.
TEST_P(ReplaceModeTest, AMappingThroughTheMountSurvivesReplacesOfItsName) {
  const std::string path = obj_ + "/mapped";
  const std::string old_bytes = Pattern((256 << 10) + 123, 11);
  ASSERT_EQ(WriteFile(path, old_bytes), kOk);
  // Committed at the writer's release: until then this process sees it in write state, and a
  // reader that opened it would not get passthrough.
  ASSERT_TRUE(Eventually([&] { return GetXattr(path, xattr::kState) == "idle"; }));
  struct Progress {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> rounds{0};      // full passes over the mapping
    std::atomic<std::uint64_t> mismatches{0};  // passes that found other bytes
  };
  Shared<Progress> progress;

  Child reader([&](Channel& parent) {
    Fd fd = Open(path, O_RDONLY);
    if (!fd.ok()) return ChildFail("open " + path);
    void* map = ::mmap(nullptr, old_bytes.size(), PROT_READ, MAP_SHARED, fd.get(), 0);
    if (map == MAP_FAILED) return ChildFail("mmap " + path);
    auto intact = [&] { return std::memcmp(map, old_bytes.data(), old_bytes.size()) == 0; };
    if (!intact()) return 2;
    parent.Signal();
    while (!progress->stop) {  // touches every page, again and again
      if (!intact()) progress->mismatches++;
      progress->rounds++;
    }
    const bool whole = intact() && ReadFd(fd.get()) == old_bytes;
    ::munmap(map, old_bytes.size());
    return whole ? 0 : 2;
  });
  ASSERT_TRUE(reader.Wait()) << "the reader did not map the entry";

  // Whether the reader goes on through at least two more whole passes.
  auto reader_goes_on = [&] {
    const std::uint64_t from = progress->rounds;
    return Eventually([&] { return progress->rounds >= from + 2; });
  };
  const std::size_t old_size = old_bytes.size();
  std::uint32_t seed = 100;
  for (std::size_t size : {2 * old_size, old_size / 3, std::size_t{0}, old_size + 4096,
                           std::size_t{1}, old_size - 1, 3 * old_size}) {
    const std::string bytes = Pattern(size, ++seed);
    Fd fd = Open(path, O_WRONLY | O_TRUNC);
    ASSERT_TRUE(fd.ok()) << LastErr();
    // While the new version is empty, written, and committed.
    if (!reader_goes_on()) {
      ADD_FAILURE() << "the reader stopped while a replace of " << size << " bytes was empty";
      break;
    }
    ASSERT_EQ(WriteAll(fd.get(), bytes), kOk);
    if (!reader_goes_on()) {
      ADD_FAILURE() << "the reader stopped while a replace of " << size << " bytes was written";
      break;
    }
    ASSERT_EQ(fd.Close(), kOk);
    if (!reader_goes_on()) {
      ADD_FAILURE() << "the reader stopped after a replace of " << size << " bytes committed";
      break;
    }
    EXPECT_TRUE(ReadFile(path) == bytes) << "replace of " << size << " bytes";
  }
  progress->stop = true;
  const int status = reader.Join();
  EXPECT_EQ(status, 0) << "the reader ended with " << Status(status);
  EXPECT_EQ(progress->mismatches, 0u)
      << "passes over the mapping that found other bytes, of " << progress->rounds;
}

// Extended attribute calls on a descriptor address the version that descriptor is open on: the
// replacing descriptor its new version, any other descriptor (of this thread too) the old one.
TEST_P(ReplaceModeTest, XattrCallsOnAReplacingDescriptorAddressTheNewVersion) {
  Fd old_reader = Open(entry_, O_RDONLY);  // makes the old version "busy"
  ASSERT_TRUE(old_reader.ok()) << LastErr();
  const Text old_segment = FGetXattr(old_reader.get(), xattr::kSegment);
  ASSERT_TRUE(old_segment.ok()) << old_segment.err;

  Fd fd = Open(entry_, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(fd.ok()) << LastErr();
  EXPECT_EQ(FGetXattr(fd.get(), xattr::kState), "write");
  EXPECT_EQ(FGetXattr(fd.get(), xattr::kSeq), "0");
  EXPECT_EQ(FSetXattr(fd.get(), "user.tag", "new"), kOk) << "a write entry takes user xattrs";
  const Text new_segment = FGetXattr(fd.get(), xattr::kSegment);
  ASSERT_TRUE(new_segment.ok()) << new_segment.err;
  EXPECT_NE(new_segment.value, old_segment.value);
  // The old version, through this same thread's other descriptor, is untouched.
  EXPECT_EQ(FGetXattr(old_reader.get(), xattr::kState), "busy");
  EXPECT_EQ(FGetXattr(old_reader.get(), xattr::kSeq), "1");
  EXPECT_EQ(FGetXattr(old_reader.get(), "user.tag").err, Err(ENODATA));
  EXPECT_EQ(FSetXattr(old_reader.get(), "user.tag", "old"), Err(EPERM)) << "it is committed";

  // Another thread of this process: the descriptors mean the same versions.
  std::thread([&] {
    EXPECT_EQ(FGetXattr(fd.get(), xattr::kState), "write");
    EXPECT_EQ(FSetXattr(fd.get(), "user.other", "thread"), kOk);
    EXPECT_EQ(FGetXattr(old_reader.get(), xattr::kState), "busy");
    EXPECT_EQ(FGetXattr(old_reader.get(), "user.other").err, Err(ENODATA));
  }).join();

  // Another process, by name: the old version.
  Child other([&](Channel&) {
    if (!(GetXattr(entry_, xattr::kState) == "busy")) return 2;
    if (!(GetXattr(entry_, xattr::kSeq) == "1")) return 3;
    if (GetXattr(entry_, "user.tag").err != Err(ENODATA)) return 4;
    if (!(GetXattr(entry_, xattr::kSegment) == old_segment.value)) return 5;
    return 0;
  });
  EXPECT_EQ(other.Join(), 0) << "2: state, 3: seq, 4: user.tag, 5: segment";

  ASSERT_EQ(WriteAll(fd.get(), kNew), kOk);
  ASSERT_EQ(fd.Close(), kOk);
  // Committed, for everyone, with the attributes set through the replacing descriptor.
  Child after([&](Channel&) {
    if (!(GetXattr(entry_, "user.tag") == "new")) return 2;
    if (!(GetXattr(entry_, "user.other") == "thread")) return 3;
    if (!(GetXattr(entry_, xattr::kSeq) == "2")) return 4;
    return ReadFile(entry_) == kNew ? 0 : 5;
  });
  EXPECT_EQ(after.Join(), 0) << "2: user.tag, 3: user.other, 4: seq, 5: bytes";
  EXPECT_EQ(FGetXattr(old_reader.get(), xattr::kState), "zombie");
  EXPECT_EQ(FGetXattr(old_reader.get(), "user.tag").err, Err(ENODATA));
  EXPECT_EQ(ReadFd(old_reader.get()), kOld);
}

// Version v of a framed entry: its number and length, then bytes that only v has.
constexpr std::size_t kFrameHeader = 2 * sizeof(std::uint64_t);
std::string Framed(std::uint64_t v) {
  static constexpr std::size_t kSizes[] = {4096, (64 << 10) + 123, 17, 200'000};
  const std::size_t size = kSizes[v % std::size(kSizes)];
  std::string bytes = Pattern(size, static_cast<std::uint32_t>(v));
  const std::uint64_t header[2] = {v, size};
  std::memcpy(bytes.data(), header, sizeof header);
  return bytes;
}
// The version that bytes are, if they are a whole one.
std::optional<std::uint64_t> VersionOf(std::string_view bytes) {
  if (bytes.size() < kFrameHeader) return std::nullopt;
  std::uint64_t header[2];
  std::memcpy(header, bytes.data(), sizeof header);
  if (header[1] != bytes.size() || bytes != Framed(header[0])) return std::nullopt;
  return header[0];
}

// Readers that open the name and read it, by read(2) and by mmap(2) through the mount, while a
// writer replaces it continuously, always get a whole version, of the size fstat(2) reports,
// and never one older than a version they already read.
TEST_P(ReplaceModeTest, ReadsByNameUnderContinuousReplaceAreWhole) {
  constexpr int kReaders = 3;
  constexpr std::uint64_t kVersions = 300;
  constexpr std::uint64_t kMinReads = 200;
  const std::string path = obj_ + "/framed";
  ASSERT_EQ(WriteFile(path, Framed(0)), kOk);
  struct Load {
    std::atomic<std::uint64_t> written{0};
    std::atomic<bool> done{false};
    struct Reader {
      std::atomic<std::uint64_t> reads{0};
      std::atomic<std::uint64_t> versions{0};   // distinct versions read
      std::atomic<std::uint64_t> torn{0};       // not a whole version, or not fstat's size
      std::atomic<std::uint64_t> went_back{0};  // older than the newest one read before
      std::atomic<int> err{0};
      std::atomic<int> step{0};  // what failed: 1 open, 2 fstat, 3 read, 4 mmap
    } readers[kReaders];
  };
  Shared<Load> load;

  std::vector<std::unique_ptr<Child>> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.push_back(std::make_unique<Child>([&, r](Channel&) {
      auto& me = load->readers[r];
      auto fail = [&](int step) {
        me.err = errno;
        me.step = step;
        return 2;
      };
      std::uint64_t newest = 0;
      for (std::uint64_t n = 0; n < kMinReads || !load->done; ++n) {
        Fd fd = Open(path, O_RDONLY);
        if (!fd.ok()) return fail(1);
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) return fail(2);
        std::string bytes;
        if (n % 2 == 0) {
          Text read = ReadFd(fd.get());
          if (!read.ok()) {
            errno = read.err.value();
            return fail(3);
          }
          bytes = std::move(read.value);
        } else if (st.st_size > 0) {
          void* map = ::mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd.get(), 0);
          if (map == MAP_FAILED) return fail(4);
          bytes.assign(static_cast<const char*>(map), st.st_size);
          ::munmap(map, st.st_size);
        }
        me.reads++;
        std::optional<std::uint64_t> v = VersionOf(bytes);
        if (!v || bytes.size() != static_cast<std::size_t>(st.st_size)) {
          me.torn++;
          continue;
        }
        if (*v < newest) {
          me.went_back++;
        } else if (*v > newest || n == 0) {
          me.versions++;
          newest = *v;
        }
      }
      return 0;
    }));
  }
  Child writer([&](Channel&) {
    for (std::uint64_t v = 1; v <= kVersions; ++v) {
      if (!WriteFile(path, Framed(v), O_WRONLY | O_TRUNC).ok()) return ChildFail("replace");
      load->written = v;
    }
    load->done = true;
    return 0;
  });

  const int writer_status = writer.Join();
  load->done = true;  // whatever became of the writer
  EXPECT_EQ(writer_status, 0) << "the writer ended with " << Status(writer_status) << " after "
                              << load->written << " versions";
  for (int r = 0; r < kReaders; ++r) {
    const int status = readers[r]->Join();
    const auto& stats = load->readers[r];
    EXPECT_EQ(status, 0) << "reader " << r << " ended with " << Status(status) << " after "
                         << stats.reads << " reads; step " << stats.step << " (1 open, 2 fstat, "
                         << "3 read, 4 mmap) failed with " << Err(stats.err);
    EXPECT_EQ(stats.torn, 0u) << "reader " << r << ": reads that were not a whole version, of "
                              << stats.reads;
    EXPECT_GT(stats.versions, 1u) << "reader " << r << " read only one version";
    EXPECT_EQ(stats.went_back, 0u) << "reader " << r << ": reads older than one before, of "
                                   << stats.reads;
  }
  // Every replace committed, the last one last.
  const Text latest = ReadFile(obj_ + "/.latest");
  ASSERT_TRUE(latest.ok()) << latest.err;
  EXPECT_EQ(VersionOf(latest.value), std::optional<std::uint64_t>(kVersions));
  EXPECT_EQ(FGetXattr(Open(obj_ + "/.latest", O_RDONLY).get(), xattr::kSeq),
            std::to_string(2 + kVersions))
      << "seq 1 is e's, 2 framed version 0's";
}

// Once a replace's close(2) has returned, every open of the name that starts after it gets
// that version or a newer one (docs/design.md, "Lifecycle details"), even with readers whose
// lookups race with the replaces and cache the name again after the writer's close dropped it:
// an open through that stale name is sent back (ESTALE) for the current version.
// The kernel's retry of such an open may share the result of another process's lookup that
// was answered just before the commit; the epoch that the writer's close bumps rules that out
// (docs/design.md, "Lifecycle details"). Without it, 1 run in 1,250 saw 2 stale reads.
TEST_P(ReplaceModeTest, ReadsByNameAfterACloseReturnsSeeThatVersionOrANewerOne) {
  constexpr int kReaders = 3;
  constexpr std::uint64_t kVersions = 300;
  const std::string path = obj_ + "/framed";
  ASSERT_EQ(WriteFile(path, Framed(0)), kOk);
  struct Load {
    std::atomic<std::uint64_t> closed{0};  // the newest version whose close() returned
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> checks{0}, stale{0}, first_closed{0}, first_read{0};
  };
  Shared<Load> load;

  // Readers whose lookups race with the replaces, and a checker that compares.
  std::vector<std::unique_ptr<Child>> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.push_back(std::make_unique<Child>([&](Channel&) {
      while (!load->done) {
        if (!ReadFile(path).ok()) return ChildFail("read " + path);
      }
      return 0;
    }));
  }
  Child checker([&](Channel&) {
    while (!load->done) {
      const std::uint64_t closed = load->closed;
      const Text read = ReadFile(path);
      if (!read.ok()) return ChildFail("read " + path);
      const std::optional<std::uint64_t> v = VersionOf(read.value);
      if (!v) return 3;
      load->checks++;
      if (*v < closed && load->stale++ == 0) {
        load->first_closed = closed;
        load->first_read = *v;
      }
    }
    return 0;
  });
  Child writer([&](Channel&) {
    for (std::uint64_t v = 1; v <= kVersions; ++v) {
      if (!WriteFile(path, Framed(v), O_WRONLY | O_TRUNC).ok()) return ChildFail("replace");
      load->closed = v;
    }
    return 0;
  });

  EXPECT_EQ(writer.Join(), 0);
  const Text last = ReadFile(path);
  load->done = true;
  EXPECT_EQ(checker.Join(), 0);
  for (auto& reader : readers) EXPECT_EQ(reader->Join(), 0);
  EXPECT_EQ(load->stale, 0u) << "reads by name older than a version whose close had returned, of "
                             << load->checks << "; the first: version " << load->first_read
                             << " after version " << load->first_closed << " was closed";
  ASSERT_TRUE(last.ok()) << last.err;
  EXPECT_EQ(VersionOf(last.value), std::optional<std::uint64_t>(kVersions))
      << "read by name after the writer's last close";
  const std::size_t bytes = sizeof kOld - 1 + Framed(kVersions).size();
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == std::to_string(bytes); }))
      << GetXattr(obj_, xattr::kBytes) << " bytes in use, want " << bytes;
}

// Which of a and b each 4 KiB block of bytes comes from ('0', '1', or 'x' for neither), for
// failure messages.
std::string Blocks(const std::string& bytes, const std::string& a, const std::string& b) {
  constexpr std::size_t kBlock = 4096;
  std::string owners;
  for (std::size_t off = 0; off < bytes.size(); off += kBlock) {
    auto same = [&](const std::string& other) {
      return other.size() >= off && bytes.compare(off, kBlock, other, off, kBlock) == 0;
    };
    owners += same(a) ? '0' : same(b) ? '1' : 'x';
  }
  return owners;
}

// Two threads of one process replace one name at once, again and again: each open(O_TRUNC) makes
// a version of its own, with an inode of its own, even while the other thread's version is open
// for writing; so each commit is one thread's bytes, whole, and takes a seq of its own.
TEST_P(ReplaceModeTest, TwoThreadsReplacingOneNameEachWriteTheirOwnVersion) {
  constexpr int kRounds = 40;
  constexpr std::size_t kSize = 64 << 10;
  constexpr std::size_t kChunk = 4096;
  auto bytes_of = [](int thread, int round) {
    return Pattern(kSize, static_cast<std::uint32_t>(1000 * (thread + 1) + round));
  };
  struct Round {
    Err open = kOk, write = kOk, close = kOk;
    ino_t ino = 0;
  };
  std::array<std::vector<Round>, 2> rounds{std::vector<Round>(kRounds),
                                           std::vector<Round>(kRounds)};
  std::vector<Text> committed(kRounds);
  std::barrier sync(2);

  auto replace = [&](int t) {
    for (int k = 0; k < kRounds; ++k) {
      Round& mine = rounds[t][k];
      const std::string bytes = bytes_of(t, k);
      // Odd rounds: both open at once. Even rounds: one after the other, the first one's
      // descriptor still open, so the second one's path walk finds the first one's version,
      // in write state, and truncates it.
      const bool together = k % 2 == 1;
      const int first = (k / 2) % 2;
      sync.arrive_and_wait();
      if (!together && t != first) sync.arrive_and_wait();
      Fd fd = Open(entry_, O_WRONLY | O_TRUNC);
      if (!fd.ok()) mine.open = LastErr();
      struct stat st;
      if (fd.ok() && ::fstat(fd.get(), &st) == 0) mine.ino = st.st_ino;
      if (!together && t == first) sync.arrive_and_wait();
      sync.arrive_and_wait();  // both are open: their writes interleave
      for (std::size_t off = 0; fd.ok() && off < kSize && mine.write.ok(); off += kChunk) {
        if (::pwrite(fd.get(), bytes.data() + off, kChunk, static_cast<off_t>(off)) !=
            static_cast<ssize_t>(kChunk)) {
          mine.write = LastErr();
        }
        sched_yield();
      }
      mine.close = fd.Close();
      sync.arrive_and_wait();  // both closed
      if (t == 0) committed[k] = ReadFile(entry_);
    }
  };
  std::thread other(replace, 1);
  replace(0);
  other.join();

  for (int k = 0; k < kRounds; ++k) {
    for (int t = 0; t < 2; ++t) {
      const Round& r = rounds[t][k];
      EXPECT_EQ(r.open, kOk) << "thread " << t << ", round " << k;
      EXPECT_EQ(r.write, kOk) << "thread " << t << ", round " << k;
      EXPECT_EQ(r.close, kOk) << "thread " << t << ", round " << k;
    }
    EXPECT_NE(rounds[0][k].ino, rounds[1][k].ino)
        << "round " << k << ": both threads' descriptors are one inode";
    const std::string a = bytes_of(0, k);
    const std::string b = bytes_of(1, k);
    EXPECT_TRUE(committed[k] == a || committed[k] == b)
        << "round " << k << ": the committed value is neither thread's whole version: "
        << (committed[k].ok() ? "blocks " + Blocks(committed[k].value, a, b) + " of " +
                                    std::to_string(committed[k].value.size()) + " bytes"
                              : "read failed");
  }
  // Once the last releases reach the daemon (this process sees its own versions until then),
  // one version is left.
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj_, xattr::kBytes) == std::to_string(kSize); }))
      << GetXattr(obj_, xattr::kBytes);
  EXPECT_EQ(ListDir(obj_).names, std::vector<std::string>{"e"});
  // Every replace committed a version of its own, which took a number. (The name holds the
  // version closed last. When two closes cross, that is not always the one released last,
  // which took the last number: the other is replaced as it commits.)
  ASSERT_EQ(WriteFile(obj_ + "/next", "x"), kOk);
  EXPECT_EQ(GetXattr(obj_ + "/next", xattr::kSeq), std::to_string(2 + 2 * kRounds));
}

// On kernels without name epochs (before 6.16), the close of a replace has the kernel drop the
// name before it returns. The kernel takes the object's lock for that, which a lookup in flight
// holds until the daemon answers it, so no thread that serves requests may wait for it.
class ReplaceWithoutEpochsTest : public ReplaceTest {
 protected:
  std::vector<std::string> DaemonArgs() const override { return {"--no-epochs"}; }
};

TEST_F(ReplaceWithoutEpochsTest, TheCloserFindsItsNewVersion) {
  struct stat before;
  ASSERT_EQ(ErrOf(::stat(entry_.c_str(), &before)), kOk);  // the kernel caches the name
  for (int round = 0; round < 20; ++round) {
    const std::string data = "version " + std::to_string(round);
    ASSERT_EQ(WriteFile(entry_, data, O_WRONLY | O_TRUNC), kOk);
    ASSERT_EQ(ReadFile(entry_), data) << "round " << round;
  }
  struct stat after;
  ASSERT_EQ(ErrOf(::stat(entry_.c_str(), &after)), kOk);
  EXPECT_NE(after.st_ino, before.st_ino);
}

TEST_F(ReplaceWithoutEpochsTest, MoreReplacingClosesThanTheDaemonHasThreadsAllFinish) {
  // smosd serves /dev/fuse with at most 64 threads. 96 closers whose every close drops a name,
  // next to lookups of the same names, would have taken them all and waited on each other.
  constexpr int kWriters = 96;
  constexpr int kRounds = 10;
  for (int w = 0; w < kWriters; ++w) {
    ASSERT_EQ(WriteFile(obj_ + "/w" + std::to_string(w), "0"), kOk);
  }
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> lookers;
  for (int l = 0; l < 4; ++l) {
    lookers.emplace_back([&, l] {
      for (int i = l; !stop; ++i) {
        struct stat st;
        ::stat((obj_ + "/w" + std::to_string(i % kWriters)).c_str(), &st);
      }
    });
  }
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      const std::string path = obj_ + "/w" + std::to_string(w);
      for (int round = 1; round <= kRounds; ++round) {
        if (WriteFile(path, std::to_string(round), O_WRONLY | O_TRUNC) != kOk ||
            ReadFile(path) != std::to_string(round)) {
          failures++;
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  stop = true;
  for (auto& t : lookers) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(GetXattr(obj_, xattr::kEntries), std::to_string(kWriters + 1));
}

}  // namespace
}  // namespace smos::test
