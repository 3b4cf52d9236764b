#include "os/segment.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <boost/interprocess/exceptions.hpp>

namespace smos::os {

namespace bip = boost::interprocess;

std::string shm_path(const std::string& shm_name) { return "/dev/shm/" + shm_name; }

int SegmentFile::open(const std::string& shm_name, SegmentFile* out) {
  try {
    bip::permissions owner_only(0600);
    out->shm_ = bip::shared_memory_object(bip::open_or_create, shm_name.c_str(), bip::read_write,
                                          owner_only);
  } catch (const bip::interprocess_exception& e) {
    int err = e.get_native_error();
    return err > 0 ? err : EIO;
  }
  out->path_ = shm_path(shm_name);
  return 0;
}

ssize_t read_at(int fd, void* buf, std::size_t len, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pread(fd, static_cast<char*>(buf) + done, len - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

void SegmentFile::remove(const std::string& shm_name) {
  bip::shared_memory_object::remove(shm_name.c_str());
}

int SegmentFile::fd() const { return shm_.get_mapping_handle().handle; }

int SegmentFile::reserve(std::uint64_t offset, std::uint64_t length) {
  if (length == 0) return 0;
  // posix_fallocate returns the error rather than setting errno.
  int err = posix_fallocate(fd(), static_cast<off_t>(offset), static_cast<off_t>(length));
  return err == EFBIG ? ENOSPC : err;
}

int SegmentFile::truncate(std::uint64_t length) {
  return ftruncate(fd(), static_cast<off_t>(length)) == 0 ? 0 : errno;
}

int SegmentFile::set_owner(uid_t uid, gid_t gid, mode_t mode) {
  if (fchown(fd(), uid, gid) != 0) return errno;
  return fchmod(fd(), mode & 07777) == 0 ? 0 : errno;
}

std::int64_t SegmentFile::length() const {
  struct stat st;
  if (fstat(fd(), &st) != 0) return -errno;
  return st.st_size;
}

}  // namespace smos::os
