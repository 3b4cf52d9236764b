// Raw shared-memory plumbing: the one place where smos touches file descriptors.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include <boost/interprocess/shared_memory_object.hpp>

namespace smos::os {

// Absolute path of a POSIX shared-memory object, e.g. "/dev/shm/smos.slot.3".
std::string shm_path(const std::string& shm_name);

// pread(2) until `len` bytes or the end of the file: the bytes read, or -errno.
ssize_t read_at(int fd, void* buf, std::size_t len, std::uint64_t offset);

// Whether the file open at `fd` is one this process may trust as its own: a regular file of its
// effective uid that nobody else may write (/dev/shm is writable by everyone). 0, or EPERM
// (an errno from fstat) with the reason in *why.
int check_own_file(int fd, std::string* why);

// What smosd reads of a store file before handing it to Boost.Interprocess.
struct FileHead {
  std::uint64_t size = 0;
  std::uint32_t first_word = 0;  // the file's first 4 bytes, 0 if it is shorter
};
// Opens `path` without following a symlink, checks it with check_own_file(), and reads its
// head. ENOENT if there is no such file.
int read_own_file_head(const std::string& path, FileHead* out, std::string* why);

// One entry slot's file under /dev/shm. Move-only; the descriptor lives as long as the object.
// The file holds exactly one entry's bytes from offset 0, so it can be mapped whole.
class SegmentFile {
 public:
  SegmentFile() = default;
  SegmentFile(SegmentFile&&) = default;
  SegmentFile& operator=(SegmentFile&&) = default;
  SegmentFile(const SegmentFile&) = delete;
  SegmentFile& operator=(const SegmentFile&) = delete;

  // Opens the named file, creating it empty (mode 0600) if it does not exist.
  static int open(const std::string& shm_name, SegmentFile* out);
  // Removes the named file. It is not an error if it did not exist.
  static void remove(const std::string& shm_name);

  bool is_open() const { return fd() >= 0; }
  int fd() const;
  const std::string& path() const { return path_; }

  // Backs [offset, offset + length) with memory now, growing the file if needed, so that no
  // later store into the range can fail or raise SIGBUS. ENOSPC when memory is exhausted.
  int reserve(std::uint64_t offset, std::uint64_t length);
  // Sets the file's length; shrinking returns the memory past it.
  int truncate(std::uint64_t length);
  // Gives the file an owner and permission bits.
  int set_owner(uid_t uid, gid_t gid, mode_t mode);
  // Takes the write bits away (a committed entry), and nothing else: a smosd that is not root
  // could not give the file to the entry's owner, and must not open it to its own group.
  int drop_write_bits();
  // The file's current length, or a negative errno.
  std::int64_t length() const;

 private:
  boost::interprocess::shared_memory_object shm_;
  std::string path_;
};

}  // namespace smos::os
