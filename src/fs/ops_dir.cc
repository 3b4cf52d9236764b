// Names, attributes and directories.
#include <memory>
#include <sys/statvfs.h>
#include <vector>

#include "fs/fs.h"
#include "os/process.h"

namespace smos::fs {

// Valid replies: fuse_reply_entry, fuse_reply_err.
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Attr attr;
  int err = guarded("lookup", [&] { return store_of(req).lookup(parent, name, caller_of(req), &attr); });
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    reply_entry(req, attr);
  }
}

// Objects and entries are stable ids that need no counting; tickets of .push and .pop do.
// Valid replies: fuse_reply_none.
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  guarded("forget", [&] {
    store_of(req).forget(ino, nlookup);
    return 0;
  });
  fuse_reply_none(req);
}

// Valid replies: fuse_reply_none.
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  guarded("forget", [&] {
    for (size_t i = 0; i < count; ++i) store_of(req).forget(forgets[i].ino, forgets[i].nlookup);
    return 0;
  });
  fuse_reply_none(req);
}

// Valid replies: fuse_reply_attr, fuse_reply_err.
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Attr attr;
  int err = guarded("getattr", [&] { return store_of(req).getattr(ino, &attr); });
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    reply_attr(req, attr);
  }
}

// Valid replies: fuse_reply_attr, fuse_reply_err.
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* st, int to_set, fuse_file_info* fi) {
  SetAttr change;
  if (to_set & FUSE_SET_ATTR_MODE) change.mode = st->st_mode;
  if (to_set & FUSE_SET_ATTR_UID) change.uid = st->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) change.gid = st->st_gid;
  if (to_set & FUSE_SET_ATTR_SIZE) change.size = static_cast<std::uint64_t>(st->st_size);
  auto ns = [](const timespec& ts) { return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec; };
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
    change.atime_ns = os::now_ns();
  } else if (to_set & FUSE_SET_ATTR_ATIME) {
    change.atime_ns = ns(st->st_atim);
  }
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
    change.mtime_ns = os::now_ns();
  } else if (to_set & FUSE_SET_ATTR_MTIME) {
    change.mtime_ns = ns(st->st_mtim);
  }
  std::optional<std::uint64_t> fh;
  if (fi != nullptr) fh = fi->fh;
  Attr attr;
  int err = guarded("setattr", [&] {
    return store_of(req).setattr(ino, change, fh, caller_of(req), &attr);
  });
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    reply_attr(req, attr);
  }
}

// Valid replies: fuse_reply_entry, fuse_reply_err.
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Attr attr;
  int err = guarded("mkdir", [&] { return store_of(req).mkdir(parent, name, mode, caller_of(req), &attr); });
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    reply_entry(req, attr);
  }
}

// Valid replies: fuse_reply_err.
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, guarded("rmdir", [&] { return store_of(req).rmdir(parent, name); }));
}

// Valid replies: fuse_reply_err.
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, guarded("unlink", [&] { return store_of(req).unlink(parent, name, caller_of(req)); }));
}

// Valid replies: fuse_reply_err.
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
  fuse_reply_err(req, guarded("rename", [&] {
    return store_of(req).rename(parent, name, newparent, newname, flags, caller_of(req));
  }));
}

// Objects hold entries and nothing else; the root holds objects and nothing else.
// Valid replies: fuse_reply_err.
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EPERM); }
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { fuse_reply_err(req, EPERM); }
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EPERM); }

// A directory handle is a snapshot of its listing, taken at opendir, so that readdir offsets
// stay meaningful while entries come and go.
// Valid replies: fuse_reply_open, fuse_reply_err.
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto listing = std::make_unique<std::vector<DirEntry>>();
  int err = guarded("opendir", [&] { return store_of(req).readdir(ino, listing.get()); });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fi->fh = reinterpret_cast<std::uint64_t>(listing.get());
  fi->cache_readdir = 0;
  if (fuse_reply_open(req, fi) == 0) listing.release();
}

// Offset k names the k-th item of [".", "..", listing...]; each item carries offset k + 1.
// Valid replies: fuse_reply_buf, fuse_reply_data, fuse_reply_err.
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  const auto& listing = *reinterpret_cast<std::vector<DirEntry>*>(fi->fh);
  std::vector<char> buf(size);
  std::size_t used = 0;
  auto add = [&](const char* name, const struct stat& st, off_t next) {
    std::size_t n = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
    if (n > size - used) return false;
    used += n;
    return true;
  };
  struct stat st {};
  for (off_t i = off; i < static_cast<off_t>(listing.size()) + 2; ++i) {
    if (i < 2) {
      st.st_ino = i == 0 ? ino : kRootIno;
      st.st_mode = S_IFDIR;
      if (!add(i == 0 ? "." : "..", st, i + 1)) break;
    } else {
      const DirEntry& d = listing[static_cast<std::size_t>(i - 2)];
      fill_stat(d.attr, &st);
      if (!add(d.name.c_str(), st, i + 1)) break;
    }
  }
  fuse_reply_buf(req, buf.data(), used);
}

// Valid replies: fuse_reply_err.
void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<std::vector<DirEntry>*>(fi->fh);
  fuse_reply_err(req, 0);
}

// Valid replies: fuse_reply_statfs, fuse_reply_err.
void op_statfs(fuse_req_t req, fuse_ino_t) {
  // The memory in use after the releases sent before this request, as user.smos.bytes counts
  // it: a zombie whose reader closed is gone. But the daemon's own statfs is the ring's kick
  // (FuseRing::kick), which must never wait.
  if (!os::is_own_thread(fuse_req_ctx(req)->pid)) wait_all_released(req);
  StoreStats s{};
  int err = guarded("statfs", [&] {
    s = store_of(req).stats();
    return 0;
  });
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  constexpr unsigned long kBlock = 4096;
  struct statvfs st {};
  st.f_bsize = kBlock;
  st.f_frsize = kBlock;
  st.f_blocks = s.memory_budget / kBlock;
  const std::uint64_t used = (s.memory_used + kBlock - 1) / kBlock;
  st.f_bfree = st.f_bavail = st.f_blocks > used ? st.f_blocks - used : 0;
  st.f_files = s.max_entries;
  st.f_ffree = st.f_favail = s.free_entries;
  st.f_namemax = layout::kNameMax;
  fuse_reply_statfs(req, &st);
}

}  // namespace smos::fs
