#include "store/store.h"

#include <linux/capability.h>
#include <linux/fs.h>
#include <sys/stat.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "store/detail.h"
#include "store/xattr_blob.h"

namespace smos {

using namespace detail;
using layout::CommitMode;
using layout::EntryState;

// ---------------------------------------------------------------------------------------------
// Opening and recovery

Store::Store(StoreOptions options, std::unique_ptr<MetaSegment> meta)
    : options_(std::move(options)), meta_(std::move(meta)) {
  object_rt_.resize(meta_->header().max_objects);
  entry_rt_.resize(meta_->header().max_entries);
}

Store::~Store() = default;

Store::Guard::~Guard() {
  std::vector<std::function<void()>> due;
  due.swap(store_.completions_);
  lock_.unlock();
  for (auto& done : due) done();
}

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
  // Every field read back is checked or clamped: a crash may have torn a record, and nothing
  // else has vouched for them.
  h.next_ino = std::max<std::uint64_t>(h.next_ino, kRootIno + 1);
  for (std::uint32_t o = 0; o < h.object_hwm; ++o) {
    layout::ObjectRecord& r = obj(o);
    if (r.ino == 0) continue;
    if (r.ino == kRootIno || !recover_name(r.name) ||
        objects_by_name_.contains(std::string(name_of(r.name))) || inodes_.contains(r.ino)) {
      spdlog::warn("store '{}': dropping damaged object record {}", options_.name, o);
      r.ino = 0;
      continue;
    }
    std::string name(name_of(r.name));
    r.mode &= 07777;
    r.next_seq = std::max<std::uint64_t>(r.next_seq, 1);
    if (r.commit != CommitMode::kExplicit) r.commit = CommitMode::kClose;
    if (xattr_blob::repair(meta_->object_xattrs(o))) {
      spdlog::warn("store '{}': object '{}' had damaged user xattrs; kept the whole ones",
                   options_.name, name);
    }
    std::vector<Track> tracks;
    if (r.tracks_len > 0 &&
        parse_tracks(std::string_view(r.tracks, std::min<std::size_t>(r.tracks_len, layout::kTracksMax)),
                     &tracks) != 0) {
      spdlog::warn("store '{}': object '{}' has a damaged track layout; dropping it",
                   options_.name, name);
      r.tracks_len = 0;
    }
    object_rt_[o].tracks = std::move(tracks);
    objects_by_name_.emplace(std::move(name), o);
    inodes_.emplace(r.ino, Ref{true, o});
    h.next_ino = std::max(h.next_ino, r.ino + 1);
  }
  // Write entries whose writer closed a descriptor after its last write (kEntryClosed): that
  // close returned, and its release, which would have committed them if the close was the
  // last, was lost with the daemon. Commit them now, oldest first, after the committed
  // entries they may replace.
  std::vector<std::uint32_t> closed_writes;
  for (std::uint32_t e = 0; e < h.entry_hwm; ++e) {
    layout::EntryRecord& r = ent(e);
    if (r.ino == 0) continue;
    const bool attached = r.object < h.object_hwm && obj(r.object).ino != 0;
    const bool closed_write = attached && r.state == EntryState::kWrite && closed(e) &&
                              obj(r.object).commit == CommitMode::kClose;
    if ((r.state != EntryState::kCommitted && !closed_write) || !attached ||
        r.ino == kRootIno || r.seq == UINT64_MAX || !recover_name(r.name) ||
        inodes_.contains(r.ino)) {
      discard_record(e);  // other write entries, zombies and damage
      continue;
    }
    r.mode &= kEntryModeBits;
    if (xattr_blob::repair(meta_->entry_xattrs(e))) {
      spdlog::warn("store '{}': entry '{}' had damaged user xattrs; kept the whole ones",
                   options_.name, name_of(r.name));
    }
    EntryRt& rt = entry_rt_[e];
    int err = os::SegmentFile::open(MetaSegment::slot_name(options_.name, e), &rt.segment);
    rt.slot_owner_changed = true;  // who opened it before the restart is not known
    if (err != 0 || rt.segment.length() != static_cast<std::int64_t>(r.size)) {
      spdlog::warn("store '{}': entry '{}' lost its bytes; discarding it", options_.name,
                   name_of(r.name));
      discard_record(e);
      continue;
    }
    sync_segment_owner(e);  // as it was, unless a smosd that is not root reopened it
    if (closed_write) {
      closed_writes.push_back(e);
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
        ort.by_seq.erase({ent(other).seq, other});
        ort.entries--;
        ort.bytes -= ent(other).size;
        bytes_used_ -= ent(other).size;
      }
      discard_record(loser);
      if (loser == e) continue;
    }
    ort.by_seq.emplace(r.seq, e);
    ort.entries++;
    ort.bytes += r.size;
    bytes_used_ += r.size;
    inodes_.emplace(r.ino, Ref{false, e});
    h.next_ino = std::max(h.next_ino, r.ino + 1);
    layout::ObjectRecord& orec = obj(r.object);
    orec.next_seq = std::max(orec.next_seq, r.seq + 1);
  }
  std::sort(closed_writes.begin(), closed_writes.end(),
            [this](auto a, auto b) { return ent(a).ino < ent(b).ino; });
  for (std::uint32_t e : closed_writes) {
    layout::EntryRecord& r = ent(e);
    if (failed(e)) {  // as its release would have
      discard_record(e);
      continue;
    }
    ObjectRt& ort = object_rt_[r.object];
    ort.entries++;
    ort.bytes += r.size;
    bytes_used_ += r.size;
    inodes_.emplace(r.ino, Ref{false, e});
    h.next_ino = std::max(h.next_ino, r.ino + 1);
    obj(r.object).next_seq = std::max(obj(r.object).next_seq, r.seq + 1);
    ort.pending.emplace(std::string(name_of(r.name)), e);
    commit(e);
  }
  for (std::uint32_t o = static_cast<std::uint32_t>(h.object_hwm); o-- > 0;) {
    if (obj(o).ino == 0) free_objects_.push_back(o);
  }
  free_entries_.clear();  // commit() above freed what it replaced; list every free record once
  for (std::uint32_t e = static_cast<std::uint32_t>(h.entry_hwm); e-- > 0;) {
    if (ent(e).ino == 0) free_entries_.push_back(e);
  }
  if (!meta_->created()) {
    spdlog::info("store '{}': recovered {} objects, {} committed entries, {} bytes",
                 options_.name, objects_by_name_.size(), inodes_.size() - objects_by_name_.size(),
                 bytes_used_);
  }
  if (bytes_used_ > options_.memory_budget) {
    spdlog::warn("store '{}': its entries hold {} bytes, more than --memory ({}): nothing new "
                 "fits until enough are removed, and df shows the budget as full",
                 options_.name, bytes_used_, options_.memory_budget);
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
  if (ref == nullptr) return kStaleInode;
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

bool Store::permits(std::uint32_t mode, uid_t uid, gid_t gid, const Caller& caller, int want) {
  std::optional<os::ThreadInfo> info;
  const auto thread = [&]() -> const os::ThreadInfo& {
    if (!info) info = os::thread_info(caller.pid);
    return *info;
  };
  const auto grants = [&](int shift) { return ((mode >> shift) & want) == static_cast<unsigned>(want); };
  bool granted;
  if (caller.uid == uid) {
    granted = grants(6);
  } else if (grants(3) == grants(0)) {
    granted = grants(0);  // no need to know the caller's groups
  } else {
    granted = grants(caller.gid == gid || thread().in_group(gid) ? 3 : 0);
  }
  return granted || overrides(caller, thread(), (want & W_OK) ? CAP_DAC_OVERRIDE : CAP_DAC_READ_SEARCH);
}

bool Store::overrides(const Caller& caller, const os::ThreadInfo& thread, int cap) {
  // A thread /proc cannot show (another pid namespace's) is privileged if it is root.
  if (!thread.known) return caller.uid == 0;
  return thread.capable(cap) || thread.capable(CAP_DAC_OVERRIDE);
}

bool Store::may_unname(std::uint32_t o, std::uint32_t e, const Caller& caller) {
  const layout::ObjectRecord& object = obj(o);
  // A sticky object: only an entry's owner, the object's, or CAP_FOWNER may take its name away.
  if (!(object.mode & S_ISVTX) || caller.uid == ent(e).uid || caller.uid == object.uid) return true;
  return overrides(caller, os::thread_info(caller.pid), CAP_FOWNER);
}

gid_t Store::new_entry_gid(std::uint32_t o, const Caller& caller) {
  const layout::ObjectRecord& object = obj(o);
  return (object.mode & S_ISGID) ? object.gid : caller.gid;
}

bool Store::is_writer(std::uint32_t e, const Caller& caller) const {
  const pid_t tgid = entry_rt_[e].writer_tgid;
  // 0: callers outside smosd's pid namespace, which FUSE cannot name: they cannot be told
  // apart, so each counts as the writer of what any of them writes (smos.7, BUGS).
  return caller.pid == tgid || os::thread_group_of(caller.pid) == tgid;
}

std::optional<std::uint32_t> Store::own_pending(std::uint32_t o, std::string_view name,
                                                const Caller& caller) const {
  if (auto redirect = own_redirect(o, name, caller)) return redirect;
  std::optional<std::uint32_t> own;
  auto [first, last] = object_rt_[o].pending.equal_range(name);
  for (auto it = first; it != last; ++it) {
    const std::uint32_t e = it->second;
    if (entry_rt_[e].redirect_tid == 0 && is_writer(e, caller) &&
        (!own || meta_->entry(e).ino > meta_->entry(*own).ino)) {
      own = e;
    }
  }
  return own;
}

int Store::visible_entry(std::uint32_t o, std::string_view name, const Caller& caller,
                         std::uint32_t* e) {
  if (std::optional<std::uint32_t> own = own_pending(o, name, caller)) {
    *e = *own;
    return 0;
  }
  ObjectRt& ort = object_rt_[o];
  auto it = ort.committed.find(name);
  if (it == ort.committed.end()) return ENOENT;
  *e = it->second;
  return 0;
}

int Store::lookup(Ino parent, std::string_view name, const Caller& caller, Attr* out) {
  if (int err = check_name(name); err != 0) return err == EINVAL ? ENOENT : err;
  Guard guard(*this);
  std::uint32_t o;
  if (parent == kRootIno) {
    if (int err = find_object(name, &o); err != 0) return err;
    *out = object_attr(o);
    return 0;
  }
  if (int err = object_at(parent, &o); err != 0) return err;
  if (int kind = control_kind(name); kind >= 0) return lookup_control(o, kind, caller, out);
  // A thread that a replace sent back looks up the same name again, in the same open(2).
  // Looking up another one, it is not coming back for its redirect (the name it walked was
  // renamed meanwhile), which would only hold the object's room.
  if (!object_rt_[o].pending.empty()) drop_redirects_left_by(o, caller, name);
  std::uint32_t e;
  if (int err = visible_entry(o, name, caller, &e); err != 0) return err;
  entry_rt_[e].lookups++;
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
  a.stable_name = true;  // objects are named and renamed only through the mount
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
  a.stable_name = r.state == EntryState::kCommitted;
  return a;
}

void Store::set_name_listener(NameListener listener) {
  Guard guard(*this);
  name_listener_ = std::move(listener);
}

void Store::name_changed(std::uint32_t o, std::uint32_t old) {
  // Without a lookup reference the kernel holds no name for the inode: a pushed entry that
  // nobody looked up by name is popped without a word to the kernel.
  if (!name_listener_ || entry_rt_[old].lookups == 0) return;
  completions_.push_back([this, parent = obj(o).ino, name = std::string(name_of(ent(old).name))] {
    name_listener_(parent, name);
  });
}

int Store::send_back(std::uint32_t o, const Caller& caller) {
  auto& sent = object_rt_[o].sent_back;
  if (sent.size() >= 1024) sent.clear();  // threads that never came back
  sent[caller.pid] = os::monotonic_ns();
  return ESTALE;
}

bool Store::came_back(std::uint32_t o, const Caller& caller) {
  constexpr std::int64_t kRetryWindowNs = 1'000'000'000;  // the retry is one walk away
  auto& sent = object_rt_[o].sent_back;
  auto it = sent.find(caller.pid);
  if (it == sent.end()) return false;
  const bool recent = os::monotonic_ns() - it->second < kRetryWindowNs;
  sent.erase(it);
  return recent;
}

int Store::getattr(Ino ino, Attr* out) {
  Guard guard(*this);
  if (ino == kRootIno) {
    *out = root_attr();
    return 0;
  }
  if (auto t = tickets_.find(ino); t != tickets_.end()) {
    *out = ticket_attr(ino, t->second);
    return 0;
  }
  const Ref* ref = find(ino);
  if (ref == nullptr) return kStaleInode;
  *out = ref->is_object ? object_attr(ref->index) : entry_attr(ref->index);
  return 0;
}

int Store::setattr(Ino ino, const SetAttr& change, std::optional<std::uint64_t> fh,
                   const Caller& caller, Attr* out) {
  Guard guard(*this);
  if (change.size) {
    await_writes(guard, [&]() -> std::optional<std::uint32_t> {
      const Handle* h;
      if (tickets_.contains(ino)) {
        if (!fh || entry_of_handle(*fh, &h) != 0) return std::nullopt;
        return h->entry;
      }
      const Ref* ref = find(ino);
      if (ref == nullptr || ref->is_object) return std::nullopt;
      return ref->index;
    });
  }
  std::uint32_t* mode;
  std::uint32_t* uid;
  std::uint32_t* gid;
  layout::Timestamps* times;
  std::optional<std::uint32_t> entry;
  if (auto t = tickets_.find(ino); t != tickets_.end()) {
    // Nothing changes a control file, but an opened .push's writer may change its entry's
    // attributes as any writer may (cp -p does; fchmod and futimens come without a handle).
    if (fh) {
      const Handle* h;
      if (int err = entry_of_handle(*fh, &h); err != 0) return err;
      if (!h->writable) return EPERM;
      entry = h->entry;
    } else if (t->second.kind == Control::kPush && t->second.entry &&
               ent(*t->second.entry).state == EntryState::kWrite &&
               is_writer(*t->second.entry, caller)) {
      entry = t->second.entry;
    } else {
      return EPERM;
    }
    layout::EntryRecord& r = ent(*entry);
    mode = &r.mode, uid = &r.uid, gid = &r.gid, times = &r.times;
  } else if (ino == kRootIno) {
    layout::StoreHeader& h = meta_->header();
    mode = &h.root_mode, uid = &h.root_uid, gid = &h.root_gid, times = &h.root_times;
  } else {
    const Ref* ref = find(ino);
    if (ref == nullptr) return kStaleInode;
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
    const layout::EntryRecord& r = ent(*entry);
    if (r.state != EntryState::kWrite || (!fh && !is_writer(*entry, caller))) return EPERM;
    if (int err = set_size(*entry, *change.size); err != 0) return err;
  }
  if (change.mode) *mode = *change.mode & (entry ? kEntryModeBits : 07777);
  if (change.uid) *uid = *change.uid;
  if (change.gid) *gid = *change.gid;
  if (change.atime_ns) times->atime_ns = *change.atime_ns;
  if (change.mtime_ns) times->mtime_ns = *change.mtime_ns;
  if (change.mode || change.uid || change.gid || change.atime_ns || change.mtime_ns) {
    touch(*times, false);
    std::uint32_t o = layout::kNoObject;
    if (entry) {
      sync_segment_owner(*entry);
      o = ent(*entry).object;
    } else if (ino != kRootIno) {
      // An object's permissions narrow its entries' segment files.
      o = find(ino)->index;
      for (auto& [name, e] : object_rt_[o].committed) sync_segment_owner(e);
      for (auto& [name, e] : object_rt_[o].pending) sync_segment_owner(e);
    }
    // A waiting pop may now be let read an entry, or take its name.
    if ((change.mode || change.uid || change.gid) && o != layout::kNoObject) serve_pop_waiters(o);
  }
  if (auto t = tickets_.find(ino); t != tickets_.end()) {
    *out = ticket_attr(ino, t->second);
  } else if (ino == kRootIno) {
    *out = root_attr();
  } else {
    const Ref* ref = find(ino);
    *out = ref->is_object ? object_attr(ref->index) : entry_attr(ref->index);
  }
  return 0;
}

int Store::readdir(Ino dir, std::vector<DirEntry>* out) {
  Guard guard(*this);
  out->clear();
  if (dir == kRootIno) {
    for (auto& [name, o] : objects_by_name_) out->push_back({name, object_attr(o)});
    std::sort(out->begin(), out->end(), [](auto& a, auto& b) { return a.name < b.name; });
    return 0;
  }
  std::uint32_t o;
  if (int err = object_at(dir, &o); err != 0) return err == EPERM ? ENOTDIR : err;
  for (auto& [name, e] : object_rt_[o].committed) out->push_back({name, entry_attr(e)});
  // The control files come last, and with inode numbers above any entry's, for tools that sort
  // by inode: `rm -r` then meets them once the entries are gone (see Store::unlink).
  Attr control = object_attr(o);
  control.mode = S_IFREG | (control.mode & 0666);
  for (const char* name : {control::kLatest, control::kPop, control::kPush}) {
    control.ino = (1ull << 62) | (obj(o).ino << 2) | static_cast<Ino>(control_kind(name));
    out->push_back({name, control});
  }
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
  Guard guard(*this);
  if (parent != kRootIno) return find(parent) ? EPERM : kStaleInode;
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
  // Under a root with the set-group-ID bit, an object takes the root's group and the bit, as a
  // subdirectory does on Linux filesystems.
  const layout::StoreHeader& h = meta_->header();
  const bool setgid_root = (h.root_mode & S_ISGID) != 0;
  r.mode = (mode & 07777) | (setgid_root ? S_ISGID : 0);
  r.uid = caller.uid;
  r.gid = setgid_root ? h.root_gid : caller.gid;
  r.commit = CommitMode::kClose;
  r.tracks_len = 0;
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
  fail_pop_waiters(o, ENOENT);
  for (auto& [ino, ticket] : tickets_) {
    if (ticket.object == o) ticket.object = layout::kNoObject;
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
  Guard guard(*this);
  if (parent != kRootIno) return find(parent) ? ENOTDIR : kStaleInode;
  std::uint32_t o;
  if (int err = find_object(name, &o); err != 0) return err;
  if (holds_entries(o)) return ENOTEMPTY;
  remove_object(o);
  return 0;
}

int Store::rename(Ino parent, std::string_view name, Ino new_parent, std::string_view new_name,
                  unsigned flags, const Caller& caller) {
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) return EINVAL;
  if (int err = check_name(new_name); err != 0) return err;
  Guard guard(*this);
  if (parent == kRootIno && new_parent == kRootIno) {
    std::uint32_t o, target;
    if (int err = find_object(name, &o); err != 0) return err;
    if (name == new_name) return 0;
    if (find_object(new_name, &target) == 0) {
      if (flags & RENAME_NOREPLACE) return EEXIST;
      if (holds_entries(target)) return ENOTEMPTY;
      remove_object(target);
    }
    objects_by_name_.erase(std::string(name));
    objects_by_name_.emplace(std::string(new_name), o);
    set_name(obj(o).name, new_name);
    touch(obj(o).times, false);
    return 0;
  }
  if (parent == kRootIno) return EPERM;      // an object into an object: no nesting
  if (new_parent == kRootIno) return EXDEV;  // an entry out of its object: mv copies, and fails
  if (is_control_name(name) || is_control_name(new_name)) return EPERM;
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
    const std::uint32_t old = it->second;
    unname(old);
    retire(old);
  } else if (flags & RENAME_NOREPLACE) {
    auto [first, last] = ort.pending.equal_range(new_name);
    for (auto p = first; p != last; ++p) {
      if (is_writer(p->second, caller)) return EEXIST;
    }
  }
  unname(e);
  set_name(ent(e).name, new_name);
  ort.committed.emplace(std::string(new_name), e);
  ort.by_seq.emplace(ent(e).seq, e);
  touch(ent(e).times, false);
  touch(obj(o).times, true);
  return 0;
}

StoreStats Store::stats() {
  Guard guard(*this);
  const layout::StoreHeader& h = meta_->header();
  return StoreStats{options_.memory_budget, bytes_used_, h.max_entries,
                    free_entries_.size() + (h.max_entries - h.entry_hwm)};
}

}  // namespace smos
