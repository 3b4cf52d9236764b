#include "os/segment.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <boost/interprocess/exceptions.hpp>

namespace smos::os {

namespace bip = boost::interprocess;

std::string shm_path(const std::string& shm_name) { return "/dev/shm/" + shm_name; }

int SegmentFile::open(const std::string& shm_name, SegmentFile* out) {
  const std::string path = shm_path(shm_name);
  for (bool retried = false;; retried = true) {
    try {
      bip::permissions owner_only(0600);
      out->shm_ = bip::shared_memory_object(bip::open_or_create, shm_name.c_str(),
                                            bip::read_write, owner_only);
      break;
    } catch (const bip::interprocess_exception& e) {
      const int err = e.get_native_error();
      // A committed entry's segment has no write bits, which stop a smosd that is not root
      // (and owns every segment) from opening it again after a restart: it makes it
      // writable for itself, and the store sets its mode again.
      if (err != EACCES || retried || ::chmod(path.c_str(), S_IRUSR | S_IWUSR) != 0) {
        return err > 0 ? err : EIO;
      }
    }
  }
  out->path_ = path;
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

int check_own_file(int fd, std::string* why) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    *why = std::string("cannot stat it: ") + std::strerror(err);
    return err;
  }
  if (!S_ISREG(st.st_mode)) {
    *why = "it is not a regular file";
  } else if (st.st_uid != geteuid()) {
    *why = "it belongs to uid " + std::to_string(st.st_uid) + ", not to this smosd's uid " +
           std::to_string(geteuid());
  } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", st.st_mode & 0777);
    *why = std::string("others may write it (mode ") + mode + ")";
  } else {
    return 0;
  }
  return EPERM;
}

int read_own_file_head(const std::string& path, FileHead* out, std::string* why) {
  // O_NONBLOCK: a FIFO planted under that name must be refused, not waited on.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    *why = std::string("cannot open it: ") + std::strerror(err);
    return err;
  }
  int err = check_own_file(fd, why);
  struct stat st;
  if (err == 0 && fstat(fd, &st) != 0) err = errno;
  if (err == 0) {
    out->size = static_cast<std::uint64_t>(st.st_size);
    out->first_word = 0;
    if (ssize_t n = read_at(fd, &out->first_word, sizeof out->first_word, 0); n < 0) {
      err = static_cast<int>(-n);
      *why = std::string("cannot read it: ") + std::strerror(err);
    }
  }
  ::close(fd);
  return err;
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

int SegmentFile::drop_write_bits() {
  struct stat st;
  if (fstat(fd(), &st) != 0) return errno;
  return fchmod(fd(), st.st_mode & 07555) == 0 ? 0 : errno;
}

std::int64_t SegmentFile::length() const {
  struct stat st;
  if (fstat(fd(), &st) != 0) return -errno;
  return st.st_size;
}

}  // namespace smos::os
