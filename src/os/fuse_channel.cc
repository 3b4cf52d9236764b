#include "os/fuse_channel.h"

#include <fcntl.h>
#include <sched.h>
#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include <spdlog/spdlog.h>

namespace smos::os {

namespace {
// Newer than the kernel headers this builds against (include/uapi/linux/fuse.h, 7.38); the
// values are the kernel's ABI (7.40).
constexpr std::uint64_t kDirectIoAllowMmap = 1ull << 36;
constexpr std::uint64_t kPassthrough = 1ull << 37;
constexpr std::uint64_t kOverIoUring = 1ull << 41;  // 7.42
constexpr std::uint32_t kOpenPassthrough = 1u << 7;  // FOPEN_PASSTHROUGH
// fuse_init_out.max_stack_depth: the first of 7.38's unused words after flags2. Slot files live
// on tmpfs, which stacks on nothing, so a depth of 1 suffices.
constexpr std::size_t kMaxStackDepthOffset = offsetof(fuse_init_out, flags2) + 4;
// fuse_open_out.backing_id took the place of 7.38's padding.
constexpr std::size_t kBackingIdOffset = offsetof(fuse_open_out, padding);
struct BackingMap {  // struct fuse_backing_map
  std::int32_t fd;
  std::uint32_t flags;
  std::uint64_t padding;
};
static_assert(sizeof(BackingMap) == 16);
constexpr unsigned long kIocBackingOpen = _IOW(229, 1, BackingMap);
constexpr unsigned long kIocBackingClose = _IOW(229, 2, std::uint32_t);

constexpr std::int32_t kNotifyIncEpoch = 8;  // FUSE_NOTIFY_INC_EPOCH
constexpr std::uint32_t kEpochMinor = 44;

std::size_t total_length(const iovec* iov, int count) {
  std::size_t n = 0;
  for (int i = 0; i < count; ++i) n += iov[i].iov_len;
  return n;
}

thread_local int reply_backing_id = 0;
// The number of the request this thread received last, from the device or its ring queue,
// which it is serving.
thread_local std::uint64_t read_unique = 0;
}  // namespace

FuseChannel::ReplyBacking::ReplyBacking(int id) { reply_backing_id = id; }
FuseChannel::ReplyBacking::~ReplyBacking() { reply_backing_id = 0; }

FuseChannel::~FuseChannel() {
  if (device_ >= 0) ::close(device_);
}

int FuseChannel::adopt_device(int fd) {
  device_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return device_ >= 0 ? 0 : -errno;
}

int FuseChannel::backing_open(int fd) {
  BackingMap map{fd, 0, 0};
  const int id = ::ioctl(device_, kIocBackingOpen, &map);
  return id > 0 ? id : -errno;
}

void FuseChannel::backing_close(int id) {
  std::uint32_t arg = static_cast<std::uint32_t>(id);
  if (::ioctl(device_, kIocBackingClose, &arg) != 0) {
    spdlog::warn("FUSE channel: closing backing file {}: {}", id, std::strerror(errno));
  }
}

bool FuseChannel::bump_epoch() {
  if (no_epoch_.load(std::memory_order_relaxed)) return false;
  fuse_out_header notify{sizeof(fuse_out_header), kNotifyIncEpoch, 0};
  if (::write(device_, &notify, sizeof notify) == static_cast<ssize_t>(sizeof notify)) return true;
  // The connection is gone (the unmount): that says nothing about epochs.
  if (errno != ENOENT && errno != ENOTCONN && errno != ENODEV && !no_epoch_.exchange(true)) {
    spdlog::warn("FUSE channel: the kernel refused FUSE_NOTIFY_INC_EPOCH ({}); a name may stay "
                 "cached on a replaced version after a lookup that raced with the replace",
                 std::strerror(errno));
  }
  return false;
}

bool FuseChannel::knows_epochs() const {
  return kernel_minor_.load(std::memory_order_relaxed) >= kEpochMinor &&
         !no_epoch_.load(std::memory_order_relaxed);
}

ssize_t FuseChannel::read(int fd, void* buf, std::size_t len) {
  const ssize_t n = ::read(fd, buf, len);
  received(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
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
      kernel_minor_ = init.minor;
      init_unique_ = in.unique;
      // Made before the reply offers the ring: once it does, the kernel holds every request
      // until each queue has an entry, so nothing may fail after that but the registration,
      // which the kernel survives by falling back to /dev/fuse.
      // The ring also needs epochs (7.44, kernel 6.16): with them no handler waits for the
      // kernel, and a ring's workers are a fixed few (see op_flush).
      if ((flags & kOverIoUring) && want_ring_ && init.minor >= kEpochMinor && !no_epoch_) {
        ring_.prepare();
      }
    }
  }
  return n;
}

void FuseChannel::received(const void* request, std::size_t size) noexcept {
  read_unique = 0;
  if (size < sizeof(fuse_in_header)) return;
  try {
    releases_.received(request, size);
  } catch (const std::exception& e) {  // out of memory: this request goes unordered
    spdlog::error("FUSE channel: {}", e.what());
  }
  std::memcpy(&read_unique, static_cast<const char*>(request) + offsetof(fuse_in_header, unique),
              sizeof read_unique);
}

void FuseChannel::expect_release(std::uint64_t fh) {
  releases_.expect(fh, FuseRing::queue(), read_unique);
  FuseRing::serve_next_at_once();
}

bool FuseChannel::nudge(int cpu) {
  // (Nudging the CPU that this request waits on would only preempt it.)
  if (cpu == ::sched_getcpu()) return false;
  ring_.watched(static_cast<unsigned>(cpu));
  nudger_.nudge(static_cast<unsigned>(cpu));
  return true;
}

void FuseChannel::wait_turn() {
  if (read_unique != 0) releases_.wait_turn(read_unique, FuseRing::overtaking());
}

void FuseChannel::wait_released() {
  if (read_unique != 0) releases_.wait_released(read_unique, !FuseRing::serving());
}

ssize_t FuseChannel::writev(int fd, iovec* iov, int count) {
  if (reply_backing_id > 0 && count == 2 && iov[0].iov_len == sizeof(fuse_out_header) &&
      iov[1].iov_len == sizeof(fuse_open_out)) {
    auto* open = static_cast<char*>(iov[1].iov_base);
    std::uint32_t flags;
    std::memcpy(&flags, open + offsetof(fuse_open_out, open_flags), sizeof flags);
    flags |= kOpenPassthrough;
    flags &= ~static_cast<std::uint32_t>(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE);
    std::memcpy(open + offsetof(fuse_open_out, open_flags), &flags, sizeof flags);
    const std::int32_t id = reply_backing_id;
    spdlog::debug("FUSE channel: open reply with backing file {}", id);
    std::memcpy(open + kBackingIdOffset, &id, sizeof id);
  }
  if (ring_.reply(iov, count)) return static_cast<ssize_t>(total_length(iov, count));
  std::size_t ring_payload = 0;  // set when this is the INIT reply that turns the ring on
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
      const char* passthrough = "off (not offered)";
      if (!want_passthrough_) {
        passthrough = "off (disabled)";
      } else if ((offered & kPassthrough) && (init->flags & FUSE_INIT_EXT) &&
                 !(init->flags & FUSE_WRITEBACK_CACHE) &&
                 iov[1].iov_len >= kMaxStackDepthOffset + sizeof(std::uint32_t)) {
        init->flags2 |= static_cast<std::uint32_t>(kPassthrough >> 32);
        const std::uint32_t depth = 1;
        std::memcpy(static_cast<char*>(iov[1].iov_base) + kMaxStackDepthOffset, &depth,
                    sizeof depth);
        passthrough_.store(true, std::memory_order_release);
        passthrough = "on";
      }
      std::string ring = "off (not offered: the fuse module's enable_uring is 0)";
      if (!want_ring_) {
        ring = "off (disabled)";
      } else if (ring_.prepared() && (init->flags & FUSE_INIT_EXT) &&
                 iov[1].iov_len >= offsetof(fuse_init_out, flags2) + sizeof init->flags2) {
        init->flags2 |= static_cast<std::uint32_t>(kOverIoUring >> 32);
        // The kernel's payload size: max(FUSE_MIN_READ_BUFFER, max_write, max_pages pages).
        const std::size_t pages = (init->flags & FUSE_MAX_PAGES) ? init->max_pages : 32;
        ring_payload = std::max<std::size_t>({8192, init->max_write,
                                              pages * static_cast<std::size_t>(::getpagesize())});
        ring = "on";
      } else if (kernel_flags_ & kOverIoUring) {
        ring = kernel_minor_ < kEpochMinor ? "off (needs FUSE 7.44 for epochs)"
               : no_epoch_                 ? "off (needs epochs: --no-epochs)"
                                           : "off (" + ring_.why_not() + ")";
      }
      init_unique_ = ~0ull;  // answered: nothing more to look for
      spdlog::info("FUSE channel: handle_killpriv_v2 {}, direct_io_allow_mmap {}, passthrough {}, "
                   "io_uring {}",
                   killpriv_v2_ ? "on" : "off (not offered)",
                   direct_io_allow_mmap_ ? "on" : "off (not offered: mmap of entries fails)",
                   passthrough, ring);
      if (ring_payload == 0) ring_.stop();
    }
  }
  const int device = device_ >= 0 ? device_ : fd;
  const ssize_t n = ::writev(device, iov, count);
  if (ring_payload != 0) {
    if (n >= 0) {
      ring_.start(device, ring_payload, [this](char* request, std::size_t size) {
        received(request, size);
        dispatch_(request, size);
      }, mountpoint_);
    } else {
      ring_.stop();
    }
  }
  return n;
}

ssize_t FuseChannel::splice_send(int fd_in, off_t* off_in, int fd_out, off_t* off_out,
                                 std::size_t len, unsigned flags) {
  return ::splice(fd_in, off_in, device_ >= 0 ? device_ : fd_out, off_out, len, flags);
}

}  // namespace smos::os
