// A store file that a crash tore, or that is not ours: the daemon refuses it with a message, or
// recovers what is whole. It never crashes, hangs or reads outside the segment.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>
#include <string>

#include "os/segment.h"
#include "smos/xattr.h"
#include "store/layout.h"
#include "store/meta.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

class StoreDamageTest : public StoreTest {
 protected:
  // Closes the store and lets `patch` change its metadata segment, as a crash or another
  // program might have left it.
  void Patch(const std::function<void(MetaSegment&)>& patch) {
    Close();
    std::unique_ptr<MetaSegment> meta;
    std::string message;
    ASSERT_EQ(MetaSegment::open(options().name, {0, 0}, false, &meta, &message), 0) << message;
    patch(*meta);
  }

  // Opens the store again: the errno, with the log's message in *message.
  int Open(std::string* message) {
    StoreOptions again = options();
    again.reset = false;
    std::unique_ptr<Store> store;
    return Store::open(again, &store, message);
  }

  std::string MetaPath() const { return os::shm_path(MetaSegment::meta_name(options().name)); }

  // Opening the store again fails with `err`, and its message says `says`.
  void ExpectRefused(int err, std::string_view says) {
    std::string message;
    EXPECT_EQ(Open(&message), err);
    EXPECT_NE(message.find(says), std::string::npos) << message;
  }

  // The entry record that holds inode `ino`.
  static layout::EntryRecord& EntryOf(MetaSegment& meta, Ino ino) {
    for (std::uint64_t e = 0;; ++e) {
      if (meta.entry(e).ino == ino) return meta.entry(e);
    }
  }
};

TEST_F(StoreDamageTest, AHeaderWhoseTablesLeaveTheSegmentIsRefused) {
  const std::vector<std::function<void(layout::StoreHeader&)>> damages = {
      [](layout::StoreHeader& h) { h.entry_hwm = 1ull << 40; },
      [](layout::StoreHeader& h) { h.object_hwm = h.max_objects + 1; },
      [](layout::StoreHeader& h) { h.max_entries = 1ull << 61; },
      [](layout::StoreHeader& h) { h.max_objects = 0; },
      [](layout::StoreHeader& h) { h.entries_off = -8; },
      [](layout::StoreHeader& h) { h.xattrs_off += 1ll << 40; },
      [](layout::StoreHeader& h) { h.objects_off += 4; },
  };
  for (std::size_t i = 0; i < damages.size(); ++i) {
    SCOPED_TRACE("damage " + std::to_string(i));
    ASSERT_EQ(Reopen(/*reset=*/true), 0);
    Put(MakeObject("o"), "e", "x");
    Patch([&](MetaSegment& meta) { damages[i](meta.header()); });
    ExpectRefused(EINVAL, "damaged header");
    ExpectRefused(EINVAL, "--reset");
  }
}

TEST_F(StoreDamageTest, AHalfMadeMetaFileIsRefusedNotWaitedOn) {
  // What a smosd killed while it created the store leaves: an empty file, or a segment whose
  // Boost state is still "initializing". Boost itself would wait for either forever.
  Close();
  const std::string path = MetaPath();
  ASSERT_EQ(truncate(path.c_str(), 0), 0);
  ExpectRefused(EINVAL, "half-made");

  ASSERT_EQ(Reopen(/*reset=*/true), 0);
  Close();
  ASSERT_EQ(truncate(path.c_str(), 0), 0);
  ASSERT_EQ(truncate(path.c_str(), 1 << 20), 0);  // long enough, but all zero
  ExpectRefused(EINVAL, "half-made");

  ASSERT_EQ(Reopen(/*reset=*/true), 0) << "--reset starts afresh";
}

TEST_F(StoreDamageTest, DamagedBoostBookkeepingIsRefused) {
  // Boost's own records of the segment come first in the file; damage there crashed or hung
  // the daemon in find() before it could say anything.
  for (const auto& [offset, fill] : {std::pair{132, 0xff}, {104, 0x00}, {154, 0xff}}) {
    SCOPED_TRACE("bytes " + std::to_string(offset) + ".. set to " + std::to_string(fill));
    ASSERT_EQ(Reopen(/*reset=*/true), 0);
    Put(MakeObject("o"), "e", "x");
    Close();
    const int fd = ::open(MetaPath().c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::string bytes(100, static_cast<char>(fill));
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), offset), 100);
    ::close(fd);
    ExpectRefused(EINVAL, "damaged bookkeeping");
  }
}

TEST_F(StoreDamageTest, AStoreOpensWhenSigchldIsIgnored) {
  // What a launcher that ignores SIGCHLD hands on across exec: the check of the meta file
  // in a child must still see how its child ended, and never call a good store damaged.
  Put(MakeObject("o"), "e", "kept");
  struct sigaction ignore {}, old {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGCHLD, &ignore, &old), 0);
  const int err = Reopen();
  sigaction(SIGCHLD, &old, nullptr);
  ASSERT_EQ(err, 0);
  EXPECT_EQ(ContentsOf(InoOf(InoOf(kRootIno, "o", Me()), "e", Me()), Me()), "kept");
}

TEST_F(StoreDamageTest, ATruncatedMetaFileIsRefused) {
  Put(MakeObject("o"), "e", "x");
  Close();
  for (off_t size : {4096, 65536, 1 << 20}) {
    SCOPED_TRACE("truncated to " + std::to_string(size));
    ASSERT_EQ(truncate(MetaPath().c_str(), size), 0);
    ExpectRefused(EINVAL, "--reset");
  }
}

TEST_F(StoreDamageTest, StoreFilesThatOthersMayWriteAreRefused) {
  Put(MakeObject("o"), "e", "kept");
  Close();
  const std::string path = MetaPath();
  ASSERT_EQ(chmod(path.c_str(), 0666), 0);
  ExpectRefused(EPERM, "others may write it");
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);

  if (geteuid() == 0) {
    // One that another user made before this smosd first ran: /dev/shm is everyone's.
    const std::string lock = os::shm_path(options().name + ".lock");
    ASSERT_EQ(chown(lock.c_str(), 12345, 12345), 0);
    ExpectRefused(EPERM, "belongs to uid 12345");
    ASSERT_EQ(chown(lock.c_str(), 0, 0), 0);
  }
  ASSERT_EQ(Reopen(), 0);
  Ino obj = InoOf(kRootIno, "o", Me());
  EXPECT_EQ(ContentsOf(InoOf(obj, "e", Me()), Me()), "kept") << "nothing was lost";
}

TEST_F(StoreDamageTest, TornRecordsAreRepairedOrDropped) {
  Ino obj = MakeObject("o");
  ASSERT_EQ(SetXattr(obj, "user.note", "x"), 0);
  const Ino renamed = Put(obj, "abcdef", "renamed");
  const Ino odd_mode = Put(obj, "mode", "mode");
  const Ino rooted = Put(obj, "root", "root");
  Ino gone = MakeObject("gone");
  Put(gone, "e", "e");
  Patch([&](MetaSegment& meta) {
    // A rename of "abcdef" to "x" that a crash cut after the bytes, before the length.
    layout::Name& name = EntryOf(meta, renamed).name;
    std::memcpy(name.bytes, "x", 2);
    EntryOf(meta, odd_mode).mode = S_IFDIR | 0644;
    EntryOf(meta, rooted).ino = kRootIno;
    for (std::uint64_t o = 0; o < meta.header().object_hwm; ++o) {
      layout::ObjectRecord& r = meta.object(o);
      if (r.ino == gone) std::memcpy(r.name.bytes, "a/b", 4), r.name.len = 3;
      if (r.ino == obj) meta.object_xattrs(o).used = 0xffffffffu;
    }
  });
  ASSERT_EQ(Reopen(), 0);

  EXPECT_EQ(Listing(kRootIno), Names({"o"})) << "an object named a/b is dropped";
  EXPECT_EQ(Listing(obj), Names({"mode", "x"}));
  EXPECT_EQ(ContentsOf(InoOf(obj, "x", Me()), Me()), "renamed");
  Attr attr;
  ASSERT_EQ(GetAttr(odd_mode, &attr), 0);
  EXPECT_EQ(attr.mode, S_IFREG | 0644u);
  EXPECT_EQ(Xattr(obj, "user.note"), "x") << "the whole records of a blob are kept";
  std::string value;
  EXPECT_EQ(store().getxattr(obj, "user.absent", &value), ENODATA);
  EXPECT_EQ(SetXattr(obj, "user.more", "y"), 0);
  EXPECT_EQ(Xattr(obj, "user.more"), "y");
  EXPECT_EQ(store().rmdir(kRootIno, "o"), ENOTEMPTY);
}

}  // namespace
}  // namespace smos::test
