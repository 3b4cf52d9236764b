// Extended attributes: the control surface of objects and entries.
#include <string>
#include <string_view>

#include "fs/fs.h"
#include "smos/xattr.h"

namespace smos::fs {

namespace {

// getxattr and listxattr share one protocol: size 0 asks for the length.
void reply_sized(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (value.size() > size) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

}  // namespace

// Valid replies: fuse_reply_err.
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                 size_t size, int flags) {
  fuse_reply_err(req, guarded("setxattr", [&] {
    return store_of(req).setxattr(ino, name, std::string_view(value, size), flags);
  }));
}

// Valid replies: fuse_reply_buf, fuse_reply_data, fuse_reply_xattr, fuse_reply_err.
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  // A reader's close must show in what it asks for next: the state and reader count of its
  // entry, and the memory in use (a popped or deleted entry is a zombie until its release).
  if (const std::string_view n = name; n == xattr::kState || n == xattr::kReaders ||
                                       n == xattr::kBytes) {
    wait_released(req);
  }
  std::string value;
  int err = guarded("getxattr", [&] { return store_of(req).getxattr(ino, name, &value); });
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    reply_sized(req, value, size);
  }
}

// Valid replies: fuse_reply_buf, fuse_reply_data, fuse_reply_xattr, fuse_reply_err.
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  std::string names;
  int err = guarded("listxattr", [&] { return store_of(req).listxattr(ino, &names); });
  if (err != 0) {
    fuse_reply_err(req, err);
  } else {
    reply_sized(req, names, size);
  }
}

// Valid replies: fuse_reply_err.
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  fuse_reply_err(req, guarded("removexattr", [&] { return store_of(req).removexattr(ino, name); }));
}

}  // namespace smos::fs
