// Small helpers shared by the store's translation units. Internal to src/store.
#pragma once

#include <cerrno>
#include <cstring>
#include <string_view>

#include "os/process.h"
#include "smos/control.h"
#include "smos/xattr.h"
#include "store/layout.h"

namespace smos::detail {

// Entries never carry set-id bits: there is nothing to execute, and the FUSE channel promises
// the kernel (FUSE_HANDLE_KILLPRIV_V2) that a write needs no privilege killed.
inline constexpr std::uint32_t kEntryModeBits = 0777;

// The answer for an inode number the store no longer knows: the kernel reached it through a
// name it still caches, and ESTALE makes it walk the path again (retry_estale in the VFS).
inline constexpr int kStaleInode = ESTALE;

inline std::string_view name_of(const layout::Name& n) { return {n.bytes, n.len}; }

inline void set_name(layout::Name& n, std::string_view name) {
  std::memcpy(n.bytes, name.data(), name.size());
  n.bytes[name.size()] = '\0';
  n.len = static_cast<std::uint16_t>(name.size());
}

// EINVAL for names no entry or object may have, ENAMETOOLONG past NAME_MAX. The kernel never
// sends a '/' or a NUL; recovery reads names back from shared memory, which may.
inline int check_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return EINVAL;
  if (name.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos) return EINVAL;
  if (name.size() > layout::kNameMax) return ENAMETOOLONG;
  return 0;
}

// Makes a recovered record's length agree with its bytes. set_name() writes the bytes and their
// NUL before the length, so if a crash came between (a rename), the NUL ends the name. False if
// what is left is no valid name.
inline bool recover_name(layout::Name& n) {
  const std::string_view name(n.bytes, strnlen(n.bytes, sizeof n.bytes));
  if (check_name(name) != 0) return false;
  n.len = static_cast<std::uint16_t>(name.size());
  return true;
}

inline bool is_control_name(std::string_view name) {
  return name == control::kPush || name == control::kPop || name == control::kLatest;
}

// Updates ctime, and mtime too when the data (or a directory's listing) changed.
inline void touch(layout::Timestamps& t, bool data) {
  const std::int64_t now = os::now_ns();
  if (data) t.mtime_ns = now;
  t.ctime_ns = now;
}

// xattr values arrive as raw bytes; `setfattr -v 64` sends "64", `echo 64 | ...` a newline.
inline std::string_view trimmed(std::string_view v) {
  while (!v.empty() && (v.back() == '\n' || v.back() == '\0' || v.back() == ' ')) {
    v.remove_suffix(1);
  }
  return v;
}

inline bool is_smos_name(std::string_view name) { return name.starts_with(xattr::kPrefix); }
inline bool is_user_name(std::string_view name) { return name.starts_with("user."); }

}  // namespace smos::detail
