// Free-form user.* attributes packed into a fixed-size blob in shared memory.
#pragma once

#include <string>
#include <string_view>

#include "store/layout.h"

namespace smos::xattr_blob {

// Copies the value of `name` into *value. ENODATA if it is not set.
int get(const layout::XattrBlob& blob, std::string_view name, std::string* value);

// Sets `name` to `value`. `flags` are XATTR_CREATE / XATTR_REPLACE (EEXIST / ENODATA). ENOSPC
// when the total of names and values would pass xattr::kUserXattrCap.
int set(layout::XattrBlob& blob, std::string_view name, std::string_view value, int flags);

// Removes `name`. ENODATA if it is not set.
int remove(layout::XattrBlob& blob, std::string_view name);

// Appends every name, each followed by a NUL, to *names.
void list(const layout::XattrBlob& blob, std::string* names);

// Empties the blob.
void clear(layout::XattrBlob& blob);

// Cuts a blob read back after a crash to its whole records: what follows the first record
// that runs past the used length or the blob, or whose name is no user.* name, is dropped.
// True if anything was.
bool repair(layout::XattrBlob& blob);

}  // namespace smos::xattr_blob
