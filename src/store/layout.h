// The persistent layout of a store's metadata segment.
//
// Everything here lives in shared memory and outlives the daemon: a restarted smosd reattaches
// to these tables and recovers from them. So every struct is plain data (no pointers, no
// virtuals), fixed in size, and checked below. The tables are allocated once, when the segment
// is created; the daemon never allocates from the segment afterwards, so a crash can never
// leave the segment allocator's lock held.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "smos/xattr.h"

namespace smos::layout {

inline constexpr std::uint64_t kMagic = 0x31534f4d53534d53ull;  // "SMSSMOS1"
// Bump whenever any struct below changes shape or meaning.
inline constexpr std::uint32_t kVersion = 3;
inline constexpr std::size_t kNameMax = 255;
inline constexpr std::uint32_t kNoObject = 0xffffffffu;
inline constexpr std::size_t kTracksMax = 1024;  // bytes of an object's canonical track layout
// The largest tables a store may have (--max-objects, --max-entries).
inline constexpr std::uint64_t kMaxObjectsLimit = 1u << 20;
inline constexpr std::uint64_t kMaxEntriesLimit = 1u << 24;

// The persisted part of an entry's lifecycle. "idle" and "busy" are both kCommitted: they
// differ only in the reader count, which lives in the daemon and restarts at zero.
enum class EntryState : std::uint32_t {
  kFree = 0,       // the record (and its slot file) is unused
  kWrite = 1,      // being written, visible only to its writer
  kCommitted = 2,  // immutable and visible to everyone
  kZombie = 3,     // unlinked or replaced, kept only for open handles
};

enum class CommitMode : std::uint32_t { kClose = 0, kExplicit = 1 };

struct Timestamps {
  std::int64_t atime_ns;
  std::int64_t mtime_ns;
  std::int64_t ctime_ns;
};

struct Name {
  std::uint16_t len;
  char bytes[kNameMax + 1];  // NUL-terminated for the logs' sake
};

// Free-form user.* attributes, packed as repeated [u8 name_len][u16 value_len][name][value].
// Every name is at least "user.x", so the cap allows at most kUserXattrCap / 6 attributes, and
// their headers fit in the room past the cap.
inline constexpr std::size_t kXattrRecordHeader = 3;
struct XattrBlob {
  std::uint32_t used;
  std::uint32_t reserved;
  char data[xattr::kUserXattrCap + xattr::kUserXattrCap / 6 * kXattrRecordHeader + 8];
};

struct ObjectRecord {
  std::uint64_t ino;  // 0 when the record is free
  std::uint64_t capacity;
  std::uint64_t block_size;
  std::uint64_t next_seq;  // the seq the next commit takes
  std::uint64_t entries_created;  // once non-zero, capacity and block_size are fixed
  Timestamps times;
  std::uint32_t mode;
  std::uint32_t uid;
  std::uint32_t gid;
  CommitMode commit;
  Name name;
  std::uint16_t tracks_len;  // 0: no typed layout
  char tracks[kTracksMax];   // canonical text, see tracks.h
};

struct EntryRecord {
  std::uint64_t ino;   // 0 when the record is free
  std::uint64_t seq;   // 0 until committed
  std::uint64_t size;  // bytes; the slot file is exactly this long
  Timestamps times;
  std::uint32_t object;  // index into the object table, kNoObject once detached
  EntryState state;
  std::uint32_t mode;
  std::uint32_t uid;
  std::uint32_t gid;
  std::uint32_t flags;  // kEntryClosed, kEntryFailed, kEntryReplaces
  Name name;
};

// EntryRecord::flags: a writer closed a descriptor of this write entry since its last write.
// In commit-on-close objects, recovery commits such an entry: a close(2) of it returned, and
// whether the kernel's (asynchronous) release was on its way was lost with the daemon.
inline constexpr std::uint32_t kEntryClosed = 1u << 0;
// A write or truncate of this write entry failed (EFBIG, ENOSPC, EIO), its writer was told,
// and it has not written since. If it is a replace or a push, no close commits it (see
// Store::failed()), nor does recovery.
inline constexpr std::uint32_t kEntryFailed = 1u << 1;
// This write entry was made to replace the committed version of its name.
inline constexpr std::uint32_t kEntryReplaces = 1u << 2;

struct StoreHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint64_t max_objects;
  std::uint64_t max_entries;
  std::uint64_t next_ino;      // inode numbers are never reused within a store
  std::uint64_t object_hwm;    // object records at or past this index were never used
  std::uint64_t entry_hwm;     // likewise for entry records
  std::int64_t objects_off;    // table offsets from the segment base
  std::int64_t entries_off;
  std::int64_t xattrs_off;     // max_entries blobs for entries, then max_objects for objects
  Timestamps root_times;
  std::uint32_t root_mode;
  std::uint32_t root_uid;
  std::uint32_t root_gid;
  std::uint32_t reserved;
};

template <typename T>
inline constexpr bool kIsSharedPod = std::is_trivially_copyable_v<T> && std::is_standard_layout_v<T>;

static_assert(kIsSharedPod<Timestamps> && sizeof(Timestamps) == 24);
static_assert(kIsSharedPod<Name> && sizeof(Name) == 258);
static_assert(kIsSharedPod<XattrBlob> && sizeof(XattrBlob) == 6016);
static_assert(kIsSharedPod<ObjectRecord> && sizeof(ObjectRecord) == 1368);
static_assert(kIsSharedPod<EntryRecord> && sizeof(EntryRecord) == 336);
static_assert(kIsSharedPod<StoreHeader> && sizeof(StoreHeader) == 120);
static_assert(alignof(EntryRecord) == 8 && alignof(ObjectRecord) == 8 && alignof(StoreHeader) == 8);

}  // namespace smos::layout
