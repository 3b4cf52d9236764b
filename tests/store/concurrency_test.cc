// Many threads creating, writing, committing, reading and deleting in one object at once.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store_fixture.h"

namespace smos::test {
namespace {

constexpr int kThreads = 8;
constexpr int kRounds = 40;
constexpr int kCapacity = 32;  // each thread holds at most one own entry and one zombie
constexpr std::size_t kMaxSize = 64 << 10;
constexpr std::size_t kHeader = sizeof(std::uint64_t);

std::uint64_t Fnv1a(std::string_view bytes) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Random bytes behind a header that holds their checksum, so that any reader can tell a whole
// entry from a torn or mixed one.
std::string Framed(std::string body) {
  std::uint64_t sum = Fnv1a(body);
  return std::string(reinterpret_cast<const char*>(&sum), kHeader) + body;
}

bool IsWhole(std::string_view framed) {
  if (framed.size() < kHeader) return false;
  std::uint64_t sum;
  std::memcpy(&sum, framed.data(), kHeader);
  return sum == Fnv1a(framed.substr(kHeader));
}

class StoreConcurrencyTest : public StoreTest {
 protected:
  // One thread's loop. Each thread is its own caller, of the test's process.
  void Work(Ino obj, int thread) {
    const Caller self{getuid(), getgid(), static_cast<pid_t>(gettid())};
    std::mt19937 gen(static_cast<unsigned>(thread));
    for (int round = 0; round < kRounds; ++round) {
      SCOPED_TRACE("thread " + std::to_string(thread) + " round " + std::to_string(round));
      const std::string name = "t" + std::to_string(thread) + "-" + std::to_string(round);
      const std::string data =
          Framed(Pattern(std::uniform_int_distribution<std::size_t>(0, kMaxSize)(gen), gen()));
      WriteAndCommit(obj, name, data, self);
      ReadSomeoneElses(obj, name, self, gen);
      ReadAndUnlinkOwn(obj, name, data, self);
      if (HasFailure()) return;  // one report, not a cascade
    }
  }

  void WriteAndCommit(Ino obj, const std::string& name, const std::string& data,
                      const Caller& self) {
    Attr attr;
    OpenFile file;
    ASSERT_EQ(store().create(obj, name, 0644, kCreateFlags | O_EXCL, self, &attr, &file), 0);
    // In two writes, the second one first, so that the entry grows through a hole.
    const std::size_t half = data.size() / 2;
    ASSERT_EQ(Write(file.fh, half, std::string_view(data).substr(half)), 0);
    ASSERT_EQ(Write(file.fh, 0, std::string_view(data).substr(0, half)), 0);
    ASSERT_EQ(store().release(file.fh), 0);
  }

  // Any committed entry of another thread must read back whole, if it still exists.
  void ReadSomeoneElses(Ino obj, const std::string& own, const Caller& self, std::mt19937& gen) {
    std::vector<DirEntry> listing;
    ASSERT_EQ(store().readdir(obj, &listing), 0);
    std::erase_if(listing,
                  [&](const DirEntry& d) { return d.name == own || IsControlFile(d.name); });
    if (listing.empty()) return;
    const DirEntry& pick = listing[gen() % listing.size()];
    Attr attr;
    if (store().lookup(obj, pick.name, self, &attr) != 0) return;  // deleted since
    OpenFile file;
    if (store().open(attr.ino, O_RDONLY, self, &file) != 0) return;  // freed since
    EXPECT_TRUE(IsWhole(Contents(file.fh))) << pick.name;
    EXPECT_EQ(store().release(file.fh), 0);
  }

  void ReadAndUnlinkOwn(Ino obj, const std::string& name, const std::string& data,
                        const Caller& self) {
    Attr attr;
    ASSERT_EQ(store().lookup(obj, name, self, &attr), 0);
    EXPECT_EQ(attr.size, data.size());
    OpenFile file;
    ASSERT_EQ(store().open(attr.ino, O_RDONLY, self, &file), 0);
    const std::string seq = Xattr(attr.ino, xattr::kSeq);
    EXPECT_EQ(Contents(file.fh), data);
    ASSERT_EQ(store().unlink(obj, name, self), 0);
    EXPECT_EQ(Contents(file.fh), data) << "the zombie's bytes do not change";
    ASSERT_EQ(store().release(file.fh), 0);
    EXPECT_EQ(store().lookup(obj, name, self, &attr), ENOENT);
    std::lock_guard lock(seqs_mu_);
    seqs_.push_back(std::stoull(seq));
  }

  // Replaces entry `name` `count` times as Me(), each time with a new framed version.
  void ReplaceRepeatedly(Ino obj, const std::string& name, int count) {
    std::mt19937 gen(1);
    for (int i = 0; i < count; ++i) {
      const std::string data =
          Framed(Pattern(std::uniform_int_distribution<std::size_t>(0, kMaxSize)(gen), gen()));
      OpenFile file;
      ASSERT_EQ(Replace(obj, name, Me(), &file), 0);
      const std::size_t half = data.size() / 2;
      ASSERT_EQ(Write(file.fh, half, std::string_view(data).substr(half)), 0);
      ASSERT_EQ(Write(file.fh, 0, std::string_view(data).substr(0, half)), 0);
      ASSERT_EQ(store().release(file.fh), 0);
    }
  }

  // Reads entry `name` as another process until `done`; counts whole reads in `reads`.
  void ReadUntil(Ino obj, const std::string& name, const std::atomic<bool>& done,
                 std::atomic<int>* reads) {
    const Caller reader = Other();
    while (!done && !HasFailure()) {
      Attr attr;
      ASSERT_EQ(store().lookup(obj, name, reader, &attr), 0) << "the name is always there";
      OpenFile file;
      int err = store().open(attr.ino, O_RDONLY, reader, &file);
      store().forget(attr.ino, 1);
      if (err == ENOENT || err == ESTALE) continue;  // replaced and freed since the lookup
      ASSERT_EQ(err, 0) << ErrName(err);
      const std::string bytes = Contents(file.fh);
      EXPECT_TRUE(IsWhole(bytes)) << bytes.size() << " bytes";
      EXPECT_EQ(bytes.size(), attr.size);
      EXPECT_EQ(store().release(file.fh), 0);
      ++*reads;
    }
  }

  std::mutex seqs_mu_;
  std::vector<std::uint64_t> seqs_;  // guarded by seqs_mu_
};

TEST_F(StoreConcurrencyTest, ThreadsShareAnObjectWithoutLosingOrLeakingAnything) {
  Ino obj = MakeObject("shared", {{xattr::kCapacity, std::to_string(kCapacity)}});
  const StoreStats before = store().stats();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back([this, obj, t] { Work(obj, t); });
  for (std::thread& t : threads) t.join();

  // Every commit took its own seq: none lost, none given twice.
  std::sort(seqs_.begin(), seqs_.end());
  std::vector<std::uint64_t> expected(kThreads * kRounds);
  std::iota(expected.begin(), expected.end(), 1);
  EXPECT_EQ(seqs_, expected);

  // No slot, byte or handle leaked.
  EXPECT_EQ(Listing(obj), Names{});
  EXPECT_EQ(Xattr(obj, xattr::kBytes), "0");
  EXPECT_EQ(store().stats().memory_used, 0u);
  EXPECT_EQ(store().stats().free_entries, before.free_entries);
  std::vector<std::uint64_t> handles;
  for (int i = 0; i < kCapacity; ++i) {
    handles.push_back(Create(obj, "full" + std::to_string(i)));
    ASSERT_NE(handles.back(), 0u) << "capacity " << kCapacity << " reached at " << i;
  }
  Attr attr;
  OpenFile file;
  EXPECT_EQ(store().create(obj, "one-more", 0644, kCreateFlags, Me(), &attr, &file), ENOSPC);
  for (std::uint64_t fh : handles) EXPECT_EQ(store().release(fh), 0);
}


// An atomic replace under load: readers in another process always get one whole version, never
// a torn or mixed one, and the replaced versions leave nothing behind.
TEST_F(StoreConcurrencyTest, ReadersOfANameReplacedOverAndOverSeeWholeVersions) {
  constexpr int kReplaces = 100;
  constexpr int kReaders = 4;
  Ino obj = MakeObject("params");
  ASSERT_NE(Put(obj, "w", Framed(Pattern(1000, 0))), 0u);
  const StoreStats before = store().stats();

  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&] { ReadUntil(obj, "w", done, &reads); });
  }
  ReplaceRepeatedly(obj, "w", kReplaces);
  done = true;
  for (std::thread& t : readers) t.join();
  EXPECT_GT(reads, 0);

  Attr attr;
  ASSERT_EQ(store().lookup(obj, "w", Other(), &attr), 0);
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), std::to_string(kReplaces + 1));
  EXPECT_EQ(Xattr(attr.ino, xattr::kReaders), "0");
  EXPECT_TRUE(IsWhole(ContentsOf(attr.ino, Other())));
  EXPECT_EQ(store().stats().memory_used, attr.size);
  EXPECT_EQ(store().stats().free_entries, before.free_entries);
  EXPECT_EQ(Xattr(obj, xattr::kEntries), "1");
}

}  // namespace
}  // namespace smos::test
