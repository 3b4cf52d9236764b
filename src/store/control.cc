// The control files of every object: .push, .pop and .latest.
//
// A lookup of .push or .pop yields a ticket: an inode of its own that open() binds to one entry.
// The kernel keeps a page cache and attributes per inode, so a ticket per open keeps two pops
// (or two pushes) from ever sharing cached bytes. A thread's unopened ticket is handed out again
// by its next lookup, so a loop of opens costs one lookup each.
//
// A lookup of .latest yields an alias: a ticket bound at lookup, for good, to the newest
// committed entry. The kernel may cache the name, so reading .latest costs one open; an open of
// an alias whose entry is no longer the newest fails with ESTALE, and the kernel's path walk
// comes back for the new alias. A commit also has the kernel drop the name (latest_moved()), so
// that stat(2) follows. An empty object's .latest is a ticket that no open binds.
#include <fcntl.h>
#include <sys/stat.h>

#include <cinttypes>
#include <cstdio>

#include "store/detail.h"
#include "store/store.h"

namespace smos {

using namespace detail;
using layout::EntryState;

int Store::control_kind(std::string_view name) {
  static_assert(static_cast<int>(Control::kPush) == 0 && static_cast<int>(Control::kPop) == 1 &&
                static_cast<int>(Control::kLatest) == 2);
  if (name == control::kPush) return 0;
  if (name == control::kPop) return 1;
  if (name == control::kLatest) return 2;
  return -1;
}

Attr Store::ticket_attr(Ino ino, const Ticket& t) {
  Attr a;
  if (t.alias) {
    a = entry_attr(*t.entry);  // its entry lives as long as the alias
    a.ino = ino;
    a.stable_name = true;
    return a;
  }
  if (t.entry) {
    a = entry_attr(*t.entry);
    a.immutable = false;  // the same inode stands for another entry after the next open
  } else if (t.object != layout::kNoObject) {
    a = object_attr(t.object);
    a.mode = S_IFREG | (a.mode & 0666);
    a.size = 0;
    a.nlink = 1;
    if (t.kind == Control::kPush) {  // what an open of it makes: see open_ticket()
      a.uid = t.uid;
      a.gid = t.gid;
    }
  } else {
    a.mode = S_IFREG;
  }
  a.ino = ino;
  a.stable_name = false;  // each lookup may hand out another ticket
  a.ticket = true;
  return a;
}

int Store::lookup_control(std::uint32_t o, int kind, const Caller& caller, Attr* out) {
  ObjectRt& ort = object_rt_[o];
  const Control control = static_cast<Control>(kind);
  if (control == Control::kLatest) {
    if (!ort.by_seq.empty()) {
      const Ino alias = latest_alias(o, ort.by_seq.rbegin()->second);
      Ticket& t = tickets_.at(alias);
      t.lookups++;
      *out = ticket_attr(alias, t);
      return 0;
    }
    // An empty object's .latest still exists, as a ticket that no open binds (see open_ticket).
  }
  const pid_t tid = control == Control::kLatest ? 0 : caller.pid;  // nothing binds .latest's
  Ino fresh = 0;
  Ino& ino = handed_out_again(control, tid) ? ort.idle_tickets[{control, tid}] : fresh;
  if (ino == 0) {
    ino = meta_->header().next_ino++;
    tickets_.emplace(ino, Ticket{o, control, tid, std::nullopt});
  }
  Ticket& t = tickets_.at(ino);
  t.lookups++;
  t.uid = caller.uid;
  t.gid = new_entry_gid(o, caller);
  *out = ticket_attr(ino, t);
  return 0;
}

std::optional<std::uint32_t> Store::claim_oldest(std::uint32_t o, const Caller& caller) {
  for (auto [seq, e] : object_rt_[o].by_seq) {
    if (entry_rt_[e].readers > 0 || !permits(ent(e), caller, R_OK) || !may_unname(o, e, caller)) {
      continue;
    }
    name_changed(o, e);
    unname(e);
    ent(e).state = EntryState::kZombie;  // nameless, alive for its one reader
    touch(ent(e).times, false);
    touch(obj(o).times, true);
    return e;
  }
  return std::nullopt;
}

// The alias of .latest for entry `e`, the object's newest.
Ino Store::latest_alias(std::uint32_t o, std::uint32_t e) {
  ObjectRt& ort = object_rt_[o];
  if (ort.latest_alias == 0) {
    ort.latest_alias = meta_->header().next_ino++;
    Ticket t{o, Control::kLatest, 0, e};
    t.alias = true;
    tickets_.emplace(ort.latest_alias, t);
    entry_rt_[e].aliases++;
  }
  return ort.latest_alias;
}

// The newest entry of the object changed: a cached .latest is stale.
void Store::latest_moved(std::uint32_t o) {
  ObjectRt& ort = object_rt_[o];
  if (ort.latest_alias == 0) return;
  ort.latest_alias = 0;
  if (name_listener_) {
    completions_.push_back([this, parent = obj(o).ino] {
      name_listener_(parent, std::string(control::kLatest));
    });
  }
}

bool Store::alias_is_newest(const Ticket& t) const {
  if (t.object == layout::kNoObject) return false;
  const ObjectRt& ort = object_rt_[t.object];
  return !ort.by_seq.empty() && ort.by_seq.rbegin()->second == *t.entry;
}

// The ticket stands for entry `e` from now on; it is no longer idle.
void Store::bind_ticket(Ino ino, Ticket& t, std::uint32_t e) {
  auto& idle = object_rt_[t.object].idle_tickets;
  if (auto it = idle.find({t.kind, t.tid}); it != idle.end() && it->second == ino) idle.erase(it);
  t.entry = e;
}

// A popped entry, served by passthrough if it is large. A small one is stored in the ticket's
// page cache before the reply (`cache_fill`), so that reading it costs no request. Or else the
// ticket's size in the kernel is the one lookup() gave (0), so reads go direct (the kernel would
// otherwise ask for the size first). Either way its cached attributes are stale (`rebound`) for
// fstat(2).
OpenFile Store::open_popped(Ino ino, Ticket& t, std::uint32_t e) {
  const int backing = backing_of(e);
  const std::uint64_t size = ent(e).size;
  const bool fill = backing == 0 && size <= kMaxCacheFill;
  bind_ticket(ino, t, e);
  t.handles++;
  OpenFile file{new_fh(e, false, ino, backing), !fill, fill, true};
  file.backing_id = backing;
  if (fill) file.cache_fill = IoSpan{entry_rt_[e].segment.fd(), 0, size};
  return file;
}

int Store::open_ticket(Ino ino, Ticket& t, int flags, const Caller& caller, OpenFile* out,
                       Waiter* waiter) {
  if (t.object == layout::kNoObject) return ENOENT;
  const std::uint32_t o = t.object;
  const bool writable = (flags & O_ACCMODE) != O_RDONLY;

  // Every path walk looks a ticket up for itself, so an open push's or pop's ticket is opened
  // again only through /proc/self/fd/N. Its inode is that entry's (its attributes and xattrs,
  // and a pop's page cache or backing file): fail before anything is created or claimed.
  const bool reopened = t.kind != Control::kLatest && t.handles > 0;
  if (t.kind == Control::kPush) {
    if (!writable) return EPERM;
    if (reopened) return EBUSY;
    // The kernel checked the ticket, which shows the caller as its owner: a push makes a name
    // in the object, which takes the object's write permission.
    if (!permits(obj(o), caller, W_OK)) return EACCES;
    // A seq whose name someone took by hand (a cp of another queue's entries) is skipped:
    // this push must not replace that entry when it commits.
    std::uint64_t seq = obj(o).next_seq;
    char name[control::kSeqNameWidth + 1];
    const ObjectRt& ort = object_rt_[o];
    for (;; ++seq) {
      std::snprintf(name, sizeof name, "%0*" PRIu64, static_cast<int>(control::kSeqNameWidth),
                    seq);
      if (!ort.committed.contains(name) && !ort.pending.contains(name)) break;
    }
    std::uint32_t e;
    if (int err = new_entry(o, name, obj(o).mode & 0666, caller.uid, new_entry_gid(o, caller), caller, &e);
        err != 0) {
      return err;
    }
    ent(e).seq = seq;  // reserved now, so that the name is known before the commit
    obj(o).next_seq = seq + 1;
    entry_rt_[e].pushed = true;
    bind_ticket(ino, t, e);
    t.handles++;
    // lookup() said the ticket was empty, the caller's, with the object's mode. So is a new
    // entry, unless typed tracks give it its full size at birth.
    *out = OpenFile{new_fh(e, true, ino), true, false, ent(e).size != 0};
    return 0;
  }

  if (writable) return EPERM;
  if (reopened) return EBUSY;
  if (t.kind == Control::kLatest) {
    if (!t.alias) {
      // The path walk that led here found the object empty. If it is not any more, walking
      // again finds its newest entry.
      return object_rt_[o].by_seq.empty() ? ENOENT : ESTALE;
    }
    // A newer entry came since the kernel looked this alias up: ESTALE, and the path walk comes
    // back for the newer alias. If that one too is overtaken before its open, the open is served
    // anyway: the walk found it newest during this very open(2), and the kernel would not retry
    // again.
    const bool retry = came_back(o, caller);
    if (!alias_is_newest(t) && !retry) return send_back(o, caller);
    const std::uint32_t e = *t.entry;
    // Bound for good and never written: all its opens agree on passthrough, and what the page
    // cache holds is this entry's.
    const int backing = backing_of(e);
    t.handles++;
    *out = OpenFile{new_fh(e, false, ino, backing), false, true};
    out->backing_id = backing;
    return 0;
  }
  // A pop reads the entry and removes its name: it takes the object's write permission (which
  // the kernel checked only for a read of the ticket), and skips entries the caller may not read.
  if (!permits(obj(o), caller, W_OK)) return EACCES;
  if (std::optional<std::uint32_t> e = claim_oldest(o, caller)) {
    *out = open_popped(ino, t, *e);
    return 0;
  }
  if ((flags & O_NONBLOCK) || waiter == nullptr) return EAGAIN;
  if (waiter->interrupted && waiter->interrupted()) return EINTR;
  if (waiters_fail_with_ != 0) return waiters_fail_with_;
  waiters_.emplace(waiter->id, QueuedWaiter{ino, caller, std::move(waiter->done)});
  object_rt_[o].pop_waiters.push_back(waiter->id);
  t.handles++;  // the waiting open holds the ticket
  return EINPROGRESS;
}

void Store::serve_pop_waiters(std::uint32_t o) {
  ObjectRt& ort = object_rt_[o];
  // Oldest waiter first; one that may read none of the entries waits on, and the next is asked.
  for (auto id = ort.pop_waiters.begin(); id != ort.pop_waiters.end();) {
    auto w = waiters_.find(*id);
    if (w == waiters_.end()) {  // cancelled
      id = ort.pop_waiters.erase(id);
      continue;
    }
    std::optional<std::uint32_t> e = claim_oldest(o, w->second.caller);
    if (!e) {
      ++id;
      continue;
    }
    id = ort.pop_waiters.erase(id);
    QueuedWaiter waiter = std::move(w->second);
    waiters_.erase(w);
    Ticket& t = tickets_.at(waiter.ticket);
    t.handles--;  // open_popped() takes it again
    const OpenFile file = open_popped(waiter.ticket, t, *e);
    completions_.push_back([done = std::move(waiter.done), file] { done(0, file); });
  }
}

void Store::fail_pop_waiters(std::uint32_t o, int err) {
  for (std::uint64_t id : object_rt_[o].pop_waiters) {
    auto w = waiters_.find(id);
    if (w == waiters_.end()) continue;
    QueuedWaiter waiter = std::move(w->second);
    waiters_.erase(w);
    tickets_.at(waiter.ticket).handles--;
    completions_.push_back([done = std::move(waiter.done), err] { done(err, OpenFile{}); });
  }
  object_rt_[o].pop_waiters.clear();
}

void Store::fail_all_waiters(int err) {
  Guard guard(*this);
  waiters_fail_with_ = err;
  for (std::uint32_t o = 0; o < object_rt_.size(); ++o) {
    if (!object_rt_[o].pop_waiters.empty()) fail_pop_waiters(o, err);
  }
}

bool Store::cancel_wait(std::uint64_t id) {
  Guard guard(*this);
  auto w = waiters_.find(id);
  if (w == waiters_.end()) return false;
  const Ino ticket = w->second.ticket;
  waiters_.erase(w);
  tickets_.at(ticket).handles--;
  drop_ticket_if_unused(ticket);
  return true;
}

void Store::forget(Ino ino, std::uint64_t count) {
  Guard guard(*this);
  if (auto t = tickets_.find(ino); t != tickets_.end()) {
    t->second.lookups -= std::min(count, t->second.lookups);
    drop_ticket_if_unused(ino);
    return;
  }
  if (const Ref* ref = find(ino); ref != nullptr && !ref->is_object) {
    EntryRt& rt = entry_rt_[ref->index];
    rt.lookups -= std::min(count, rt.lookups);
    release_entry_if_unused(ref->index);
  }
}

// An unopened ticket that the kernel still knows is handed out again; one it forgot is gone.
void Store::drop_ticket_if_unused(Ino ino) {
  auto it = tickets_.find(ino);
  Ticket& t = it->second;
  if (t.handles > 0) return;
  if (t.alias) {
    if (t.lookups > 0) return;
    if (t.object != layout::kNoObject && object_rt_[t.object].latest_alias == ino) {
      object_rt_[t.object].latest_alias = 0;
    }
    const std::uint32_t e = *t.entry;
    tickets_.erase(it);
    entry_rt_[e].aliases--;
    release_entry_if_unused(e);
    return;
  }
  t.entry.reset();
  if (t.object == layout::kNoObject) {
    if (t.lookups == 0) tickets_.erase(it);
    return;
  }
  auto& idle = object_rt_[t.object].idle_tickets;
  auto slot = idle.find({t.kind, t.tid});
  if (t.lookups == 0) {
    if (slot != idle.end() && slot->second == ino) idle.erase(slot);
    tickets_.erase(it);
  } else if (slot == idle.end() && handed_out_again(t.kind, t.tid)) {
    idle.emplace(std::pair{t.kind, t.tid}, ino);
  }
}

}  // namespace smos
