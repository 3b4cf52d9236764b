// FUSE over io_uring (kernel 6.14+, protocol 7.42, fuse.enable_uring=1): the kernel hands each
// request to a ring entry of the queue that belongs to the requester's CPU, and takes the reply
// from the same entry. One worker thread, pinned to that CPU, serves each queue:
//  - a request and its reply cost no cross-CPU wake-up, and one io_uring_enter both answers a
//    request and waits for the next;
//  - a CPU's requests are served in the order the kernel queued them, so the release that a
//    close() queued is served before the closer's next request (a commit; see
//    Store::release). Except right after a handler parks its entry (below): the next request
//    can overtake those that reached the queue meanwhile.
// So no handler may wait for the kernel to answer another request (see op_flush).
// FORGET and INTERRUPT still come through /dev/fuse, and notifications go out through it.
//
// libfuse 3.14 knows nothing of this. A worker rebuilds each request as /dev/fuse would carry
// it and hands it to the dispatcher (fuse_session_process_buf); the reply that libfuse then
// writes reaches FuseChannel::writev, which gives it to reply(). A handler may answer later,
// from any thread (a pop that waits): its entry is parked until then, and the worker registers
// a fresh one meanwhile, so a queue never runs dry (see serve() for the kick that goes with it).
#pragma once

#include <linux/fuse.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace smos::os {

class FuseRing {
 public:
  // Serves one request: `request` holds fuse_in_header, then its arguments, as read(2) of
  // /dev/fuse would return them; `len` is the header's len.
  using Dispatch = std::function<void(char* request, std::size_t len)>;

  FuseRing();
  ~FuseRing();
  FuseRing(const FuseRing&) = delete;
  FuseRing& operator=(const FuseRing&) = delete;

  // Before the INIT reply offers FUSE_OVER_IO_URING: creates a ring for each possible CPU.
  // Returns false (see why_not()) when io_uring is unavailable, or smosd may not run on every
  // CPU; the mount then stays on /dev/fuse.
  bool prepare();
  // After the INIT reply: starts the workers, which register their entries with the kernel.
  // The kernel holds every request until each CPU's queue has an entry. `mountpoint` (an
  // absolute path) is where a kicker makes a request when it must (see serve()).
  void start(int dev_fd, std::size_t max_payload, Dispatch dispatch, std::string mountpoint);
  // Stops and joins the workers and closes the rings. Call once the mount is gone.
  void stop();

  // prepare() succeeded (and stays true).
  bool prepared() const { return !workers_.empty(); }
  // Why prepare() failed.
  const std::string& why_not() const { return why_not_; }
  // Whether a queue failed and stopped the daemon (with SIGTERM): it did not stop cleanly.
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  // Sends a reply (fuse_out_header, then its payload) through the entry of the request it
  // answers, and returns true; false if no ring request has that unique (nothing is done).
  bool reply(const iovec* iov, int count);
  // From a handler on a worker's thread: the next request of its queue, the release that the
  // answered close(2) queues, is served at once, not when the closer next blocks, if the queue
  // was watched() lately. Elsewhere it does nothing.
  static void serve_next_at_once() { next_at_once_ = true; }
  // A request of another CPU waited for a release of queue `qid` (and nudged its CPU): for the
  // next kEager, that queue's worker serves the releases of closes at once.
  void watched(unsigned qid);
  static constexpr std::chrono::seconds kEager{1};
  // Whether the request this thread serves may have overtaken requests of its own queue,
  // which wait in the kernel until it is answered (see serve()). False off the workers.
  static bool overtaking() { return overtaking_; }
  // Whether this thread serves a request of a ring queue.
  static bool serving() { return serving_ != nullptr; }
  // The queue whose request this thread serves, or -1.
  static int queue();

 private:
  struct Entry;
  struct Worker;

  void run(Worker& worker);
  // Registers another entry: 0, ENOMEM, or EBUSY when the kernel takes no more commands.
  // `overtakes`: it replaces a parked one (see serve()).
  int add_entry(Worker& worker, bool overtakes = false);
  void fill(Entry& entry, fuse_out_header out, const iovec* iov, int count);
  void commit(Worker& worker, Entry& entry);  // gives up if the kernel takes no more commands
  void serve(Worker& worker, Entry& entry);
  void request_kick(Worker& worker);
  void kick(Worker& worker);
  // Logs why this queue cannot go on, once, and stops the daemon.
  void give_up(Worker& worker, const char* what, int err);

  std::vector<std::unique_ptr<Worker>> workers_;
  int dev_fd_ = -1;
  bool own_dev_fd_ = false;  // dev_fd_ is a duplicate, closed by stop()
  std::size_t max_payload_ = 0;
  Dispatch dispatch_;
  std::string mountpoint_;
  std::atomic<bool> running_{false};  // between start() and stop()
  bool stopped_ = false;
  std::string why_not_;
  std::atomic<bool> failed_{false};
  std::mutex entries_mu_;  // guards entries_ (it only grows); orders stop() against replies
  std::vector<std::unique_ptr<Entry>> entries_;
  static thread_local Entry* serving_;  // the entry whose request this thread dispatches
  static thread_local bool next_at_once_;  // serve_next_at_once() during this dispatch
  static thread_local bool overtaking_;    // see overtaking()
};

}  // namespace smos::os
