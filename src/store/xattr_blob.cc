#include "store/xattr_blob.h"

#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace smos::xattr_blob {

namespace {

// Each record: [u8 name_len][u16 value_len][name bytes][value bytes], packed.
constexpr std::size_t kRecordHeader = layout::kXattrRecordHeader;
static_assert(kRecordHeader == sizeof(std::uint8_t) + sizeof(std::uint16_t));

struct Record {
  std::size_t offset;  // of the record header
  std::string_view name;
  std::string_view value;
  std::size_t size() const { return kRecordHeader + name.size() + value.size(); }
};

// Calls fn(record) for each record, in order, until fn returns true. Returns that record.
template <typename Fn>
bool find_record(const layout::XattrBlob& blob, Fn fn, Record* found = nullptr) {
  std::size_t at = 0;
  const std::size_t used = std::min<std::size_t>(blob.used, sizeof blob.data);
  while (at + kRecordHeader <= used) {
    std::uint8_t name_len;
    std::uint16_t value_len;
    std::memcpy(&name_len, blob.data + at, sizeof name_len);
    std::memcpy(&value_len, blob.data + at + sizeof name_len, sizeof value_len);
    const char* name = blob.data + at + kRecordHeader;
    Record r{at, {name, name_len}, {name + name_len, value_len}};
    if (at + r.size() > used) return false;  // torn by a crash: ignore the tail
    if (fn(r)) {
      if (found) *found = r;
      return true;
    }
    at += r.size();
  }
  return false;
}

std::size_t payload(const layout::XattrBlob& blob) {
  std::size_t total = 0;
  find_record(blob, [&](const Record& r) {
    total += r.name.size() + r.value.size();
    return false;
  });
  return total;
}

bool lookup(const layout::XattrBlob& blob, std::string_view name, Record* found) {
  return find_record(blob, [&](const Record& r) { return r.name == name; }, found);
}

void erase(layout::XattrBlob& blob, const Record& r) {
  std::size_t end = r.offset + r.size();
  std::memmove(blob.data + r.offset, blob.data + end, blob.used - end);
  blob.used -= static_cast<std::uint32_t>(r.size());
}

}  // namespace

int get(const layout::XattrBlob& blob, std::string_view name, std::string* value) {
  Record r;
  if (!lookup(blob, name, &r)) return ENODATA;
  value->assign(r.value);
  return 0;
}

int set(layout::XattrBlob& blob, std::string_view name, std::string_view value, int flags) {
  Record old;
  bool exists = lookup(blob, name, &old);
  if (exists && (flags & XATTR_CREATE)) return EEXIST;
  if (!exists && (flags & XATTR_REPLACE)) return ENODATA;
  std::size_t total = payload(blob) - (exists ? old.name.size() + old.value.size() : 0);
  if (total + name.size() + value.size() > xattr::kUserXattrCap) return ENOSPC;
  if (name.size() > UINT8_MAX) return ERANGE;  // XATTR_NAME_MAX is 255
  if (name.size() < 6) return EINVAL;         // "user." and at least one more byte
  if (exists) erase(blob, old);
  const std::size_t need = kRecordHeader + name.size() + value.size();
  if (blob.used + need > sizeof(blob.data)) return ENOSPC;  // cannot happen within the cap
  char* at = blob.data + blob.used;
  auto name_len = static_cast<std::uint8_t>(name.size());
  auto value_len = static_cast<std::uint16_t>(value.size());
  std::memcpy(at, &name_len, sizeof name_len);
  std::memcpy(at + sizeof name_len, &value_len, sizeof value_len);
  std::memcpy(at + kRecordHeader, name.data(), name.size());
  std::memcpy(at + kRecordHeader + name.size(), value.data(), value.size());
  blob.used += static_cast<std::uint32_t>(need);  // last: the record is whole before it counts
  return 0;
}

int remove(layout::XattrBlob& blob, std::string_view name) {
  Record r;
  if (!lookup(blob, name, &r)) return ENODATA;
  erase(blob, r);
  return 0;
}

void list(const layout::XattrBlob& blob, std::string* names) {
  find_record(blob, [&](const Record& r) {
    names->append(r.name);
    names->push_back('\0');
    return false;
  });
}

void clear(layout::XattrBlob& blob) { blob.used = 0; }

bool repair(layout::XattrBlob& blob) {
  std::size_t whole = 0;
  find_record(blob, [&](const Record& r) {
    if (r.name.size() < 6 || !r.name.starts_with("user.")) return true;
    whole = r.offset + r.size();
    return false;
  });
  if (whole == blob.used) return false;
  blob.used = static_cast<std::uint32_t>(whole);
  return true;
}

}  // namespace smos::xattr_blob
