// A private Store for every test, and the helpers that play the FUSE layer's part.
//
// Each StoreTest opens a store under a name of its own ("ut<pid>_<n>"), so tests can run in
// parallel, and removes that store's files from /dev/shm in TearDown. Data moves the way the
// FUSE adapter moves it: prepare_write() or prepare_read() under the store's lock, then
// pwrite() or pread() on the slot file outside it.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "smos/xattr.h"
#include "store/store.h"

namespace smos::test {

inline constexpr int kCreateFlags = O_CREAT | O_WRONLY;

using Names = std::vector<std::string>;

// Whether `name` is one of the control files (.push, .pop, .latest) that every object lists
// besides its entries (docs/design.md, "Control files").
bool IsControlFile(std::string_view name);

// "ENOENT" for ENOENT, for messages and for Xattr()'s error values.
std::string ErrName(int err);

// `size` deterministic bytes that differ with `seed`.
std::string Pattern(std::size_t size, unsigned seed);

// A process other than the test's own, so that a Caller with its pid is not the writer of
// the test's entries: a forked child that sleeps until the destructor kills and reaps it.
// Create it before opening a store, so that the child holds none of the store's descriptors
// (the store's lock is an flock, which a forked copy of its descriptor would keep).
class OtherProcess {
 public:
  OtherProcess();
  ~OtherProcess();
  OtherProcess(const OtherProcess&) = delete;
  OtherProcess& operator=(const OtherProcess&) = delete;

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

class StoreTest : public ::testing::Test {
 protected:
  using Attrs = std::vector<std::pair<std::string, std::string>>;

  // Small tables and limits, so that a store is cheap to create. Suites override this to
  // open their stores with other options; name and reset are set by the fixture.
  virtual StoreOptions Options() const;

  void SetUp() override;
  void TearDown() override;

  // Closes the store and opens it again by the same name, as a restarted daemon does.
  int Reopen(bool reset = false);
  // Closes the store, as a daemon that exits does; Reopen() brings it back.
  void Close();
  Store& store() { return *store_; }
  const StoreOptions& options() const { return options_; }

  // The test process (the writer of what it creates), and a process that is not.
  Caller Me() const;
  Caller Other() const;

  // mkdir `name` in the root and set `attrs` on it. Returns its inode, or 0 after recording
  // a failure.
  Ino MakeObject(std::string_view name, const Attrs& attrs = {}, mode_t mode = 0755);
  // Creates entry `name` in write state. Returns its handle, or 0 after recording a failure.
  std::uint64_t Create(Ino object, std::string_view name, Attr* attr = nullptr,
                       mode_t mode = 0644);
  // Creates, writes and releases (commits, in close mode) an entry. Returns its inode.
  Ino Put(Ino object, std::string_view name, std::string_view data, mode_t mode = 0644);
  // open(O_WRONLY|O_TRUNC) of entry `name`, as the kernel does it: a replace of a committed
  // version answers ESTALE, and the path walk comes back for the new version. 0 or an errno;
  // *ino is the inode the writer got.
  int Replace(Ino object, std::string_view name, const Caller& caller, OpenFile* out,
              Ino* ino = nullptr);
  // Opens `ino` read-only. Returns the handle, or 0 after recording a failure.
  std::uint64_t OpenRead(Ino ino, const Caller& caller);

  // Writes all of `data` at `offset`, as write(2) in a loop would: an errno, or 0.
  int Write(std::uint64_t fh, std::uint64_t offset, std::string_view data);
  // Every byte that `fh` reads, from offset 0.
  std::string Contents(std::uint64_t fh);
  // Opens `ino` read-only, reads it whole and releases it.
  std::string ContentsOf(Ino ino, const Caller& caller);
  // cat data > object/.push, as this process: an errno, or 0.
  int Push(Ino object, std::string_view data);

  // getattr(2) without a handle: 0 or an errno.
  int GetAttr(Ino ino, Attr* out = nullptr);
  // Whether inode `ino` no longer exists: getattr fails with ENOENT or ESTALE.
  ::testing::AssertionResult Gone(Ino ino);
  // The value of an attribute, or its errno's name in angle brackets ("<ENODATA>").
  std::string Xattr(Ino ino, std::string_view name);
  // The attribute names listxattr gives for `ino`, sorted.
  Names XattrNames(Ino ino);
  // Changes an attribute: 0 or an errno.
  int SetXattr(Ino ino, std::string_view name, std::string_view value, int flags = 0);
  int RemoveXattr(Ino ino, std::string_view name);

  // The inode of `name` in `parent` as `caller` sees it, or 0 if the lookup fails.
  Ino InoOf(Ino parent, std::string_view name, const Caller& caller);
  // The names listed in `dir` (the same for every caller), less the control files.
  Names Listing(Ino dir);

 private:
  std::unique_ptr<OtherProcess> other_;
  StoreOptions options_;
  std::unique_ptr<Store> store_;
};

}  // namespace smos::test
