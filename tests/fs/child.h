// Forked helper processes for tests that need a second process: a writer whose entry others
// must not see, a reader that holds an entry open, a user other than root.
//
// A Child runs body in a forked copy of the test process and exits with what body returns;
// nothing else of the test runs in it, and it records no gtest results. The parent and the
// child take turns through a pair of pipes: each side's Signal() releases one Wait() of the
// other side. A Child that is still running when it is destroyed is killed and reaped.
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace smos::test {

// One side of the pipes between a parent and its child.
class Channel {
 public:
  Channel(int in, int out) : in_(in), out_(out) {}
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  ~Channel();

  // Lets the other side's Wait() return.
  void Signal();
  // Waits (10 s at most) for the other side's Signal(); false on timeout or if it exited.
  bool Wait();

 private:
  int in_;
  int out_;
};

class Child {
 public:
  explicit Child(std::function<int(Channel&)> body);
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  void Signal() { channel_->Signal(); }
  bool Wait() { return channel_->Wait(); }
  // Waits (20 s at most) for the child to exit. Returns its exit status, 128 + the signal
  // that killed it, or -1 if it had to be killed here.
  int Join();

 private:
  pid_t pid_ = -1;
  std::unique_ptr<Channel> channel_;
};

// A child that opens path with flags (creating or replacing an entry), writes data, then
// Signal()s and Wait()s. On the parent's Signal() it closes the file (which commits in close
// mode), Signal()s once more and exits 0.
std::unique_ptr<Child> StartWriter(const std::string& path, std::string data,
                                   int flags = O_WRONLY | O_CREAT | O_TRUNC);

// For child bodies: prints "child <pid>: what: <errno text>" to stderr and returns 1, so that
// `if (fd < 0) return ChildFail("open");` leaves a trace in the test's output.
int ChildFail(const std::string& what);

// Reaps pid if it exits within timeout. Returns its exit status, or 128 + the signal that
// killed it; nullopt if it is still running.
std::optional<int> WaitForExit(pid_t pid, std::chrono::milliseconds timeout);

// Kills pid (one we started) with SIGKILL and reaps it.
void KillAndReap(pid_t pid);

}  // namespace smos::test
