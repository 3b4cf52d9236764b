#include "fs/fs_util.h"

#include <dirent.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace smos::test {

Err ErrOf(long rc) { return rc < 0 ? Err(errno) : kOk; }

Err LastErr() { return Err(errno); }

std::ostream& operator<<(std::ostream& os, Err err) {
  if (err.ok()) return os << "OK";
  const char* name = strerrorname_np(err.value());
  return os << (name ? name : "errno " + std::to_string(err.value())) << " ("
            << std::strerror(err.value()) << ")";
}

void PrintTo(Err err, std::ostream* os) { *os << err; }

std::ostream& operator<<(std::ostream& os, const Text& text) {
  if (!text.ok()) return os << "error " << text.err;
  constexpr std::size_t kShown = 64;
  os << '"' << text.value.substr(0, kShown) << '"';
  if (text.value.size() > kShown) os << "... (" << text.value.size() << " bytes)";
  return os;
}

void PrintTo(const Text& text, std::ostream* os) { *os << text; }

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = other.release();
  }
  return *this;
}

int Fd::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

Err Fd::Close() {
  if (fd_ < 0) return kOk;
  return ErrOf(::close(release()));
}

Fd Open(const std::string& path, int flags, mode_t mode) {
  return Fd(::open(path.c_str(), flags | O_CLOEXEC, mode));
}

Err OpenErr(const std::string& path, int flags, mode_t mode) {
  Fd fd = Open(path, flags, mode);
  if (!fd.ok()) return Err(errno);
  return fd.Close();
}

Err StatErr(const std::string& path) {
  struct stat st;
  return ErrOf(::stat(path.c_str(), &st));
}

Err WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Err(errno);
    }
    if (n == 0) return Err(EIO);
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return kOk;
}

Err WriteFile(const std::string& path, std::string_view data, int flags, mode_t mode) {
  Fd fd = Open(path, flags, mode);
  if (!fd.ok()) return Err(errno);
  if (Err err = WriteAll(fd.get(), data); !err.ok()) return err;
  return fd.Close();
}

Text ReadFd(int fd) {
  Text text;
  char buf[1 << 16];
  off_t offset = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Text{Err(errno), {}};
    }
    if (n == 0) return text;
    text.value.append(buf, static_cast<std::size_t>(n));
    offset += n;
  }
}

Text ReadFile(const std::string& path) {
  Fd fd = Open(path, O_RDONLY);
  if (!fd.ok()) return Text{Err(errno), {}};
  Text text = ReadFd(fd.get());
  if (Err err = fd.Close(); text.ok() && !err.ok()) return Text{err, {}};
  return text;
}

namespace {

// Calls get(buffer, size) the way getxattr(2) and listxattr(2) want: size first, then data.
Text GetSized(const std::function<ssize_t(char*, std::size_t)>& get) {
  for (;;) {
    ssize_t size = get(nullptr, 0);
    if (size < 0) return Text{Err(errno), {}};
    std::string value(static_cast<std::size_t>(size), '\0');
    ssize_t n = get(value.data(), value.size());
    if (n < 0) {
      if (errno == ERANGE) continue;  // grew in between
      return Text{Err(errno), {}};
    }
    value.resize(static_cast<std::size_t>(n));
    return Text{kOk, std::move(value)};
  }
}

NameList SplitNames(const Text& text) {
  NameList list{text.err, {}};
  std::size_t start = 0;
  while (start < text.value.size()) {
    std::size_t end = text.value.find('\0', start);
    if (end == std::string::npos) end = text.value.size();
    list.names.push_back(text.value.substr(start, end - start));
    start = end + 1;
  }
  std::sort(list.names.begin(), list.names.end());
  return list;
}

}  // namespace

Text GetXattr(const std::string& path, const std::string& name) {
  return GetSized([&](char* buf, std::size_t size) {
    return ::getxattr(path.c_str(), name.c_str(), buf, size);
  });
}

Text FGetXattr(int fd, const std::string& name) {
  return GetSized(
      [&](char* buf, std::size_t size) { return ::fgetxattr(fd, name.c_str(), buf, size); });
}

Err SetXattr(const std::string& path, const std::string& name, std::string_view value, int flags) {
  return ErrOf(::setxattr(path.c_str(), name.c_str(), value.data(), value.size(), flags));
}

Err FSetXattr(int fd, const std::string& name, std::string_view value, int flags) {
  return ErrOf(::fsetxattr(fd, name.c_str(), value.data(), value.size(), flags));
}

Err RemoveXattr(const std::string& path, const std::string& name) {
  return ErrOf(::removexattr(path.c_str(), name.c_str()));
}

NameList ListXattr(const std::string& path) {
  return SplitNames(
      GetSized([&](char* buf, std::size_t size) { return ::listxattr(path.c_str(), buf, size); }));
}

NameList ListDir(const std::string& path) {
  NameList list;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return NameList{Err(errno), {}};
  for (;;) {
    errno = 0;
    const dirent* ent = ::readdir(dir);
    if (ent == nullptr) {
      list.err = Err(errno);
      break;
    }
    if (ent->d_name[0] != '.') list.names.emplace_back(ent->d_name);
  }
  ::closedir(dir);
  std::sort(list.names.begin(), list.names.end());
  return list;
}

bool Contains(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

Err RemoveTree(const std::string& path) {
  NameList list = ListDir(path);
  if (!list.err.ok()) return list.err;
  for (const std::string& name : list.names) {
    if (Err err = ErrOf(::unlink((path + "/" + name).c_str())); !err.ok()) return err;
  }
  return ErrOf(::rmdir(path.c_str()));
}

std::string Pattern(std::size_t size, std::uint32_t seed) {
  std::string out(size, '\0');
  std::uint64_t state = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (std::size_t i = 0; i < size; ++i) {
    // xorshift64*: cheap, and different seeds give unrelated bytes.
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    out[i] = static_cast<char>((state * 0x2545f4914f6cdd1dull) >> 56);
  }
  return out;
}

std::uint64_t Checksum(std::string_view data) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : data) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

bool Eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Space StatSpace(const std::string& path) {
  struct statfs st;
  if (::statfs(path.c_str(), &st) != 0) return Space{Err(errno)};
  std::uint64_t unit = st.f_frsize ? st.f_frsize : st.f_bsize;
  return Space{kOk, st.f_blocks * unit, (st.f_blocks - st.f_bfree) * unit,
               static_cast<long>(st.f_type), st.f_files - st.f_ffree};
}

}  // namespace smos::test
