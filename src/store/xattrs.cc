// Extended attributes of objects and entries: the control surface of the store.
#include "store/store.h"

#include <sys/xattr.h>

#include <spdlog/spdlog.h>

#include "store/detail.h"
#include "store/xattr_blob.h"
#include "util/size.h"

namespace smos {

using namespace detail;
using layout::CommitMode;
using layout::EntryState;

// An opened .push or .pop stands for its bound entry; an unopened one has no attributes.
int Store::resolve_entry(Ino ino, std::uint32_t* e) const {
  auto t = tickets_.find(ino);
  if (t == tickets_.end() || !t->second.entry) return ENODATA;
  *e = *t->second.entry;
  return 0;
}

int Store::xattr_target(Ino ino, const Ref** object, std::uint32_t* e) {
  *object = nullptr;
  const Ref* ref = find(ino);
  if (ref == nullptr) return tickets_.contains(ino) ? resolve_entry(ino, e) : kStaleInode;
  if (ref->is_object) {
    *object = ref;
    return 0;
  }
  *e = ref->index;
  return 0;
}

int Store::getxattr(Ino ino, std::string_view name, std::string* value) {
  Guard guard(*this);
  if (!is_user_name(name)) return ENOTSUP;
  if (ino == kRootIno) return ENODATA;
  const Ref* ref;
  std::uint32_t e;
  if (int err = xattr_target(ino, &ref, &e); err != 0) return err;
  if (ref != nullptr) {
    const std::uint32_t o = ref->index;
    const layout::ObjectRecord& r = obj(o);
    if (name == xattr::kCapacity) {
      *value = std::to_string(r.capacity);
    } else if (name == xattr::kBlockSize) {
      *value = std::to_string(r.block_size);
    } else if (name == xattr::kCommit) {
      *value = r.commit == CommitMode::kClose ? "close" : "explicit";
    } else if (name == xattr::kEntries) {
      *value = std::to_string(object_rt_[o].committed.size());
    } else if (name == xattr::kBytes) {
      *value = std::to_string(object_rt_[o].bytes);
    } else if (name == xattr::kTracks && !object_rt_[o].tracks.empty()) {
      *value = format_tracks(object_rt_[o].tracks, false);
    } else if (is_smos_name(name)) {
      return ENODATA;
    } else {
      return xattr_blob::get(meta_->object_xattrs(o), name, value);
    }
    return 0;
  }

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
  } else if (name == xattr::kName) {
    *value = name_of(r.name);
  } else if (name == xattr::kTracks && r.object != layout::kNoObject &&
             !object_rt_[r.object].tracks.empty()) {
    *value = format_tracks(object_rt_[r.object].tracks, true);
  } else if (is_smos_name(name)) {
    return ENODATA;
  } else {
    return xattr_blob::get(meta_->entry_xattrs(e), name, value);
  }
  return 0;
}

int Store::setxattr(Ino ino, std::string_view name, std::string_view value, int flags) {
  if (!is_user_name(name)) return ENOTSUP;
  Guard guard(*this);
  if (ino == kRootIno) return EPERM;
  const Ref* ref;
  std::uint32_t e;
  if (name == xattr::kState) {  // a commit
    await_writes(guard, [&]() -> std::optional<std::uint32_t> {
      if (xattr_target(ino, &ref, &e) != 0 || ref != nullptr) return std::nullopt;
      return e;
    });
  }
  if (int err = xattr_target(ino, &ref, &e); err != 0) return err == ENODATA ? EPERM : err;
  if (ref != nullptr) {
    const std::uint32_t o = ref->index;
    layout::ObjectRecord& r = obj(o);
    ObjectRt& ort = object_rt_[o];
    if (name == xattr::kCapacity || name == xattr::kBlockSize || name == xattr::kCommit ||
        name == xattr::kTracks) {
      // The settings always have a value, but for an object's absent track layout.
      const bool exists = name != xattr::kTracks || !ort.tracks.empty();
      if ((flags & XATTR_CREATE) && exists) return EEXIST;
      if ((flags & XATTR_REPLACE) && !exists) return ENODATA;
    }
    if (name == xattr::kCapacity || name == xattr::kBlockSize) {
      auto number = name == xattr::kCapacity ? parse_count(trimmed(value))
                                             : parse_size(trimmed(value));
      if (!number || *number == 0) return EINVAL;
      if (r.entries_created > 0 || (name == xattr::kBlockSize && !ort.tracks.empty())) return EBUSY;
      (name == xattr::kCapacity ? r.capacity : r.block_size) = *number;
    } else if (name == xattr::kCommit) {
      if (trimmed(value) == "close") {
        r.commit = CommitMode::kClose;
      } else if (trimmed(value) == "explicit") {
        r.commit = CommitMode::kExplicit;
      } else {
        return EINVAL;
      }
    } else if (name == xattr::kTracks) {
      std::vector<Track> tracks;
      const std::string_view text = trimmed(value);
      if (!text.empty() && parse_tracks(text, &tracks) != 0) return EINVAL;
      const std::string canonical = format_tracks(tracks, false);
      if (canonical.size() > layout::kTracksMax) return EINVAL;
      if (r.entries_created > 0) return EBUSY;
      std::memcpy(r.tracks, canonical.data(), canonical.size());
      r.tracks_len = static_cast<std::uint16_t>(canonical.size());
      if (!tracks.empty()) {
        r.block_size = tracks_size(tracks);
      } else if (!ort.tracks.empty()) {
        r.block_size = options_.default_block_size;  // the layout's size was no one's choice
      }
      ort.tracks = std::move(tracks);
    } else if (is_smos_name(name)) {
      return EPERM;
    } else {
      return xattr_blob::set(meta_->object_xattrs(o), name, value, flags);
    }
    touch(r.times, false);
    return 0;
  }

  layout::EntryRecord& r = ent(e);
  if (name == xattr::kState) {
    if (flags & XATTR_CREATE) return EEXIST;  // an entry always has a state
    if (trimmed(value) != "idle") return EINVAL;
    if (r.state == EntryState::kZombie) return EPERM;
    // Committing may hand the entry straight to a blocked pop: check nothing after it.
    if (r.state == EntryState::kWrite) commit(e);
    return 0;
  }
  if (is_smos_name(name) || r.state != EntryState::kWrite) return EPERM;
  if (int err = xattr_blob::set(meta_->entry_xattrs(e), name, value, flags); err != 0) return err;
  touch(r.times, false);
  return 0;
}

int Store::listxattr(Ino ino, std::string* names) {
  Guard guard(*this);
  names->clear();
  if (ino == kRootIno) return 0;
  auto add = [names](std::string_view n) {
    names->append(n);
    names->push_back('\0');
  };
  const Ref* ref;
  std::uint32_t e;
  if (int err = xattr_target(ino, &ref, &e); err != 0) return err == ENODATA ? 0 : err;
  if (ref != nullptr) {
    for (const char* n : {xattr::kCapacity, xattr::kBlockSize, xattr::kCommit, xattr::kEntries,
                          xattr::kBytes}) {
      add(n);
    }
    if (!object_rt_[ref->index].tracks.empty()) add(xattr::kTracks);
    xattr_blob::list(meta_->object_xattrs(ref->index), names);
    return 0;
  }
  for (const char* n : {xattr::kState, xattr::kReaders, xattr::kSeq, xattr::kSegment, xattr::kName}) {
    add(n);
  }
  const std::uint32_t o = ent(e).object;
  if (o != layout::kNoObject && !object_rt_[o].tracks.empty()) add(xattr::kTracks);
  xattr_blob::list(meta_->entry_xattrs(e), names);
  return 0;
}

int Store::removexattr(Ino ino, std::string_view name) {
  if (!is_user_name(name)) return ENOTSUP;
  Guard guard(*this);
  if (ino == kRootIno || is_smos_name(name)) return EPERM;
  const Ref* ref;
  std::uint32_t e;
  if (int err = xattr_target(ino, &ref, &e); err != 0) return err == ENODATA ? EPERM : err;
  if (ref != nullptr) return xattr_blob::remove(meta_->object_xattrs(ref->index), name);
  if (ent(e).state != EntryState::kWrite) return EPERM;
  return xattr_blob::remove(meta_->entry_xattrs(e), name);
}

}  // namespace smos
