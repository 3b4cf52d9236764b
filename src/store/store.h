// The object store: objects, entries, their lifecycle and their memory. No FUSE in sight.
//
// A Store owns one store's metadata segment and slot files. Every public method is safe to call
// from many threads at once and returns 0 or an errno value (see the table in smos(7)); out
// parameters are written only on success. Names and inode numbers come from the caller (the
// FUSE layer); handles (`fh`) are issued by create() and open() and must be released exactly
// once with release().
#pragma once

#include <sys/types.h>

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "os/process.h"
#include "os/segment.h"
#include "store/layout.h"
#include "store/meta.h"
#include "store/tracks.h"

namespace smos {

using Ino = std::uint64_t;
inline constexpr Ino kRootIno = 1;

// Who is asking, from the FUSE request context. `pid` may be a thread id.
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

struct StoreOptions {
  std::string name = "smos";
  std::uint64_t memory_budget = 1ull << 30;
  std::uint64_t default_capacity = 1024;
  std::uint64_t default_block_size = 1ull << 30;
  std::uint64_t max_objects = 1024;  // used only when the store is created
  std::uint64_t max_entries = 16384;  // likewise
  bool reset = false;
  // Entries smaller than this are read through the daemon, never by passthrough: a first
  // passthrough open registers the slot file, and freeing the entry then gives the slot a new
  // file. For a small entry that costs more (some 15 us a push and pop) than the one read
  // request it saves.
  std::uint64_t passthrough_min_size = 64 * 1024;
};

struct Attr {
  Ino ino = 0;
  mode_t mode = 0;  // including the file type bits
  uid_t uid = 0;
  gid_t gid = 0;
  std::uint64_t size = 0;
  std::uint32_t nlink = 1;
  layout::Timestamps times{};
  bool immutable = false;     // a committed entry: its attributes and bytes never change
  bool stable_name = false;   // the name -> inode binding may be cached (see name listener)
  bool ticket = false;        // a ticket: its attributes change only when open() rebinds it,
                              // which says so (OpenFile::rebound)
};

struct SetAttr {
  std::optional<mode_t> mode;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<std::uint64_t> size;
  std::optional<std::int64_t> atime_ns;
  std::optional<std::int64_t> mtime_ns;
};

struct DirEntry {
  std::string name;
  Attr attr;
};

// A byte range of a slot file, to be read or written outside the store's lock. The handle
// it came from keeps the slot alive.
struct IoSpan {
  int fd = -1;
  std::uint64_t offset = 0;
  std::size_t length = 0;
};

// An open file as the kernel should treat it.
struct OpenFile {
  std::uint64_t fh = 0;
  bool direct_io = false;   // bypass the page cache: writers, whose bytes go straight to the slot
  bool keep_cache = false;  // the page cache already holds exactly these committed bytes
  bool rebound = false;     // the inode now stands for another entry: its cached attributes
                            // in the kernel are stale
  int backing_id = 0;       // > 0: the kernel serves reads and mappings from this backing file
                            // (FUSE passthrough), registered through Store::BackingFiles
  IoSpan cache_fill{};      // bytes to store in the inode's page cache before the reply, which
                            // keeps it (a small pop): reading them costs no request
};

struct StoreStats {
  std::uint64_t memory_budget;
  std::uint64_t memory_used;
  std::uint64_t max_entries;
  std::uint64_t free_entries;
};

class Store {
 public:
  // Attaches to (and recovers) or creates the store named in `options`.
  static int open(const StoreOptions& options, std::unique_ptr<Store>* out, std::string* message);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Names and attributes.
  int lookup(Ino parent, std::string_view name, const Caller& caller, Attr* out);
  int getattr(Ino ino, Attr* out);
  // `fh` is the handle the kernel passed along (ftruncate), if any.
  int setattr(Ino ino, const SetAttr& change, std::optional<std::uint64_t> fh,
              const Caller& caller, Attr* out);
  // fallocate(2) through a writable handle: mode 0 grows its write entry to offset + length,
  // as ftruncate would (EFBIG past the block size, ENOSPC past the budget); any other mode is
  // EOPNOTSUPP.
  int fallocate(std::uint64_t fh, int mode, std::uint64_t offset, std::uint64_t length);
  int readdir(Ino dir, std::vector<DirEntry>* out);

  // Objects.
  int mkdir(Ino parent, std::string_view name, mode_t mode, const Caller& caller, Attr* out);
  int rmdir(Ino parent, std::string_view name);
  int rename(Ino parent, std::string_view name, Ino new_parent, std::string_view new_name,
             unsigned flags, const Caller& caller);

  // Entries.
  int create(Ino parent, std::string_view name, mode_t mode, int flags, const Caller& caller,
             Attr* attr, OpenFile* out);
  // A pop that finds nothing to claim, without O_NONBLOCK, queues `waiter` and returns
  // EINPROGRESS: `done` then runs exactly once, outside the store's lock, with the opened file
  // or an errno (ENOENT when the object is removed), unless cancel_wait(id) wins first. If
  // `interrupted` already says yes, open() fails with EINTR instead of queueing. Without a
  // waiter (or with O_NONBLOCK), such a pop fails with EAGAIN; after fail_all_waiters(err),
  // with err.
  struct Waiter {
    std::uint64_t id;  // unique, chosen by the caller
    std::function<bool()> interrupted;
    std::function<void(int err, const OpenFile& file)> done;
  };
  //
  // open(O_TRUNC) of a committed entry (a replace) fails with ESTALE, as the kernel's path walk
  // must come back for the new version: lookup() of the name by the same thread now returns it,
  // and its open succeeds.
  int open(Ino ino, int flags, const Caller& caller, OpenFile* out, Waiter* waiter = nullptr);
  // Whether an open of `ino` pops: it takes the oldest entry that no reader holds.
  bool pops(Ino ino);
  // Returns true if the waiter was still queued: its callback will never run.
  bool cancel_wait(std::uint64_t id);
  // Ends every waiting pop with `err`, and every pop that would wait from now on: the daemon
  // is stopping.
  void fail_all_waiters(int err);
  // The kernel dropped `count` references to `ino` taken by lookup().
  void forget(Ino ino, std::uint64_t count);
  int unlink(Ino parent, std::string_view name, const Caller& caller);
  // Clamps [offset, offset + size) to the entry.
  int prepare_read(std::uint64_t fh, std::uint64_t offset, std::size_t size, IoSpan* out);
  // Makes room for [offset, offset + size), clamped to block_size (a short write). The caller
  // then writes the span to its fd, and must call write_done() after, saying whether all of it
  // was written. Until then the write is in flight: a truncate or a commit of the entry waits
  // for it, and once the last write in flight is done, a failed one shrinks the entry back to
  // what the slot file really holds (never below what another write was told it wrote).
  int prepare_write(std::uint64_t fh, std::uint64_t offset, std::size_t size, IoSpan* out);
  void write_done(std::uint64_t fh, bool whole);
  // A name whose cached binding in the kernel no longer holds.
  struct StaleName {
    Ino parent = 0;
    std::string name;
  };
  // `closer` closed a descriptor of `fh`. If that makes a cached name stale, *stale says which,
  // and the close takes effect only when the caller reports with name_dropped() that the
  // kernel has forgotten the name.
  int flush(std::uint64_t fh, const Caller& closer, StaleName* stale = nullptr);
  void name_dropped(std::uint64_t fh);
  // Whether the release of `fh` will commit its entry, or in explicit mode discard it: the
  // handle is a writer's, and its entry is still being written.
  bool settles_at_release(std::uint64_t fh);
  int release(std::uint64_t fh);

  // Extended attributes.
  int getxattr(Ino ino, std::string_view name, std::string* value);
  int setxattr(Ino ino, std::string_view name, std::string_view value, int flags);
  int listxattr(Ino ino, std::string* names);
  int removexattr(Ino ino, std::string_view name);

  StoreStats stats();

  // FUSE passthrough: the kernel serves a reader from a slot file itself, once the file is
  // registered with it. Calls come under the store's lock.
  class BackingFiles {
   public:
    virtual ~BackingFiles() = default;
    virtual int open(int fd) = 0;  // an id > 0, or -errno
    virtual void close(int id) = 0;
  };
  // Without one (the default), or after it fails once, no open is answered with a backing file.
  void set_backing_files(BackingFiles* files);

  // Called, outside the store's lock, whenever a name that lookup() reported as stable stops
  // naming the inode it gave: a replace committed, a pop claimed it, or .latest moved on. The
  // listener has the kernel drop the name; correctness never waits for that (an open through
  // the stale name gets ESTALE), stat(2) does.
  using NameListener = std::function<void(Ino parent, const std::string& name)>;
  void set_name_listener(NameListener listener);

 private:
  // Popped entries up to this size go to the kernel's page cache at their open (open_popped()).
  static constexpr std::uint64_t kMaxCacheFill = 64 * 1024;
  struct Ref {
    bool is_object;
    std::uint32_t index;
  };
  // The kinds of ticket. A .latest ticket stands in for an empty object's newest entry.
  enum class Control : std::uint8_t { kPush, kPop, kLatest };
  // Whether a lookup hands out a thread's unopened ticket of this kind again. Callers from
  // outside smosd's pid namespace all come as pid 0, and two of them must not walk to one
  // ticket: each gets a new one.
  static bool handed_out_again(Control kind, pid_t tid) {
    return tid != 0 || kind == Control::kLatest;
  }
  struct ObjectRt {
    std::map<std::string, std::uint32_t, std::less<>> committed;  // name -> current version
    std::set<std::pair<std::uint64_t, std::uint32_t>> by_seq;     // (seq, entry), committed
    std::multimap<std::string, std::uint32_t, std::less<>> pending;  // name -> write entries
    std::uint64_t entries = 0;  // attached records in any state: what capacity counts
    std::uint64_t bytes = 0;
    std::vector<Track> tracks;  // parsed from the record
    std::map<std::pair<Control, pid_t>, Ino> idle_tickets;  // unopened tickets by thread
    Ino latest_alias = 0;  // the .latest the kernel may cache: a ticket bound at lookup
    std::map<pid_t, std::int64_t> sent_back;  // threads that a stale name sent back, and when
    std::deque<std::uint64_t> pop_waiters;  // waiter ids, oldest first; may hold cancelled ids
  };
  // A control file opened through a path: an inode of its own, bound to one entry at open.
  struct Ticket {
    std::uint32_t object;  // kNoObject once the object is gone
    Control kind;
    pid_t tid;
    std::optional<std::uint32_t> entry;
    std::uint64_t lookups = 0;  // kernel references
    std::uint32_t handles = 0;
    bool alias = false;  // a .latest alias: bound at lookup, for good
    // Who looked an unopened .push up, and owns what its open makes: the kernel checks fchmod
    // and futimens of the opened descriptor against the attributes the lookup gave.
    uid_t uid = 0;
    gid_t gid = 0;
  };
  struct QueuedWaiter {
    Ino ticket;
    Caller caller;
    std::function<void(int, const OpenFile&)> done;
  };
  struct EntryRt {
    std::uint32_t readers = 0;  // read-only handles
    std::uint32_t writers = 0;  // writable handles
    pid_t writer_tgid = 0;      // the process that created it
    bool cache_primed = false;  // the kernel's page cache holds only committed bytes
    bool pushed = false;        // created through .push
    bool written = false;       // bytes written or resized since it was created
    bool name_flushed = false;  // flush() had the kernel drop the name this write replaces
    bool replaced = false;      // a zombie because a newer version took its name
    std::uint64_t closed_at = 0;  // closes_ when a writer last closed it, or it committed
    pid_t redirect_tid = 0;     // a replace this thread has yet to open (see begin_replace())
    std::int64_t redirect_at = 0;  // when, by os::monotonic_ns()
    std::uint32_t cached_readers = 0;  // read handles of its own inode without passthrough
    std::uint32_t aliases = 0;         // .latest aliases bound to it: it lives while they do
    int backing_id = 0;                // registered as a backing file, or 0
    bool passthrough_used = false;     // served by passthrough: mappings may outlive handles
    std::uint64_t lookups = 0;  // references the kernel took through lookup() and create()
    std::uint32_t writes_in_flight = 0;  // between prepare_write() and write_done()
    bool short_write = false;            // one of them did not write all of its span
    os::SegmentFile segment;
    // Who could have opened the slot file since it was made, and may still hold it open: its
    // owner (unless it changed), and every bit its mode had. A later entry that they may not
    // read gets a new file (see new_entry()).
    uid_t slot_uid = 0;
    gid_t slot_gid = 0;
    bool slot_owner_changed = false;
    mode_t slot_modes = 0;
  };
  struct Handle {
    std::uint32_t entry;
    bool writable;
    Ino ticket;  // 0 unless opened through .push or .pop
    bool passthrough = false;
  };
  // Holds mu_; on destruction releases it, then runs the waiter callbacks that came due.
  class Guard {
   public:
    explicit Guard(Store& store) : store_(store), lock_(store.mu_) {}
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    // Releases mu_ until `cv` is notified. Whatever was looked up before must be looked up again.
    void wait(std::condition_variable& cv) { cv.wait(lock_); }

   private:
    Store& store_;
    std::unique_lock<std::mutex> lock_;
  };

  Store(StoreOptions options, std::unique_ptr<MetaSegment> meta);
  void recover();
  void discard_record(std::uint32_t e);

  layout::ObjectRecord& obj(std::uint32_t o) { return meta_->object(o); }
  layout::EntryRecord& ent(std::uint32_t e) { return meta_->entry(e); }
  const Ref* find(Ino ino) const;
  int object_at(Ino ino, std::uint32_t* o) const;
  int find_object(std::string_view name, std::uint32_t* o) const;
  bool is_writer(std::uint32_t e, const Caller& caller) const;
  // Whether `mode`, `uid` and `gid` grant `caller` the access `want` (R_OK, W_OK or both), as
  // the kernel's checks would: the bits of the caller's class, or CAP_DAC_OVERRIDE (and
  // CAP_DAC_READ_SEARCH for reading). Its supplementary groups and capabilities come from
  // /proc (os::thread_info), only when needed.
  static bool permits(std::uint32_t mode, uid_t uid, gid_t gid, const Caller& caller, int want);
  // Whether `caller`'s thread has capability `cap` (or CAP_DAC_OVERRIDE), as far as /proc shows.
  static bool overrides(const Caller& caller, const os::ThreadInfo& thread, int cap);
  // Whether `caller` may take entry `e`'s name away: a sticky object's rule, as unlink's.
  bool may_unname(std::uint32_t o, std::uint32_t e, const Caller& caller);
  // The group of a new entry that `caller` makes in object `o`: the object's when it has the
  // set-group-ID bit, as a directory's on Linux filesystems, or else the caller's.
  gid_t new_entry_gid(std::uint32_t o, const Caller& caller);
  template <typename Record>
  static bool permits(const Record& r, const Caller& caller, int want) {
    return permits(r.mode, r.uid, r.gid, caller, want);
  }
  // The version of `name` that `caller` sees: the one it is writing, or the committed one.
  int visible_entry(std::uint32_t o, std::string_view name, const Caller& caller,
                    std::uint32_t* e);
  // The caller's newest write entry of `name`, if it is writing one: the replace it is opening,
  // or else the newest one it opened.
  std::optional<std::uint32_t> own_pending(std::uint32_t o, std::string_view name,
                                           const Caller& caller) const;
  int begin_replace(std::uint32_t old, const Caller& caller);
  // A truncating open reached a version of `name` in `o` that was unlinked or popped (or freed)
  // since the kernel's lookup: ESTALE, and the kernel's retry looks the name up again. If it
  // was committed anew meanwhile, the retry would find that version, whose replace needs an
  // ESTALE of its own, which the kernel does not retry: so that replace is made now.
  int replace_made_anew(std::uint32_t o, std::string_view name, const Caller& caller);
  std::optional<std::uint32_t> own_redirect(std::uint32_t o, std::string_view name,
                                            const Caller& caller) const;
  // Drops the redirects of `o` that nobody will open: older than a replace's two opens could
  // be apart, or, with `check_threads` (where room is wanted), whose thread is gone.
  void drop_stale_redirects(std::uint32_t o, bool check_threads = false);
  // Drops the redirects of `caller`'s thread in `o` made for another name than `name`, which it
  // now looks up: the kernel's retry would have looked up the redirect's own name.
  void drop_redirects_left_by(std::uint32_t o, const Caller& caller, std::string_view name);
  void drop_redirects(const std::vector<std::uint32_t>& redirects);
  // Whether `o` holds entries (in any state), once stale redirects are dropped.
  bool holds_entries(std::uint32_t o);
  bool closed(std::uint32_t e) { return ent(e).flags & layout::kEntryClosed; }
  // Whether a close must not commit write entry `e`: a write or truncate of it failed, with
  // none made since, and it is a replace (which would put a truncated copy in the place of a whole one) or a push (a
  // message is whole or absent). A new named entry keeps what was accepted, as a file would.
  bool failed(std::uint32_t e) const;
  // Records the outcome of a write or truncate of write entry `e` (layout::kEntryFailed);
  // returns `err`.
  int wrote(std::uint32_t e, int err);
  void mark_closed(std::uint32_t e);

  Attr object_attr(std::uint32_t o);
  Attr entry_attr(std::uint32_t e);
  Attr root_attr();

  int new_object_record(std::uint32_t* o);
  int new_entry(std::uint32_t o, std::string_view name, mode_t mode, uid_t uid, gid_t gid,
                const Caller& caller, std::uint32_t* e);
  int abandon_new_entry(std::uint32_t e, int err);  // undoes new_entry, returns err
  void remove_object(std::uint32_t o);
  // Sets the entry's length. Growth is reserved with memory up to `written_from`; a write
  // backs the rest itself.
  int resize(std::uint32_t e, std::uint64_t size, std::uint64_t written_from = UINT64_MAX);
  void commit(std::uint32_t e);
  void drop_pending(std::uint32_t e);  // a write entry leaves its object's pending list
  void unname(std::uint32_t e);        // a committed entry leaves its object's name maps
  void retire(std::uint32_t e);  // the entry lost its name
  void release_entry_if_unused(std::uint32_t e);
  void name_changed(std::uint32_t o, std::uint32_t old);
  void free_entry(std::uint32_t e);
  // ftruncate of write entry `e` by its writer: the block size, a typed layout's size, and the
  // budget permitting. Counts as a write (see wrote()).
  int set_size(std::uint32_t e, std::uint64_t size);
  // The mode of an entry's segment file: the entry's, narrowed by its object's search bits,
  // and without write bits once it is committed.
  static mode_t segment_mode(mode_t entry_mode, std::optional<mode_t> object_mode, bool committed);
  // Gives entry `e`'s segment file its owner and segment_mode().
  int sync_segment_owner(std::uint32_t e);
  std::uint64_t new_fh(std::uint32_t e, bool writable, Ino ticket = 0, int backing_id = 0);
  // The entry's backing file id for a passthrough open, or 0 if there is none to be had (or
  // the entry is too small to be worth one).
  int backing_of(std::uint32_t e);
  int entry_of_handle(std::uint64_t fh, const Handle** out) const;

  // Control files (control.cc).
  static int control_kind(std::string_view name);  // -1, or a Control
  Attr ticket_attr(Ino ino, const Ticket& t);
  int lookup_control(std::uint32_t o, int kind, const Caller& caller, Attr* out);
  int open_ticket(Ino ino, Ticket& t, int flags, const Caller& caller, OpenFile* out,
                  Waiter* waiter);
  void bind_ticket(Ino ino, Ticket& t, std::uint32_t e);
  Ino latest_alias(std::uint32_t o, std::uint32_t e);
  void latest_moved(std::uint32_t o);
  // ESTALE from an open sends the kernel's path walk back for the current version of a name;
  // the kernel retries once. came_back() says whether this open is that retry (and forgets it).
  int send_back(std::uint32_t o, const Caller& caller);
  bool came_back(std::uint32_t o, const Caller& caller);
  // Whether the entry a .latest alias stands for is still the object's newest.
  bool alias_is_newest(const Ticket& t) const;
  OpenFile open_popped(Ino ino, Ticket& t, std::uint32_t e);
  std::optional<std::uint32_t> claim_oldest(std::uint32_t o, const Caller& caller);
  void serve_pop_waiters(std::uint32_t o);
  void fail_pop_waiters(std::uint32_t o, int err);
  void drop_ticket_if_unused(Ino ino);
  // The entry that an inode stands for: itself, or a ticket's bound entry. ENOENT otherwise.
  int resolve_entry(Ino ino, std::uint32_t* e) const;
  // What an xattr call on `ino` is about: an object (*object set) or an entry record.
  int xattr_target(Ino ino, const Ref** object, std::uint32_t* e);
  // Waits until no write of the entry that `entry()` names (if any) is in flight, so that a
  // truncate or a commit that follows, under the same Guard, never races a pwrite into the slot.
  void await_writes(Guard& guard, const std::function<std::optional<std::uint32_t>()>& entry);
  // entry_of_handle(), once no write of the handle's entry is in flight.
  int settled_handle(Guard& guard, std::uint64_t fh, const Handle** out);

  const StoreOptions options_;
  // Guards everything below, and all of the metadata segment. Slot files are read and written
  // outside it, by holders of a handle, which keeps the slot from being freed or reused.
  mutable std::mutex mu_;
  std::unique_ptr<MetaSegment> meta_;
  std::unordered_map<Ino, Ref> inodes_;
  std::unordered_map<std::string, std::uint32_t> objects_by_name_;
  std::vector<ObjectRt> object_rt_;
  std::vector<EntryRt> entry_rt_;
  std::vector<std::uint32_t> free_objects_;  // stacks: the most recently freed is reused first
  std::vector<std::uint32_t> free_entries_;
  std::unordered_map<std::uint64_t, Handle> handles_;
  std::uint64_t next_fh_ = 1;
  std::unordered_map<Ino, Ticket> tickets_;
  std::unordered_map<std::uint64_t, QueuedWaiter> waiters_;
  int waiters_fail_with_ = 0;  // set by fail_all_waiters(): no pop waits any more
  std::vector<std::function<void()>> completions_;  // run by ~Guard, outside mu_
  std::condition_variable writes_done_;  // an entry's last write in flight is done
  NameListener name_listener_;
  BackingFiles* backing_ = nullptr;
  std::uint64_t bytes_used_ = 0;
  std::uint64_t closes_ = 0;  // writers' closes and commits so far (EntryRt::closed_at)
  // The last named entries freed that the kernel had looked up, by inode: where a truncating
  // open that reaches one finds its name (see open()). A ring; strings keep their capacity.
  struct Freed {
    Ino ino = 0;
    Ino object = 0;  // its object's inode
    std::string name;
  };
  std::array<Freed, 64> freed_{};
  std::size_t next_freed_ = 0;
};

}  // namespace smos
