// smosd: options, logging, start-up and shutdown. See smosd(8).
#include <fcntl.h>
#include <getopt.h>
#include <csignal>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

#include "fs/fs.h"
#include "fs/notifier.h"
#include "os/mount.h"
#include "util/size.h"

namespace {

constexpr char kUsage[] = R"(usage: smosd [options] MOUNTPOINT

Serve a shared-memory object store as a filesystem. See smosd(8) and smos(7).

  -f                     stay in the foreground
  -d                     debug logging, with libfuse's request trace (implies -f)
  --log-level=LEVEL      trace, debug, info, warn, error or off (default info)
  --store=NAME           shared-memory namespace (default smos)
  --capacity=N           default capacity of new objects (default 1024)
  --block-size=SIZE      default maximum bytes of one entry (default 1G)
  --memory=SIZE          byte budget of all entries (default: half of /dev/shm)
  --max-objects=N        object table size, fixed at creation (default 1024)
  --max-entries=N        entry table size, fixed at creation (default 16384)
  --reset                discard any existing store of this name
  --no-passthrough       never let the kernel serve reads from slot files itself
  --passthrough-min-size=SIZE
                         read smaller entries through the daemon (default 64K)
  --no-io-uring          take requests from /dev/fuse even where the kernel offers io_uring
  --no-epochs            drop replaced names from the kernel's cache one by one, as on kernels
                         before 6.16 (implies --no-io-uring)
  -o OPT[,OPT...]        FUSE mount options, e.g. allow_other
  -h, --help             this text
  -V, --version          the version
SIZE: a number with an optional K, M, G or T suffix (powers of 1024).
)";

struct Options {
  smos::StoreOptions store;
  std::string mountpoint;
  std::string fuse_options;
  std::string log_level = "info";
  bool foreground = false;
  bool debug = false;
  bool passthrough = true;
  bool io_uring = true;
  bool epochs = true;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "smosd: %s\nTry 'smosd --help'.\n", message.c_str());
  std::exit(2);
}

bool valid_store_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

std::uint64_t default_memory_budget() {
  struct statvfs st;
  if (statvfs("/dev/shm", &st) != 0) return 1ull << 30;
  return static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize / 2;
}

Options parse_options(int argc, char** argv) {
  enum { kLogLevel = 256, kStore, kCapacity, kBlockSize, kMemory, kMaxObjects, kMaxEntries, kReset,
         kNoPassthrough, kPassthroughMinSize, kNoIoUring, kNoEpochs };
  static const option long_options[] = {
      {"log-level", required_argument, nullptr, kLogLevel},
      {"store", required_argument, nullptr, kStore},
      {"capacity", required_argument, nullptr, kCapacity},
      {"block-size", required_argument, nullptr, kBlockSize},
      {"memory", required_argument, nullptr, kMemory},
      {"max-objects", required_argument, nullptr, kMaxObjects},
      {"max-entries", required_argument, nullptr, kMaxEntries},
      {"reset", no_argument, nullptr, kReset},
      {"no-passthrough", no_argument, nullptr, kNoPassthrough},
      {"passthrough-min-size", required_argument, nullptr, kPassthroughMinSize},
      {"no-io-uring", no_argument, nullptr, kNoIoUring},
      {"no-epochs", no_argument, nullptr, kNoEpochs},
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, 'V'},
      {nullptr, 0, nullptr, 0},
  };
  Options opts;
  std::optional<std::uint64_t> memory;
  // A count or size from 1 to max; `max_text` says max as the user would write it.
  auto positive = [](const char* flag, std::optional<std::uint64_t> v, std::uint64_t max,
                     const std::string& max_text) {
    if (!v || *v == 0 || *v > max) {
      usage_error(std::string("bad value for ") + flag + ": '" + optarg + "' (1 to " + max_text + ")");
    }
    return *v;
  };
  constexpr std::uint64_t kMaxSize = 1ull << 50;  // 1024T
  int c;
  while ((c = getopt_long(argc, argv, "fdo:hV", long_options, nullptr)) != -1) {
    switch (c) {
      case 'f': opts.foreground = true; break;
      case 'd': opts.debug = opts.foreground = true; opts.log_level = "debug"; break;
      case 'o':
        if (!opts.fuse_options.empty()) opts.fuse_options += ',';
        opts.fuse_options += optarg;
        break;
      case kLogLevel:
        if (spdlog::level::from_str(optarg) == spdlog::level::off && std::string(optarg) != "off") {
          usage_error(std::string("unknown log level '") + optarg + "'");
        }
        opts.log_level = optarg;
        break;
      case kStore:
        if (!valid_store_name(optarg)) usage_error("store names are 1-64 of [A-Za-z0-9_-]");
        opts.store.name = optarg;
        break;
      case kCapacity:
        opts.store.default_capacity =
            positive("--capacity", smos::parse_count(optarg), UINT32_MAX, std::to_string(UINT32_MAX));
        break;
      case kBlockSize:
        opts.store.default_block_size = positive("--block-size", smos::parse_size(optarg), kMaxSize, "1024T");
        break;
      case kMemory: memory = positive("--memory", smos::parse_size(optarg), kMaxSize, "1024T"); break;
      case kMaxObjects:
        opts.store.max_objects = positive("--max-objects", smos::parse_count(optarg), smos::layout::kMaxObjectsLimit,
                                          std::to_string(smos::layout::kMaxObjectsLimit));
        break;
      case kMaxEntries:
        opts.store.max_entries = positive("--max-entries", smos::parse_count(optarg), smos::layout::kMaxEntriesLimit,
                                          std::to_string(smos::layout::kMaxEntriesLimit));
        break;
      case kReset: opts.store.reset = true; break;
      case kNoPassthrough: opts.passthrough = false; break;
      case kPassthroughMinSize: {
        std::optional<std::uint64_t> v = smos::parse_size(optarg);
        if (!v) usage_error(std::string("bad value for --passthrough-min-size: '") + optarg + "'");
        opts.store.passthrough_min_size = *v;
        break;
      }
      case kNoIoUring: opts.io_uring = false; break;
      case kNoEpochs: opts.epochs = false; break;
      case 'h': std::fputs(kUsage, stdout); std::exit(0);
      case 'V': std::puts("smosd 0.1.0"); std::exit(0);
      default: usage_error("unknown option");
    }
  }
  if (optind != argc - 1) usage_error(optind >= argc ? "missing MOUNTPOINT" : "too many arguments");
  // Absolute: a daemon leaves its directory for / when it detaches, and still has to find the
  // mount to unmount it at exit.
  std::error_code ec;
  opts.mountpoint = std::filesystem::absolute(argv[optind], ec).lexically_normal().string();
  if (ec) opts.mountpoint = argv[optind];  // no working directory: leave it to the checks
  opts.store.memory_budget = memory ? *memory : default_memory_budget();
  return opts;
}

// Where warnings and errors go besides syslog in the background, until smosd detaches.
std::shared_ptr<spdlog::sinks::sink> g_terminal_sink;

void setup_logging(const Options& opts) {
  std::shared_ptr<spdlog::logger> logger;
  if (opts.foreground) {
    logger = spdlog::stderr_color_mt("smosd");
  } else {
    // To syslog; and warnings and errors to stderr too, so that whoever started smosd sees why
    // it would not start (serve() closes this sink once smosd detaches).
    auto syslog = std::make_shared<spdlog::sinks::syslog_sink_mt>("smosd", LOG_PID, LOG_DAEMON, false);
    g_terminal_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    g_terminal_sink->set_level(spdlog::level::warn);
    logger = std::make_shared<spdlog::logger>("smosd", spdlog::sinks_init_list{syslog, g_terminal_sink});
  }
  logger->set_level(spdlog::level::from_str(opts.log_level));
  spdlog::set_default_logger(logger);
  // libfuse's own messages join ours. It writes some lines in pieces: they are logged whole.
  fuse_set_log_func([](fuse_log_level level, const char* fmt, va_list ap) {
    thread_local std::string pending;
    char piece[1024];
    std::vsnprintf(piece, sizeof piece, fmt, ap);
    pending += piece;
    if (pending.empty() || pending.back() != '\n') return;
    std::string text;
    text.swap(pending);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    switch (level) {
      case FUSE_LOG_EMERG: case FUSE_LOG_ALERT: case FUSE_LOG_CRIT: case FUSE_LOG_ERR:
        spdlog::error("libfuse: {}", text); break;
      case FUSE_LOG_WARNING: spdlog::warn("libfuse: {}", text); break;
      case FUSE_LOG_NOTICE: case FUSE_LOG_INFO: spdlog::info("libfuse: {}", text); break;
      case FUSE_LOG_DEBUG: spdlog::debug("libfuse: {}", text); break;
    }
  });
}

// Every slot file keeps a descriptor open, so the store needs about one per entry.
void raise_fd_limit(std::uint64_t wanted) {
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < wanted) {
    spdlog::warn("open-file limit {} is below --max-entries; creates may fail with ENOSPC",
                 lim.rlim_cur);
  }
}

// Refuses or clears what is already mounted on the mountpoint. Returns false to stop.
bool prepare_mountpoint(const std::string& path) {
  using smos::os::MountpointState;
  int err;
  switch (smos::os::probe_mountpoint(path, &err)) {
    case MountpointState::kReady: return true;
    case MountpointState::kUnreachable:
      spdlog::error("mountpoint {}: {}", path, std::strerror(err));
      return false;
    case MountpointState::kInFuse:
      spdlog::error("mountpoint {} is a directory inside a FUSE filesystem; mount on a directory "
                    "of another filesystem", path);
      return false;
    case MountpointState::kNotADir:
      spdlog::error("mountpoint {} is not a directory", path);
      return false;
    case MountpointState::kLiveFuse:
      spdlog::error("{} is already a live FUSE mount; unmount it first (fusermount3 -u {})", path, path);
      return false;
    case MountpointState::kStale:
      if (smos::os::detach_mount(path) == 0 &&
          smos::os::probe_mountpoint(path, &err) == MountpointState::kReady) {
        spdlog::warn("cleared a stale FUSE mount on {}", path);
        return true;
      }
      spdlog::error("{} is a stale FUSE mount that could not be cleared; run: fusermount3 -uz {}", path, path);
      return false;
  }
  return false;
}

// The arguments smosd gives libfuse: its own mount options, then the user's.
class FuseArgs {
 public:
  explicit FuseArgs(const Options& opts)
      : words_{"smosd", "-o",
               "default_permissions,fsname=smos:" + opts.store.name + ",subtype=smos"} {
    if (!opts.fuse_options.empty()) words_.insert(words_.end(), {"-o", opts.fuse_options});
    if (opts.debug) words_.push_back("-d");
    for (auto& w : words_) argv_.push_back(w.data());
    args_ = FUSE_ARGS_INIT(static_cast<int>(argv_.size()), argv_.data());
  }
  ~FuseArgs() { fuse_opt_free_args(&args_); }
  FuseArgs(const FuseArgs&) = delete;
  FuseArgs& operator=(const FuseArgs&) = delete;
  fuse_args* get() { return &args_; }

 private:
  std::vector<std::string> words_;
  std::vector<char*> argv_;
  fuse_args args_;
};

// Whether libfuse takes the -o options. Asked before the store is opened, which --reset
// empties: bad options must change nothing.
bool fuse_options_valid(const Options& opts) {
  FuseArgs args(opts);
  const fuse_lowlevel_ops none{};
  fuse_session* se = fuse_session_new(args.get(), &none, sizeof none, nullptr);
  if (se == nullptr) return false;
  fuse_session_destroy(se);
  return true;
}

int serve(const Options& opts, smos::Store& store) {
  FuseArgs args(opts);
  smos::fs::Context context{&store, nullptr, smos::os::FuseChannel(opts.passthrough, opts.io_uring, opts.epochs)};
  const fuse_lowlevel_ops& ops = smos::fs::operations();
  fuse_session* se = fuse_session_new(args.get(), &ops, sizeof ops, &context);
  if (se == nullptr) {
    spdlog::error("cannot start a FUSE session");
    return 1;
  }
  context.session = se;
  int rc = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, opts.mountpoint.c_str()) == 0 &&
        smos::fs::install_channel(context, opts.mountpoint) == 0) {
      spdlog::info("store '{}' mounted on {} (memory budget {} bytes)", opts.store.name,
                   opts.mountpoint, opts.store.memory_budget);
      fuse_daemonize(opts.foreground ? 1 : 0);
      if (g_terminal_sink) g_terminal_sink->set_level(spdlog::level::off);  // stderr: /dev/null
      smos::fs::ChannelBackingFiles backing(context);
      if (opts.passthrough) store.set_backing_files(&backing);
      smos::fs::Notifier notifier(se, [&context] {
        context.channel.bump_epoch();  // fails only once unmounted
        return context.channel.knows_epochs();
      });
      store.set_name_listener([&notifier](smos::Ino parent, const std::string& name) {
        notifier.invalidate_entry(parent, name);
      });
      context.notifier = &notifier;
      fuse_loop_config* loop = fuse_loop_cfg_create();
      fuse_loop_cfg_set_max_threads(loop, 64);
      fuse_loop_cfg_set_idle_threads(loop, 8);
      // The loop returns the number of the signal that stopped it, 0, or a negative errno.
      const int stopped = fuse_session_loop_mt(se, loop);
      notifier.stop_dropping();
      rc = stopped == 0 || stopped == SIGINT || stopped == SIGTERM || stopped == SIGHUP ? 0 : 1;
      if (context.channel.ring_failed()) rc = 1;  // it sent the SIGTERM: no clean stop
      fuse_loop_cfg_destroy(loop);
      // Nothing will wake the pops that wait: answer them while a reply can still reach them.
      store.fail_all_waiters(ENOTCONN);
      // The ring's workers serve until the mount is gone.
      fuse_session_unmount(se);
      context.channel.stop_ring();
      store.set_name_listener(nullptr);
      store.set_backing_files(nullptr);
      context.notifier = nullptr;
      spdlog::info("unmounted {}", opts.mountpoint);
    } else {
      spdlog::error("cannot mount on {}", opts.mountpoint);
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  // Descriptors 0 to 2 must be open before anything else is: a store file that took one of
  // them would get the log's lines written into it, and fuse_daemonize() would close it (and
  // drop the store's lock) when it puts /dev/null there.
  for (;;) {
    const int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0) return 1;
    if (fd > 2) {
      ::close(fd);
      break;
    }
    ::fcntl(fd, F_SETFD, 0);  // a standard descriptor, as a child should inherit it
  }
  // An ignored SIGCHLD is inherited across exec, and would have the kernel reap the children
  // whose status smosd waits for (fusermount3 clearing a stale mount).
  std::signal(SIGCHLD, SIG_DFL);
  // Nor may an inherited SIG_IGN keep SIGINT or SIGTERM from stopping smosd, as it does when
  // a shell script starts it with `&` (libfuse installs its handlers only over SIG_DFL). A
  // SIGHUP ignored stays ignored, as nohup(1) asks.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  Options opts = parse_options(argc, argv);
  setup_logging(opts);
  raise_fd_limit(opts.store.max_entries + 256);
  if (!fuse_options_valid(opts)) {
    spdlog::error("bad FUSE options: {} (libfuse says why above)", opts.fuse_options);
    return 2;
  }
  if (!prepare_mountpoint(opts.mountpoint)) return 1;

  std::unique_ptr<smos::Store> store;
  std::string message;
  if (int err = smos::Store::open(opts.store, &store, &message); err != 0) {
    spdlog::error("cannot open store '{}': {}", opts.store.name, message);
    return 1;
  }
  return serve(opts, *store);
}
