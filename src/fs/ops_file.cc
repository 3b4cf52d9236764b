// Entries: create, open, read, write, close.
#include <fcntl.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "fs/fs.h"
#include "os/segment.h"

namespace smos::fs {

namespace {

void fill_open(const OpenFile& file, fuse_file_info* fi) {
  fi->fh = file.fh;
  fi->direct_io = file.direct_io;
  fi->keep_cache = file.keep_cache;
  // Only a writer's close means anything to the store (see Store::flush).
  fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
}

// Stores a small pop's bytes in its inode's page cache, which the open's reply keeps. Nothing
// here takes a lock that the opener holds, and the inode exists: the opener's lookup made it.
bool fill_cache(fuse_session* session, fuse_ino_t ino, const IoSpan& span) {
  if (span.length == 0) return true;
  thread_local std::vector<char> bytes;
  if (bytes.size() < span.length) bytes.resize(span.length);
  const ssize_t n = os::read_at(span.fd, bytes.data(), span.length, span.offset);
  if (n != static_cast<ssize_t>(span.length)) return false;
  fuse_bufvec buf = FUSE_BUFVEC_INIT(span.length);
  buf.buf[0].mem = bytes.data();
  return fuse_lowlevel_notify_store(session, ino, 0, &buf, FUSE_BUF_NO_SPLICE) == 0;
}

// Sends the reply to an open, or gives the handle back if the opener is gone.
void finish_open(fuse_req_t req, fuse_ino_t ino, Store& store, OpenFile file,
                 fuse_file_info fi) {
  fuse_session* session = static_cast<Context*>(fuse_req_userdata(req))->session;
  const bool fill = file.keep_cache && file.cache_fill.fd >= 0;
  // The attributes, and for a fill whatever the inode's page cache held: no round trip.
  const int inval = file.rebound ? fuse_lowlevel_notify_inval_inode(session, ino, fill ? 0 : -1, 0)
                                 : 0;
  if (fill && (inval != 0 || !fill_cache(session, ino, file.cache_fill))) {
    spdlog::warn("open of inode {}: cannot give the kernel its bytes; it reads them direct", ino);
    file.direct_io = true;  // the bytes come by READ, as if they had never been offered
    file.keep_cache = false;
  }
  fill_open(file, &fi);
  os::FuseChannel::ReplyBacking backing(file.backing_id);
  if (fuse_reply_open(req, &fi) != 0) guarded("open", [&] { return store.release(file.fh); });
}

// A blocked pop parks its request in the store and frees this thread. Whoever makes an entry
// poppable answers it; a signal answers it with EINTR. The store decides which, so exactly one
// reply is sent, and nothing here touches `req` once it may have been answered.
void on_interrupt(fuse_req_t req, void* wait_id) {
  const auto id = reinterpret_cast<std::uintptr_t>(wait_id);
  if (guarded("open", [&] { return store_of(req).cancel_wait(id) ? 1 : 0; }) == 1) {
    fuse_reply_err(req, EINTR);
  }
}

std::atomic<std::uintptr_t> next_wait_id{1};

// A buffer that stands for `span` of its slot file, for libfuse to splice or copy.
fuse_bufvec slot_buf(const IoSpan& span) {
  fuse_bufvec buf = FUSE_BUFVEC_INIT(span.length);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = span.fd;
  buf.buf[0].pos = static_cast<off_t>(span.offset);
  return buf;
}

}  // namespace

// Valid replies: fuse_reply_create, fuse_reply_err.
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  Attr attr;
  OpenFile file;
  int err = retry_after_readers(req, [&] {
    return guarded("create", [&] {
      return store_of(req).create(parent, name, mode, fi->flags, caller_of(req), &attr, &file);
    });
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fill_open(file, fi);
  fuse_entry_param e{};
  e.ino = attr.ino;
  e.generation = 1;
  fill_stat(attr, &e.attr);
  if (fuse_reply_create(req, &e, fi) != 0) {
    guarded("create", [&] { return store_of(req).release(file.fh); });  // the opener is gone
  }
}


// Valid replies: fuse_reply_open, fuse_reply_err.
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Store& store = store_of(req);
  Store::Waiter waiter{next_wait_id++, [req] { return fuse_req_interrupted(req) != 0; },
                       [req, ino, &store, fi_copy = *fi](int err, const OpenFile& file) {
                         if (err != 0) {
                           fuse_reply_err(req, err);
                         } else {
                           finish_open(req, ino, store, file, fi_copy);
                         }
                       }};
  // Registered first: an interrupt that comes before the pop is queued is seen by
  // `waiter.interrupted`, one that comes after finds the queued wait to cancel.
  fuse_req_interrupt_func(req, on_interrupt, reinterpret_cast<void*>(waiter.id));
  // A pop skips entries that readers hold: after a reader's close, the pop must find it idle.
  if (guarded("open", [&] { return store.pops(ino) ? 1 : 0; }) == 1) wait_released(req);
  OpenFile file;
  int err = retry_after_readers(req, [&] {
    return guarded("open", [&] { return store.open(ino, fi->flags, caller_of(req), &file, &waiter); });
  });
  if (err == EINPROGRESS) return;
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    finish_open(req, ino, store, file, *fi);
  }
}

// Reads without passthrough. The bytes go from the slot file to the kernel outside the store
// lock: small ones by splice, large ones through a buffer of this thread's. (libfuse would
// splice those too, but a reply cannot outgrow the pipe, which stays at 1 MiB without
// CAP_SYS_RESOURCE, and its fallback allocates a fresh buffer per read: a megabyte of page
// faults each time.)
// Valid replies: fuse_reply_buf, fuse_reply_iov, fuse_reply_data, fuse_reply_err.
void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  constexpr std::size_t kSpliceMax = 128 * 1024;
  IoSpan span;
  int err = guarded("read", [&] {
    return store_of(req).prepare_read(fi->fh, static_cast<std::uint64_t>(off), size, &span);
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  if (span.length <= kSpliceMax) {
    fuse_bufvec buf = slot_buf(span);
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
    return;
  }
  thread_local std::vector<char> buffer;
  if (buffer.size() < span.length) buffer.resize(span.length);
  const ssize_t n = os::read_at(span.fd, buffer.data(), span.length, span.offset);
  if (n < 0) {
    fuse_reply_err(req, static_cast<int>(-n));
  } else {
    fuse_reply_buf(req, buffer.data(), static_cast<std::size_t>(n));
  }
}

// Valid replies: fuse_reply_write, fuse_reply_err.
void op_write_buf(fuse_req_t req, fuse_ino_t, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  IoSpan span;
  int err = retry_after_readers(req, [&] {
    return guarded("write", [&] {
      return store_of(req).prepare_write(fi->fh, static_cast<std::uint64_t>(off),
                                         fuse_buf_size(in), &span);
    });
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_bufvec out = slot_buf(span);
  ssize_t written = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  guarded("write", [&] {
    store_of(req).write_done(fi->fh, written == static_cast<ssize_t>(span.length));
    return 0;
  });
  if (written < 0) {
    fuse_reply_err(req, static_cast<int>(-written));
  } else {
    fuse_reply_write(req, static_cast<size_t>(written));
  }
}

namespace {

// The end of a FLUSH, once what the close changed is what the kernel will find.
void finish_flush(fuse_req_t req, std::uint64_t fh, int err, bool name_dropped) {
  guarded("flush", [&] {
    if (name_dropped) store_of(req).name_dropped(fh);
    // Requests made after this close returned must find what the release does to its entry,
    // if this close was the file's last.
    if (err == 0 && store_of(req).settles_at_release(fh)) channel_of(req).expect_release(fh);
    return 0;
  });
  fuse_reply_err(req, err);
}

}  // namespace

// Valid replies: fuse_reply_err, here or from the notifier's thread.
void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Store::StaleName stale;
  const int err = guarded("flush", [&] { return store_of(req).flush(fi->fh, caller_of(req), &stale); });
  if (err != 0 || stale.parent == 0) return finish_flush(req, fi->fh, err, false);
  // Before close() returns, the closer's next open of the name must find the new version.
  // A new epoch (kernel 6.16+) has the kernel look up again every name it caches, or that a
  // lookup answered before now is about to cache, before using it, and the reply waits for
  // nothing. Without epochs, the reply waits until the name is dropped. That waits for the
  // directory's lock, which a lookup in flight may hold until a thread serves it, so it is the
  // notifier's thread that waits and replies.
  Context* context = static_cast<Context*>(fuse_req_userdata(req));
  Notifier* notifier = context->notifier;
  if (!context->channel.bump_epoch()) {
    if (notifier != nullptr) {
      const std::uint64_t fh = fi->fh;
      notifier->invalidate_entry(stale.parent, std::move(stale.name),
                                 [req, fh] { finish_flush(req, fh, 0, true); });
      return;
    }
    // Unmounting: no other thread is left to do it.
    fuse_lowlevel_notify_inval_entry(context->session, stale.parent, stale.name.data(),
                                     stale.name.size());
  }
  finish_flush(req, fi->fh, err, true);
}

// Valid replies: fuse_reply_err.
void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  // Versions of a name commit in the order they were closed: the name ends with the last.
  guarded("release", [&] {
    channel_of(req).release_turn(fi->fh);
    return 0;
  });
  const int err = guarded("release", [&] { return store_of(req).release(fi->fh); });
  channel_of(req).released(fi->fh);
  fuse_reply_err(req, err);
}

// Valid replies: fuse_reply_err. Never ENOSYS, which would turn fallocate off for the mount.
void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length,
                  fuse_file_info* fi) {
  const int err = offset < 0 || length < 0 ? EINVAL : guarded("fallocate", [&] {
    return store_of(req).fallocate(fi->fh, mode, static_cast<std::uint64_t>(offset),
                                   static_cast<std::uint64_t>(length));
  });
  fuse_reply_err(req, err);
}

// Bytes live in shared memory; there is nothing to make durable.
// Valid replies: fuse_reply_err.
void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); }

}  // namespace smos::fs
