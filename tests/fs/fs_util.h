// Syscall helpers for the integration tests: errno values and results that print well in
// assertion messages, an owning file descriptor, and whole-file and xattr shortcuts.
//
// None of these helpers record a gtest failure, so they are also safe in forked children.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace smos::test {

// An errno value; prints as its name ("EEXIST", or "OK" for 0) in assertion messages:
//   EXPECT_EQ(ErrOf(mkdir(path, 0755)), Err(EEXIST));
class Err {
 public:
  constexpr explicit Err(int value = 0) : value_(value) {}
  constexpr int value() const { return value_; }
  constexpr bool ok() const { return value_ == 0; }
  friend constexpr bool operator==(Err a, Err b) = default;

 private:
  int value_;
};
inline constexpr Err kOk{0};

// The outcome of a call that returned rc: kOk when rc >= 0, else Err(errno).
Err ErrOf(long rc);
// The current errno, for messages after a call that failed: `<< LastErr()`.
Err LastErr();
void PrintTo(Err err, std::ostream* os);
std::ostream& operator<<(std::ostream& os, Err err);

// Text that a call produced, or the errno it failed with. Compares equal to a string only on
// success, so these read well and fail clearly:
//   EXPECT_EQ(ReadFile(path), "bytes");
//   EXPECT_EQ(GetXattr(path, xattr::kState), "idle");
//   EXPECT_EQ(GetXattr(path, "user.x").err, Err(ENODATA));
struct Text {
  Err err;
  std::string value;

  bool ok() const { return err.ok(); }
  friend bool operator==(const Text& text, std::string_view s) {
    return text.ok() && text.value == s;
  }
};
void PrintTo(const Text& text, std::ostream* os);
std::ostream& operator<<(std::ostream& os, const Text& text);

// An owned file descriptor; closes on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }

  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  int release();
  // Closes now and reports what close() said; kOk if there was nothing to close.
  Err Close();

 private:
  int fd_ = -1;
};

// open(2) into an Fd; on failure the Fd is invalid and errno is set.
Fd Open(const std::string& path, int flags, mode_t mode = 0644);
// open(2) and, on success, close again: only the outcome of the open matters.
Err OpenErr(const std::string& path, int flags, mode_t mode = 0644);
// The outcome of stat(2) on path.
Err StatErr(const std::string& path);

// Writes all of data to fd at its offset, retrying short writes.
Err WriteAll(int fd, std::string_view data);
// open(path, flags), WriteAll, close: the usual way to create (and commit) an entry.
Err WriteFile(const std::string& path, std::string_view data,
              int flags = O_WRONLY | O_CREAT | O_TRUNC, mode_t mode = 0644);
// Everything readable from fd, starting at offset 0 (pread, so the offset is untouched).
Text ReadFd(int fd);
// Everything readable from the file at path.
Text ReadFile(const std::string& path);

Text GetXattr(const std::string& path, const std::string& name);
Text FGetXattr(int fd, const std::string& name);
Err SetXattr(const std::string& path, const std::string& name, std::string_view value,
             int flags = 0);
Err FSetXattr(int fd, const std::string& name, std::string_view value, int flags = 0);
Err RemoveXattr(const std::string& path, const std::string& name);
// The attribute names of path, sorted; the error of listxattr in err otherwise.
struct NameList {
  Err err;
  std::vector<std::string> names;
};
NameList ListXattr(const std::string& path);
// The names in a directory as `ls` shows them (no dot-files, so neither "." and ".." nor an
// object's control files), sorted.
NameList ListDir(const std::string& path);

// Whether names holds name.
bool Contains(const std::vector<std::string>& names, std::string_view name);

// What `rm -r path` does: unlink every name in the directory, then rmdir it.
Err RemoveTree(const std::string& path);

// Deterministic pseudo-random bytes: the same (size, seed) always gives the same bytes.
std::string Pattern(std::size_t size, std::uint32_t seed);
// FNV-1a of data, for checks where the bytes themselves are too many to compare.
std::uint64_t Checksum(std::string_view data);

// Polls pred until it holds or timeout passes; true if it held. For effects that the contract
// promises but that the kernel delivers asynchronously (release after close), never to
// assert on how long something takes.
bool Eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

// statfs(2) of path: the size and use of the filesystem in bytes, its magic number, and the
// entry records in use (in any state: an empty entry uses no bytes but still a record).
struct Space {
  Err err;
  std::uint64_t total = 0;
  std::uint64_t used = 0;
  long type = 0;
  std::uint64_t entries = 0;
};
Space StatSpace(const std::string& path);

}  // namespace smos::test
