// The FUSE device channel: the reads and writes of /dev/fuse that libfuse would do itself,
// with one addition. libfuse 3.14 predates some INIT flags that this kernel offers and smos
// wants, so the channel adds them to the INIT reply on the wire:
//  - FUSE_HANDLE_KILLPRIV_V2: the server kills suid/sgid/capabilities itself. smos entries have
//    neither, and the kernel then sets SB_NOSEC, which stops the security.capability GETXATTR
//    it otherwise sends before every write(2).
//  - FUSE_DIRECT_IO_ALLOW_MMAP (kernel 6.6+): files opened with FOPEN_DIRECT_IO may still be
//    mapped with MAP_SHARED. smos writers and pops use direct I/O (see Store::open).
//  - FUSE_PASSTHROUGH (kernel 6.9+, CONFIG_FUSE_PASSTHROUGH, CAP_SYS_ADMIN), unless disabled:
//    an open may be answered with a backing file, whose reads and mappings the kernel then
//    serves itself. A backing file is registered with backing_open(), and an open reply sent
//    inside a ReplyBacking scope names it (see docs/design.md, "The kernel's caches").
//  - FUSE_OVER_IO_URING (kernel 6.14+, fuse.enable_uring=1), unless disabled: requests and
//    their replies then travel through a FuseRing, whose workers hand requests to the
//    dispatcher (set_dispatch); writev() routes each reply to the ring or to the device.
// Every request, from /dev/fuse or the ring, is shown to a ReleaseOrder, and a request that
// observes entries asks wait_turn() before it is served: requests made after a close(2)
// returned then come after the release that commits what it wrote (see release_order.h).
// Nothing is read by splice, which would hide the requests from read().
// Install with fuse_session_custom_io() after fuse_session_mount().
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>

#include "os/cpu.h"
#include "os/fuse_ring.h"
#include "os/release_order.h"

namespace smos::os {

class FuseChannel {
 public:
  // Each want_ is declined when false (the daemon's --no-* options); the kernel's INIT
  // decides the rest.
  explicit FuseChannel(bool want_passthrough = true, bool want_ring = true,
                       bool want_epochs = true)
      : want_passthrough_(want_passthrough), want_ring_(want_ring), no_epoch_(!want_epochs) {
    releases_.set_nudge([this](int cpu) { return nudge(cpu); });
  }

  ~FuseChannel();
  FuseChannel(const FuseChannel&) = delete;
  FuseChannel& operator=(const FuseChannel&) = delete;

  // Takes a descriptor of its own for the device that libfuse's `fd` is open on: every write
  // and ioctl goes there. libfuse closes its own at the unmount, while the ring's workers still
  // reply and notify, and the number could by then be a slot file's. 0 or -errno.
  int adopt_device(int fd);

  // Where the ring's workers send requests, and the mount's absolute path; set before the
  // session starts.
  void set_ring_server(FuseRing::Dispatch dispatch, std::string mountpoint) {
    dispatch_ = std::move(dispatch);
    mountpoint_ = std::move(mountpoint);
  }
  // Whether requests will come through the ring: known once INIT has been read. Its replies
  // must reach writev() in memory, never spliced.
  bool ring_offered() const { return ring_.prepared(); }
  // Stops the ring's workers. Call once the mount is gone, before the session is destroyed.
  void stop_ring() { ring_.stop(); }
  // Whether a ring queue failed, which stops the daemon as a SIGTERM would.
  bool ring_failed() const { return ring_.failed(); }

  // Whether the kernel accepted FUSE_PASSTHROUGH (known once INIT is answered).
  bool passthrough() const { return passthrough_.load(std::memory_order_acquire); }
  // Registers `fd` as a backing file: its id (> 0), or -errno.
  int backing_open(int fd);
  void backing_close(int id);
  // FUSE_NOTIFY_INC_EPOCH (protocol 7.44, kernel 6.16+): every name the kernel caches now, or
  // will cache from a lookup answered before now, is looked up again before its next use.
  // Returns false, and does nothing from then on, if the kernel does not know the notification
  // (or epochs were declined).
  bool bump_epoch();
  // Whether the kernel takes new epochs (known once INIT has been read): false before 6.16,
  // with --no-epochs, or once the kernel refused one.
  bool knows_epochs() const;
  // While set (> 0), this thread's open replies name backing file `id`: a scope around
  // fuse_reply_open(), which writes its reply through writev() on the same thread.
  class ReplyBacking {
   public:
    explicit ReplyBacking(int id);
    ~ReplyBacking();
    ReplyBacking(const ReplyBacking&) = delete;
    ReplyBacking& operator=(const ReplyBacking&) = delete;
  };

  // The release of handle `fh`, flushed, commits or discards its entry: requests made after it
  // wait for it. Call before the FLUSH's reply.
  void expect_release(std::uint64_t fh);
  // Before the release of `fh` is served: returns once the expected releases received before
  // it are served.
  void release_turn(std::uint64_t fh) { releases_.release_turn(fh); }
  // The store has served the release of `fh`.
  void released(std::uint64_t fh) { releases_.released(fh); }
  // Before this thread serves the request it received last, if the request observes entries:
  // returns once the releases that it must come after are served.
  void wait_turn();
  // Before this thread serves the request it received last, if its answer depends on which
  // files are open (a reader count, a pop, a delete): returns once the releases received
  // before it are served. Through /dev/fuse that is normally every release sent before it.
  void wait_released();

  // The same contract as read(2) and writev(2) on the device: -1 with errno on failure.
  ssize_t read(int fd, void* buf, std::size_t len);
  ssize_t writev(int fd, iovec* iov, int count);
  ssize_t splice_send(int fd_in, off_t* off_in, int fd_out, off_t* off_out, std::size_t len,
                      unsigned flags);

 private:
  // For a request that waits for a release flushed through the ring queue of `cpu`: false if
  // that is this thread's CPU, which it would only preempt.
  bool nudge(int cpu);
  // Shows a request to releases_, and remembers its number for this thread's wait_turn().
  void received(const void* request, std::size_t size) noexcept;

  int device_ = -1;  // see adopt_device()
  std::atomic<std::uint64_t> init_unique_{0};  // the INIT request, until it is answered
  std::atomic<std::uint64_t> kernel_flags_{0};  // flags | flags2 << 32
  std::atomic<std::uint32_t> kernel_minor_{0};
  bool killpriv_v2_ = false;
  bool direct_io_allow_mmap_ = false;
  const bool want_passthrough_;
  const bool want_ring_;
  std::atomic<bool> passthrough_{false};
  FuseRing ring_;
  CpuNudger nudger_;
  FuseRing::Dispatch dispatch_;
  std::string mountpoint_;
  std::atomic<bool> no_epoch_{false};
  ReleaseOrder releases_;
};

}  // namespace smos::os
