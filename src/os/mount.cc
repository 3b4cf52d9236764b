#include "os/mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace smos::os {

namespace {
constexpr long kFuseSuperMagic = 0x65735546;
}

MountpointState probe_mountpoint(const std::string& path, int* err) {
  *err = 0;
  // statfs, unlike stat, is never answered from the kernel's caches: a FUSE mount whose daemon
  // died answers ENOTCONN even right after its root was looked at. (ECONNABORTED: a request
  // that was queued for the daemon's io_uring as the connection went down.)
  struct statfs fs;
  if (statfs(path.c_str(), &fs) != 0) {
    *err = errno;
    return *err == ENOTCONN || *err == ECONNABORTED ? MountpointState::kStale
                                                    : MountpointState::kUnreachable;
  }
  if (fs.f_type == kFuseSuperMagic) {
    // A statx that asks for nothing is answered even for a FUSE mount of another user's, which
    // refuses stat(2); it says whether the path is a mount's root (Linux 5.8 and later).
    struct statx stx;
    const bool inside = statx(AT_FDCWD, path.c_str(), 0, 0, &stx) == 0 &&
                        (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) != 0 &&
                        (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) == 0;
    return inside ? MountpointState::kInFuse : MountpointState::kLiveFuse;
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    *err = errno;
    return MountpointState::kUnreachable;
  }
  return S_ISDIR(st.st_mode) ? MountpointState::kReady : MountpointState::kNotADir;
}

int detach_mount(const std::string& path) {
  if (umount2(path.c_str(), MNT_DETACH) == 0) return 0;
  // Not root: fusermount3 is the setuid helper that may unmount a user's FUSE mount.
  pid_t pid = fork();
  if (pid < 0) return errno;
  if (pid == 0) {
    execlp("fusermount3", "fusermount3", "-u", "-z", path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return errno;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EPERM;
}

}  // namespace smos::os
