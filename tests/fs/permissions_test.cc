// Permissions: mode, uid and gid are kept per object and entry and enforced by the kernel;
// segment files are no more readable than the entries they hold.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "fs/mount_fixture.h"
#include "smos/control.h"

namespace smos::test {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr int kCannotSwitch = 200;  // exit status of a child that could not become nobody

// Runs fn as uid and gid 65534 in a forked child and returns the errno it reports.
Err AsNobody(const std::function<Err()>& fn) {
  Child child([&](Channel&) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(kNogroup, kNogroup, kNogroup) != 0 ||
        ::setresuid(kNobody, kNobody, kNobody) != 0) {
      return kCannotSwitch;
    }
    return fn().value();
  });
  return Err(child.Join());
}

Err ReadAsNobody(const std::string& path) {
  return AsNobody([&] { return ReadFile(path).err; });
}

class PermissionsTest : public MountTest {
 protected:
  std::vector<std::string> DaemonArgs() const override { return {"-o", "allow_other"}; }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root, to act as another user";
    MountTest::SetUp();
  }
  // An object of the given mode with one entry "e" of the given mode.
  std::string MakeEntry(const std::string& obj_name, mode_t obj_mode, mode_t entry_mode) {
    std::string obj = MakeObject(obj_name);
    std::string e = obj + "/e";
    EXPECT_EQ(ErrOf(::chmod(obj.c_str(), obj_mode)), kOk);
    EXPECT_EQ(WriteFile(e, "secret " + obj_name), kOk);
    EXPECT_EQ(ErrOf(::chmod(e.c_str(), entry_mode)), kOk);
    return e;
  }
};

TEST_F(PermissionsTest, ModeAndOwnerAreKeptPerObjectAndEntry) {
  std::string obj = MakeObject("obj");
  std::string e = obj + "/e";
  ASSERT_EQ(WriteFile(e, "x", O_WRONLY | O_CREAT | O_TRUNC, 0640), kOk);
  ASSERT_EQ(ErrOf(::chmod(obj.c_str(), 0710)), kOk);
  ASSERT_EQ(ErrOf(::chown(obj.c_str(), 1000, 1001)), kOk);
  ASSERT_EQ(ErrOf(::chmod(e.c_str(), 0604)), kOk);
  ASSERT_EQ(ErrOf(::chown(e.c_str(), 1002, 1003)), kOk);

  struct stat st;
  ASSERT_EQ(ErrOf(::stat(obj.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_mode, S_IFDIR | 0710u);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1001u);
  ASSERT_EQ(ErrOf(::stat(e.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_mode, S_IFREG | 0604u);
  EXPECT_EQ(st.st_uid, 1002u);
  EXPECT_EQ(st.st_gid, 1003u);
  // Changing who may read it does not change what it holds.
  EXPECT_EQ(ReadFile(e), "x");
  EXPECT_EQ(GetXattr(e, xattr::kSeq), "1");
}

TEST_F(PermissionsTest, TheKernelEnforcesModesForOtherUsers) {
  std::string open_entry = MakeEntry("open", 0755, 0644);
  std::string private_entry = MakeEntry("private", 0755, 0600);
  std::string closed_entry = MakeEntry("closed", 0700, 0644);

  EXPECT_EQ(ReadAsNobody(open_entry), kOk) << "the mount is not usable by others at all";
  EXPECT_EQ(ReadAsNobody(private_entry), Err(EACCES));
  EXPECT_EQ(ReadAsNobody(closed_entry), Err(EACCES));
  EXPECT_EQ(AsNobody([&] { return ListDir(Path("closed")).err; }), Err(EACCES));
  EXPECT_EQ(AsNobody([&] { return WriteFile(Path("open/mine"), "x"); }), Err(EACCES));

  // Giving the entry away lets its new owner read it.
  ASSERT_EQ(ErrOf(::chown(private_entry.c_str(), kNobody, kNogroup)), kOk);
  EXPECT_EQ(ReadAsNobody(private_entry), kOk);
  // A writable object lets others create entries, which are theirs.
  ASSERT_EQ(ErrOf(::chmod(Path("open").c_str(), 0777)), kOk);
  EXPECT_EQ(AsNobody([&] { return WriteFile(Path("open/mine"), "x"); }), kOk);
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(Path("open/mine").c_str(), &st)), kOk);
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(st.st_gid, kNogroup);
}

// A pop reads its entry and removes its name (found by QA: anyone could drain any object,
// and read entries of mode 600 that way).
TEST_F(PermissionsTest, APopNeedsTheObjectsWritePermissionAndAnEntryItMayRead) {
  const std::string pop = Path("q/") + control::kPop;
  MakeEntry("q", 0755, 0644);
  EXPECT_EQ(AsNobody([&] { return OpenErr(pop, O_RDONLY | O_NONBLOCK); }), Err(EACCES));
  ASSERT_EQ(ErrOf(::chmod(Path("q").c_str(), 0777)), kOk);
  ASSERT_EQ(ErrOf(::chmod(Path("q/e").c_str(), 0600)), kOk);
  EXPECT_EQ(AsNobody([&] { return OpenErr(pop, O_RDONLY | O_NONBLOCK); }), Err(EAGAIN));
  EXPECT_EQ(ReadFile(Path("q/e")), "secret q") << "the refused pops took it";
  ASSERT_EQ(ErrOf(::chmod(Path("q/e").c_str(), 0604)), kOk);
  EXPECT_EQ(AsNobody([&] { return ReadFile(pop).err; }), kOk);
  EXPECT_EQ(ListDir(Path("q")).names, std::vector<std::string>{}) << "popped";
}

// An opened .push is its writer's entry, whoever owns the object: fchmod and futimens work
// through it at once (the kernel had checked them against the object's owner, until an fstat).
TEST_F(PermissionsTest, AnOpenedPushIsItsWritersEntry) {
  MakeObject("q");
  const std::string push = Path("q/") + control::kPush;
  EXPECT_EQ(AsNobody([&] { return OpenErr(push, O_WRONLY); }), Err(EACCES))
      << "a push makes a name: it takes the object's write permission";
  EXPECT_EQ(ListDir(Path("q")).names, std::vector<std::string>{});
  ASSERT_EQ(ErrOf(::chmod(Path("q").c_str(), 0777)), kOk);
  EXPECT_EQ(AsNobody([&] {
              Fd fd = Open(Path("q/") + control::kPush, O_WRONLY);
              if (!fd.ok()) return Err(EBADF);
              if (::write(fd.get(), "x", 1) != 1) return Err(errno);
              if (::fchmod(fd.get(), 0600) != 0) return Err(errno);
              if (::futimens(fd.get(), nullptr) != 0) return Err(errno);
              return kOk;
            }),
            kOk);
  const std::vector<std::string> names = ListDir(Path("q")).names;
  ASSERT_EQ(names.size(), 1u);
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(Path("q/" + names[0]).c_str(), &st)), kOk);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, kNobody);
}

// chmod g+s on an object, as on a shared directory: what others create or push there gets the
// object's group.
TEST_F(PermissionsTest, ASetgidObjectGivesNewEntriesItsGroup) {
  const std::string obj = MakeObject("shared");
  ASSERT_EQ(ErrOf(::chown(obj.c_str(), 0, 1234)), kOk);
  ASSERT_EQ(ErrOf(::chmod(obj.c_str(), 02777)), kOk);
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(obj.c_str(), &st)), kOk);
  ASSERT_EQ(st.st_mode & 07777, 02777u);
  ASSERT_EQ(AsNobody([&] { return WriteFile(obj + "/named", "n"); }), kOk);
  ASSERT_EQ(AsNobody([&] { return WriteFile(obj + "/" + control::kPush, "p"); }), kOk);
  const std::vector<std::string> names = ListDir(obj).names;
  ASSERT_EQ(names.size(), 2u);
  for (const std::string& name : names) {
    ASSERT_EQ(ErrOf(::stat((obj + "/" + name).c_str(), &st)), kOk);
    EXPECT_EQ(st.st_uid, kNobody) << name;
    EXPECT_EQ(st.st_gid, 1234u) << name;
  }
}

TEST_F(PermissionsTest, SegmentFilesAreNoMoreReadableThanTheirEntries) {
  struct Case {
    std::string entry;
    bool nobody_may_read;
  };
  const Case cases[] = {
      {MakeEntry("open", 0755, 0644), true},
      {MakeEntry("private", 0755, 0600), false},
      {MakeEntry("closed", 0700, 0644), false},
      {MakeEntry("shut", 0750, 0644), false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.entry);
    Fd lease = Open(c.entry, O_RDONLY);
    ASSERT_TRUE(lease.ok());
    Text segment = FGetXattr(lease.get(), xattr::kSegment);
    ASSERT_TRUE(segment.ok()) << segment.err;
    struct stat st;
    ASSERT_EQ(ErrOf(::stat(segment.value.c_str(), &st)), kOk) << segment.value;
    EXPECT_EQ(st.st_uid, 0u);
    if (!c.nobody_may_read) {
      EXPECT_EQ(st.st_mode & 0007, 0u) << std::oct << st.st_mode;
    }
    EXPECT_EQ(ReadAsNobody(segment.value), c.nobody_may_read ? kOk : Err(EACCES));
    EXPECT_EQ(ReadAsNobody(c.entry), c.nobody_may_read ? kOk : Err(EACCES));
    EXPECT_EQ(st.st_mode & 0222, 0u) << "a committed entry's segment is not writable";
  }

  // The segment follows its entry's owner.
  std::string e = cases[1].entry;
  ASSERT_EQ(ErrOf(::chown(e.c_str(), kNobody, kNogroup)), kOk);
  Fd lease = Open(e, O_RDONLY);
  ASSERT_TRUE(lease.ok());
  Text segment = FGetXattr(lease.get(), xattr::kSegment);
  ASSERT_TRUE(segment.ok()) << segment.err;
  struct stat st;
  ASSERT_EQ(ErrOf(::stat(segment.value.c_str(), &st)), kOk);
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(st.st_gid, kNogroup);
  EXPECT_EQ(ReadAsNobody(segment.value), kOk);
  // Not even its owner may write it there, as the mount refuses.
  EXPECT_EQ(AsNobody([&] { return OpenErr(segment.value, O_WRONLY); }), Err(EACCES));
  EXPECT_EQ(ReadFile(e), "secret private");
}

}  // namespace
}  // namespace smos::test
