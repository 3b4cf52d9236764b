// Many processes at once: creating, reading, replacing and deleting concurrently, checked by
// checksums. Nothing is lost or duplicated, and no slot or byte of memory leaks.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

constexpr int kProcesses = 16;
constexpr int kEntryTable = 128;

// Starts kProcesses children running body(i), and checks that each exits with 0.
void RunConcurrently(const std::function<int(int)>& body) {
  std::vector<std::unique_ptr<Child>> children;
  for (int i = 0; i < kProcesses; ++i) {
    children.push_back(std::make_unique<Child>([&body, i](Channel&) { return body(i); }));
  }
  for (int i = 0; i < kProcesses; ++i) EXPECT_EQ(children[i]->Join(), 0) << "process " << i;
}

class ConcurrencyTest : public MountTest {
 protected:
  std::vector<std::string> DaemonArgs() const override {
    return {"--memory=64M", "--max-entries=" + std::to_string(kEntryTable)};
  }
};

// Entry k of process i: its name, size and bytes are all derived from (i, k).
struct Item {
  int process;
  int index;

  std::string name() const { return "p" + std::to_string(process) + "-" + std::to_string(index); }
  std::string bytes() const {
    std::uint32_t seed = static_cast<std::uint32_t>(process * 1000 + index);
    return Pattern(1 + (seed * 2654435761u) % 65536, seed);
  }
  static bool Parse(const std::string& name, Item* out) {
    return std::sscanf(name.c_str(), "p%d-%d", &out->process, &out->index) == 2;
  }
};

TEST_F(ConcurrencyTest, ProcessesCreateReadAndDeleteWithoutLossOrLeaks) {
  constexpr int kRounds = 30;
  constexpr int kKept = 2;  // each process keeps its last entries, deletes older ones
  std::string obj = MakeObject("obj", {{xattr::kCapacity, std::to_string(kEntryTable)}});

  RunConcurrently([&](int process) {
    std::mt19937 random(static_cast<unsigned>(process));
    for (int k = 0; k < kRounds; ++k) {
      Item mine{process, k};
      std::string path = obj + "/" + mine.name();
      if (!WriteFile(path, mine.bytes(), O_WRONLY | O_CREAT | O_EXCL).ok()) {
        return ChildFail("create " + path);
      }
      if (ReadFile(path).value != mine.bytes()) return ChildFail("read back " + path);

      // Read someone else's entry; it may be deleted under us, but never be wrong.
      NameList names = ListDir(obj);
      if (!names.err.ok() || names.names.empty()) return ChildFail("readdir");
      const std::string& name = names.names[random() % names.names.size()];
      Item theirs;
      if (!Item::Parse(name, &theirs)) return ChildFail("unexpected name " + name);
      Text read = ReadFile(obj + "/" + name);
      if (read.ok() ? read.value != theirs.bytes() : read.err != Err(ENOENT)) {
        return ChildFail("read " + name);
      }

      if (k >= kKept) {
        std::string old = obj + "/" + Item{process, k - kKept}.name();
        if (::unlink(old.c_str()) != 0) return ChildFail("unlink " + old);
      }
    }
    return 0;
  });

  // Exactly the kept entries, each with its bytes.
  std::vector<std::string> want;
  std::uint64_t bytes = 0;
  for (int p = 0; p < kProcesses; ++p) {
    for (int k = kRounds - kKept; k < kRounds; ++k) {
      Item item{p, k};
      want.push_back(item.name());
      bytes += item.bytes().size();
      EXPECT_TRUE(ReadFile(obj + "/" + item.name()) == item.bytes()) << item.name();
    }
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ListDir(obj).names, want);
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), std::to_string(want.size()));
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj, xattr::kBytes) == std::to_string(bytes); }))
      << GetXattr(obj, xattr::kBytes) << " bytes in use, want " << bytes;

  // No leaks: with everything deleted, all memory is free and every slot can be used again.
  for (const std::string& name : want) ASSERT_EQ(ErrOf(::unlink((obj + "/" + name).c_str())), kOk);
  EXPECT_TRUE(Eventually([&] { return StatSpace(Path("")).used == 0; }))
      << StatSpace(Path("")).used << " bytes still in use";
  for (int i = 0; i < kEntryTable; ++i) {
    ASSERT_EQ(WriteFile(obj + "/again" + std::to_string(i), "x"), kOk) << i;
  }
  EXPECT_EQ(OpenErr(obj + "/one-too-many", O_WRONLY | O_CREAT), Err(ENOSPC));
}

TEST_F(ConcurrencyTest, ProcessesReadOneEntryAtOnce) {
  std::string obj = MakeObject("obj");
  std::string e = obj + "/e";
  const std::string bytes = Pattern(1 << 20, 1);
  ASSERT_EQ(WriteFile(e, bytes), kOk);

  RunConcurrently([&](int) {
    for (int round = 0; round < 5; ++round) {
      if (ReadFile(e).value != bytes) return ChildFail("read");
    }
    return 0;
  });
  EXPECT_TRUE(Eventually([&] { return GetXattr(e, xattr::kReaders) == "0"; }))
      << GetXattr(e, xattr::kReaders);
  EXPECT_EQ(GetXattr(e, xattr::kState), "idle");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
}

TEST_F(ConcurrencyTest, ConcurrentReplacesOfOneNameNeverTearOrLeak) {
  constexpr int kReplaces = 10;
  constexpr std::size_t kSize = 16384;
  std::string obj = MakeObject("obj");
  std::string e = obj + "/e";
  std::set<std::uint64_t> versions;  // checksums of every version anyone writes
  for (int p = 0; p <= kProcesses; ++p) {
    for (int k = 0; k < kReplaces; ++k) versions.insert(Checksum(Pattern(kSize, p * 100 + k)));
  }
  ASSERT_EQ(WriteFile(e, Pattern(kSize, kProcesses * 100)), kOk);

  RunConcurrently([&](int process) {
    for (int k = 0; k < kReplaces; ++k) {
      if (!WriteFile(e, Pattern(kSize, process * 100 + k)).ok()) return ChildFail("replace");
      Text read = ReadFile(e);
      if (!read.ok() || versions.count(Checksum(read.value)) == 0) return ChildFail("torn read");
    }
    return 0;
  });

  Text last = ReadFile(e);
  ASSERT_TRUE(last.ok()) << last.err;
  EXPECT_EQ(versions.count(Checksum(last.value)), 1u) << "the final version is torn";
  // Every replace committed, each with a seq of its own: the next takes the one after them
  // all. The name need not hold the highest: it ends with the version closed last, and a
  // release that comes after a later close's (under load) commits and is replaced at once.
  const std::uint64_t final_seq = std::stoull(GetXattr(e, xattr::kSeq).value);
  EXPECT_LE(final_seq, 1u + kProcesses * kReplaces);
  EXPECT_GT(final_seq, 1u + kProcesses * (kReplaces - 1)) << "an old version kept the name";
  ASSERT_EQ(WriteFile(obj + "/next", "x"), kOk);
  EXPECT_EQ(GetXattr(obj + "/next", xattr::kSeq), std::to_string(2 + kProcesses * kReplaces));
  ASSERT_EQ(ErrOf(::unlink((obj + "/next").c_str())), kOk);
  EXPECT_EQ(ListDir(obj).names, std::vector<std::string>{"e"});
  EXPECT_EQ(GetXattr(obj, xattr::kEntries), "1");
  EXPECT_TRUE(Eventually([&] { return GetXattr(obj, xattr::kBytes) == std::to_string(kSize); }))
      << GetXattr(obj, xattr::kBytes);
}

}  // namespace
}  // namespace smos::test
