// Free-form user.* attributes in their fixed-size shared-memory blob.
#include "store/xattr_blob.h"

#include <gtest/gtest.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>
#include <vector>

#include "smos/xattr.h"

namespace smos {
namespace {

constexpr std::size_t kCap = xattr::kUserXattrCap;

class XattrBlobTest : public ::testing::Test {
 protected:
  // The value of `name`, or nullopt if it is not set (ENODATA).
  std::optional<std::string> Get(std::string_view name) {
    std::string value;
    int err = xattr_blob::get(blob_, name, &value);
    if (err == ENODATA) return std::nullopt;
    EXPECT_EQ(err, 0) << name;
    return value;
  }
  // The listed names, sorted.
  std::vector<std::string> Names() {
    std::string list;
    xattr_blob::list(blob_, &list);
    std::vector<std::string> names;
    for (std::size_t at = 0; at < list.size();) {
      std::size_t end = list.find('\0', at);
      EXPECT_NE(end, std::string::npos) << "every name ends in a NUL";
      if (end == std::string::npos) break;
      names.push_back(list.substr(at, end - at));
      at = end + 1;
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  using Strings = std::vector<std::string>;

  layout::XattrBlob blob_{};
};

TEST_F(XattrBlobTest, AnEmptyBlobHasNothing) {
  std::string value = "untouched";
  EXPECT_EQ(xattr_blob::get(blob_, "user.dtype", &value), ENODATA);
  EXPECT_EQ(value, "untouched");
  EXPECT_EQ(Names(), Strings{});
  EXPECT_EQ(xattr_blob::remove(blob_, "user.dtype"), ENODATA);
}

TEST_F(XattrBlobTest, SetGetListRemove) {
  ASSERT_EQ(xattr_blob::set(blob_, "user.dtype", "float32", 0), 0);
  ASSERT_EQ(xattr_blob::set(blob_, "user.shape", "84,84,4", 0), 0);
  ASSERT_EQ(xattr_blob::set(blob_, "user.empty", "", 0), 0);
  EXPECT_EQ(Get("user.dtype"), "float32");
  EXPECT_EQ(Get("user.shape"), "84,84,4");
  EXPECT_EQ(Get("user.empty"), "");
  EXPECT_EQ(Names(), (Strings{"user.dtype", "user.empty", "user.shape"}));

  ASSERT_EQ(xattr_blob::remove(blob_, "user.shape"), 0);
  EXPECT_EQ(Get("user.shape"), std::nullopt);
  EXPECT_EQ(Get("user.dtype"), "float32");
  EXPECT_EQ(Get("user.empty"), "");
  EXPECT_EQ(Names(), (Strings{"user.dtype", "user.empty"}));
  EXPECT_EQ(xattr_blob::remove(blob_, "user.shape"), ENODATA);
}

TEST_F(XattrBlobTest, ValuesAreBinarySafe) {
  const std::string value("a\0b\n\xff", 5);
  ASSERT_EQ(xattr_blob::set(blob_, "user.raw", value, 0), 0);
  EXPECT_EQ(Get("user.raw"), value);
}

TEST_F(XattrBlobTest, SetReplacesTheValue) {
  ASSERT_EQ(xattr_blob::set(blob_, "user.a", "first", 0), 0);
  ASSERT_EQ(xattr_blob::set(blob_, "user.b", "other", 0), 0);
  ASSERT_EQ(xattr_blob::set(blob_, "user.a", "second, longer", 0), 0);
  EXPECT_EQ(Get("user.a"), "second, longer");
  EXPECT_EQ(Get("user.b"), "other");
  EXPECT_EQ(Names(), (Strings{"user.a", "user.b"}));
}

TEST_F(XattrBlobTest, CreateAndReplaceFlags) {
  EXPECT_EQ(xattr_blob::set(blob_, "user.a", "1", XATTR_REPLACE), ENODATA);
  EXPECT_EQ(Get("user.a"), std::nullopt);
  ASSERT_EQ(xattr_blob::set(blob_, "user.a", "1", XATTR_CREATE), 0);
  EXPECT_EQ(xattr_blob::set(blob_, "user.a", "2", XATTR_CREATE), EEXIST);
  EXPECT_EQ(Get("user.a"), "1");
  ASSERT_EQ(xattr_blob::set(blob_, "user.a", "3", XATTR_REPLACE), 0);
  EXPECT_EQ(Get("user.a"), "3");
}

TEST_F(XattrBlobTest, NamesAndValuesMayFillTheCapExactly) {
  const std::string name = "user.big";
  ASSERT_EQ(xattr_blob::set(blob_, name, std::string(kCap - name.size(), 'x'), 0), 0);
  EXPECT_EQ(Get(name), std::string(kCap - name.size(), 'x'));
}

TEST_F(XattrBlobTest, PassingTheCapFailsWithEnospc) {
  const std::string name = "user.big";
  EXPECT_EQ(xattr_blob::set(blob_, name, std::string(kCap - name.size() + 1, 'x'), 0), ENOSPC);
  EXPECT_EQ(Names(), Strings{});

  ASSERT_EQ(xattr_blob::set(blob_, "user.a", std::string(2000, 'a'), 0), 0);
  ASSERT_EQ(xattr_blob::set(blob_, "user.b", std::string(kCap - 2000 - 12, 'b'), 0), 0);
  EXPECT_EQ(xattr_blob::set(blob_, "user.c", "", 0), ENOSPC);
  EXPECT_EQ(Get("user.c"), std::nullopt);
}

TEST_F(XattrBlobTest, ReplacingWithinTheCapSucceeds) {
  const std::string name = "user.big";
  ASSERT_EQ(xattr_blob::set(blob_, name, std::string(kCap - name.size(), 'x'), 0), 0);
  // The old value does not count against its replacement.
  ASSERT_EQ(xattr_blob::set(blob_, name, std::string(kCap - name.size(), 'y'), 0), 0);
  EXPECT_EQ(Get(name), std::string(kCap - name.size(), 'y'));
  ASSERT_EQ(xattr_blob::set(blob_, name, "small", 0), 0);
  EXPECT_EQ(Get(name), "small");
}

TEST_F(XattrBlobTest, AReplacementPastTheCapKeepsTheOldValue) {
  ASSERT_EQ(xattr_blob::set(blob_, "user.a", std::string(2000, 'a'), 0), 0);
  ASSERT_EQ(xattr_blob::set(blob_, "user.b", std::string(1000, 'b'), 0), 0);
  EXPECT_EQ(xattr_blob::set(blob_, "user.a", std::string(3000, 'A'), 0), ENOSPC);
  EXPECT_EQ(Get("user.a"), std::string(2000, 'a'));
  EXPECT_EQ(Get("user.b"), std::string(1000, 'b'));
}

TEST_F(XattrBlobTest, RemovingMakesRoom) {
  ASSERT_EQ(xattr_blob::set(blob_, "user.a", std::string(3000, 'a'), 0), 0);
  EXPECT_EQ(xattr_blob::set(blob_, "user.b", std::string(1000, 'b'), 0), ENOSPC);
  ASSERT_EQ(xattr_blob::remove(blob_, "user.a"), 0);
  EXPECT_EQ(xattr_blob::set(blob_, "user.b", std::string(1000, 'b'), 0), 0);
}

// smos(7): the cap counts names and values only, so any set of attributes whose names and
// values add up to at most 4000 bytes fits, however many attributes that is.
TEST_F(XattrBlobTest, ManySmallAttributesFillTheWholeCap) {
  constexpr int kCount = 100;
  std::size_t total = 0;
  for (int i = 0; i < kCount; ++i) {
    const std::string name = "user.k" + std::to_string(1000 + i);  // 10 bytes
    const std::string value(30, static_cast<char>('a' + i % 26));
    total += name.size() + value.size();
    ASSERT_EQ(xattr_blob::set(blob_, name, value, 0), 0)
        << "attribute " << i << ", " << total << " bytes of " << kCap;
  }
  EXPECT_EQ(total, kCap);
  EXPECT_EQ(Get("user.k1099"), std::string(30, 'a' + 99 % 26));
}

TEST_F(XattrBlobTest, ClearEmptiesTheBlob) {
  ASSERT_EQ(xattr_blob::set(blob_, "user.a", "1", 0), 0);
  xattr_blob::clear(blob_);
  EXPECT_EQ(Names(), Strings{});
  EXPECT_EQ(xattr_blob::set(blob_, "user.a", std::string(kCap - 6, 'x'), 0), 0);
}

}  // namespace
}  // namespace smos
