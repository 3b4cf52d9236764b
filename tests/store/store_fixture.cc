#include "store_fixture.h"

#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>

#include "smos/control.h"

namespace smos::test {

namespace {

constexpr std::size_t kReadChunk = 1 << 20;

std::string UniqueStoreName() {
  static std::atomic<int> counter{0};
  return "ut" + std::to_string(getpid()) + "_" + std::to_string(counter++);
}

// Removes /dev/shm/NAME.meta, NAME.lock and NAME.slot.*: every file of store `name`.
void RemoveStoreFiles(const std::string& name) {
  const std::string prefix = name + ".";
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return;
  while (dirent* d = readdir(dir)) {
    if (std::string_view(d->d_name).starts_with(prefix)) {
      unlink(("/dev/shm/" + std::string(d->d_name)).c_str());
    }
  }
  closedir(dir);
}

}  // namespace

bool IsControlFile(std::string_view name) {
  return name == ".push" || name == ".pop" || name == ".latest";
}

std::string ErrName(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : "errno " + std::to_string(err);
}

std::string Pattern(std::size_t size, unsigned seed) {
  std::mt19937 gen(seed);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(gen());
  return out;
}

OtherProcess::OtherProcess() {
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;) pause();
  }
  if (pid_ < 0) ADD_FAILURE() << "fork: " << ErrName(errno);
}

OtherProcess::~OtherProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
}

StoreOptions StoreTest::Options() const {
  StoreOptions o;
  o.memory_budget = 64ull << 20;
  o.default_capacity = 16;
  o.default_block_size = 1ull << 20;
  o.max_objects = 16;
  o.max_entries = 256;
  return o;
}

void StoreTest::SetUp() {
  other_ = std::make_unique<OtherProcess>();
  options_ = Options();
  options_.name = UniqueStoreName();
  options_.reset = true;  // nothing of an older store by this name survives
  std::string message;
  ASSERT_EQ(Store::open(options_, &store_, &message), 0) << message;
  options_.reset = false;
}

void StoreTest::TearDown() {
  store_.reset();
  RemoveStoreFiles(options_.name);
  other_.reset();
}

void StoreTest::Close() { store_.reset(); }

int StoreTest::Reopen(bool reset) {
  store_.reset();
  StoreOptions options = options_;
  options.reset = reset;
  std::string message;
  int err = Store::open(options, &store_, &message);
  EXPECT_EQ(err, 0) << message;
  return err;
}

Caller StoreTest::Me() const { return Caller{getuid(), getgid(), getpid()}; }

Caller StoreTest::Other() const { return Caller{getuid(), getgid(), other_->pid()}; }

Ino StoreTest::MakeObject(std::string_view name, const Attrs& attrs, mode_t mode) {
  Attr attr;
  if (int err = store().mkdir(kRootIno, name, mode, Me(), &attr); err != 0) {
    ADD_FAILURE() << "mkdir " << name << ": " << ErrName(err);
    return 0;
  }
  for (const auto& [key, value] : attrs) {
    if (int err = SetXattr(attr.ino, key, value); err != 0) {
      ADD_FAILURE() << "setxattr " << name << " " << key << "=" << value << ": " << ErrName(err);
      return 0;
    }
  }
  return attr.ino;
}

std::uint64_t StoreTest::Create(Ino object, std::string_view name, Attr* attr, mode_t mode) {
  Attr ignored;
  OpenFile file;
  int err = store().create(object, name, mode, kCreateFlags, Me(), attr ? attr : &ignored, &file);
  if (err != 0) {
    ADD_FAILURE() << "create " << name << ": " << ErrName(err);
    return 0;
  }
  return file.fh;
}

Ino StoreTest::Put(Ino object, std::string_view name, std::string_view data, mode_t mode) {
  Attr attr;
  std::uint64_t fh = Create(object, name, &attr, mode);
  if (fh == 0) return 0;
  EXPECT_EQ(Write(fh, 0, data), 0) << "writing " << name;
  EXPECT_EQ(store().release(fh), 0) << "releasing " << name;
  store().forget(attr.ino, 1);  // like a kernel that drops the new name's dentry at once
  return attr.ino;
}

int StoreTest::Replace(Ino object, std::string_view name, const Caller& caller, OpenFile* out,
                       Ino* ino) {
  int err = ESTALE;
  for (int walk = 0; walk < 2 && err == ESTALE; ++walk) {
    Attr attr;
    if (err = store().lookup(object, name, caller, &attr); err != 0) return err;
    store().forget(attr.ino, 1);
    err = store().open(attr.ino, O_WRONLY | O_TRUNC, caller, out);
    if (ino != nullptr) *ino = attr.ino;
  }
  return err;
}

std::uint64_t StoreTest::OpenRead(Ino ino, const Caller& caller) {
  OpenFile file;
  if (int err = store().open(ino, O_RDONLY, caller, &file); err != 0) {
    ADD_FAILURE() << "open inode " << ino << " read-only: " << ErrName(err);
    return 0;
  }
  return file.fh;
}

int StoreTest::Write(std::uint64_t fh, std::uint64_t offset, std::string_view data) {
  while (!data.empty()) {
    IoSpan span;
    if (int err = store().prepare_write(fh, offset, data.size(), &span); err != 0) return err;
    ssize_t n = pwrite(span.fd, data.data(), span.length, static_cast<off_t>(span.offset));
    const int err = errno;
    store().write_done(fh, n == static_cast<ssize_t>(span.length));
    if (n < 0) return err;
    if (n == 0) return EIO;
    data.remove_prefix(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return 0;
}

std::string StoreTest::Contents(std::uint64_t fh) {
  std::string out;
  for (;;) {
    IoSpan span;
    if (int err = store().prepare_read(fh, out.size(), kReadChunk, &span); err != 0) {
      ADD_FAILURE() << "prepare_read: " << ErrName(err);
      return out;
    }
    if (span.length == 0) return out;
    const std::size_t at = out.size();
    out.resize(at + span.length);
    ssize_t n = pread(span.fd, out.data() + at, span.length, static_cast<off_t>(span.offset));
    if (n != static_cast<ssize_t>(span.length)) {
      ADD_FAILURE() << "pread of " << span.length << " bytes returned " << n;
      out.resize(at);
      return out;
    }
  }
}

std::string StoreTest::ContentsOf(Ino ino, const Caller& caller) {
  std::uint64_t fh = OpenRead(ino, caller);
  if (fh == 0) return {};
  std::string out = Contents(fh);
  EXPECT_EQ(store().release(fh), 0);
  return out;
}

int StoreTest::Push(Ino object, std::string_view data) {
  Attr ticket;
  OpenFile push;
  if (int err = store().lookup(object, control::kPush, Me(), &ticket); err != 0) return err;
  if (int err = store().open(ticket.ino, O_WRONLY, Me(), &push); err != 0) return err;
  int err = Write(push.fh, 0, data);
  if (int flushed = store().flush(push.fh, Me()); err == 0) err = flushed;
  if (int released = store().release(push.fh); err == 0) err = released;
  return err;
}

Ino StoreTest::InoOf(Ino parent, std::string_view name, const Caller& caller) {
  Attr attr;
  if (store().lookup(parent, name, caller, &attr) != 0) return 0;
  store().forget(attr.ino, 1);  // a peek: no kernel reference is kept
  return attr.ino;
}

Names StoreTest::Listing(Ino dir) {
  std::vector<DirEntry> entries;
  if (int err = store().readdir(dir, &entries); err != 0) {
    ADD_FAILURE() << "readdir " << dir << ": " << ErrName(err);
  }
  Names names;
  for (const DirEntry& d : entries) {
    if (!IsControlFile(d.name)) names.push_back(d.name);
  }
  return names;
}

int StoreTest::GetAttr(Ino ino, Attr* out) {
  Attr ignored;
  return store().getattr(ino, out ? out : &ignored);
}

::testing::AssertionResult StoreTest::Gone(Ino ino) {
  const int err = GetAttr(ino);
  if (err == ENOENT || err == ESTALE) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "getattr of inode " << ino << " gave " << (err == 0 ? "0" : ErrName(err));
}

std::string StoreTest::Xattr(Ino ino, std::string_view name) {
  std::string value;
  int err = store().getxattr(ino, name, &value);
  return err == 0 ? value : "<" + ErrName(err) + ">";
}

Names StoreTest::XattrNames(Ino ino) {
  std::string list;
  if (int err = store().listxattr(ino, &list); err != 0) {
    ADD_FAILURE() << "listxattr " << ino << ": " << ErrName(err);
  }
  Names names;
  for (std::size_t at = 0, end; (end = list.find('\0', at)) != std::string::npos; at = end + 1) {
    names.push_back(list.substr(at, end - at));
  }
  std::sort(names.begin(), names.end());
  return names;
}

int StoreTest::SetXattr(Ino ino, std::string_view name, std::string_view value, int flags) {
  return store().setxattr(ino, name, value, flags);
}

int StoreTest::RemoveXattr(Ino ino, std::string_view name) {
  return store().removexattr(ino, name);
}

}  // namespace smos::test
