// The extended attributes of objects and entries: user.smos.* settings and reports, free-form
// user.* metadata, and the errors of each.
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "store_fixture.h"

namespace smos::test {
namespace {

class StoreAttributesTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    if (!HasFatalFailure()) obj_ = MakeObject("o");
  }

  // Whether every name of `expected` is in `listed`, which is sorted.
  static bool Includes(const Names& listed, Names expected) {
    std::sort(expected.begin(), expected.end());
    return std::includes(listed.begin(), listed.end(), expected.begin(), expected.end());
  }

  Ino obj_ = 0;
};

TEST_F(StoreAttributesTest, ANewObjectHasTheDefaults) {
  EXPECT_EQ(Xattr(obj_, xattr::kCapacity), std::to_string(options().default_capacity));
  EXPECT_EQ(Xattr(obj_, xattr::kBlockSize), std::to_string(options().default_block_size));
  EXPECT_EQ(Xattr(obj_, xattr::kCommit), "close");
  EXPECT_EQ(Xattr(obj_, xattr::kEntries), "0");
  EXPECT_EQ(Xattr(obj_, xattr::kBytes), "0");
  EXPECT_EQ(Xattr(obj_, "user.smos.nonsense"), "<ENODATA>");
  EXPECT_EQ(Xattr(obj_, "user.note"), "<ENODATA>");
}

TEST_F(StoreAttributesTest, ObjectSettingsTakeNumbersAndSizes) {
  ASSERT_EQ(SetXattr(obj_, xattr::kCapacity, "64"), 0);
  EXPECT_EQ(Xattr(obj_, xattr::kCapacity), "64");
  ASSERT_EQ(SetXattr(obj_, xattr::kCapacity, "32\n"), 0) << "echo's newline";
  EXPECT_EQ(Xattr(obj_, xattr::kCapacity), "32");
  ASSERT_EQ(SetXattr(obj_, xattr::kBlockSize, "64K"), 0);
  EXPECT_EQ(Xattr(obj_, xattr::kBlockSize), "65536");
  ASSERT_EQ(SetXattr(obj_, xattr::kBlockSize, "8192"), 0);
  EXPECT_EQ(Xattr(obj_, xattr::kBlockSize), "8192");
  ASSERT_EQ(SetXattr(obj_, xattr::kCommit, "explicit"), 0);
  EXPECT_EQ(Xattr(obj_, xattr::kCommit), "explicit");
  // Trailing newlines, spaces and NULs are ignored alike, by every setting.
  ASSERT_EQ(SetXattr(obj_, xattr::kCapacity, std::string("5\0", 2)), 0);
  ASSERT_EQ(SetXattr(obj_, xattr::kBlockSize, std::string("4K \0", 4)), 0);
  EXPECT_EQ(Xattr(obj_, xattr::kBlockSize), "4096");
}

TEST_F(StoreAttributesTest, SettingsHonourCreateAndReplaceFlags) {
  EXPECT_EQ(SetXattr(obj_, xattr::kCapacity, "8", XATTR_CREATE), EEXIST) << "it has a value";
  EXPECT_EQ(SetXattr(obj_, xattr::kCapacity, "8", XATTR_REPLACE), 0);
  EXPECT_EQ(Xattr(obj_, xattr::kCapacity), "8");
  EXPECT_EQ(SetXattr(obj_, xattr::kTracks, "a:uint8:4", XATTR_REPLACE), ENODATA) << "none yet";
  EXPECT_EQ(SetXattr(obj_, xattr::kTracks, "a:uint8:4", XATTR_CREATE), 0);
  EXPECT_EQ(SetXattr(obj_, xattr::kTracks, "a:uint8:8", XATTR_CREATE), EEXIST);
  EXPECT_EQ(Xattr(obj_, xattr::kTracks), "a:uint8:4");
}

TEST_F(StoreAttributesTest, MalformedValuesFailWithEinval) {
  for (const char* value : {"", "0", "-1", "lots", "12x", "1K", "1.5"}) {
    EXPECT_EQ(SetXattr(obj_, xattr::kCapacity, value), EINVAL) << value;
  }
  for (const char* value : {"", "0", "big", "4X", "-4K"}) {
    EXPECT_EQ(SetXattr(obj_, xattr::kBlockSize, value), EINVAL) << value;
  }
  for (const char* value : {"", "sometimes", "Close"}) {
    EXPECT_EQ(SetXattr(obj_, xattr::kCommit, value), EINVAL) << value;
  }
  EXPECT_EQ(Xattr(obj_, xattr::kCapacity), std::to_string(options().default_capacity));
  EXPECT_EQ(Xattr(obj_, xattr::kBlockSize), std::to_string(options().default_block_size));
  EXPECT_EQ(Xattr(obj_, xattr::kCommit), "close");
}

TEST_F(StoreAttributesTest, CapacityAndBlockSizeAreFixedByTheFirstEntry) {
  std::uint64_t fh = Create(obj_, "e");
  EXPECT_EQ(SetXattr(obj_, xattr::kCapacity, "4"), EBUSY);
  EXPECT_EQ(SetXattr(obj_, xattr::kBlockSize, "4K"), EBUSY);
  ASSERT_EQ(store().release(fh), 0);
  ASSERT_EQ(store().unlink(obj_, "e", Me()), 0);
  EXPECT_EQ(SetXattr(obj_, xattr::kCapacity, "4"), EBUSY) << "even when empty again";
  EXPECT_EQ(Xattr(obj_, xattr::kCapacity), std::to_string(options().default_capacity));
  // The commit mode can change at any time.
  EXPECT_EQ(SetXattr(obj_, xattr::kCommit, "explicit"), 0);
}

TEST_F(StoreAttributesTest, ReadOnlyAndUnknownSmosNamesFailWithEperm) {
  for (const char* name : {xattr::kEntries, xattr::kBytes, "user.smos.nonsense", xattr::kState,
                           xattr::kSeq}) {
    EXPECT_EQ(SetXattr(obj_, name, "1"), EPERM) << name;
    EXPECT_EQ(RemoveXattr(obj_, name), EPERM) << name;
  }
  Attr attr;
  std::uint64_t fh = Create(obj_, "e", &attr);
  for (const char* name : {xattr::kReaders, xattr::kSeq, xattr::kSegment, xattr::kCapacity,
                           "user.smos.nonsense"}) {
    EXPECT_EQ(SetXattr(attr.ino, name, "1"), EPERM) << name;
    EXPECT_EQ(RemoveXattr(attr.ino, name), EPERM) << name;
  }
  EXPECT_EQ(RemoveXattr(attr.ino, xattr::kState), EPERM);
  EXPECT_EQ(Xattr(attr.ino, xattr::kSeq), "0");
  ASSERT_EQ(store().release(fh), 0);
}

TEST_F(StoreAttributesTest, OtherNamespacesAreNotSupported) {
  Attr attr;
  std::uint64_t fh = Create(obj_, "e", &attr);
  for (Ino ino : {obj_, attr.ino}) {
    for (const char* name : {"trusted.x", "security.x", "system.x"}) {
      EXPECT_EQ(SetXattr(ino, name, "1"), ENOTSUP) << name;
      EXPECT_EQ(RemoveXattr(ino, name), ENOTSUP) << name;
    }
  }
  ASSERT_EQ(store().release(fh), 0);
}

TEST_F(StoreAttributesTest, UserAttributesOfAnObjectChangeAnyTime) {
  ASSERT_EQ(SetXattr(obj_, "user.note", "first"), 0);
  ASSERT_NE(Put(obj_, "e", "x"), 0u);
  ASSERT_EQ(SetXattr(obj_, "user.note", "second", XATTR_REPLACE), 0);
  EXPECT_EQ(Xattr(obj_, "user.note"), "second");
  EXPECT_EQ(SetXattr(obj_, "user.note", "third", XATTR_CREATE), EEXIST);
  EXPECT_EQ(SetXattr(obj_, "user.big", std::string(xattr::kUserXattrCap, 'x')),
            ENOSPC);
  ASSERT_EQ(RemoveXattr(obj_, "user.note"), 0);
  EXPECT_EQ(Xattr(obj_, "user.note"), "<ENODATA>");
  EXPECT_EQ(RemoveXattr(obj_, "user.note"), ENODATA);
}

TEST_F(StoreAttributesTest, UserAttributesOfAnEntryAreCapped) {
  Attr attr;
  std::uint64_t fh = Create(obj_, "e", &attr);
  const std::string name = "user.blob";
  const std::string fits(xattr::kUserXattrCap - name.size(), 'x');
  EXPECT_EQ(SetXattr(attr.ino, name, fits + "x"), ENOSPC);
  ASSERT_EQ(SetXattr(attr.ino, name, fits), 0);
  ASSERT_EQ(SetXattr(attr.ino, name, std::string(fits.size(), 'y')), 0)
      << "a replacement within the cap";
  EXPECT_EQ(SetXattr(attr.ino, "user.more", ""), ENOSPC);
  EXPECT_EQ(Xattr(attr.ino, name), std::string(fits.size(), 'y'));
  ASSERT_EQ(store().release(fh), 0);
}

TEST_F(StoreAttributesTest, ListxattrNamesEverything) {
  ASSERT_EQ(SetXattr(obj_, "user.note", "n"), 0);
  EXPECT_PRED2(Includes, XattrNames(obj_),
               (Names{"user.note", xattr::kBlockSize, xattr::kBytes, xattr::kCapacity,
                      xattr::kCommit, xattr::kEntries}));
  Attr attr;
  std::uint64_t fh = Create(obj_, "e", &attr);
  ASSERT_EQ(SetXattr(attr.ino, "user.dtype", "u8"), 0);
  ASSERT_EQ(SetXattr(attr.ino, "user.shape", "2,2"), 0);
  ASSERT_EQ(store().release(fh), 0);
  EXPECT_PRED2(Includes, XattrNames(attr.ino),
               (Names{"user.dtype", "user.shape", xattr::kReaders, xattr::kSegment, xattr::kSeq,
                      xattr::kState}));
}

TEST_F(StoreAttributesTest, TheRootHasNoAttributes) {
  EXPECT_EQ(XattrNames(kRootIno), Names{});
  EXPECT_EQ(Xattr(kRootIno, xattr::kCapacity), "<ENODATA>");
}

}  // namespace
}  // namespace smos::test
