// Inspecting and clearing the mountpoint before smosd mounts on it.
#pragma once

#include <string>

namespace smos::os {

enum class MountpointState {
  kReady,      // an ordinary directory
  kStale,      // a FUSE mount whose daemon is gone (ENOTCONN)
  kLiveFuse,   // a working FUSE mount: someone else serves it
  kInFuse,     // a directory inside a FUSE filesystem, not its root
  kUnreachable,  // statfs or stat fails: *err says why (ENOENT, EACCES, ...)
  kNotADir,
};

MountpointState probe_mountpoint(const std::string& path, int* err);

// Lazily detaches whatever is mounted on `path`. Returns 0 or an errno value.
int detach_mount(const std::string& path);

}  // namespace smos::os
