#include "os/fuse_channel.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

namespace smos::os {

namespace {
// Newer than the kernel headers this builds against (include/uapi/linux/fuse.h, 7.39).
constexpr std::uint64_t kDirectIoAllowMmap = 1ull << 36;
}  // namespace

ssize_t FuseChannel::read(int fd, void* buf, std::size_t len) {
  ssize_t n = ::read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header) + sizeof(fuse_init_in)) &&
      init_unique_.load(std::memory_order_relaxed) == 0) {
    fuse_in_header in;
    std::memcpy(&in, buf, sizeof in);
    if (in.opcode == FUSE_INIT) {
      fuse_init_in init;
      std::memcpy(&init, static_cast<char*>(buf) + sizeof in, sizeof init);
      std::uint64_t flags = init.flags;
      if (flags & FUSE_INIT_EXT) flags |= static_cast<std::uint64_t>(init.flags2) << 32;
      kernel_flags_ = flags;
      init_unique_ = in.unique;
    }
  }
  return n;
}

ssize_t FuseChannel::writev(int fd, iovec* iov, int count) {
  const std::uint64_t init_unique = init_unique_.load(std::memory_order_relaxed);
  if (init_unique != 0 && count >= 2 && iov[0].iov_len == sizeof(fuse_out_header) &&
      iov[1].iov_len >= offsetof(fuse_init_out, max_write)) {
    auto* out = static_cast<fuse_out_header*>(iov[0].iov_base);
    if (out->unique == init_unique && out->error == 0) {
      auto* init = static_cast<fuse_init_out*>(iov[1].iov_base);
      const std::uint64_t offered = kernel_flags_;
      if (offered & FUSE_HANDLE_KILLPRIV_V2) {
        init->flags |= FUSE_HANDLE_KILLPRIV_V2;
        killpriv_v2_ = true;
      }
      if ((offered & kDirectIoAllowMmap) && (init->flags & FUSE_INIT_EXT) &&
          iov[1].iov_len >= offsetof(fuse_init_out, flags2) + sizeof init->flags2) {
        init->flags2 |= static_cast<std::uint32_t>(kDirectIoAllowMmap >> 32);
        direct_io_allow_mmap_ = true;
      }
      init_unique_ = ~0ull;  // answered: nothing more to look for
      spdlog::info("FUSE channel: handle_killpriv_v2 {}, direct_io_allow_mmap {}",
                   killpriv_v2_ ? "on" : "off (not offered)",
                   direct_io_allow_mmap_ ? "on" : "off (not offered: mmap of entries fails)");
    }
  }
  return ::writev(fd, iov, count);
}

ssize_t FuseChannel::splice_receive(int fd_in, off_t* off_in, int fd_out, off_t* off_out,
                                    std::size_t len, unsigned flags) {
  return ::splice(fd_in, off_in, fd_out, off_out, len, flags);
}

ssize_t FuseChannel::splice_send(int fd_in, off_t* off_in, int fd_out, off_t* off_out,
                                 std::size_t len, unsigned flags) {
  return ::splice(fd_in, off_in, fd_out, off_out, len, flags);
}

}  // namespace smos::os
