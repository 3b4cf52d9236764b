// The metadata segment: a Boost.Interprocess managed segment holding a store's tables.
//
// A MetaSegment is opened once per daemon. It holds an exclusive lock on the store for its
// lifetime, so two daemons can never share one store. Move-only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <boost/interprocess/managed_shared_memory.hpp>

#include "store/layout.h"

namespace smos {

struct MetaGeometry {
  std::uint64_t max_objects;
  std::uint64_t max_entries;
};

class MetaSegment {
 public:
  MetaSegment(const MetaSegment&) = delete;
  MetaSegment& operator=(const MetaSegment&) = delete;
  ~MetaSegment();

  // Attaches to the store `name`, or creates it with `geometry` if it does not exist (or if
  // `reset` is set, after removing every file of the old store). On attach, the geometry is
  // the one recorded in the segment. Errors are errno values, with a message for the log.
  static int open(const std::string& name, MetaGeometry geometry, bool reset,
                  std::unique_ptr<MetaSegment>* out, std::string* message);

  // The names of the store's files under /dev/shm.
  static std::string meta_name(const std::string& store);
  static std::string slot_name(const std::string& store, std::uint64_t slot);

  bool created() const { return created_; }
  layout::StoreHeader& header() { return *header_; }
  layout::ObjectRecord& object(std::uint64_t i) { return objects_[i]; }
  layout::EntryRecord& entry(std::uint64_t i) { return entries_[i]; }
  layout::XattrBlob& entry_xattrs(std::uint64_t i) { return xattrs_[i]; }
  layout::XattrBlob& object_xattrs(std::uint64_t i) { return xattrs_[header_->max_entries + i]; }

 private:
  MetaSegment() = default;
  int create(const std::string& name, MetaGeometry geometry, std::string* message);
  int attach(const std::string& name, std::string* message);
  static void remove_files(const std::string& name);

  int lock_fd_ = -1;
  bool created_ = false;
  boost::interprocess::managed_shared_memory segment_;
  layout::StoreHeader* header_ = nullptr;
  layout::ObjectRecord* objects_ = nullptr;
  layout::EntryRecord* entries_ = nullptr;
  layout::XattrBlob* xattrs_ = nullptr;
};

}  // namespace smos
