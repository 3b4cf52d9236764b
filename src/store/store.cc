#include "store/store.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "os/process.h"
#include "smos/xattr.h"
#include "store/xattr_blob.h"
#include "util/size.h"

namespace smos {

namespace {

using layout::CommitMode;
using layout::EntryState;

std::string_view name_of(const layout::Name& n) { return {n.bytes, n.len}; }

void set_name(layout::Name& n, std::string_view name) {
  std::memcpy(n.bytes, name.data(), name.size());
  n.bytes[name.size()] = '\0';
  n.len = static_cast<std::uint16_t>(name.size());
}

int check_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return EINVAL;
  if (name.size() > layout::kNameMax) return ENAMETOOLONG;
  return 0;
}

void touch(layout::Timestamps& t, bool data) {
  const std::int64_t now = os::now_ns();
  if (data) t.mtime_ns = now;
  t.ctime_ns = now;
}

// xattr values arrive as raw bytes; `setfattr -v 64` sends "64", `echo 64 | ...` a newline.
std::string_view trimmed(std::string_view v) {
  while (!v.empty() && (v.back() == '\n' || v.back() == '\0' || v.back() == ' ')) {
    v.remove_suffix(1);
  }
  return v;
}

bool is_smos_name(std::string_view name) { return name.starts_with(xattr::kPrefix); }
bool is_user_name(std::string_view name) { return name.starts_with("user."); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Opening and recovery

Store::Store(StoreOptions options, std::unique_ptr<MetaSegment> meta)
    : options_(std::move(options)), meta_(std::move(meta)) {
  object_rt_.resize(meta_->header().max_objects);
  entry_rt_.resize(meta_->header().max_entries);
}

Store::~Store() = default;

int Store::open(const StoreOptions& options, std::unique_ptr<Store>* out, std::string* message) {
  std::unique_ptr<MetaSegment> meta;
  int err = MetaSegment::open(options.name, {options.max_objects, options.max_entries},
                              options.reset, &meta, message);
  if (err != 0) return err;
  std::unique_ptr<Store> store(new Store(options, std::move(meta)));
  store->recover();
  *out = std::move(store);
  return 0;
}

void Store::recover() {
  layout::StoreHeader& h = meta_->header();
  if (!meta_->created()) {
    spdlog::info("store '{}': recovering {} object and {} entry records", options_.name,
                 h.object_hwm, h.entry_hwm);
  }
  for (std::uint32_t o = 0; o < h.object_hwm; ++o) {
    layout::ObjectRecord& r = obj(o);
    if (r.ino == 0) continue;
    std::string name(name_of(r.name));
    if (check_name(name) != 0 || objects_by_name_.contains(name) || inodes_.contains(r.ino)) {
      spdlog::warn("store '{}': dropping damaged object record {}", options_.name, o);
      r.ino = 0;
      continue;
    }
    objects_by_name_.emplace(std::move(name), o);
    inodes_.emplace(r.ino, Ref{true, o});
    h.next_ino = std::max(h.next_ino, r.ino + 1);
  }
  for (std::uint32_t e = 0; e < h.entry_hwm; ++e) {
    layout::EntryRecord& r = ent(e);
    if (r.ino == 0) continue;
    const bool attached = r.object < h.object_hwm && obj(r.object).ino != 0;
    if (r.state != EntryState::kCommitted || !attached || check_name(name_of(r.name)) != 0 ||
        inodes_.contains(r.ino)) {
      discard_record(e);  // write entries, zombies and damage
      continue;
    }
    EntryRt& rt = entry_rt_[e];
    int err = os::SegmentFile::open(MetaSegment::slot_name(options_.name, e), &rt.segment);
    if (err != 0 || rt.segment.length() != static_cast<std::int64_t>(r.size)) {
      spdlog::warn("store '{}': entry '{}' lost its bytes; discarding it", options_.name,
                   name_of(r.name));
      discard_record(e);
      continue;
    }
    ObjectRt& ort = object_rt_[r.object];
    auto [it, inserted] = ort.committed.emplace(std::string(name_of(r.name)), e);
    if (!inserted) {
      // A crash between two halves of a replace: the newer version wins.
      std::uint32_t other = it->second;
      std::uint32_t loser = ent(other).seq > r.seq ? e : other;
      if (loser == other) it->second = e;
      if (loser != e) {
        inodes_.erase(ent(other).ino);
        ort.entries--;
        ort.bytes -= ent(other).size;
        bytes_used_ -= ent(other).size;
      }
      discard_record(loser);
      if (loser == e) continue;
    }
    ort.entries++;
    ort.bytes += r.size;
    bytes_used_ += r.size;
    inodes_.emplace(r.ino, Ref{false, e});
    h.next_ino = std::max(h.next_ino, r.ino + 1);
    layout::ObjectRecord& orec = obj(r.object);
    orec.next_seq = std::max(orec.next_seq, r.seq + 1);
  }
  for (std::uint32_t o = static_cast<std::uint32_t>(h.object_hwm); o-- > 0;) {
    if (obj(o).ino == 0) free_objects_.push_back(o);
  }
  for (std::uint32_t e = static_cast<std::uint32_t>(h.entry_hwm); e-- > 0;) {
    if (ent(e).ino == 0) free_entries_.push_back(e);
  }
  if (!meta_->created()) {
    spdlog::info("store '{}': recovered {} objects, {} committed entries, {} bytes",
                 options_.name, objects_by_name_.size(), inodes_.size() - objects_by_name_.size(),
                 bytes_used_);
  }
}

// Frees a record during recovery, when no runtime state refers to it yet.
void Store::discard_record(std::uint32_t e) {
  os::SegmentFile::remove(MetaSegment::slot_name(options_.name, e));
  entry_rt_[e].segment = os::SegmentFile();
  layout::EntryRecord& r = ent(e);
  r.state = EntryState::kFree;
  r.ino = 0;
  xattr_blob::clear(meta_->entry_xattrs(e));
}

// ---------------------------------------------------------------------------------------------
// Lookups

const Store::Ref* Store::find(Ino ino) const {
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : &it->second;
}

int Store::object_at(Ino ino, std::uint32_t* o) const {
  if (ino == kRootIno) return EPERM;
  const Ref* ref = find(ino);
  if (ref == nullptr) return ENOENT;
  if (!ref->is_object) return ENOTDIR;
  *o = ref->index;
  return 0;
}

int Store::find_object(std::string_view name, std::uint32_t* o) const {
  auto it = objects_by_name_.find(std::string(name));
  if (it == objects_by_name_.end()) return ENOENT;
  *o = it->second;
  return 0;
}

bool Store::is_writer(std::uint32_t e, const Caller& caller) const {
  const pid_t tgid = entry_rt_[e].writer_tgid;
  return caller.pid == tgid || os::thread_group_of(caller.pid) == tgid;
}

void Store::commit_flushed(std::uint32_t o, std::string_view name, const Caller& caller) {
  if (obj(o).commit != CommitMode::kClose) return;
  ObjectRt& ort = object_rt_[o];
  auto [first, last] = name.empty() ? std::pair(ort.pending.begin(), ort.pending.end())
                                    : ort.pending.equal_range(name);
  std::vector<std::uint32_t> ready;
  for (auto it = first; it != last; ++it) {
    if (entry_rt_[it->second].flushed && !is_writer(it->second, caller)) {
      ready.push_back(it->second);
    }
  }
  // Oldest first, so that the newest write ends up holding the name.
  std::sort(ready.begin(), ready.end(), [this](auto a, auto b) { return ent(a).ino < ent(b).ino; });
  for (std::uint32_t e : ready) commit(e);
}

int Store::visible_entry(std::uint32_t o, std::string_view name, const Caller& caller,
                         std::uint32_t* e) {
  ObjectRt& ort = object_rt_[o];
  auto [first, last] = ort.pending.equal_range(name);
  std::optional<std::uint32_t> own;
  bool others_flushed = false;
  for (auto it = first; it != last; ++it) {
    if (is_writer(it->second, caller)) {
      if (!own || ent(it->second).ino > ent(*own).ino) own = it->second;
    } else if (entry_rt_[it->second].flushed) {
      others_flushed = true;
    }
  }
  if (own) {
    *e = *own;
    return 0;
  }
  if (others_flushed) commit_flushed(o, name, caller);
  auto it = ort.committed.find(name);
  if (it == ort.committed.end()) return ENOENT;
  *e = it->second;
  return 0;
}

int Store::lookup(Ino parent, std::string_view name, const Caller& caller, Attr* out) {
  if (int err = check_name(name); err != 0) return err == EINVAL ? ENOENT : err;
  std::lock_guard lock(mu_);
  std::uint32_t o;
  if (parent == kRootIno) {
    if (int err = find_object(name, &o); err != 0) return err;
    *out = object_attr(o);
    return 0;
  }
  if (int err = object_at(parent, &o); err != 0) return err;
  std::uint32_t e;
  if (int err = visible_entry(o, name, caller, &e); err != 0) return err;
  *out = entry_attr(e);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Attributes

Attr Store::root_attr() {
  const layout::StoreHeader& h = meta_->header();
  Attr a;
  a.ino = kRootIno;
  a.mode = S_IFDIR | h.root_mode;
  a.uid = h.root_uid;
  a.gid = h.root_gid;
  a.nlink = 2 + static_cast<std::uint32_t>(objects_by_name_.size());
  a.times = h.root_times;
  return a;
}

Attr Store::object_attr(std::uint32_t o) {
  const layout::ObjectRecord& r = obj(o);
  Attr a;
  a.ino = r.ino;
  a.mode = S_IFDIR | r.mode;
  a.uid = r.uid;
  a.gid = r.gid;
  a.nlink = 2;
  a.size = object_rt_[o].committed.size();
  a.times = r.times;
  return a;
}

Attr Store::entry_attr(std::uint32_t e) {
  const layout::EntryRecord& r = ent(e);
  Attr a;
  a.ino = r.ino;
  a.mode = S_IFREG | r.mode;
  a.uid = r.uid;
  a.gid = r.gid;
  a.size = r.size;
  a.nlink = r.state == EntryState::kZombie ? 0 : 1;
  a.times = r.times;
  a.immutable = r.state == EntryState::kCommitted || r.state == EntryState::kZombie;
  return a;
}

int Store::getattr(Ino ino, Attr* out) {
  std::lock_guard lock(mu_);
  if (ino == kRootIno) {
    *out = root_attr();
    return 0;
  }
  const Ref* ref = find(ino);
  if (ref == nullptr) return ENOENT;
  *out = ref->is_object ? object_attr(ref->index) : entry_attr(ref->index);
  return 0;
}

int Store::setattr(Ino ino, const SetAttr& change, std::optional<std::uint64_t> fh,
                   const Caller& caller, Attr* out) {
  std::lock_guard lock(mu_);
  std::uint32_t* mode;
  std::uint32_t* uid;
  std::uint32_t* gid;
  layout::Timestamps* times;
  std::optional<std::uint32_t> entry;
  if (ino == kRootIno) {
    layout::StoreHeader& h = meta_->header();
    mode = &h.root_mode, uid = &h.root_uid, gid = &h.root_gid, times = &h.root_times;
  } else {
    const Ref* ref = find(ino);
    if (ref == nullptr) return ENOENT;
    if (ref->is_object) {
      layout::ObjectRecord& r = obj(ref->index);
      mode = &r.mode, uid = &r.uid, gid = &r.gid, times = &r.times;
    } else {
      entry = ref->index;
      layout::EntryRecord& r = ent(*entry);
      mode = &r.mode, uid = &r.uid, gid = &r.gid, times = &r.times;
    }
  }
  if (change.size) {
    if (!entry) return EISDIR;
    // ftruncate on a replacing descriptor resizes the new version, not the inode's.
    if (fh) {
      const Handle* h;
      if (int err = entry_of_handle(*fh, &h); err != 0) return err;
      if (!h->writable) return EBADF;
      entry = h->entry;
    }
    layout::EntryRecord& r = ent(*entry);
    if (r.state != EntryState::kWrite || (!fh && !is_writer(*entry, caller))) return EPERM;
    if (*change.size > obj(r.object).block_size) return EFBIG;
    if (int err = resize(*entry, *change.size); err != 0) return err;
    entry_rt_[*entry].flushed = false;
    touch(r.times, true);
  }
  if (change.mode) *mode = *change.mode & 07777;
  if (change.uid) *uid = *change.uid;
  if (change.gid) *gid = *change.gid;
  if (change.atime_ns) times->atime_ns = *change.atime_ns;
  if (change.mtime_ns) times->mtime_ns = *change.mtime_ns;
  if (change.mode || change.uid || change.gid || change.atime_ns || change.mtime_ns) {
    touch(*times, false);
    if (entry) {
      sync_segment_owner(*entry);
    } else if (ino != kRootIno) {
      // An object's permissions narrow its entries' segment files.
      const std::uint32_t o = find(ino)->index;
      for (auto& [name, e] : object_rt_[o].committed) sync_segment_owner(e);
      for (auto& [name, e] : object_rt_[o].pending) sync_segment_owner(e);
    }
  }
  if (ino == kRootIno) {
    *out = root_attr();
  } else {
    const Ref* ref = find(ino);
    *out = ref->is_object ? object_attr(ref->index) : entry_attr(ref->index);
  }
  return 0;
}

int Store::readdir(Ino dir, const Caller& caller, std::vector<DirEntry>* out) {
  std::lock_guard lock(mu_);
  out->clear();
  if (dir == kRootIno) {
    for (auto& [name, o] : objects_by_name_) out->push_back({name, object_attr(o)});
    std::sort(out->begin(), out->end(), [](auto& a, auto& b) { return a.name < b.name; });
    return 0;
  }
  std::uint32_t o;
  if (int err = object_at(dir, &o); err != 0) return err == EPERM ? ENOTDIR : err;
  commit_flushed(o, {}, caller);
  for (auto& [name, e] : object_rt_[o].committed) out->push_back({name, entry_attr(e)});
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Objects

int Store::new_object_record(std::uint32_t* o) {
  layout::StoreHeader& h = meta_->header();
  if (!free_objects_.empty()) {
    *o = free_objects_.back();
    free_objects_.pop_back();
    return 0;
  }
  if (h.object_hwm >= h.max_objects) return ENOSPC;
  *o = static_cast<std::uint32_t>(h.object_hwm++);
  return 0;
}

int Store::mkdir(Ino parent, std::string_view name, mode_t mode, const Caller& caller,
                 Attr* out) {
  if (int err = check_name(name); err != 0) return err;
  std::lock_guard lock(mu_);
  if (parent != kRootIno) return find(parent) ? EPERM : ENOENT;
  if (objects_by_name_.contains(std::string(name))) return EEXIST;
  std::uint32_t o;
  if (int err = new_object_record(&o); err != 0) return err;
  layout::ObjectRecord& r = obj(o);
  r.capacity = options_.default_capacity;
  r.block_size = options_.default_block_size;
  r.next_seq = 1;
  r.entries_created = 0;
  const std::int64_t now = os::now_ns();
  r.times = {now, now, now};
  r.mode = mode & 07777;
  r.uid = caller.uid;
  r.gid = caller.gid;
  r.commit = CommitMode::kClose;
  set_name(r.name, name);
  xattr_blob::clear(meta_->object_xattrs(o));
  object_rt_[o] = ObjectRt();
  r.ino = meta_->header().next_ino++;  // last: the record is whole before it counts
  objects_by_name_.emplace(std::string(name), o);
  inodes_.emplace(r.ino, Ref{true, o});
  touch(meta_->header().root_times, true);
  *out = object_attr(o);
  return 0;
}

void Store::remove_object(std::uint32_t o) {
  // Zombies outlive their object: detach them so that the record can be reused.
  for (std::uint32_t e = 0; e < meta_->header().entry_hwm; ++e) {
    if (ent(e).ino != 0 && ent(e).object == o) ent(e).object = layout::kNoObject;
  }
  layout::ObjectRecord& r = obj(o);
  inodes_.erase(r.ino);
  objects_by_name_.erase(std::string(name_of(r.name)));
  object_rt_[o] = ObjectRt();
  r.ino = 0;
  free_objects_.push_back(o);
  touch(meta_->header().root_times, true);
}

int Store::rmdir(Ino parent, std::string_view name) {
  std::lock_guard lock(mu_);
  if (parent != kRootIno) return find(parent) ? ENOTDIR : ENOENT;
  std::uint32_t o;
  if (int err = find_object(name, &o); err != 0) return err;
  const ObjectRt& ort = object_rt_[o];
  if (!ort.committed.empty() || !ort.pending.empty()) return ENOTEMPTY;
  remove_object(o);
  return 0;
}

int Store::rename(Ino parent, std::string_view name, Ino new_parent, std::string_view new_name,
                  unsigned flags, const Caller& caller) {
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) return EINVAL;
  if (int err = check_name(new_name); err != 0) return err;
  std::lock_guard lock(mu_);
  if (parent == kRootIno && new_parent == kRootIno) {
    std::uint32_t o, target;
    if (int err = find_object(name, &o); err != 0) return err;
    if (name == new_name) return 0;
    if (find_object(new_name, &target) == 0) {
      if (flags & RENAME_NOREPLACE) return EEXIST;
      const ObjectRt& trt = object_rt_[target];
      if (!trt.committed.empty() || !trt.pending.empty()) return ENOTEMPTY;
      remove_object(target);
    }
    objects_by_name_.erase(std::string(name));
    objects_by_name_.emplace(std::string(new_name), o);
    set_name(obj(o).name, new_name);
    touch(obj(o).times, false);
    return 0;
  }
  if (parent == kRootIno || new_parent == kRootIno) return EPERM;  // no nesting
  std::uint32_t o, new_o;
  if (int err = object_at(parent, &o); err != 0) return err;
  if (int err = object_at(new_parent, &new_o); err != 0) return err;
  std::uint32_t e;
  if (int err = visible_entry(o, name, caller, &e); err != 0) return err;
  if (o != new_o) return EXDEV;
  if (ent(e).state != EntryState::kCommitted) return EBUSY;
  ObjectRt& ort = object_rt_[o];
  if (auto it = ort.committed.find(new_name); it != ort.committed.end()) {
    if (it->second == e) return 0;
    if (flags & RENAME_NOREPLACE) return EEXIST;
    std::uint32_t old = it->second;
    ort.committed.erase(it);
    retire(old);
  } else if (flags & RENAME_NOREPLACE) {
    auto [first, last] = ort.pending.equal_range(new_name);
    for (auto p = first; p != last; ++p) {
      if (is_writer(p->second, caller)) return EEXIST;
    }
  }
  ort.committed.erase(ort.committed.find(name));
  set_name(ent(e).name, new_name);
  ort.committed.emplace(std::string(new_name), e);
  touch(ent(e).times, false);
  touch(obj(o).times, true);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Entries

int Store::new_entry(std::uint32_t o, std::string_view name, mode_t mode, uid_t uid, gid_t gid,
                     const Caller& caller, std::uint32_t* out) {
  layout::ObjectRecord& orec = obj(o);
  ObjectRt& ort = object_rt_[o];
  if (ort.entries >= orec.capacity) return ENOSPC;
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
  if (!rt.segment.is_open()) {
    int err = os::SegmentFile::open(MetaSegment::slot_name(options_.name, e), &rt.segment);
    if (err != 0) {
      spdlog::error("store '{}': cannot open slot {}: {}", options_.name, e, std::strerror(err));
      return err == EMFILE || err == ENFILE ? ENOSPC : err;
    }
    if (int err2 = rt.segment.truncate(0); err2 != 0) return err2;  // a leftover file
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
  r.mode = mode & 07777;
  r.uid = uid;
  r.gid = gid;
  set_name(r.name, name);
  xattr_blob::clear(meta_->entry_xattrs(e));
  r.state = EntryState::kWrite;
  r.ino = h.next_ino++;  // last: the record is whole before it counts

  rt.readers = rt.writers = 0;
  rt.writer_tgid = os::thread_group_of(caller.pid);
  rt.flushed = false;
  rt.cache_primed = false;
  sync_segment_owner(e);
  ort.entries++;
  ort.pending.emplace(std::string(name), e);
  orec.entries_created++;
  inodes_.emplace(r.ino, Ref{false, e});
  *out = e;
  return 0;
}

int Store::sync_segment_owner(std::uint32_t e) {
  const layout::EntryRecord& r = ent(e);
  mode_t mode = r.mode & 0777;
  if (r.object != layout::kNoObject) {
    // Whoever cannot search the object through the mount cannot read its segments either.
    const std::uint32_t dir = obj(r.object).mode;
    if (!(dir & S_IXGRP)) mode &= ~0070u;
    if (!(dir & S_IXOTH)) mode &= ~0007u;
  }
  int err = entry_rt_[e].segment.set_owner(r.uid, r.gid, mode);
  if (err != 0) spdlog::warn("store '{}': slot {} owner: {}", options_.name, e, std::strerror(err));
  return err;
}

int Store::resize(std::uint32_t e, std::uint64_t size) {
  layout::EntryRecord& r = ent(e);
  EntryRt& rt = entry_rt_[e];
  if (size == r.size) return 0;
  if (size > r.size) {
    const std::uint64_t grow = size - r.size;
    if (bytes_used_ + grow > options_.memory_budget) return ENOSPC;
    if (int err = rt.segment.reserve(r.size, grow); err != 0) {
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
  r.seq = obj(o).next_seq++;
  touch(r.times, false);
  r.state = EntryState::kCommitted;
  entry_rt_[e].cache_primed = false;
  auto [it, inserted] = ort.committed.emplace(std::string(name_of(r.name)), e);
  if (!inserted) {
    std::uint32_t old = it->second;
    it->second = e;
    retire(old);
  }
  touch(obj(o).times, true);
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
  if (ent(e).state == EntryState::kZombie && rt.readers == 0 && rt.writers == 0) free_entry(e);
}

void Store::free_entry(std::uint32_t e) {
  layout::EntryRecord& r = ent(e);
  EntryRt& rt = entry_rt_[e];
  if (rt.segment.truncate(0) != 0) {
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

std::uint64_t Store::new_fh(std::uint32_t e, bool writable) {
  EntryRt& rt = entry_rt_[e];
  (writable ? rt.writers : rt.readers)++;
  const std::uint64_t fh = next_fh_++;
  handles_.emplace(fh, Handle{e, writable});
  return fh;
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
    std::lock_guard lock(mu_);
    if (parent == kRootIno) return EPERM;
    std::uint32_t o;
    if (int err = object_at(parent, &o); err != 0) return err;
    std::uint32_t existing;
    const bool exists = visible_entry(o, name, caller, &existing) == 0;
    if ((flags & O_EXCL) && (exists || object_rt_[o].pending.contains(name))) return EEXIST;
    if (!exists) {
      std::uint32_t e;
      if (int err = new_entry(o, name, mode, caller.uid, caller.gid, caller, &e); err != 0) {
        return err;
      }
      *attr = entry_attr(e);
      *out = OpenFile{new_fh(e, true), false, false};
      return 0;
    }
    *attr = entry_attr(existing);
  }
  // The name appeared between the kernel's lookup and this create: an ordinary open.
  return open(attr->ino, flags & ~(O_CREAT | O_EXCL), caller, out);
}

int Store::open(Ino ino, int flags, const Caller& caller, OpenFile* out) {
  std::lock_guard lock(mu_);
  const Ref* ref = find(ino);
  if (ref == nullptr) return ENOENT;
  if (ref->is_object) return EISDIR;
  const std::uint32_t e = ref->index;
  layout::EntryRecord& r = ent(e);
  EntryRt& rt = entry_rt_[e];
  const bool writable = (flags & O_ACCMODE) != O_RDONLY;
  switch (r.state) {
    case EntryState::kWrite:
      if (!is_writer(e, caller)) return ENOENT;
      if (writable && (flags & O_TRUNC)) {
        if (int err = resize(e, 0); err != 0) return err;
      }
      *out = OpenFile{new_fh(e, writable), false, false};
      return 0;
    case EntryState::kCommitted:
      if (writable) {
        if (!(flags & O_TRUNC)) return EPERM;
        // Atomic replace: a new version under the same name, written through the old inode's
        // descriptor, so it must bypass that inode's page cache.
        std::uint32_t fresh;
        if (int err = new_entry(r.object, name_of(r.name), r.mode, r.uid, r.gid, caller, &fresh);
            err != 0) {
          return err;
        }
        *out = OpenFile{new_fh(fresh, true), true, false};
        return 0;
      }
      *out = OpenFile{new_fh(e, false), false, rt.cache_primed};
      rt.cache_primed = true;
      return 0;
    case EntryState::kZombie:
      if (writable) return EPERM;
      *out = OpenFile{new_fh(e, false), false, rt.cache_primed};
      return 0;
    case EntryState::kFree:
      break;
  }
  spdlog::critical("store '{}': inode {} maps to free entry record {}", options_.name, ino, e);
  std::abort();
}

int Store::unlink(Ino parent, std::string_view name, const Caller& caller) {
  std::lock_guard lock(mu_);
  if (parent == kRootIno) {
    std::uint32_t o;
    return find_object(name, &o) == 0 ? EISDIR : ENOENT;
  }
  std::uint32_t o, e;
  if (int err = object_at(parent, &o); err != 0) return err;
  if (int err = visible_entry(o, name, caller, &e); err != 0) return err;
  ObjectRt& ort = object_rt_[o];
  if (ent(e).state == EntryState::kWrite) {
    drop_pending(e);
  } else {
    ort.committed.erase(ort.committed.find(name));
  }
  retire(e);
  touch(obj(o).times, true);
  return 0;
}

int Store::prepare_read(std::uint64_t fh, std::uint64_t offset, std::size_t size, IoSpan* out) {
  std::lock_guard lock(mu_);
  const Handle* h;
  if (int err = entry_of_handle(fh, &h); err != 0) return err;
  const std::uint64_t length = ent(h->entry).size;
  out->fd = entry_rt_[h->entry].segment.fd();
  out->offset = offset;
  out->length = offset >= length ? 0 : std::min<std::uint64_t>(size, length - offset);
  return 0;
}

int Store::prepare_write(std::uint64_t fh, std::uint64_t offset, std::size_t size, IoSpan* out) {
  std::lock_guard lock(mu_);
  const Handle* h;
  if (int err = entry_of_handle(fh, &h); err != 0) return err;
  if (!h->writable) return EBADF;
  const std::uint32_t e = h->entry;
  layout::EntryRecord& r = ent(e);
  if (r.state != EntryState::kWrite) return EPERM;
  const std::uint64_t limit = obj(r.object).block_size;
  if (offset >= limit) return EFBIG;
  const std::uint64_t length = std::min<std::uint64_t>(size, limit - offset);
  if (offset + length > r.size) {
    if (int err = resize(e, offset + length); err != 0) return err;
  }
  entry_rt_[e].flushed = false;
  touch(r.times, true);
  *out = IoSpan{entry_rt_[e].segment.fd(), offset, static_cast<std::size_t>(length)};
  return 0;
}

int Store::flush(std::uint64_t fh) {
  std::lock_guard lock(mu_);
  const Handle* h;
  if (int err = entry_of_handle(fh, &h); err != 0) return err;
  if (h->writable && ent(h->entry).state == EntryState::kWrite) entry_rt_[h->entry].flushed = true;
  return 0;
}

int Store::release(std::uint64_t fh) {
  std::lock_guard lock(mu_);
  auto it = handles_.find(fh);
  if (it == handles_.end()) return EBADF;
  const Handle h = it->second;
  handles_.erase(it);
  EntryRt& rt = entry_rt_[h.entry];
  layout::EntryRecord& r = ent(h.entry);
  if (!h.writable) {
    rt.readers--;
  } else if (--rt.writers == 0 && r.state == EntryState::kWrite) {
    if (obj(r.object).commit == CommitMode::kClose) {
      commit(h.entry);
    } else {
      // Explicit mode: the writer left without committing, so the entry never existed.
      drop_pending(h.entry);
      retire(h.entry);
      return 0;
    }
  }
  release_entry_if_unused(h.entry);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Extended attributes

int Store::getxattr(Ino ino, std::string_view name, std::string* value) {
  std::lock_guard lock(mu_);
  if (!is_user_name(name) || ino == kRootIno) return ENODATA;
  const Ref* ref = find(ino);
  if (ref == nullptr) return ENOENT;
  if (ref->is_object) {
    const layout::ObjectRecord& r = obj(ref->index);
    const ObjectRt& ort = object_rt_[ref->index];
    if (name == xattr::kCapacity) {
      *value = std::to_string(r.capacity);
    } else if (name == xattr::kBlockSize) {
      *value = std::to_string(r.block_size);
    } else if (name == xattr::kCommit) {
      *value = r.commit == CommitMode::kClose ? "close" : "explicit";
    } else if (name == xattr::kEntries) {
      *value = std::to_string(ort.committed.size());
    } else if (name == xattr::kBytes) {
      *value = std::to_string(ort.bytes);
    } else if (is_smos_name(name)) {
      return ENODATA;
    } else {
      return xattr_blob::get(meta_->object_xattrs(ref->index), name, value);
    }
    return 0;
  }
  const std::uint32_t e = ref->index;
  const layout::EntryRecord& r = ent(e);
  const EntryRt& rt = entry_rt_[e];
  if (name == xattr::kState) {
    switch (r.state) {
      case EntryState::kWrite: *value = "write"; break;
      case EntryState::kCommitted: *value = rt.readers > 0 ? "busy" : "idle"; break;
      case EntryState::kZombie: *value = "zombie"; break;
      case EntryState::kFree: return ENOENT;
    }
  } else if (name == xattr::kReaders) {
    *value = std::to_string(rt.readers);
  } else if (name == xattr::kSeq) {
    *value = std::to_string(r.seq);
  } else if (name == xattr::kSegment) {
    *value = rt.segment.path();
  } else if (is_smos_name(name)) {
    return ENODATA;
  } else {
    return xattr_blob::get(meta_->entry_xattrs(e), name, value);
  }
  return 0;
}

int Store::setxattr(Ino ino, std::string_view name, std::string_view value, int flags) {
  if (!is_user_name(name)) return ENOTSUP;
  std::lock_guard lock(mu_);
  if (ino == kRootIno) return EPERM;
  const Ref* ref = find(ino);
  if (ref == nullptr) return ENOENT;
  if (ref->is_object) {
    layout::ObjectRecord& r = obj(ref->index);
    if (name == xattr::kCapacity || name == xattr::kBlockSize) {
      auto number = name == xattr::kCapacity ? parse_count(trimmed(value)) : parse_size(value);
      if (!number || *number == 0) return EINVAL;
      if (r.entries_created > 0) return EBUSY;
      (name == xattr::kCapacity ? r.capacity : r.block_size) = *number;
    } else if (name == xattr::kCommit) {
      if (trimmed(value) == "close") {
        r.commit = CommitMode::kClose;
      } else if (trimmed(value) == "explicit") {
        r.commit = CommitMode::kExplicit;
      } else {
        return EINVAL;
      }
    } else if (is_smos_name(name)) {
      return EPERM;
    } else {
      return xattr_blob::set(meta_->object_xattrs(ref->index), name, value, flags);
    }
    touch(r.times, false);
    return 0;
  }
  const std::uint32_t e = ref->index;
  layout::EntryRecord& r = ent(e);
  if (name == xattr::kState) {
    const std::string_view state = trimmed(value);
    if (state != "idle") return EINVAL;
    if (r.state == EntryState::kWrite) commit(e);
    return r.state == EntryState::kZombie ? EPERM : 0;
  }
  if (is_smos_name(name)) return EPERM;
  if (r.state != EntryState::kWrite) return EPERM;
  if (int err = xattr_blob::set(meta_->entry_xattrs(e), name, value, flags); err != 0) return err;
  touch(r.times, false);
  return 0;
}

int Store::listxattr(Ino ino, std::string* names) {
  std::lock_guard lock(mu_);
  names->clear();
  if (ino == kRootIno) return 0;
  const Ref* ref = find(ino);
  if (ref == nullptr) return ENOENT;
  auto add = [names](std::string_view n) {
    names->append(n);
    names->push_back('\0');
  };
  if (ref->is_object) {
    for (const char* n : {xattr::kCapacity, xattr::kBlockSize, xattr::kCommit, xattr::kEntries,
                          xattr::kBytes}) {
      add(n);
    }
    xattr_blob::list(meta_->object_xattrs(ref->index), names);
  } else {
    for (const char* n : {xattr::kState, xattr::kReaders, xattr::kSeq, xattr::kSegment}) add(n);
    xattr_blob::list(meta_->entry_xattrs(ref->index), names);
  }
  return 0;
}

int Store::removexattr(Ino ino, std::string_view name) {
  if (!is_user_name(name)) return ENOTSUP;
  std::lock_guard lock(mu_);
  if (ino == kRootIno) return EPERM;
  const Ref* ref = find(ino);
  if (ref == nullptr) return ENOENT;
  if (is_smos_name(name)) return EPERM;
  if (ref->is_object) return xattr_blob::remove(meta_->object_xattrs(ref->index), name);
  if (ent(ref->index).state != EntryState::kWrite) return EPERM;
  return xattr_blob::remove(meta_->entry_xattrs(ref->index), name);
}

StoreStats Store::stats() {
  std::lock_guard lock(mu_);
  const layout::StoreHeader& h = meta_->header();
  return StoreStats{options_.memory_budget, bytes_used_, h.max_entries,
                    free_entries_.size() + (h.max_entries - h.entry_hwm)};
}

}  // namespace smos
