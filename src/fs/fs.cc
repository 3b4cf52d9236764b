#include "fs/fs.h"

#include <cstring>
#include <filesystem>

namespace smos::fs {

namespace {

// Committed entries never change, so the kernel may keep their attributes for long, and their
// names until the store says otherwise (the Notifier). Entries being written change behind the
// kernel's back and are never cached, nor are the names of tickets and .latest. A ticket's
// attributes change only at an open, which invalidates them (op_open), so they are cached like
// an object's, whose attributes (listing size, times, a chmod) may lag by a second.
constexpr double kImmutableTimeout = 3600.0;
constexpr double kStableNameTimeout = 60.0;
constexpr double kDirTimeout = 1.0;

void init(void* userdata, fuse_conn_info* conn) {
  // A replace is open(O_TRUNC) of a committed entry: it must reach us as one request.
  if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  // Replies through the ring are copied into its buffers: none may be spliced to the device.
  if ((conn->capable & FUSE_CAP_SPLICE_WRITE) &&
      !static_cast<Context*>(userdata)->channel.ring_offered()) {
    conn->want |= FUSE_CAP_SPLICE_WRITE;
  }
  // Every request must pass through FuseChannel::read, which sees its header (ReleaseOrder).
  // libfuse turns splice reads on by default; they would also need a pipe of max_write plus a
  // page, more than an unprivileged pipe may hold.
  conn->want &= ~FUSE_CAP_SPLICE_READ;
  // An inode's bytes never change behind the kernel's back (each is one version, and writers go
  // direct), so a cached read need not ask for the attributes first. A pop's, which are stale
  // after its open, would cost a GETATTR per read.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // Releases and read-ahead are background requests. Past this many in flight, the kernel
  // holds new ones back while later requests overtake them; a release then reaches the store
  // after the closer's next request (see FuseRing).
  conn->max_background = 256;
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
  spdlog::info("FUSE protocol {}.{}, max_write {}", conn->proto_major, conn->proto_minor,
               conn->max_write);
}

// An operation that observes entries, served only once the releases queued before it are
// (FuseChannel::wait_turn): a request whose answer cannot depend on a release (read, write,
// flush, release, forget) goes straight to its handler. `kAfterReaders`: its answer
// also depends on which files are open, so it waits for readers' releases too
// (FuseChannel::wait_released).
template <auto Op, bool kAfterReaders = false>
struct InOrder;
template <typename... Args, void (*Op)(fuse_req_t, Args...), bool kAfterReaders>
struct InOrder<Op, kAfterReaders> {
  static void serve(fuse_req_t req, Args... args) {
    if constexpr (kAfterReaders) {
      wait_all_released(req);
    } else {
      wait_turn(req);
    }
    Op(req, args...);
  }
};
// A delete or a rename frees an entry that nobody holds, but leaves one that a reader holds as
// a zombie, which counts towards its object's capacity and the memory budget. (A create, push
// or write that runs out of room asks again after the readers' releases: retry_after_readers.)
template <auto Op>
using AfterReaders = InOrder<Op, true>;

}  // namespace

void wait_turn(fuse_req_t req) {
  guarded("wait_turn", [req] {
    channel_of(req).wait_turn();
    return 0;
  });
}

void wait_released(fuse_req_t req) {
  guarded("wait_released", [req] {
    channel_of(req).wait_released();
    return 0;
  });
}

void wait_all_released(fuse_req_t req) {
  wait_turn(req);
  wait_released(req);
}

Caller caller_of(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{ctx->uid, ctx->gid, ctx->pid};
}

void fill_stat(const Attr& attr, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = attr.ino;
  st->st_mode = attr.mode;
  st->st_nlink = attr.nlink;
  st->st_uid = attr.uid;
  st->st_gid = attr.gid;
  st->st_size = static_cast<off_t>(attr.size);
  st->st_blksize = 4096;
  st->st_blocks = static_cast<blkcnt_t>((attr.size + 511) / 512);
  auto to_ts = [](std::int64_t ns) {
    return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  };
  st->st_atim = to_ts(attr.times.atime_ns);
  st->st_mtim = to_ts(attr.times.mtime_ns);
  st->st_ctim = to_ts(attr.times.ctime_ns);
}

static double attr_timeout(const Attr& attr) {
  if (S_ISDIR(attr.mode) || attr.ticket) return kDirTimeout;
  return attr.immutable ? kImmutableTimeout : 0.0;
}

void reply_entry(fuse_req_t req, const Attr& attr) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = attr.ino;
  e.generation = 1;
  fill_stat(attr, &e.attr);
  e.attr_timeout = attr_timeout(attr);
  e.entry_timeout = attr.stable_name ? kStableNameTimeout : 0.0;
  fuse_reply_entry(req, &e);
}

void reply_attr(fuse_req_t req, const Attr& attr) {
  struct stat st;
  fill_stat(attr, &st);
  fuse_reply_attr(req, &st, attr_timeout(attr));
}

int install_channel(Context& context, const std::string& mountpoint) {
  static const fuse_custom_io io = {
      [](int fd, iovec* iov, int count, void* userdata) {
        return static_cast<Context*>(userdata)->channel.writev(fd, iov, count);
      },
      [](int fd, void* buf, size_t len, void* userdata) {
        return static_cast<Context*>(userdata)->channel.read(fd, buf, len);
      },
      nullptr,  // no splice reads (see init)
      [](int fd_in, off_t* off_in, int fd_out, off_t* off_out, size_t len, unsigned flags,
         void* userdata) {
        return static_cast<Context*>(userdata)->channel.splice_send(fd_in, off_in, fd_out,
                                                                    off_out, len, flags);
      },
  };
  fuse_session* se = context.session;
  context.channel.set_ring_server([se](char* request, std::size_t len) {
    fuse_buf buf{};
    buf.size = len;
    buf.mem = request;
    fuse_session_process_buf(se, &buf);
  }, std::filesystem::absolute(mountpoint).string());
  if (int err = context.channel.adopt_device(fuse_session_fd(se)); err != 0) return err;
  return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

int ChannelBackingFiles::open(int fd) {
  if (!context_.channel.passthrough()) return -EOPNOTSUPP;
  return context_.channel.backing_open(fd);
}

void ChannelBackingFiles::close(int id) { context_.channel.backing_close(id); }

const fuse_lowlevel_ops& operations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o;
    std::memset(&o, 0, sizeof o);
    o.init = init;
    o.lookup = InOrder<op_lookup>::serve;
    o.forget = op_forget;
    o.forget_multi = op_forget_multi;
    o.getattr = InOrder<op_getattr>::serve;
    o.setattr = InOrder<op_setattr>::serve;
    o.mknod = InOrder<op_mknod>::serve;
    o.mkdir = InOrder<op_mkdir>::serve;
    o.unlink = AfterReaders<op_unlink>::serve;
    o.rmdir = InOrder<op_rmdir>::serve;
    o.symlink = InOrder<op_symlink>::serve;
    o.rename = AfterReaders<op_rename>::serve;
    o.link = InOrder<op_link>::serve;
    o.open = InOrder<op_open>::serve;
    o.read = op_read;
    o.flush = op_flush;
    o.release = op_release;
    o.fsync = op_fsync;
    o.fallocate = op_fallocate;
    o.opendir = InOrder<op_opendir>::serve;
    o.readdir = InOrder<op_readdir>::serve;
    o.releasedir = op_releasedir;
    o.statfs = op_statfs;  // waits itself, unless it is the ring's kick
    o.setxattr = InOrder<op_setxattr>::serve;
    o.getxattr = InOrder<op_getxattr>::serve;
    o.listxattr = InOrder<op_listxattr>::serve;
    o.removexattr = InOrder<op_removexattr>::serve;
    o.create = InOrder<op_create>::serve;
    o.write_buf = op_write_buf;
    return o;
  }();
  return ops;
}

}  // namespace smos::fs
