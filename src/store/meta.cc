#include "store/meta.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include <spdlog/spdlog.h>

#include "os/process.h"
#include "os/segment.h"

namespace smos {

namespace bip = boost::interprocess;

namespace {

constexpr char kHeaderName[] = "smos.header";
constexpr std::size_t kAlign = 64;
// Room for the segment manager's own bookkeeping next to our tables.
constexpr std::size_t kManagerSlack = 64 * 1024;
// The first word of a managed segment is Boost's state of it (managed_open_or_create_impl.hpp:
// 0 uninitialized, 1 initializing, 2 initialized, 3 corrupted); usable once it is 2.
constexpr std::uint32_t kBoostInitialized = 2;

std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

std::string MetaSegment::meta_name(const std::string& store) { return store + ".meta"; }

std::string MetaSegment::slot_name(const std::string& store, std::uint64_t slot) {
  return store + ".slot." + std::to_string(slot);
}

MetaSegment::~MetaSegment() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

int MetaSegment::open(const std::string& name, MetaGeometry geometry, bool reset,
                      std::unique_ptr<MetaSegment>* out, std::string* message) {
  std::unique_ptr<MetaSegment> meta(new MetaSegment());
  std::string lock_path = os::shm_path(name + ".lock");
  meta->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (meta->lock_fd_ < 0) {
    int err = errno;
    *message = "cannot open " + lock_path + ": " + std::strerror(err);
    return err;
  }
  if (std::string why; int err = os::check_own_file(meta->lock_fd_, &why)) {
    *message = "refusing " + lock_path + ": " + why +
               "; if no smosd of its owner uses it, remove it by hand";
    return err;
  }
  if (flock(meta->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    *message = "store '" + name + "' is in use by another smosd (lock " + lock_path + ")";
    return err == EWOULDBLOCK ? EBUSY : err;
  }
  if (reset) remove_files(name);

  int err = meta->attach(name, message);
  if (err == ENOENT) err = meta->create(name, geometry, message);
  if (err != 0) return err;
  *out = std::move(meta);
  return 0;
}

int MetaSegment::attach(const std::string& name, std::string* message) {
  const std::string path = os::shm_path(meta_name(name));
  const std::string reset = "; start with --reset to discard it";
  // /dev/shm is everyone's: the file must be this smosd's own. And Boost waits forever on a
  // segment that its creator never finished (a smosd killed while it created the store): the
  // file is empty, or its first word, Boost's own state of the segment, is not "initialized".
  os::FileHead head;
  if (std::string why; int err = os::read_own_file_head(path, &head, &why)) {
    if (err == ENOENT) return ENOENT;
    *message = "refusing " + path + ": " + why + reset;
    return err;
  }
  if (head.size == 0 || head.first_word < kBoostInitialized) {
    *message = path + " was left half-made (a smosd stopped while it created the store)" + reset;
    return EINVAL;
  }
  if (head.size < kManagerSlack || head.first_word != kBoostInitialized) {
    *message = path + " is not an smos store (damaged, or cut short)" + reset;
    return EINVAL;
  }
  // Boost walks its own bookkeeping (written once, when the store was made) without checks,
  // so damage there, or a file cut short, would crash the daemon: a child walks it first.
  // Neither takes the segment's mutex (find_no_lock): the store's flock already keeps other
  // daemons out, and that mutex, damaged or held by a daemon killed in find(), could wait
  // for good.
  constexpr int kCutShort = 2;
  const int probed = os::probe_in_child([&] {
    try {
      bip::managed_shared_memory probe(bip::open_read_only, meta_name(name).c_str());
      if (head.size < probe.get_size()) return kCutShort;
      probe.find_no_lock<layout::StoreHeader>(kHeaderName);
      return 0;
    } catch (const std::exception&) {
      return 0;  // the attach below says what is wrong
    }
  }, /*timeout_ms=*/10'000);
  if (probed == os::kProbeUnknown) {
    spdlog::warn("{}: could not check it in a child process; reading it as it is", path);
  } else if (probed != 0) {
    *message = path + (probed == kCutShort ? " is shorter than the store it holds"
                                           : " has damaged bookkeeping (it crashed or hung a reader)") +
               reset;
    return EINVAL;
  }
  try {
    segment_ = bip::managed_shared_memory(bip::open_only, meta_name(name).c_str());
  } catch (const bip::interprocess_exception& e) {
    if (e.get_native_error() == ENOENT) return ENOENT;
    *message = "cannot attach to " + path + ": " + e.what() + reset;
    return EIO;
  }
  header_ = segment_.find_no_lock<layout::StoreHeader>(kHeaderName).first;
  if (header_ == nullptr || header_->magic != layout::kMagic ||
      header_->header_size != sizeof(layout::StoreHeader)) {
    *message = path + " is not an smos store" + reset;
    return EINVAL;
  }
  const layout::StoreHeader& h = *header_;
  if (h.version != layout::kVersion) {
    *message = path + " has layout version " + std::to_string(h.version) +
               ", this smosd reads version " + std::to_string(layout::kVersion) + reset;
    return EINVAL;
  }
  // Recovery walks the tables the header describes: they must lie inside the segment.
  const std::uint64_t size = segment_.get_size();
  auto fits = [size](std::int64_t off, std::uint64_t count, std::size_t record) {
    return off >= 0 && static_cast<std::uint64_t>(off) % alignof(layout::StoreHeader) == 0 &&
           static_cast<std::uint64_t>(off) <= size &&
           count <= (size - static_cast<std::uint64_t>(off)) / record;
  };
  if (h.max_objects == 0 || h.max_objects > layout::kMaxObjectsLimit || h.max_entries == 0 ||
      h.max_entries > layout::kMaxEntriesLimit || h.object_hwm > h.max_objects ||
      h.entry_hwm > h.max_entries ||
      !fits(h.objects_off, h.max_objects, sizeof(layout::ObjectRecord)) ||
      !fits(h.entries_off, h.max_entries, sizeof(layout::EntryRecord)) ||
      !fits(h.xattrs_off, h.max_entries + h.max_objects, sizeof(layout::XattrBlob))) {
    *message = path + " has a damaged header" + reset;
    return EINVAL;
  }
  auto* base = static_cast<char*>(segment_.get_address());
  objects_ = reinterpret_cast<layout::ObjectRecord*>(base + h.objects_off);
  entries_ = reinterpret_cast<layout::EntryRecord*>(base + h.entries_off);
  xattrs_ = reinterpret_cast<layout::XattrBlob*>(base + h.xattrs_off);
  created_ = false;
  return 0;
}

int MetaSegment::create(const std::string& name, MetaGeometry geometry, std::string* message) {
  const std::size_t objects_bytes = round_up(geometry.max_objects * sizeof(layout::ObjectRecord));
  const std::size_t entries_bytes = round_up(geometry.max_entries * sizeof(layout::EntryRecord));
  const std::size_t xattrs_bytes =
      round_up((geometry.max_entries + geometry.max_objects) * sizeof(layout::XattrBlob));
  const std::size_t total = objects_bytes + entries_bytes + xattrs_bytes + kManagerSlack;
  try {
    segment_ = bip::managed_shared_memory(bip::create_only, meta_name(name).c_str(), total,
                                          nullptr, bip::permissions(0600));
    header_ = segment_.construct<layout::StoreHeader>(kHeaderName)();
    // The tables come from a freshly truncated file and the allocator writes only its own
    // block header in front of them, so they start zero-filled without touching every page:
    // a record whose ino is 0 is free.
    void* objects = segment_.allocate_aligned(objects_bytes, kAlign);
    void* entries = segment_.allocate_aligned(entries_bytes, kAlign);
    void* xattrs = segment_.allocate_aligned(xattrs_bytes, kAlign);
    objects_ = static_cast<layout::ObjectRecord*>(objects);
    entries_ = static_cast<layout::EntryRecord*>(entries);
    xattrs_ = static_cast<layout::XattrBlob*>(xattrs);
  } catch (const std::exception& e) {
    *message = "cannot create " + os::shm_path(meta_name(name)) + ": " + e.what();
    remove_files(name);
    return ENOSPC;
  }
  auto* base = static_cast<char*>(segment_.get_address());
  layout::StoreHeader& h = *header_;
  h.version = layout::kVersion;
  h.header_size = sizeof(layout::StoreHeader);
  h.max_objects = geometry.max_objects;
  h.max_entries = geometry.max_entries;
  h.next_ino = 2;  // 1 is the root
  h.objects_off = reinterpret_cast<char*>(objects_) - base;
  h.entries_off = reinterpret_cast<char*>(entries_) - base;
  h.xattrs_off = reinterpret_cast<char*>(xattrs_) - base;
  const std::int64_t now = os::now_ns();
  h.root_times = {now, now, now};
  h.root_mode = 0755;
  h.root_uid = getuid();
  h.root_gid = getgid();
  h.magic = layout::kMagic;  // last: a half-created segment is refused on attach
  created_ = true;
  return 0;
}

void MetaSegment::remove_files(const std::string& name) {
  // Exactly this store's files: "<name>.meta" and "<name>.slot.<digits>".
  const std::string prefix = name + ".slot.";
  auto is_slot = [&prefix](std::string_view file) {
    if (!file.starts_with(prefix) || file.size() == prefix.size()) return false;
    return file.substr(prefix.size()).find_first_not_of("0123456789") == std::string_view::npos;
  };
  if (DIR* dir = opendir("/dev/shm")) {
    while (dirent* d = readdir(dir)) {
      if (is_slot(d->d_name)) os::SegmentFile::remove(d->d_name);
    }
    closedir(dir);
  }
  bip::shared_memory_object::remove(meta_name(name).c_str());
}

}  // namespace smos
