// Entries: creation, writing, commit, reading, and the end of their lives.
#include "store/store.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "store/detail.h"
#include "store/xattr_blob.h"

namespace smos {

using namespace detail;
using layout::CommitMode;
using layout::EntryState;

// ---------------------------------------------------------------------------------------------
// Entries

int Store::new_entry(std::uint32_t o, std::string_view name, mode_t mode, uid_t uid, gid_t gid,
                     const Caller& caller, std::uint32_t* out) {
  layout::ObjectRecord& orec = obj(o);
  ObjectRt& ort = object_rt_[o];
  if (ort.entries >= orec.capacity) {
    drop_stale_redirects(o, /*check_threads=*/true);
    if (ort.entries >= orec.capacity) return ENOSPC;
  }
  if (bytes_used_ >= options_.memory_budget) return ENOSPC;  // nothing could be written to it
  layout::StoreHeader& h = meta_->header();
  std::uint32_t e;
  if (!free_entries_.empty()) {
    e = free_entries_.back();
  } else if (h.entry_hwm < h.max_entries) {
    e = static_cast<std::uint32_t>(h.entry_hwm);
  } else {
    return ENOSPC;
  }
  EntryRt& rt = entry_rt_[e];
  // A descriptor of the slot file outlives the lease it was opened under: whoever opened it
  // for an earlier entry would read (or write) this one through it. So the slot gets a new file
  // unless they all may read this entry's segment anyway.
  const std::string slot = MetaSegment::slot_name(options_.name, e);
  const mode_t next_mode = segment_mode(mode & kEntryModeBits, orec.mode, false);
  if (rt.segment.is_open() && (rt.slot_owner_changed || rt.slot_uid != uid ||
                               rt.slot_gid != gid || (rt.slot_modes & 0077 & ~next_mode) != 0)) {
    rt.segment = os::SegmentFile();
  }
  if (!rt.segment.is_open()) {
    os::SegmentFile::remove(slot);  // a file left by an earlier entry, or an earlier smosd
    int err = os::SegmentFile::open(slot, &rt.segment);
    if (err != 0) {
      spdlog::error("store '{}': cannot open slot {}: {}", options_.name, e, std::strerror(err));
      return err == EMFILE || err == ENFILE ? ENOSPC : err;
    }
    rt.slot_uid = uid;
    rt.slot_gid = gid;
    rt.slot_owner_changed = false;
    rt.slot_modes = 0;
  }
  if (!free_entries_.empty()) {
    free_entries_.pop_back();
  } else {
    h.entry_hwm++;
  }
  layout::EntryRecord& r = ent(e);
  r.seq = 0;
  r.size = 0;
  const std::int64_t now = os::now_ns();
  r.times = {now, now, now};
  r.object = o;
  r.mode = mode & kEntryModeBits;
  r.uid = uid;
  r.gid = gid;
  set_name(r.name, name);
  xattr_blob::clear(meta_->entry_xattrs(e));
  r.flags = ort.committed.contains(name) ? layout::kEntryReplaces : 0;
  r.state = EntryState::kWrite;
  r.ino = h.next_ino++;  // last: the record is whole before it counts

  rt.readers = rt.writers = 0;
  rt.writer_tgid = os::thread_group_of(caller.pid);
  rt.cache_primed = false;
  rt.pushed = false;
  rt.written = false;
  rt.name_flushed = false;
  rt.replaced = false;
  rt.closed_at = 0;
  rt.redirect_tid = 0;
  rt.cached_readers = 0;
  rt.aliases = 0;
  rt.passthrough_used = false;
  rt.lookups = 0;
  sync_segment_owner(e);
  ort.entries++;
  ort.pending.emplace(std::string(name), e);
  inodes_.emplace(r.ino, Ref{false, e});
  if (!ort.tracks.empty()) {
    // A typed entry is born at its full, zero-filled size.
    if (int err = resize(e, orec.block_size); err != 0) return abandon_new_entry(e, err);
  }
  orec.entries_created++;  // from now on, the object's layout is fixed
  *out = e;
  return 0;
}

int Store::abandon_new_entry(std::uint32_t e, int err) {
  drop_pending(e);
  ent(e).state = EntryState::kZombie;
  free_entry(e);
  return err;
}

mode_t Store::segment_mode(mode_t entry_mode, std::optional<mode_t> object_mode, bool committed) {
  mode_t mode = entry_mode & 0777;
  if (object_mode) {
    // Whoever cannot search the object through the mount cannot read its segments either.
    if (!(*object_mode & S_IXGRP)) mode &= ~0070u;
    if (!(*object_mode & S_IXOTH)) mode &= ~0007u;
  }
  // Nor write a committed entry through its segment, which the mount refuses.
  if (committed) mode &= ~0222u;
  return mode;
}

int Store::sync_segment_owner(std::uint32_t e) {
  const layout::EntryRecord& r = ent(e);
  EntryRt& rt = entry_rt_[e];
  const std::optional<mode_t> dir =
      r.object != layout::kNoObject ? std::optional<mode_t>(obj(r.object).mode) : std::nullopt;
  const mode_t mode = segment_mode(r.mode, dir, r.state != EntryState::kWrite);
  if (r.uid != rt.slot_uid || r.gid != rt.slot_gid) rt.slot_owner_changed = true;
  rt.slot_modes |= mode;
  int err = rt.segment.set_owner(r.uid, r.gid, mode);
  if (err != 0) spdlog::warn("store '{}': slot {} owner: {}", options_.name, e, std::strerror(err));
  return err;
}

int Store::resize(std::uint32_t e, std::uint64_t size, std::uint64_t written_from) {
  layout::EntryRecord& r = ent(e);
  EntryRt& rt = entry_rt_[e];
  if (size == r.size) return 0;
  if (size > r.size) {
    const std::uint64_t grow = size - r.size;
    if (bytes_used_ + grow > options_.memory_budget) return ENOSPC;
    const std::uint64_t reserve_end = std::min(size, std::max(written_from, r.size));
    if (int err = rt.segment.reserve(r.size, reserve_end - r.size); err != 0) {
      rt.segment.truncate(r.size);  // give back any part that was allocated
      return err;
    }
    bytes_used_ += grow;
    object_rt_[r.object].bytes += grow;
  } else {
    if (int err = rt.segment.truncate(size); err != 0) return err;
    bytes_used_ -= r.size - size;
    object_rt_[r.object].bytes -= r.size - size;
  }
  r.size = size;
  return 0;
}

void Store::commit(std::uint32_t e) {
  layout::EntryRecord& r = ent(e);
  const std::uint32_t o = r.object;
  ObjectRt& ort = object_rt_[o];
  drop_pending(e);
  if (r.seq == 0) r.seq = obj(o).next_seq++;  // pushed entries reserved theirs at open
  if (entry_rt_[e].closed_at == 0) entry_rt_[e].closed_at = ++closes_;
  touch(r.times, false);
  r.flags = 0;
  r.state = EntryState::kCommitted;
  if (int err = entry_rt_[e].segment.drop_write_bits(); err != 0) {
    spdlog::warn("store '{}': slot {} mode: {}", options_.name, e, std::strerror(err));
  }
  entry_rt_[e].cache_primed = false;
  if (auto it = ort.committed.find(name_of(r.name)); it != ort.committed.end()) {
    const std::uint32_t old = it->second;
    unname(old);
    entry_rt_[old].replaced = true;
    if (!entry_rt_[e].name_flushed) name_changed(o, old);  // else the writer's close did
    retire(old);
  }
  ort.committed.emplace(std::string(name_of(r.name)), e);
  ort.by_seq.emplace(r.seq, e);
  if (ort.by_seq.rbegin()->second == e) latest_moved(o);
  touch(obj(o).times, true);
  serve_pop_waiters(o);
}

void Store::unname(std::uint32_t e) {
  ObjectRt& ort = object_rt_[ent(e).object];
  ort.committed.erase(ort.committed.find(name_of(ent(e).name)));
  if (ort.by_seq.rbegin()->second == e) latest_moved(ent(e).object);
  ort.by_seq.erase({ent(e).seq, e});
}

void Store::drop_pending(std::uint32_t e) {
  ObjectRt& ort = object_rt_[ent(e).object];
  auto [first, last] = ort.pending.equal_range(name_of(ent(e).name));
  for (auto it = first; it != last; ++it) {
    if (it->second == e) {
      ort.pending.erase(it);
      return;
    }
  }
}

void Store::retire(std::uint32_t e) {
  ent(e).state = EntryState::kZombie;
  touch(ent(e).times, false);
  release_entry_if_unused(e);
}

void Store::release_entry_if_unused(std::uint32_t e) {
  const EntryRt& rt = entry_rt_[e];
  // A replaced version also lives while the kernel may still open it by inode (see forget()),
  // and any entry while a .latest alias stands for it.
  const bool looked_up = (rt.replaced && rt.lookups > 0) || rt.aliases > 0;
  if (ent(e).state == EntryState::kZombie && rt.readers == 0 && rt.writers == 0 && !looked_up) {
    free_entry(e);
  }
}

void Store::free_entry(std::uint32_t e) {
  layout::EntryRecord& r = ent(e);
  EntryRt& rt = entry_rt_[e];
  if (rt.lookups > 0 && r.object != layout::kNoObject) {
    Freed& freed = freed_[next_freed_++ % freed_.size()];
    freed.ino = r.ino;
    freed.object = obj(r.object).ino;
    freed.name.assign(name_of(r.name));
  }
  if (rt.backing_id != 0) {
    backing_->close(rt.backing_id);
    rt.backing_id = 0;
  }
  if (rt.passthrough_used) {
    // A passthrough mapping holds the slot file itself, not a handle, and may outlive every
    // handle: give it the file, and the slot a new one (new_entry() makes it).
    os::SegmentFile::remove(MetaSegment::slot_name(options_.name, e));
    rt.segment = os::SegmentFile();
  } else if (rt.segment.truncate(0) != 0) {
    spdlog::warn("store '{}': cannot truncate slot {}", options_.name, e);
  }
  bytes_used_ -= r.size;
  if (r.object != layout::kNoObject) {
    ObjectRt& ort = object_rt_[r.object];
    ort.entries--;
    ort.bytes -= r.size;
  }
  inodes_.erase(r.ino);
  r.state = EntryState::kFree;
  r.size = 0;
  r.ino = 0;
  free_entries_.push_back(e);
}

std::uint64_t Store::new_fh(std::uint32_t e, bool writable, Ino ticket, int backing_id) {
  EntryRt& rt = entry_rt_[e];
  (writable ? rt.writers : rt.readers)++;
  if (!writable && ticket == 0 && backing_id == 0) rt.cached_readers++;
  const std::uint64_t fh = next_fh_++;
  handles_.emplace(fh, Handle{e, writable, ticket, backing_id != 0});
  return fh;
}

void Store::set_backing_files(BackingFiles* files) {
  Guard guard(*this);
  backing_ = files;
}

int Store::backing_of(std::uint32_t e) {
  if (ent(e).size < options_.passthrough_min_size) return 0;
  EntryRt& rt = entry_rt_[e];
  if (rt.backing_id == 0 && backing_ != nullptr) {
    const int id = backing_->open(rt.segment.fd());
    if (id < 0) {
      spdlog::warn("store '{}': no passthrough from now on: registering slot {}: {}",
                   options_.name, e, std::strerror(-id));
      backing_ = nullptr;
      return 0;
    }
    rt.backing_id = id;
    spdlog::debug("store: slot {} is backing file {}", e, id);
    rt.passthrough_used = true;
  }
  return rt.backing_id;
}

int Store::entry_of_handle(std::uint64_t fh, const Handle** out) const {
  auto it = handles_.find(fh);
  if (it == handles_.end()) return EBADF;
  *out = &it->second;
  return 0;
}

int Store::create(Ino parent, std::string_view name, mode_t mode, int flags,
                  const Caller& caller, Attr* attr, OpenFile* out) {
  if (int err = check_name(name); err != 0) return err;
  {
    Guard guard(*this);
    if (parent == kRootIno || is_control_name(name)) return EPERM;
    std::uint32_t o;
    if (int err = object_at(parent, &o); err != 0) return err;
    std::uint32_t existing;
    const bool exists = visible_entry(o, name, caller, &existing) == 0;
    if ((flags & O_EXCL) && (exists || object_rt_[o].pending.contains(name))) return EEXIST;
    // A name committed between the kernel's lookup and this create, which O_TRUNC replaces: the
    // reply gives the new version an inode of its own at once. (Opening the old version's inode
    // would need an ESTALE for the kernel to retry, and this create may be that retry.) The
    // kernel checked only the object's permission for a create, so the entry's is checked here;
    // where it cannot be told here (supplementary groups), the open below decides as before.
    const bool replaces = exists && ent(existing).state == EntryState::kCommitted &&
                          (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY &&
                          permits(ent(existing), caller, W_OK);
    if (!exists || replaces) {
      const layout::EntryRecord* old = replaces ? &ent(existing) : nullptr;
      std::uint32_t e;
      if (int err = new_entry(o, name, old ? old->mode : mode, old ? old->uid : caller.uid,
                              old ? old->gid : new_entry_gid(o, caller), caller, &e);
          err != 0) {
        return err;
      }
      entry_rt_[e].lookups++;
      *attr = entry_attr(e);
      *out = OpenFile{new_fh(e, true), true, false};
      return 0;
    }
    *attr = entry_attr(existing);
  }
  // The name appeared between the kernel's lookup and this create, and is not replaced here:
  // an ordinary open.
  if (int err = open(attr->ino, flags & ~(O_CREAT | O_EXCL), caller, out); err != 0) return err;
  // The create reply makes the kernel take a reference, as a lookup's does. The handle just
  // opened keeps the entry known.
  Guard guard(*this);
  if (const Ref* ref = find(attr->ino); ref != nullptr && !ref->is_object) {
    entry_rt_[ref->index].lookups++;
  }
  return 0;
}

bool Store::pops(Ino ino) {
  Guard guard(*this);
  const auto t = tickets_.find(ino);
  return t != tickets_.end() && t->second.kind == Control::kPop;
}

int Store::open(Ino ino, int flags, const Caller& caller, OpenFile* out, Waiter* waiter) {
  Guard guard(*this);
  // Nothing is truncated by a read-only open. The kernel would empty the inode's size and page
  // cache anyway once it succeeded (atomic O_TRUNC), under its other readers' mappings.
  if ((flags & O_ACCMODE) == O_RDONLY && (flags & O_TRUNC)) return EPERM;
  if (auto t = tickets_.find(ino); t != tickets_.end()) {
    return open_ticket(ino, t->second, flags, caller, out, waiter);
  }
  const bool writable = (flags & O_ACCMODE) != O_RDONLY;
  const Ref* ref = find(ino);
  if (ref == nullptr) {
    // Freed since the kernel's lookup: see replace_made_anew().
    const auto freed = std::find_if(freed_.begin(), freed_.end(),
                                    [ino](const Freed& f) { return f.ino == ino; });
    const Ref* object = freed != freed_.end() ? find(freed->object) : nullptr;
    if (writable && (flags & O_TRUNC) && object != nullptr && object->is_object) {
      return replace_made_anew(object->index, freed->name, caller);
    }
    return kStaleInode;
  }
  if (ref->is_object) return EISDIR;
  const std::uint32_t e = ref->index;
  layout::EntryRecord& r = ent(e);
  EntryRt& rt = entry_rt_[e];
  if (r.state == EntryState::kWrite) {
    if (!is_writer(e, caller)) return ENOENT;
    if (writable && (flags & O_TRUNC)) {
      // Each truncating open writes a version of its own, even in one process.
      if (rt.writers > 0) return begin_replace(e, caller);
      // A replace's new version, opened for the first time, is as new_entry() made it.
      if (rt.redirect_tid == 0) {
        if (int err = resize(e, 0); err != 0) return err;
        // A typed entry keeps its layout's size: truncating it zero-fills it (found by QA:
        // the second open of a replace left it empty).
        if (!object_rt_[r.object].tracks.empty()) {
          if (int err = wrote(e, resize(e, obj(r.object).block_size)); err != 0) return err;
        }
      }
    }
    if (writable) {
      r.flags &= ~layout::kEntryClosed;  // its writer is back: not closed after all
      rt.redirect_tid = 0;               // a replace came back for its new version
    }
    *out = OpenFile{new_fh(e, writable), writable, false};
    return 0;
  }
  // Whether this is the kernel's retry of an open that a stale name sent back: only the next
  // open of that thread in the object may be (see came_back()).
  const bool retry = r.object != layout::kNoObject && came_back(r.object, caller);
  // A zombie is reached through a name the kernel still caches, or cached when this open began
  // (a lookup that raced with the replace can cache the name again after it was dropped). An
  // unlinked or popped one is gone. A replaced one is not what the name means any more: ESTALE
  // sends the kernel back for the current version, unless this is that walk coming back, whose
  // lookup found this version current during this very open(2). A replace of it is a replace
  // of the name.
  if (r.state == EntryState::kZombie) {
    if (r.object == layout::kNoObject) return ESTALE;
    if (!rt.replaced) {
      if (writable && (flags & O_TRUNC)) return replace_made_anew(r.object, name_of(r.name), caller);
      return ESTALE;  // unlinked or popped
    }
    if (!(writable && (flags & O_TRUNC)) && !retry) return send_back(r.object, caller);
  }
  if (r.state != EntryState::kCommitted && r.state != EntryState::kZombie) {
    spdlog::critical("store '{}': inode {} maps to free entry record {}", options_.name, ino, e);
    std::abort();
  }
  if (writable) {
    if (!(flags & O_TRUNC)) return r.state == EntryState::kZombie ? ESTALE : EPERM;
    return begin_replace(e, caller);
  }
  // Every inode stands for one version, whose bytes never change once committed. So the kernel
  // may serve it from its slot file (passthrough), unless the inode is open without: the kernel
  // allows no mix. Or else readers share the page cache, which the first reader after the
  // commit empties of what the writer left there.
  const int backing = rt.writers == 0 && rt.cached_readers == 0 ? backing_of(e) : 0;
  *out = OpenFile{new_fh(e, false, 0, backing), false, rt.cache_primed};
  out->backing_id = backing;
  rt.cache_primed = true;
  return 0;
}

// Atomic replace: open(O_TRUNC) of a committed entry, or of a version that another descriptor
// is writing. The new version needs an inode of its own (the old one's readers keep their page
// cache and size), but the kernel opens the inode the name led it to. So the store makes the
// new version, answers ESTALE, and the kernel walks the path again: lookup() now gives this
// thread the new version, which the second open finds in write state and opens. Until then it
// is a redirect, bound to the opening thread.
int Store::begin_replace(std::uint32_t old, const Caller& caller) {
  const layout::EntryRecord& r = ent(old);
  const std::uint32_t o = r.object;
  if (own_redirect(o, name_of(r.name), caller)) return ESTALE;  // a walk that did not come back
  drop_stale_redirects(o);
  std::uint32_t fresh;
  if (int err = new_entry(o, name_of(r.name), r.mode, r.uid, r.gid, caller, &fresh); err != 0) {
    return err;
  }
  entry_rt_[fresh].redirect_tid = caller.pid;
  entry_rt_[fresh].redirect_at = os::monotonic_ns();
  return ESTALE;
}

int Store::replace_made_anew(std::uint32_t o, std::string_view name, const Caller& caller) {
  const auto& committed = object_rt_[o].committed;
  const auto now = committed.find(name);
  return now == committed.end() ? ESTALE : begin_replace(now->second, caller);
}

namespace {
// The two opens of a replace are one system call apart. A redirect older than this was left by
// a thread that never came back (killed, or it reopened /proc/self/fd/N, which leads to the old
// inode again): it no longer shadows the name, and is dropped when its room is wanted (a new
// entry in a full object, rmdir) or at the next replace in the object.
constexpr std::int64_t kRedirectLifetimeNs = 5'000'000'000;

bool expired(std::int64_t redirect_at, std::int64_t now) {
  return now - redirect_at > kRedirectLifetimeNs;
}
}  // namespace

std::optional<std::uint32_t> Store::own_redirect(std::uint32_t o, std::string_view name,
                                                 const Caller& caller) const {
  const std::int64_t now = os::monotonic_ns();
  auto [first, last] = object_rt_[o].pending.equal_range(name);
  for (auto it = first; it != last; ++it) {
    const EntryRt& rt = entry_rt_[it->second];
    if (rt.redirect_tid == caller.pid && !expired(rt.redirect_at, now)) {
      return it->second;
    }
  }
  return std::nullopt;
}

void Store::drop_stale_redirects(std::uint32_t o, bool check_threads) {
  const std::int64_t now = os::monotonic_ns();
  std::vector<std::uint32_t> stale;
  for (const auto& [name, e] : object_rt_[o].pending) {
    const pid_t tid = entry_rt_[e].redirect_tid;
    if (tid != 0 && (expired(entry_rt_[e].redirect_at, now) ||
                     (check_threads && !os::thread_exists(tid)))) {
      stale.push_back(e);
    }
  }
  drop_redirects(stale);
}

void Store::drop_redirects_left_by(std::uint32_t o, const Caller& caller, std::string_view name) {
  if (caller.pid == 0) return;  // outside smosd's pid namespace: never a redirect's thread
  std::vector<std::uint32_t> left;
  for (const auto& [pending_name, e] : object_rt_[o].pending) {
    if (entry_rt_[e].redirect_tid == caller.pid && pending_name != name) left.push_back(e);
  }
  drop_redirects(left);
}

void Store::drop_redirects(const std::vector<std::uint32_t>& redirects) {
  for (std::uint32_t e : redirects) {
    drop_pending(e);
    retire(e);
  }
}

bool Store::holds_entries(std::uint32_t o) {
  drop_stale_redirects(o, /*check_threads=*/true);
  const ObjectRt& ort = object_rt_[o];
  return !ort.committed.empty() || !ort.pending.empty();
}

int Store::unlink(Ino parent, std::string_view name, const Caller& caller) {
  Guard guard(*this);
  if (parent == kRootIno) {
    std::uint32_t o;
    return find_object(name, &o) == 0 ? EISDIR : ENOENT;
  }
  std::uint32_t o, e;
  if (int err = object_at(parent, &o); err != 0) return err;
  if (is_control_name(name)) {
    // Reserved while the object holds entries. On an empty object, accepted and ignored, so
    // that `rm -r OBJECT` (which unlinks everything it lists) can finish with rmdir.
    return holds_entries(o) ? EPERM : 0;
  }
  if (int err = visible_entry(o, name, caller, &e); err != 0) return err;
  if (ent(e).state == EntryState::kWrite) {
    drop_pending(e);
  } else {
    unname(e);
  }
  retire(e);
  touch(obj(o).times, true);
  return 0;
}

int Store::prepare_read(std::uint64_t fh, std::uint64_t offset, std::size_t size, IoSpan* out) {
  Guard guard(*this);
  const Handle* h;
  if (int err = entry_of_handle(fh, &h); err != 0) return err;
  const std::uint64_t length = ent(h->entry).size;
  out->fd = entry_rt_[h->entry].segment.fd();
  out->offset = offset;
  out->length = offset >= length ? 0 : std::min<std::uint64_t>(size, length - offset);
  return 0;
}

int Store::prepare_write(std::uint64_t fh, std::uint64_t offset, std::size_t size, IoSpan* out) {
  Guard guard(*this);
  const Handle* h;
  if (int err = entry_of_handle(fh, &h); err != 0) return err;
  if (!h->writable) return EBADF;
  const std::uint32_t e = h->entry;
  layout::EntryRecord& r = ent(e);
  if (r.state != EntryState::kWrite) return EPERM;
  const std::uint64_t limit = obj(r.object).block_size;
  if (offset >= limit) return wrote(e, EFBIG);
  const std::uint64_t length = std::min<std::uint64_t>(size, limit - offset);
  if (offset + length > r.size) {
    // The write itself backs [offset, offset + length): a tmpfs write allocates its pages or
    // fails whole. Only a gap before it needs reserving.
    if (int err = resize(e, offset + length, offset); err != 0) return wrote(e, err);
  }
  wrote(e, 0);  // a write after a failure: its writer carried on
  ent(e).flags &= ~layout::kEntryClosed;
  EntryRt& rt = entry_rt_[e];
  rt.written = true;
  rt.writes_in_flight++;
  touch(r.times, true);
  *out = IoSpan{rt.segment.fd(), offset, static_cast<std::size_t>(length)};
  return 0;
}

void Store::write_done(std::uint64_t fh, bool whole) {
  Guard guard(*this);
  const Handle* h;
  if (entry_of_handle(fh, &h) != 0) return;
  EntryRt& rt = entry_rt_[h->entry];
  if (!whole) {
    wrote(h->entry, EIO);
    rt.short_write = true;
  }
  if (--rt.writes_in_flight > 0) return;
  writes_done_.notify_all();
  if (!std::exchange(rt.short_write, false)) return;
  // Every write that succeeded has reached its end of the slot file; a failed one may have
  // left the file shorter than the size prepare_write() counted.
  const std::int64_t length = rt.segment.length();
  layout::EntryRecord& r = ent(h->entry);
  if (length < 0 || static_cast<std::uint64_t>(length) >= r.size) return;
  const std::uint64_t lost = r.size - static_cast<std::uint64_t>(length);
  bytes_used_ -= lost;
  object_rt_[r.object].bytes -= lost;
  r.size = static_cast<std::uint64_t>(length);
}

int Store::wrote(std::uint32_t e, int err) {
  if (err == 0) {
    ent(e).flags &= ~layout::kEntryFailed;
  } else {
    ent(e).flags |= layout::kEntryFailed;
  }
  return err;
}

bool Store::failed(std::uint32_t e) const {
  const layout::EntryRecord& r = meta_->entry(e);
  // A pushed entry reserved its seq at open; a named one takes its seq at commit.
  return (r.flags & layout::kEntryFailed) != 0 &&
         (r.seq != 0 || (r.flags & layout::kEntryReplaces) != 0);
}

void Store::await_writes(Guard& guard,
                         const std::function<std::optional<std::uint32_t>()>& entry) {
  for (std::optional<std::uint32_t> e = entry(); e && entry_rt_[*e].writes_in_flight > 0;
       e = entry()) {
    guard.wait(writes_done_);
  }
}

int Store::set_size(std::uint32_t e, std::uint64_t size) {
  layout::EntryRecord& r = ent(e);
  if (size > obj(r.object).block_size) return wrote(e, EFBIG);
  if (!object_rt_[r.object].tracks.empty() && size != r.size) return EINVAL;
  if (int err = wrote(e, resize(e, size)); err != 0) return err;
  r.flags &= ~layout::kEntryClosed;
  entry_rt_[e].written = true;
  touch(r.times, true);
  return 0;
}

int Store::fallocate(std::uint64_t fh, int mode, std::uint64_t offset, std::uint64_t length) {
  // An entry's slot file is exactly as long as the entry, and every byte of it is memory
  // already: there is nothing to allocate past the end (FALLOC_FL_KEEP_SIZE), nor any hole to
  // punch. What is left is growing a write entry, as ftruncate does.
  if (mode != 0) return EOPNOTSUPP;
  if (length == 0 || offset > UINT64_MAX - length) return EINVAL;
  Guard guard(*this);
  const Handle* h;
  if (int err = settled_handle(guard, fh, &h); err != 0) return err;
  if (!h->writable) return EBADF;
  if (ent(h->entry).state != EntryState::kWrite) return EPERM;
  if (offset + length <= ent(h->entry).size) return 0;
  return set_size(h->entry, offset + length);
}

int Store::settled_handle(Guard& guard, std::uint64_t fh, const Handle** out) {
  await_writes(guard, [&]() -> std::optional<std::uint32_t> {
    const Handle* h;
    if (entry_of_handle(fh, &h) != 0) return std::nullopt;
    return h->entry;
  });
  return entry_of_handle(fh, out);
}

void Store::name_dropped(std::uint64_t fh) {
  Guard guard(*this);
  const Handle* h;
  if (entry_of_handle(fh, &h) != 0 || ent(h->entry).state != EntryState::kWrite) return;
  entry_rt_[h->entry].name_flushed = true;
  mark_closed(h->entry);
}

void Store::mark_closed(std::uint32_t e) {
  ent(e).flags |= layout::kEntryClosed;
  entry_rt_[e].closed_at = ++closes_;
}

int Store::flush(std::uint64_t fh, const Caller& closer, StaleName* stale) {
  Guard guard(*this);
  const Handle* h;
  if (int err = settled_handle(guard, fh, &h); err != 0) return err;
  layout::EntryRecord& r = ent(h->entry);
  if (!h->writable || r.state != EntryState::kWrite) return 0;
  // A pushed entry commits at its writer's first close after it was written: a shell's
  // `cmd > .push` closes a duplicate descriptor before cmd writes, and that close must not
  // commit it empty. Nor may the close of a descriptor that a child process inherited (a
  // fork, a pipeline's other commands), while its writer goes on writing: that one does not
  // even count as a close, which a restart would commit.
  if (entry_rt_[h->entry].pushed && obj(r.object).commit == CommitMode::kClose) {
    if (!is_writer(h->entry, closer)) return 0;
    if (entry_rt_[h->entry].written && !failed(h->entry)) {
      commit(h->entry);
      return 0;
    }
  }
  // A closed replace is what its name means once its release commits it, but the kernel may
  // still cache the name as the old version. Then the caller has the kernel drop the name
  // before close(2) returns, and name_dropped() marks the entry closed.
  if (stale != nullptr && object_rt_[r.object].committed.contains(name_of(r.name))) {
    *stale = StaleName{obj(r.object).ino, std::string(name_of(r.name))};
    return 0;
  }
  mark_closed(h->entry);
  return 0;
}

bool Store::settles_at_release(std::uint64_t fh) {
  Guard guard(*this);
  const Handle* h;
  return entry_of_handle(fh, &h) == 0 && h->writable && ent(h->entry).state == EntryState::kWrite;
}

int Store::release(std::uint64_t fh) {
  Guard guard(*this);
  auto it = handles_.find(fh);
  if (it == handles_.end()) return EBADF;
  const Handle h = it->second;
  handles_.erase(it);
  if (!h.writable && h.ticket == 0 && !h.passthrough) entry_rt_[h.entry].cached_readers--;
  if (h.ticket != 0) {
    tickets_.at(h.ticket).handles--;
    drop_ticket_if_unused(h.ticket);
  }
  EntryRt& rt = entry_rt_[h.entry];
  layout::EntryRecord& r = ent(h.entry);
  if (!h.writable) {
    // An idle entry may be what a blocked pop is waiting for.
    if (--rt.readers == 0 && r.state == EntryState::kCommitted) serve_pop_waiters(r.object);
  } else if (--rt.writers == 0 && r.state == EntryState::kWrite) {
    if (obj(r.object).commit == CommitMode::kClose && !failed(h.entry)) {
      if (entry_rt_[h.entry].pushed) {
        commit(h.entry);
      } else {
        // The name ends with the version closed last. Releases are served in the order they
        // were sent (FuseChannel::release_turn), but one can come too late: a version closed
        // later took the name already. Then this one commits and is replaced at once.
        if (rt.closed_at == 0) mark_closed(h.entry);
        const auto& committed = object_rt_[r.object].committed;
        if (auto it = committed.find(name_of(r.name));
            it != committed.end() && entry_rt_[it->second].closed_at > rt.closed_at) {
          drop_pending(h.entry);
          if (r.seq == 0) r.seq = obj(r.object).next_seq++;
          rt.replaced = true;
          retire(h.entry);
          return 0;
        }
        commit(h.entry);
      }
    } else {
      // Explicit mode, or a write failed: the writer left without committing, so the entry
      // never existed (a replace leaves the name to the version it was to replace).
      drop_pending(h.entry);
      retire(h.entry);
      return 0;
    }
  }
  release_entry_if_unused(h.entry);
  return 0;
}

}  // namespace smos
