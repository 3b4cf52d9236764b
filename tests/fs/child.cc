#include "fs/child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <thread>

#include "fs/fs_util.h"

namespace smos::test {

Channel::~Channel() {
  ::close(in_);
  ::close(out_);
}

void Channel::Signal() {
  char token = 1;
  while (::write(out_, &token, 1) < 0 && errno == EINTR) {
  }
}

bool Channel::Wait() {
  pollfd pfd{in_, POLLIN, 0};
  int ready;
  while ((ready = ::poll(&pfd, 1, 10'000)) < 0 && errno == EINTR) {
  }
  if (ready <= 0) return false;
  char token;
  return ::read(in_, &token, 1) == 1;
}

Child::Child(std::function<int(Channel&)> body) {
  int down[2];  // parent -> child
  int up[2];    // child -> parent
  if (::pipe2(down, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0) {
    std::perror("pipe2");
    std::abort();
  }
  std::fflush(nullptr);
  std::cout.flush();
  std::cerr.flush();
  pid_ = ::fork();
  if (pid_ < 0) {
    std::perror("fork");
    std::abort();
  }
  if (pid_ == 0) {
    ::close(down[1]);
    ::close(up[0]);
    int status;
    {
      Channel channel(down[0], up[1]);
      status = body(channel);
    }
    std::fflush(nullptr);
    ::_exit(status);
  }
  ::close(down[0]);
  ::close(up[1]);
  channel_ = std::make_unique<Channel>(up[0], down[1]);
}

Child::~Child() {
  if (pid_ > 0) KillAndReap(pid_);
}

int Child::Join() {
  if (pid_ <= 0) return -1;
  std::optional<int> status = WaitForExit(pid_, std::chrono::seconds(20));
  if (!status) KillAndReap(pid_);
  pid_ = -1;
  return status.value_or(-1);
}

std::unique_ptr<Child> StartWriter(const std::string& path, std::string data, int flags) {
  return std::make_unique<Child>([path, data = std::move(data), flags](Channel& parent) {
    Fd fd = Open(path, flags);
    if (!fd.ok()) return ChildFail("open " + path);
    if (Err err = WriteAll(fd.get(), data); !err.ok()) {
      errno = err.value();
      return ChildFail("write " + path);
    }
    parent.Signal();
    if (!parent.Wait()) return ChildFail("no word from the parent");
    if (Err err = fd.Close(); !err.ok()) {
      errno = err.value();
      return ChildFail("close " + path);
    }
    parent.Signal();
    return 0;
  });
}

int ChildFail(const std::string& what) {
  int err = errno;
  std::fprintf(stderr, "child %d: %s: %s\n", static_cast<int>(::getpid()), what.c_str(),
               std::strerror(err));
  return 1;
}

std::optional<int> WaitForExit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t got = ::waitpid(pid, &status, WNOHANG);
    if (got == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    } else if (got < 0 && errno != EINTR) {
      return -1;  // not our child, or already reaped
    }
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void KillAndReap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace smos::test
