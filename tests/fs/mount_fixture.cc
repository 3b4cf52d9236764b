#include "fs/mount_fixture.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#ifndef SMOSD_PATH
#error "SMOSD_PATH must name the smosd binary under test"
#endif

namespace smos::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr auto kMountDeadline = seconds(15);
constexpr auto kExitDeadline = seconds(10);
constexpr char kFusermount[] = "/usr/bin/fusermount3";

// A store name no other test (in this process or another) uses: [A-Za-z0-9_-]{1,64}.
std::string UniqueStoreName() {
  static std::atomic<int> counter{0};
  std::random_device random;
  char name[64];
  std::snprintf(name, sizeof name, "fst%d-%d-%08x", static_cast<int>(::getpid()),
                counter.fetch_add(1), static_cast<unsigned>(random()));
  return name;
}

// The mount points of this mount namespace, from /proc/self/mountinfo.
std::vector<std::string> MountPoints() {
  std::vector<std::string> points;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ..."
    std::istringstream fields(line);
    std::string skip, point;
    fields >> skip >> skip >> skip >> skip >> point;
    points.push_back(std::move(point));
  }
  return points;
}

std::string Join(const std::vector<std::string>& args) {
  std::string out;
  for (const std::string& a : args) out += (out.empty() ? "" : " ") + a;
  return out;
}

std::string Tail(const std::string& text, std::size_t max) {
  return text.size() <= max ? text : "..." + text.substr(text.size() - max);
}

}  // namespace

bool FuseAvailable() {
  return ::access("/dev/fuse", R_OK | W_OK) == 0 && ::access(kFusermount, X_OK) == 0;
}

Smosd::Smosd() : store_(UniqueStoreName()) {
  char tmpl[] = "/tmp/smosd-test.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  dir_ = fs::canonical(tmpl).string();
  // mkdtemp makes it 0700; other users must get through to the mountpoint (allow_other).
  ::chmod(dir_.c_str(), 0755);
  mountpoint_ = dir_ + "/mnt";
  log_path_ = dir_ + "/smosd.log";
  fs::create_directory(mountpoint_);
}

Smosd::~Smosd() {
  Shutdown();
  for (const std::string& file : StoreFiles()) ::unlink(file.c_str());
  for (const std::string& point : MountPoints()) {
    if (point.rfind(dir_ + "/", 0) == 0) {
      // Never remove_all through a mount: that would walk into the store (or hang).
      ADD_FAILURE() << "left " << dir_ << " in place: " << point << " is still mounted";
      return;
    }
  }
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

pid_t Smosd::Spawn(const std::vector<std::string>& args) {
  int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return -1;
  std::string header = "=== " + Join(args) + "\n";
  (void)!::write(log, header.data(), header.size());

  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, STDIN_FILENO);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    // Descriptors the test holds (some on this very mount) must not leak into the daemon.
    ::close_range(3, ~0u, 0);
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(log);
  return pid;
}

bool Smosd::RunTool(const std::vector<std::string>& argv) {
  pid_t pid = Spawn(argv);
  if (pid < 0) return false;
  std::optional<int> status = WaitForExit(pid, kExitDeadline);
  if (!status) KillAndReap(pid);
  return status == 0;
}

::testing::AssertionResult Smosd::Start(const std::vector<std::string>& args, bool reset) {
  if (pid_ > 0) return ::testing::AssertionFailure() << "smosd is already running";
  args_ = args;
  std::vector<std::string> argv = {SMOSD_PATH, "-f", "--store=" + store_};
  if (reset) argv.push_back("--reset");
  if (std::none_of(args.begin(), args.end(),
                   [](const std::string& a) { return a.rfind("--memory", 0) == 0; })) {
    argv.push_back("--memory=1G");
  }
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(mountpoint_);

  pid_ = Spawn(argv);
  if (pid_ < 0) return ::testing::AssertionFailure() << "cannot spawn smosd";
  auto deadline = std::chrono::steady_clock::now() + kMountDeadline;
  for (;;) {
    if (std::optional<int> status = WaitForExit(pid_, milliseconds(0))) {
      pid_ = -1;
      return ::testing::AssertionFailure()
             << "smosd exited with status " << *status << " before mounting; log:\n"
             << Tail(Log(), 8000);
    }
    // A live FUSE mount answers statfs. (Mount ids cannot tell a new mount from the stale one
    // it replaced: the kernel reuses them. A stale mount fails with ENOTCONN.)
    if (IsMounted()) {
      Space space = StatSpace(mountpoint_);
      if (space.err.ok() && space.type == kFuseSuperMagic) return ::testing::AssertionSuccess();
    }
    if (std::chrono::steady_clock::now() > deadline) {
      Stop(SIGKILL);
      return ::testing::AssertionFailure()
             << "no live mount at " << mountpoint_ << " after 15 s; log:\n"
             << Tail(Log(), 8000);
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
}

::testing::AssertionResult Smosd::Restart() {
  // Only that it stops matters here; its exit status is the business of the signal tests.
  if (!Stop() || IsMounted()) {
    return ::testing::AssertionFailure() << "smosd did not stop before the restart; log:\n"
                                         << Tail(Log(), 8000);
  }
  return Start(args_, /*reset=*/false);
}

std::optional<int> Smosd::RunToExit(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {SMOSD_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = Spawn(argv);
  if (pid < 0) return std::nullopt;
  std::optional<int> status = WaitForExit(pid, kExitDeadline);
  if (!status) {
    // It runs (and perhaps mounted) when it should have exited. The destructor unmounts.
    ::kill(pid, SIGTERM);
    if (!WaitForExit(pid, kExitDeadline)) KillAndReap(pid);
  }
  return status;
}

std::optional<int> Smosd::Stop(int sig) {
  if (pid_ <= 0) return std::nullopt;
  ::kill(pid_, sig);
  std::optional<int> status = WaitForExit(pid_, kExitDeadline);
  if (!status) KillAndReap(pid_);
  pid_ = -1;
  return status;
}

void Smosd::Kill() {
  if (pid_ <= 0) return;
  KillAndReap(pid_);
  pid_ = -1;
}

bool Smosd::IsMounted() const {
  std::vector<std::string> points = MountPoints();
  return std::find(points.begin(), points.end(), mountpoint_) != points.end();
}

bool Smosd::Unmount() {
  if (IsMounted()) RunTool({kFusermount, "-u", mountpoint_});
  if (IsMounted()) RunTool({kFusermount, "-uz", mountpoint_});
  return !IsMounted();
}

void Smosd::Shutdown() {
  if (pid_ > 0) {
    // An unmount ends a healthy daemon by itself; SIGTERM and SIGKILL are for the others.
    if (IsMounted()) RunTool({kFusermount, "-u", mountpoint_});
    if (WaitForExit(pid_, kExitDeadline)) {
      pid_ = -1;
    } else {
      Stop(SIGTERM);
    }
  }
  Unmount();
}

std::string Smosd::Log() const {
  std::ifstream in(log_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> Smosd::StoreFiles() const {
  std::vector<std::string> files;
  std::error_code err;
  for (const fs::directory_entry& e : fs::directory_iterator("/dev/shm", err)) {
    std::string name = e.path().filename().string();
    if (name.rfind(store_ + ".", 0) == 0) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void MountTest::SetUp() {
  if (!FuseAvailable()) GTEST_SKIP() << "/dev/fuse or fusermount3 is missing";
  ASSERT_TRUE(smosd_.Start(DaemonArgs()));
}

void MountTest::TearDown() {
  if (HasFailure()) {
    std::fprintf(stderr, "--- smosd log (store %s):\n%s\n--- end of log\n", smosd_.store().c_str(),
                 Tail(smosd_.Log(), 6000).c_str());
  }
}

std::string MountTest::MakeObject(const std::string& name,
                                  const std::vector<std::pair<std::string, std::string>>& attrs) {
  std::string path = Path(name);
  EXPECT_EQ(ErrOf(::mkdir(path.c_str(), 0755)), kOk) << "mkdir " << path;
  for (const auto& [attr, value] : attrs) {
    EXPECT_EQ(SetXattr(path, attr, value), kOk) << "setxattr " << attr << "=" << value;
  }
  return path;
}

}  // namespace smos::test
