// The permission checks the store makes itself: the kernel checks a pop against the .pop
// ticket (the object's read bits), while a pop also removes a name and reads whichever entry it
// claims (found by QA: any user could drain any object, and read entries of mode 600 that way).
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "smos/control.h"
#include "smos/xattr.h"
#include "store_fixture.h"

namespace smos::test {
namespace {

constexpr uid_t kStrangerUid = 54321;
constexpr gid_t kStrangerGid = 54321;
constexpr gid_t kStrangerGroup = 54322;  // a supplementary group of the stranger

// A process without privileges (kStrangerUid, kStrangerGid and kStrangerGroup, no
// capabilities) whose pid callers borrow: the store reads a caller's supplementary groups and
// capabilities from /proc/<pid>/status.
class Stranger {
 public:
  Stranger() {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a test that crashed
      const gid_t groups[] = {kStrangerGroup};
      if (::setgroups(1, groups) != 0 || ::setresgid(kStrangerGid, kStrangerGid, kStrangerGid) != 0 ||
          ::setresuid(kStrangerUid, kStrangerUid, kStrangerUid) != 0) {
        ::_exit(1);
      }
      for (;;) ::pause();
    }
  }
  ~Stranger() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Stranger(const Stranger&) = delete;
  Stranger& operator=(const Stranger&) = delete;

  // Once the child has dropped its privileges (its status says so), or after 5 s.
  bool Ready() const {
    const std::string uid_line = "Uid:\t" + std::to_string(kStrangerUid);
    for (int i = 0; i < 500; ++i) {
      std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
      for (std::string line; std::getline(status, line);) {
        if (line.starts_with(uid_line)) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  Caller caller() const { return Caller{kStrangerUid, kStrangerGid, pid_}; }

 private:
  pid_t pid_ = -1;
};

class StorePermissionsTest : public StoreTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root, to make a process of another user";
    StoreTest::SetUp();
    ASSERT_TRUE(stranger_.Ready()) << "the stranger could not drop its privileges";
  }
  int Pop(Ino obj, const Caller& caller, int flags, OpenFile* out,
          Store::Waiter* waiter = nullptr) {
    Attr ticket;
    EXPECT_EQ(store().lookup(obj, control::kPop, caller, &ticket), 0);
    return store().open(ticket.ino, flags, caller, out, waiter);
  }
  // Pops without waiting, as `caller`: the bytes, or the errno's name in angle brackets.
  std::string PopNow(Ino obj, const Caller& caller) {
    OpenFile popped;
    if (int err = Pop(obj, caller, O_RDONLY | O_NONBLOCK, &popped); err != 0) {
      return "<" + ErrName(err) + ">";
    }
    std::string bytes = Contents(popped.fh);
    EXPECT_EQ(store().release(popped.fh), 0);
    return bytes;
  }
  void Chown(Ino ino, uid_t uid, gid_t gid) {
    SetAttr change;
    change.uid = uid;
    change.gid = gid;
    Attr attr;
    ASSERT_EQ(store().setattr(ino, change, std::nullopt, Me(), &attr), 0);
  }
  void Chmod(Ino ino, mode_t mode) {
    SetAttr change;
    change.mode = mode;
    Attr attr;
    ASSERT_EQ(store().setattr(ino, change, std::nullopt, Me(), &attr), 0);
  }
  Stranger stranger_;
};

TEST_F(StorePermissionsTest, APopTakesTheObjectsWritePermission) {
  const Ino shared = MakeObject("shared", {}, 0755);
  Put(shared, "a", "a");
  EXPECT_EQ(PopNow(shared, stranger_.caller()), "<EACCES>");
  EXPECT_EQ(Listing(shared), Names{"a"});
  Chown(shared, 0, kStrangerGroup);  // its supplementary group
  Chmod(shared, 0775);
  EXPECT_EQ(PopNow(shared, stranger_.caller()), "a");
}

TEST_F(StorePermissionsTest, APopClaimsOnlyEntriesItsCallerMayRead) {
  const Ino open_to_all = MakeObject("open", {}, 0777);
  Put(open_to_all, "secret", "mine", 0600);
  Put(open_to_all, "public", "ours", 0644);
  EXPECT_EQ(PopNow(open_to_all, stranger_.caller()), "ours");
  EXPECT_EQ(PopNow(open_to_all, stranger_.caller()), "<EAGAIN>");
  EXPECT_EQ(Listing(open_to_all), Names{"secret"});

  // Group bits count for the caller's supplementary groups, and only for them.
  const Ino group = Put(open_to_all, "group", "theirs", 0640);
  EXPECT_EQ(PopNow(open_to_all, stranger_.caller()), "<EAGAIN>");
  Chown(group, 0, kStrangerGroup);
  EXPECT_EQ(PopNow(open_to_all, stranger_.caller()), "theirs");
  Put(open_to_all, "not for the group", "x", 0604);  // others may read; the group may not
  const Ino other = InoOf(open_to_all, "not for the group", Me());
  Chown(other, 0, kStrangerGroup);
  EXPECT_EQ(PopNow(open_to_all, stranger_.caller()), "<EAGAIN>");

  // Its owner (or root) pops them, oldest first.
  EXPECT_EQ(PopNow(open_to_all, Me()), "mine");
}

// A waiting pop is served the first entry it may read, when one commits or becomes readable;
// the entries it may not read stay for others.
TEST_F(StorePermissionsTest, AWaitingPopIsServedAnEntryItMayRead) {
  const Ino obj = MakeObject("open", {}, 0777);
  std::string served;
  const auto waiter = [&](std::uint64_t id) {
    return Store::Waiter{id, nullptr, [&](int err, const OpenFile& file) {
                           ASSERT_EQ(err, 0);
                           served = Contents(file.fh);
                           EXPECT_EQ(store().release(file.fh), 0);
                         }};
  };
  OpenFile popped;
  Store::Waiter first = waiter(7);
  ASSERT_EQ(Pop(obj, stranger_.caller(), O_RDONLY, &popped, &first), EINPROGRESS);
  const Ino closed = Put(obj, "closed", "not yet", 0600);
  EXPECT_EQ(served, "");
  Chmod(closed, 0644);
  EXPECT_EQ(served, "not yet") << "a chmod that lets it read should wake it";
  Store::Waiter second = waiter(8);
  ASSERT_EQ(Pop(obj, stranger_.caller(), O_RDONLY, &popped, &second), EINPROGRESS);
  Put(obj, "private", "x", 0600);
  Put(obj, "later", "ours", 0604);
  EXPECT_EQ(served, "ours");
  EXPECT_EQ(Listing(obj), Names{"private"});
}

// In a sticky object, as for unlink(2), only an entry's owner or the object's takes its name
// away, or a process with CAP_FOWNER.
TEST_F(StorePermissionsTest, APopFromAStickyObjectTakesOnlyTheCallersOwnEntries) {
  const Ino obj = MakeObject("tmp", {}, 01777);
  Put(obj, "roots", "r", 0644);
  EXPECT_EQ(PopNow(obj, stranger_.caller()), "<EAGAIN>");
  const Ino own = Put(obj, "own", "o", 0644);
  Chown(own, kStrangerUid, kStrangerGid);
  EXPECT_EQ(PopNow(obj, stranger_.caller()), "o");
  EXPECT_EQ(PopNow(obj, Me()), "r");
}

// As a directory's on Linux filesystems, an object's set-group-ID bit gives the entries made in
// it the object's group, named or pushed, and their segment files too (found by an audit: the
// bit was kept and meant nothing).
TEST_F(StorePermissionsTest, ASetgidObjectGivesNewEntriesItsGroup) {
  const Ino obj = MakeObject("shared", {}, 0777);
  Chown(obj, 0, kStrangerGroup);
  const auto create = [&](std::string_view name) {
    Attr attr;
    OpenFile file;
    EXPECT_EQ(store().create(obj, name, 0644, kCreateFlags, stranger_.caller(), &attr, &file), 0);
    EXPECT_EQ(Write(file.fh, 0, "x"), 0);
    EXPECT_EQ(store().release(file.fh), 0);
    return attr;
  };
  EXPECT_EQ(create("before").gid, kStrangerGid) << "without the bit: the creator's group";

  Chmod(obj, 02777);
  const Attr named = create("named");
  EXPECT_EQ(named.gid, kStrangerGroup);
  struct stat segment;
  ASSERT_EQ(::stat(Xattr(named.ino, xattr::kSegment).c_str(), &segment), 0);
  EXPECT_EQ(segment.st_gid, kStrangerGroup);

  Attr ticket;
  ASSERT_EQ(store().lookup(obj, control::kPush, stranger_.caller(), &ticket), 0);
  EXPECT_EQ(ticket.gid, kStrangerGroup) << "an opened push shows its entry's owner";
  OpenFile push;
  ASSERT_EQ(store().open(ticket.ino, O_WRONLY, stranger_.caller(), &push), 0);
  ASSERT_EQ(Write(push.fh, 0, "pushed"), 0);
  ASSERT_EQ(store().flush(push.fh, stranger_.caller()), 0);
  ASSERT_EQ(store().release(push.fh), 0);
  ASSERT_EQ(Listing(obj), (Names{"00000000000000000003", "before", "named"}));
  Attr pushed;
  ASSERT_EQ(GetAttr(InoOf(obj, "00000000000000000003", Me()), &pushed), 0);
  EXPECT_EQ(pushed.gid, kStrangerGroup);
  EXPECT_EQ(pushed.uid, kStrangerUid);

  // A replace keeps the replaced version's owner and group, as before.
  Chmod(obj, 0777);
  OpenFile replace;
  Ino version;
  ASSERT_EQ(Replace(obj, "named", stranger_.caller(), &replace, &version), 0);
  ASSERT_EQ(store().release(replace.fh), 0);
  Attr replaced;
  ASSERT_EQ(GetAttr(version, &replaced), 0);
  EXPECT_EQ(replaced.gid, kStrangerGroup);
}

// And a root with the bit gives it, with its group, to the objects made in it, as a directory
// does to its subdirectories (found by a review).
TEST_F(StorePermissionsTest, ASetgidRootGivesNewObjectsItsGroupAndTheBit) {
  Chown(kRootIno, 0, kStrangerGroup);
  Chmod(kRootIno, 0777);
  Attr plain;
  ASSERT_EQ(store().mkdir(kRootIno, "plain", 0755, stranger_.caller(), &plain), 0);
  EXPECT_EQ(plain.gid, kStrangerGid);
  EXPECT_EQ(plain.mode & 07777, 0755u);
  Chmod(kRootIno, 02777);
  Attr inherited;
  ASSERT_EQ(store().mkdir(kRootIno, "inherited", 0755, stranger_.caller(), &inherited), 0);
  EXPECT_EQ(inherited.gid, kStrangerGroup);
  EXPECT_EQ(inherited.mode & 07777, 02755u);
  Attr entry;
  OpenFile file;
  ASSERT_EQ(store().create(inherited.ino, "e", 0644, kCreateFlags, stranger_.caller(), &entry, &file), 0);
  EXPECT_EQ(entry.gid, kStrangerGroup) << "and the object to its entries";
  EXPECT_EQ(store().release(file.fh), 0);
}

}  // namespace
}  // namespace smos::test
