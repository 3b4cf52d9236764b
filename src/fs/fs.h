// The FUSE adapter: each low-level operation decodes its request, calls the Store, and sends
// exactly one reply. Nothing here decides policy; nothing here throws.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <cerrno>
#include <exception>
#include <new>
#include <string>

#include <spdlog/spdlog.h>

#include "fs/notifier.h"
#include "os/fuse_channel.h"
#include "store/store.h"

namespace smos::fs {

// The operation table, wired up in one place (fs.cc).
const fuse_lowlevel_ops& operations();

// Passed to fuse_session_new() as userdata.
struct Context {
  Store* store;
  fuse_session* session = nullptr;  // set once the session exists
  os::FuseChannel channel;
  Notifier* notifier = nullptr;  // set while the session serves
};

// Routes the session's device I/O, and its ring's requests, through context.channel.
int install_channel(Context& context, const std::string& mountpoint);

// Registers slot files with the kernel as backing files, through the context's channel, once
// the kernel has agreed to FUSE passthrough.
class ChannelBackingFiles final : public Store::BackingFiles {
 public:
  explicit ChannelBackingFiles(Context& context) : context_(context) {}
  int open(int fd) override;
  void close(int id) override;

 private:
  Context& context_;
};

inline Store& store_of(fuse_req_t req) {
  return *static_cast<Context*>(fuse_req_userdata(req))->store;
}

inline os::FuseChannel& channel_of(fuse_req_t req) {
  return static_cast<Context*>(fuse_req_userdata(req))->channel;
}

// Before a request that observes entries (FuseChannel::wait_turn).
void wait_turn(fuse_req_t req);
// Before a request whose answer depends on which files are open (FuseChannel::wait_released).
void wait_released(fuse_req_t req);
// Both: before a request that observes entries and which files are open.
void wait_all_released(fuse_req_t req);
// Runs `fn` (a store call: 0 or an errno), and once more if it ran out of room (ENOSPC), after
// the releases sent before this request: the room may be a zombie that a reader's release on
// its way frees. The store changes nothing when it answers ENOSPC.
template <typename Fn>
int retry_after_readers(fuse_req_t req, Fn&& fn) {
  const int err = fn();
  if (err != ENOSPC) return err;
  wait_released(req);
  return fn();
}
Caller caller_of(fuse_req_t req);
void fill_stat(const Attr& attr, struct stat* st);
// Replies with an entry for `attr`, with cache timeouts that suit its kind.
void reply_entry(fuse_req_t req, const Attr& attr);
void reply_attr(fuse_req_t req, const Attr& attr);

// Runs a store call at the boundary where exceptions must stop: Boost.Interprocess may throw,
// and nothing may unwind through libfuse. Out of memory becomes ENOSPC, the rest EIO.
template <typename Fn>
int guarded(const char* op, Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    spdlog::error("{}: out of memory", op);
    return ENOSPC;
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", op, e.what());
    return EIO;
  } catch (...) {
    spdlog::error("{}: unknown exception", op);
    return EIO;
  }
}

// Operation handlers, grouped by file.
// ops_dir.cc
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets);
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags);
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname);
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_statfs(fuse_req_t req, fuse_ino_t ino);
// ops_file.cc
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi);
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void op_write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* bufv, off_t off,
                  fuse_file_info* fi);
void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  fuse_file_info* fi);
// ops_xattr.cc
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                 size_t size, int flags);
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

}  // namespace smos::fs
