// A real smosd mounted in a temp dir, and the fixture that gives one to every test.
//
// Each Smosd has its own temp dir (mountpoint and log) and its own store name, so tests can run
// in parallel and never touch /mnt/smos or another test's store. Its destructor unmounts,
// reaps the daemons it started (only those, by pid), and removes the store's files from
// /dev/shm and the temp dir.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fs/child.h"
#include "fs/fs_util.h"
#include "smos/xattr.h"

namespace smos::test {

inline constexpr long kFuseSuperMagic = 0x65735546;

// Whether this machine can mount FUSE filesystems at all.
bool FuseAvailable();

class Smosd {
 public:
  Smosd();
  ~Smosd();
  Smosd(const Smosd&) = delete;
  Smosd& operator=(const Smosd&) = delete;

  // Starts `smosd -f --store=NAME [--reset] [--memory=1G] args... MOUNTPOINT` and waits until
  // the mount is live. --memory=1G is added unless args has a --memory of its own. Fails,
  // with the daemon's log, if it exits or does not mount within the deadline.
  ::testing::AssertionResult Start(const std::vector<std::string>& args = {}, bool reset = true);
  // Stops the daemon cleanly and starts it again on the same store (without --reset), with
  // the options of the last Start.
  ::testing::AssertionResult Restart();
  // Starts the daemon again on the same store (without --reset) after Kill(), leaving any
  // stale mount for the daemon to deal with.
  ::testing::AssertionResult StartAgain() { return Start(args_, /*reset=*/false); }

  // Runs `smosd args...` exactly as given (add Mountpoint() yourself), expecting it to exit
  // by itself: returns its exit status, or nullopt if it was still running after 10 s (it is
  // stopped then).
  std::optional<int> RunToExit(const std::vector<std::string>& args);

  // Sends sig and waits for the daemon to exit. Returns its exit status (128 + signal if a
  // signal killed it), or nullopt if it did not exit within 10 s (it is killed then).
  std::optional<int> Stop(int sig = SIGTERM);
  // SIGKILLs the daemon and reaps it, leaving its mount stale, as a crash would.
  void Kill();
  // fusermount3 -u, then -uz if that was not enough. True if nothing is mounted afterwards.
  bool Unmount();
  bool IsMounted() const;

  // The path of rel below the mountpoint: Path("obj/entry").
  std::string Path(std::string_view rel) const { return mountpoint_ + "/" + std::string(rel); }
  const std::string& mountpoint() const { return mountpoint_; }
  const std::string& store() const { return store_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  // Everything the daemons of this Smosd wrote to stdout and stderr so far.
  std::string Log() const;
  // The files of this store under /dev/shm, sorted.
  std::vector<std::string> StoreFiles() const;

 private:
  pid_t Spawn(const std::vector<std::string>& args);
  bool RunTool(const std::vector<std::string>& argv);
  void Shutdown();

  std::string dir_;
  std::string mountpoint_;
  std::string log_path_;
  std::string store_;
  std::vector<std::string> args_;  // of the last Start, without --reset
  pid_t pid_ = -1;
};

// Gives each test a live mount. A suite that needs other daemon options overrides DaemonArgs.
class MountTest : public ::testing::Test {
 protected:
  virtual std::vector<std::string> DaemonArgs() const { return {}; }

  void SetUp() override;
  // Prints the tail of the daemon's log if the test failed.
  void TearDown() override;

  std::string Path(std::string_view rel) const { return smosd_.Path(rel); }
  // mkdir an object and set the given attributes (e.g. {xattr::kCapacity, "4"}) on it.
  // Returns its path; records a failure if any step fails.
  std::string MakeObject(const std::string& name,
                         const std::vector<std::pair<std::string, std::string>>& attrs = {});

  Smosd smosd_;
};

// A live mount with one object, "obj", in it.
class ObjectTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    obj_ = MakeObject("obj");
    entry_ = Entry("e");
  }
  std::string Entry(const std::string& name) const { return obj_ + "/" + name; }

  std::string obj_;
  std::string entry_;  // obj/e, which no test has made yet
};

}  // namespace smos::test
