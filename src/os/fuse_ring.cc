#include "os/fuse_ring.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

#include <spdlog/spdlog.h>

#include "os/cpu.h"

namespace smos::os {

namespace {

// The kernel's ABI (include/uapi/linux/fuse.h, 7.42), newer than the headers this builds
// against.
constexpr std::uint32_t kCmdRegister = 1;        // FUSE_IO_URING_CMD_REGISTER
constexpr std::uint32_t kCmdCommitAndFetch = 2;  // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

struct EntInOut {  // struct fuse_uring_ent_in_out
  std::uint64_t flags;
  std::uint64_t commit_id;  // the request's unique
  std::uint32_t payload_sz;  // bytes in the payload buffer, either way
  std::uint32_t padding;
  std::uint64_t reserved;
};
struct ReqHeader {  // struct fuse_uring_req_header: iov[0] of a registration
  char in_out[128];  // fuse_in_header of a request, fuse_out_header of its reply
  char op_in[128];   // the request's first argument (its per-opcode struct), if any
  EntInOut ring_ent_in_out;
};
struct CmdReq {  // struct fuse_uring_cmd_req, in the SQE's command area
  std::uint64_t flags;
  std::uint64_t commit_id;
  std::uint16_t qid;
  std::uint8_t padding[6];
};
static_assert(sizeof(EntInOut) == 32);
static_assert(offsetof(ReqHeader, op_in) == 128 && offsetof(ReqHeader, ring_ent_in_out) == 256);
static_assert(sizeof(ReqHeader) == 288);
static_assert(sizeof(CmdReq) == 24 && offsetof(CmdReq, qid) == 16);
static_assert(sizeof(fuse_in_header) == 40 && sizeof(fuse_out_header) == 16);
static_assert(sizeof(fuse_in_header) <= sizeof(ReqHeader::in_out));

// A request is rebuilt in front of its payload: fuse_in_header, then op_in, then the payload,
// which the kernel wrote at kHeadroom into the entry's buffer.
constexpr std::size_t kHeadroom = 256;
static_assert(kHeadroom >= sizeof(fuse_in_header) + sizeof(ReqHeader::op_in));

constexpr std::uint64_t kWakeTag = 0;  // user_data of the read of a worker's eventfd
// A worker submits a few commands at a time (next_sqe() hands a full queue to the kernel). But
// every entry of its queue, and the eventfd read, may complete at once, and a queue gains an
// entry for each pop that waits: the completion queue has room for 4,095 entries, and past that
// the kernel keeps what overflows until the worker has reaped the rest (IORING_FEAT_NODROP).
constexpr unsigned kRingDepth = 64;
constexpr unsigned kCompletionDepth = 4096;

enum State : int {
  kWaiting,  // registered, or committed: the kernel may fill it
  kServing,  // its request is with the dispatcher
  kParked,   // the dispatcher returned without an answer; one will come from another thread
  kReplied,  // the answer is in the buffers, to be committed
};

// An online CPU of [0, count) that this process may not run on, if any. (Offline ones make no
// requests.)
std::optional<unsigned> forbidden_cpu(unsigned count) {
  cpu_set_t* allowed = CPU_ALLOC(count);
  const std::size_t size = CPU_ALLOC_SIZE(count);
  CPU_ZERO_S(size, allowed);
  std::optional<unsigned> forbidden;
  if (::sched_getaffinity(0, size, allowed) == 0) {  // if it fails, the pinning says so
    for (unsigned cpu : cpu_list("/sys/devices/system/cpu/online")) {
      if (cpu < count && !CPU_ISSET_S(cpu, size, allowed)) {
        forbidden = cpu;
        break;
      }
    }
  }
  CPU_FREE(allowed);
  return forbidden;
}

}  // namespace

thread_local FuseRing::Entry* FuseRing::serving_ = nullptr;
thread_local bool FuseRing::next_at_once_ = false;
thread_local bool FuseRing::overtaking_ = false;

struct FuseRing::Entry {
  explicit Entry(std::size_t max_payload)
      : length(kHeadroom + max_payload),
        buffer(static_cast<char*>(::mmap(nullptr, length, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0))) {}
  ~Entry() {
    if (buffer != MAP_FAILED) ::munmap(buffer, length);
  }
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;

  Worker* owner = nullptr;
  ReqHeader header{};
  // kHeadroom, then the payload. Mapped, so that only the pages a request uses cost memory:
  // each entry needs room for the largest request, and a parked one stays for good.
  const std::size_t length;
  char* const buffer;
  iovec iov[2]{};
  std::uint64_t commit_id = 0;  // the request it holds
  std::atomic<std::uint64_t> unique{0};  // the same while unanswered, else 0: what reply() looks for
  std::atomic<int> state{kWaiting};
  // Registered because another entry was parked: the first request it takes may overtake
  // requests stranded in the kernel's queue (see serve()). Its worker's alone.
  bool overtakes = false;
};

struct FuseRing::Worker {
  unsigned qid = 0;
  io_uring ring{};
  int wake_fd = -1;
  std::uint64_t wake_count = 0;
  int kick_fd = -1;  // a semaphore: each count is one kick for one kicker
  std::thread thread;
  std::mutex mu;  // guards ready, kickers and the change of kicking
  std::vector<Entry*> ready;  // answered from another thread while parked
  std::vector<std::thread> kickers;  // pinned with the worker; see request_kick()
  std::atomic<bool> kicking{true};   // until stop()
  std::atomic<int> idle_kickers{0};  // kickers waiting for a kick that none has claimed
  std::atomic<bool> gave_up{false};  // give_up() has stopped the daemon: serve nothing more
  std::atomic<std::chrono::steady_clock::rep> eager_until{0};  // see serve_next_at_once()
  bool preempts = false;  // runs SCHED_OTHER for now
};

FuseRing::FuseRing() = default;
FuseRing::~FuseRing() { stop(); }

bool FuseRing::prepare() {
  const unsigned queues = possible_cpus();
  if (queues == 0) {
    why_not_ = "cannot read /sys/devices/system/cpu/possible";
    return false;
  }
  // A queue's threads must run on its CPU (see kick()); requests from a CPU that smosd may not
  // run on would have no local worker and no kick.
  if (const std::optional<unsigned> cpu = forbidden_cpu(queues)) {
    why_not_ = "CPU " + std::to_string(*cpu) + " is outside smosd's CPU set";
    return false;
  }
  std::vector<std::unique_ptr<Worker>> workers;
  auto fail = [this, &workers](const char* what, int err) {
    why_not_ = std::string(what) + ": " + std::strerror(err);
    for (auto& w : workers) {
      io_uring_queue_exit(&w->ring);
      for (int fd : {w->wake_fd, w->kick_fd}) {
        if (fd >= 0) ::close(fd);
      }
    }
    return false;
  };
  for (unsigned q = 0; q < queues; ++q) {
    workers.push_back(std::make_unique<Worker>());
    Worker& w = *workers.back();
    w.qid = q;
    io_uring_params params{};
    // One thread submits to each ring, and runs its completions when it waits; the ring is
    // enabled from that thread (see run).
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                   IORING_SETUP_R_DISABLED | IORING_SETUP_CQSIZE;
    params.cq_entries = kCompletionDepth;
    if (int rc = io_uring_queue_init_params(kRingDepth, &w.ring, &params); rc < 0) {
      workers.pop_back();  // nothing of its ring to undo
      return fail("io_uring_setup", -rc);
    }
    w.wake_fd = ::eventfd(0, EFD_CLOEXEC);
    w.kick_fd = ::eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
    if (w.wake_fd < 0 || w.kick_fd < 0) return fail("eventfd", errno);
  }
  workers_ = std::move(workers);
  return true;
}

void FuseRing::start(int dev_fd, std::size_t max_payload, Dispatch dispatch,
                     std::string mountpoint) {
  // A descriptor of our own: libfuse closes its one when it unmounts, and the workers still
  // answer what reaches them until stop().
  dev_fd_ = ::fcntl(dev_fd, F_DUPFD_CLOEXEC, 0);
  if (dev_fd_ < 0) {
    spdlog::warn("FUSE ring: cannot duplicate /dev/fuse's descriptor ({}); answers after the "
                 "unmount will be lost",
                 std::strerror(errno));
    dev_fd_ = dev_fd;
  } else {
    own_dev_fd_ = true;
  }
  max_payload_ = max_payload;
  dispatch_ = std::move(dispatch);
  mountpoint_ = std::move(mountpoint);
  running_.store(true, std::memory_order_release);
  for (auto& w : workers_) {
    Worker* worker = w.get();
    worker->thread = std::thread([this, worker] { run(*worker); });
  }
  spdlog::info("FUSE ring: {} queues, one worker each, {} KiB payload per entry",
               workers_.size(), max_payload / 1024);
}

void FuseRing::stop() {
  if (stopped_ || workers_.empty()) return;
  stopped_ = true;
  // No more kicks; the idle kickers leave now.
  std::vector<std::thread> kickers;
  for (auto& w : workers_) {
    std::lock_guard lock(w->mu);
    w->kicking = false;
    ::eventfd_write(w->kick_fd, w->kickers.size());  // a semaphore: a count for each
    for (std::thread& k : w->kickers) kickers.push_back(std::move(k));
    w->kickers.clear();
  }
  {
    std::lock_guard lock(entries_mu_);
    running_.store(false, std::memory_order_release);
  }
  for (auto& w : workers_) {
    if (w->thread.joinable()) {
      ::eventfd_write(w->wake_fd, 1);
      w->thread.join();  // it submits the answers it holds
    }
  }
  // Closing a ring cancels its registrations. The entries stay until this object goes: the
  // kernel writes into them only from a worker's thread, and those are gone. Closing the last
  // descriptor of /dev/fuse (libfuse closed its own at the unmount) ends the connection, and
  // with it any request still waiting, a kick's too: only then are the kickers sure to return.
  for (auto& w : workers_) io_uring_queue_exit(&w->ring);
  if (own_dev_fd_) ::close(dev_fd_);
  for (std::thread& k : kickers) k.join();
  for (auto& w : workers_) {
    ::close(w->wake_fd);
    ::close(w->kick_fd);
  }
}

namespace {

// The next free submission entry. When the queue is full, what is queued goes to the kernel
// first; nullptr if the kernel keeps refusing it.
io_uring_sqe* next_sqe(io_uring* ring) {
  constexpr int kTries = 100;
  for (int i = 0; i < kTries; ++i) {
    if (io_uring_sqe* sqe = io_uring_get_sqe(ring)) return sqe;
    if (int rc = io_uring_submit(ring); rc < 0 && rc != -EINTR && rc != -EAGAIN) break;
    std::this_thread::yield();
  }
  return nullptr;
}

bool prep_command(io_uring* ring, int dev_fd, std::uint32_t op, void* tag, const iovec* iov,
                  std::uint64_t commit_id, unsigned qid) {
  io_uring_sqe* sqe = next_sqe(ring);
  if (sqe == nullptr) return false;
  std::memset(sqe, 0, 2 * sizeof *sqe);  // SQE128: the command area runs into the second half
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = dev_fd;
  sqe->cmd_op = op;
  sqe->addr = reinterpret_cast<std::uintptr_t>(iov);
  sqe->len = 2;
  sqe->user_data = reinterpret_cast<std::uintptr_t>(tag);
  const CmdReq req{0, commit_id, static_cast<std::uint16_t>(qid), {}};
  std::memcpy(sqe->cmd, &req, sizeof req);
  return true;
}

// A request wakes its queue's worker, on the CPU of the task that queued it. A synchronous
// request's task blocks at once, so the worker runs right away either way. An asynchronous one,
// the release that close() queues, would preempt the closing task in the middle of its run: two
// switches, for a reply nobody waits for. SCHED_BATCH does not preempt on wake-up, so such a
// request waits until the task blocks, which is usually in its next request, and both are served
// in one switch. Unlike SCHED_IDLE, it keeps the thread's full share of the CPU.
//
// But a release that commits an entry is awaited by every request made after the close (see
// release_order.h), other CPUs' too, and a closer that computes on would hold it back for a
// time slice, milliseconds. So a request of another CPU that waits for it nudges this CPU
// (os::CpuNudger), and the worker, whose slice is the shortest, runs next. Such a wait costs
// tens of microseconds, where serving every release at once would cost every close two
// switches, but it says that others are watching: for a while after a nudge, the worker serves
// the releases of closes at once (watched(), serve_next_at_once()).

bool arm_wake(io_uring* ring, int fd, std::uint64_t* count) {
  io_uring_sqe* sqe = next_sqe(ring);
  if (sqe == nullptr) return false;
  io_uring_prep_read(sqe, fd, count, sizeof *count, 0);
  sqe->user_data = kWakeTag;
  return true;
}

}  // namespace

int FuseRing::add_entry(Worker& worker, bool overtakes) {
  auto entry = std::make_unique<Entry>(max_payload_);
  if (entry->buffer == MAP_FAILED) return ENOMEM;
  entry->owner = &worker;
  entry->overtakes = overtakes;
  entry->iov[0] = {&entry->header, sizeof entry->header};
  entry->iov[1] = {entry->buffer + kHeadroom, max_payload_};
  Entry* e = entry.get();
  {
    std::lock_guard lock(entries_mu_);
    entries_.push_back(std::move(entry));
  }
  return prep_command(&worker.ring, dev_fd_, kCmdRegister, e, e->iov, 0, worker.qid) ? 0 : EBUSY;
}

void FuseRing::commit(Worker& worker, Entry& entry) {
  entry.state.store(kWaiting, std::memory_order_relaxed);
  if (!prep_command(&worker.ring, dev_fd_, kCmdCommitAndFetch, &entry, entry.iov,
                    entry.commit_id, worker.qid)) {
    give_up(worker, "committing an answer", EBUSY);
  }
}

// Copies a reply (fuse_out_header, then its payload) into the entry of the request it answers.
void FuseRing::fill(Entry& entry, fuse_out_header out, const iovec* iov, int count) {
  entry.unique.store(0, std::memory_order_relaxed);
  char* payload = entry.buffer + kHeadroom;
  std::size_t size = 0;
  for (int i = 1; i < count; ++i) size += iov[i].iov_len;
  if (size > max_payload_) {
    spdlog::error("FUSE ring: a reply of {} bytes outgrows the {}-byte payload buffer", size,
                  max_payload_);
    out.error = -EIO;
    size = 0;
  } else {
    std::size_t at = 0;
    for (int i = 1; i < count; ++i) {
      if (iov[i].iov_base != payload + at) {
        std::memcpy(payload + at, iov[i].iov_base, iov[i].iov_len);
      }
      at += iov[i].iov_len;
    }
  }
  out.len = static_cast<std::uint32_t>(sizeof out + size);
  std::memcpy(entry.header.in_out, &out, sizeof out);
  entry.header.ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(size);
}

bool FuseRing::reply(const iovec* iov, int count) {
  if (!running_.load(std::memory_order_acquire) || count < 1 ||
      iov[0].iov_len != sizeof(fuse_out_header)) {
    return false;
  }
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique == 0) return false;  // a notification: /dev/fuse only
  // The common case: the handler answers on the worker's own thread, which commits it once
  // the dispatcher returns.
  if (Entry* e = serving_; e != nullptr && e->unique.load(std::memory_order_relaxed) == out.unique) {
    fill(*e, out, iov, count);
    e->state.store(kReplied, std::memory_order_release);
    return true;
  }
  std::lock_guard lock(entries_mu_);  // also keeps stop() from closing what this uses
  if (!running_.load(std::memory_order_relaxed)) return false;
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const auto& e) {
    return e->unique.load(std::memory_order_acquire) == out.unique;
  });
  if (it == entries_.end()) return false;  // a request that came through /dev/fuse
  Entry& entry = **it;
  fill(entry, out, iov, count);
  if (entry.state.exchange(kReplied, std::memory_order_acq_rel) == kParked) {
    Worker& owner = *entry.owner;
    {
      std::lock_guard ready_lock(owner.mu);
      owner.ready.push_back(&entry);
    }
    ::eventfd_write(owner.wake_fd, 1);
  }
  return true;
}

void FuseRing::serve(Worker& worker, Entry& entry) {
  fuse_in_header in;
  std::memcpy(&in, entry.header.in_out, sizeof in);
  const std::size_t payload = entry.header.ring_ent_in_out.payload_sz;
  const std::size_t op = in.len - sizeof in - payload;
  if (in.len < sizeof in + payload || op > sizeof entry.header.op_in || payload > max_payload_) {
    spdlog::error("FUSE ring: malformed request (opcode {}, len {}, payload {})", in.opcode,
                  in.len, payload);
    const fuse_out_header out{sizeof out, -EIO, in.unique};
    std::memcpy(entry.header.in_out, &out, sizeof out);
    entry.header.ring_ent_in_out.payload_sz = 0;
    entry.commit_id = in.unique;
    commit(worker, entry);
    return;
  }
  char* request = entry.buffer + kHeadroom - op - sizeof in;
  std::memcpy(request, &in, sizeof in);
  std::memcpy(request + sizeof in, entry.header.op_in, op);
  entry.commit_id = in.unique;
  entry.state.store(kServing, std::memory_order_relaxed);
  entry.unique.store(in.unique, std::memory_order_release);

  serving_ = &entry;
  next_at_once_ = false;
  // Only the first request of an entry registered after a park (not one fetched before it, in
  // the same batch of completions) may have overtaken the stranded ones.
  overtaking_ = std::exchange(entry.overtakes, false);
  dispatch_(request, in.len);
  serving_ = nullptr;
  overtaking_ = false;
  if (const bool preempt = next_at_once_ && std::chrono::steady_clock::now().time_since_epoch()
                                                    .count() < worker.eager_until.load();
      preempt != worker.preempts) {
    worker.preempts = preempt;
    schedule_as(preempt ? SCHED_OTHER : SCHED_BATCH, "FUSE ring worker");
  }

  int expected = kServing;
  if (entry.state.compare_exchange_strong(expected, kParked, std::memory_order_acq_rel)) {
    // The queue must not run dry while this entry waits: register another. But a request that
    // reached the queue while it had no free entry stays queued in the kernel until an answer
    // is committed there (a registration does not take it up), and the answer this one owes
    // may depend on it. So have the kicker make a request on this CPU, which the new entry
    // takes and whose commit takes up the oldest queued one. The request that the new entry
    // takes (the kicker's, or another made first) so overtakes the queued ones, and must not
    // wait for them (FuseRing::overtaking()); after its commit, the queue is in order again.
    if (int err = add_entry(worker, /*overtakes=*/true); err != 0) {
      return give_up(worker, "another entry", err);
    }
    io_uring_submit(&worker.ring);
    request_kick(worker);
  } else {
    commit(worker, entry);
  }
}

int FuseRing::queue() {
  return serving_ != nullptr ? static_cast<int>(serving_->owner->qid) : -1;
}

void FuseRing::watched(unsigned qid) {
  if (qid >= workers_.size()) return;
  workers_[qid]->eager_until =
      (std::chrono::steady_clock::now() + kEager).time_since_epoch().count();
}

// A kick takes up the oldest request stranded in this CPU's queue: the new entry takes the
// kicker's request, and its commit fetches the stranded one. But the kicker's request can be
// stranded too, when a pop takes the new entry first; so a kick never waits for a kicker that
// is busy, and gets an idle one or a new one.
void FuseRing::request_kick(Worker& worker) {
  int idle = worker.idle_kickers.load(std::memory_order_acquire);
  while (idle > 0 && !worker.idle_kickers.compare_exchange_weak(idle, idle - 1,
                                                                std::memory_order_acq_rel)) {
  }
  if (idle > 0) {
    ::eventfd_write(worker.kick_fd, 1);
    return;
  }
  std::lock_guard lock(worker.mu);
  if (!worker.kicking.load(std::memory_order_relaxed)) return;
  try {
    worker.kickers.emplace_back([this, &worker] { kick(worker); });
  } catch (const std::system_error& e) {
    give_up(worker, "starting a kicker", e.code().value());
  }
}

void FuseRing::kick(Worker& worker) {
  pin_to_cpu(worker.qid, "FUSE ring kicker");  // so that its request lands in that queue
  schedule_as(SCHED_OTHER, "FUSE ring kicker");
  while (worker.kicking.load(std::memory_order_acquire)) {
    struct statfs fs;
    ::statfs(mountpoint_.c_str(), &fs);  // the answer does not matter, its commit does
    worker.idle_kickers.fetch_add(1, std::memory_order_acq_rel);
    eventfd_t one;
    while (::eventfd_read(worker.kick_fd, &one) != 0) {
      if (errno != EINTR) return;
    }
  }
}

// A queue that nobody serves holds its CPU's requests for good: stop the daemon instead, which
// unmounts and lets the kernel fail them.
void FuseRing::give_up(Worker& worker, const char* what, int err) {
  if (worker.gave_up.exchange(true, std::memory_order_acq_rel)) return;  // said and done once
  spdlog::error("FUSE ring: queue {}: {}: {}; stopping, as that CPU's requests would wait forever "
                "(smosd --no-io-uring serves through /dev/fuse)",
                worker.qid, what, std::strerror(err));
  failed_.store(true, std::memory_order_release);
  ::kill(::getpid(), SIGTERM);
}

void FuseRing::run(Worker& worker) {
  // A queue serves the requests of its CPU: its worker runs there, so that no request waits for
  // a wake-up on another CPU. prepare() checked that smosd may run on every CPU.
  pin_to_cpu(worker.qid, "FUSE ring worker");
  schedule_as(SCHED_BATCH, "FUSE ring worker");
  // io_uring_enable_rings(), which Debian 12's liburing declares but does not export.
  if (int rc = io_uring_register(worker.ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
      rc < 0) {
    return give_up(worker, "enabling the ring", -rc);
  }
  if (!arm_wake(&worker.ring, worker.wake_fd, &worker.wake_count)) {
    return give_up(worker, "waiting for answers", EBUSY);
  }
  if (int err = add_entry(worker); err != 0) return give_up(worker, "the first entry", err);
  bool served = false;  // until then, a failed registration leaves the queue without an entry
  while (running_.load(std::memory_order_relaxed) && !worker.gave_up.load()) {
    const int rc = io_uring_submit_and_wait(&worker.ring, 1);
    if (rc < 0 && rc != -EINTR) return give_up(worker, "io_uring_enter", -rc);
    io_uring_cqe* cqe;
    while (!worker.gave_up.load() && io_uring_peek_cqe(&worker.ring, &cqe) == 0) {
      const std::uint64_t tag = cqe->user_data;
      const int res = cqe->res;
      io_uring_cqe_seen(&worker.ring, cqe);
      if (tag == kWakeTag) {
        std::vector<Entry*> ready;
        {
          std::lock_guard lock(worker.mu);
          ready.swap(worker.ready);
        }
        for (Entry* e : ready) commit(worker, *e);
        if (running_.load(std::memory_order_relaxed) &&
            !arm_wake(&worker.ring, worker.wake_fd, &worker.wake_count)) {
          return give_up(worker, "waiting for answers", EBUSY);
        }
        continue;
      }
      if (res == -ENOTCONN || res == -ECANCELED) continue;  // the connection is going away
      if (res < 0) {
        if (!served) return give_up(worker, "registering", -res);
        spdlog::error("FUSE ring: queue {}: {}", worker.qid, std::strerror(-res));
        continue;
      }
      served = true;
      serve(worker, *reinterpret_cast<Entry*>(tag));
    }
  }
  io_uring_submit(&worker.ring);  // the answers of the last round
}

}  // namespace smos::os
