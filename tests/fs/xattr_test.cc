// Entry attributes: the user.smos.* ones the daemon owns, free-form user.* metadata and its cap,
// and the errors of the xattr calls.
#include <sys/xattr.h>
#include <unistd.h>

#include <string>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

using XattrTest = ObjectTest;

TEST_F(XattrTest, UserAttributesSetWhileWritingAreKeptAndListed) {
  Fd fd = Open(entry_, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteAll(fd.get(), Pattern(24, 1)), kOk);
  EXPECT_EQ(FSetXattr(fd.get(), "user.dtype", "float32"), kOk);
  EXPECT_EQ(SetXattr(entry_, "user.shape", "2,3"), kOk);
  EXPECT_EQ(SetXattr(entry_, "user.tmp", "gone soon"), kOk);
  EXPECT_EQ(RemoveXattr(entry_, "user.tmp"), kOk);
  EXPECT_EQ(SetXattr(entry_, "user.shape", "3,2"), kOk);  // replacing is fine, too
  ASSERT_EQ(fd.Close(), kOk);

  EXPECT_EQ(GetXattr(entry_, "user.dtype"), "float32");
  EXPECT_EQ(GetXattr(entry_, "user.shape"), "3,2");
  EXPECT_EQ(GetXattr(entry_, "user.tmp").err, Err(ENODATA));
  NameList names = ListXattr(entry_);
  ASSERT_EQ(names.err, kOk);
  for (const char* name :
       {"user.dtype", "user.shape", xattr::kState, xattr::kReaders, xattr::kSeq, xattr::kSegment}) {
    EXPECT_TRUE(Contains(names.names, name)) << name;
  }
  EXPECT_FALSE(Contains(names.names, "user.tmp"));
  // Every listed name can be read.
  for (const std::string& name : names.names) EXPECT_TRUE(GetXattr(entry_, name).ok()) << name;
}

TEST_F(XattrTest, UserAttributesOfACommittedEntryCannotChange) {
  Fd fd = Open(entry_, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(FSetXattr(fd.get(), "user.dtype", "int8"), kOk);
  ASSERT_EQ(fd.Close(), kOk);

  EXPECT_EQ(SetXattr(entry_, "user.dtype", "int16"), Err(EPERM));
  EXPECT_EQ(SetXattr(entry_, "user.new", "x"), Err(EPERM));
  EXPECT_EQ(RemoveXattr(entry_, "user.dtype"), Err(EPERM));
  EXPECT_EQ(GetXattr(entry_, "user.dtype"), "int8");
  EXPECT_EQ(GetXattr(entry_, "user.new").err, Err(ENODATA));
}

TEST_F(XattrTest, TheDaemonsOwnEntryAttributesAreReadOnly) {
  ASSERT_EQ(WriteFile(entry_, "x"), kOk);
  std::string segment = GetXattr(entry_, xattr::kSegment).value;
  EXPECT_EQ(SetXattr(entry_, xattr::kReaders, "5"), Err(EPERM));
  EXPECT_EQ(SetXattr(entry_, xattr::kSeq, "5"), Err(EPERM));
  EXPECT_EQ(SetXattr(entry_, xattr::kSegment, "/tmp/elsewhere"), Err(EPERM));
  EXPECT_EQ(SetXattr(entry_, "user.smos.no_such_thing", "1"), Err(EPERM));
  EXPECT_EQ(SetXattr(entry_, xattr::kCapacity, "1"), Err(EPERM));
  EXPECT_EQ(RemoveXattr(entry_, xattr::kSeq), Err(EPERM));
  EXPECT_EQ(GetXattr(entry_, xattr::kReaders), "0");
  EXPECT_EQ(GetXattr(entry_, xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(entry_, xattr::kSegment), segment);
  EXPECT_EQ(ReadFile(entry_), "x");
}

TEST_F(XattrTest, AnUnsetUserAttributeIsEnodata) {
  ASSERT_EQ(WriteFile(entry_, "x"), kOk);
  EXPECT_EQ(GetXattr(entry_, "user.never").err, Err(ENODATA));
  EXPECT_EQ(GetXattr(obj_, "user.never").err, Err(ENODATA));
  EXPECT_EQ(RemoveXattr(obj_, "user.never"), Err(ENODATA));
}

TEST_F(XattrTest, ATooSmallBufferIsErange) {
  ASSERT_EQ(WriteFile(entry_, "x"), kOk);
  char buf[1];
  EXPECT_EQ(ErrOf(::getxattr(obj_.c_str(), xattr::kCapacity, buf, sizeof buf)), Err(ERANGE));
  EXPECT_EQ(ErrOf(::getxattr(entry_.c_str(), xattr::kState, buf, sizeof buf)), Err(ERANGE));
  EXPECT_EQ(ErrOf(::listxattr(entry_.c_str(), buf, sizeof buf)), Err(ERANGE));
  EXPECT_EQ(ErrOf(::listxattr(obj_.c_str(), buf, sizeof buf)), Err(ERANGE));
  // Asking for the size works.
  EXPECT_EQ(::getxattr(entry_.c_str(), xattr::kState, nullptr, 0), 4);
}

TEST_F(XattrTest, OtherNamespacesAreNotSupported) {
  ASSERT_EQ(WriteFile(obj_ + "/done", "x"), kOk);
  Fd fd = Open(entry_, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  for (const std::string& path : {obj_, entry_, obj_ + "/done"}) {
    for (const char* name : {"trusted.x", "security.x"}) {
      EXPECT_EQ(SetXattr(path, name, "1"), Err(ENOTSUP)) << path << " " << name;
    }
    EXPECT_EQ(GetXattr(path, "trusted.x").err, Err(ENOTSUP)) << path;
  }
}

// The cap counts name length plus value length of every user.* attribute; user.smos.* are
// not counted.
void CheckUserXattrCap(const std::string& path) {
  const std::string name = "user.big";
  const std::string value(xattr::kUserXattrCap - name.size(), 'v');
  EXPECT_EQ(SetXattr(path, name, value + "v"), Err(ENOSPC)) << "one byte over the cap";
  ASSERT_EQ(SetXattr(path, name, value), kOk) << "exactly the cap";
  EXPECT_EQ(SetXattr(path, "user.a", ""), Err(ENOSPC));
  EXPECT_EQ(SetXattr(path, "user.b", "1"), Err(ENOSPC));
  EXPECT_EQ(SetXattr(path, name, value + "v"), Err(ENOSPC)) << "replacing with a longer value";
  // Nothing was lost.
  EXPECT_EQ(GetXattr(path, name), value);
  EXPECT_EQ(GetXattr(path, "user.a").err, Err(ENODATA));

  // Room made is room to use.
  ASSERT_EQ(SetXattr(path, name, value.substr(10)), kOk);
  EXPECT_EQ(SetXattr(path, "user.b", "12345"), Err(ENOSPC));
  EXPECT_EQ(SetXattr(path, "user.b", "1234"), kOk);
  EXPECT_EQ(GetXattr(path, "user.b"), "1234");
}

TEST_F(XattrTest, UserAttributesOfAnEntryAreCapped) {
  Fd fd = Open(entry_, O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok());
  CheckUserXattrCap(entry_);
  ASSERT_EQ(fd.Close(), kOk);
  EXPECT_EQ(GetXattr(entry_, "user.b"), "1234");
  EXPECT_EQ(GetXattr(entry_, "user.big").value.size(), xattr::kUserXattrCap - 8 - 10);
}

TEST_F(XattrTest, UserAttributesOfAnObjectAreCapped) { CheckUserXattrCap(obj_); }

}  // namespace
}  // namespace smos::test
