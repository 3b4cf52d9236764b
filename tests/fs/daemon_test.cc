// The daemon: options, signals, start-up checks, statfs, and stores side by side.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "fs/mount_fixture.h"

namespace smos::test {
namespace {

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!FuseAvailable()) GTEST_SKIP() << "/dev/fuse or fusermount3 is missing";
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "--- smosd log:\n%s\n", smosd_.Log().c_str());
  }
  Smosd smosd_;
};

class SignalTest : public DaemonTest, public ::testing::WithParamInterface<int> {};

TEST_P(SignalTest, UnmountsCleanlyAndExitsZero) {
  ASSERT_TRUE(smosd_.Start());
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  ASSERT_EQ(WriteFile(smosd_.Path("obj/e"), "kept"), kOk);

  EXPECT_EQ(smosd_.Stop(GetParam()), 0);
  EXPECT_FALSE(smosd_.IsMounted());
  // The store is intact for the next daemon.
  ASSERT_TRUE(smosd_.StartAgain());
  EXPECT_EQ(ReadFile(smosd_.Path("obj/e")), "kept");
}

INSTANTIATE_TEST_SUITE_P(Signals, SignalTest, ::testing::Values(SIGTERM, SIGINT, SIGHUP),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(sigabbrev_np(info.param));
                         });

TEST_F(DaemonTest, TwoStoresRunSideBySide) {
  Smosd other;
  ASSERT_TRUE(smosd_.Start());
  ASSERT_TRUE(other.Start());
  ASSERT_NE(smosd_.store(), other.store());

  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  ASSERT_EQ(ErrOf(::mkdir(other.Path("obj").c_str(), 0755)), kOk);
  ASSERT_EQ(WriteFile(smosd_.Path("obj/e"), "first store"), kOk);
  ASSERT_EQ(WriteFile(other.Path("obj/e"), "second store"), kOk);
  ASSERT_EQ(WriteFile(other.Path("obj/only-here"), "x"), kOk);

  EXPECT_EQ(ReadFile(smosd_.Path("obj/e")), "first store");
  EXPECT_EQ(ReadFile(other.Path("obj/e")), "second store");
  EXPECT_EQ(ListDir(smosd_.Path("obj")).names, std::vector<std::string>{"e"});
  EXPECT_EQ(GetXattr(smosd_.Path("obj/e"), xattr::kSeq), "1");
  EXPECT_EQ(GetXattr(other.Path("obj/only-here"), xattr::kSeq), "2");
  EXPECT_FALSE(smosd_.StoreFiles().empty());
  EXPECT_FALSE(other.StoreFiles().empty());
}

TEST_F(DaemonTest, ASecondDaemonOnTheSameStoreIsRefused) {
  ASSERT_TRUE(smosd_.Start());
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  Smosd elsewhere;  // a free mountpoint
  EXPECT_EQ(elsewhere.RunToExit({"-f", "--store=" + smosd_.store(), elsewhere.mountpoint()}), 1)
      << elsewhere.Log();
  EXPECT_FALSE(elsewhere.IsMounted());
  // Not even --reset may take a live store away.
  EXPECT_EQ(
      elsewhere.RunToExit({"-f", "--reset", "--store=" + smosd_.store(), elsewhere.mountpoint()}),
      1);
  EXPECT_FALSE(elsewhere.IsMounted());
  EXPECT_EQ(StatErr(smosd_.Path("obj")), kOk);
}

TEST_F(DaemonTest, ALiveMountpointIsRefused) {
  ASSERT_TRUE(smosd_.Start());
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  Smosd other;  // another store, on the same mountpoint
  EXPECT_EQ(other.RunToExit({"-f", "--store=" + other.store(), smosd_.mountpoint()}), 1)
      << other.Log();
  EXPECT_EQ(StatErr(smosd_.Path("obj")), kOk);
  EXPECT_EQ(StatSpace(smosd_.mountpoint()).type, kFuseSuperMagic);
}

// Found by an audit: a directory inside a live mount was called a live mount, with advice to
// unmount it, and every error of the mountpoint's path was "does not exist".
TEST_F(DaemonTest, TheMountpointsProblemIsNamed) {
  ASSERT_TRUE(smosd_.Start());
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  Smosd other;
  EXPECT_EQ(other.RunToExit({"-f", "--store=" + other.store(), smosd_.Path("obj")}), 1);
  EXPECT_NE(other.Log().find("inside a FUSE filesystem"), std::string::npos) << other.Log();
  const std::string file = other.mountpoint() + "/file";
  ASSERT_EQ(WriteFile(file, "x"), kOk);
  EXPECT_EQ(other.RunToExit({"-f", "--store=" + other.store(), file + "/below"}), 1);
  EXPECT_NE(other.Log().find(std::strerror(ENOTDIR)), std::string::npos) << other.Log();
  ASSERT_EQ(ErrOf(::unlink(file.c_str())), kOk);
  EXPECT_TRUE(other.StoreFiles().empty()) << "nothing was created";
}

// Without -f, smosd logs to syslog; but why it would not start must reach whoever started it
// (found by an audit: it exited 1 and said nothing where no syslog daemon listens).
TEST_F(DaemonTest, WithoutDashFStartUpErrorsReachStderr) {
  EXPECT_EQ(smosd_.RunToExit({"--store=" + smosd_.store(), smosd_.mountpoint() + "/missing"}), 1);
  EXPECT_NE(smosd_.Log().find(std::strerror(ENOENT)), std::string::npos) << smosd_.Log();
}

// Started with its standard descriptors closed (as some supervisors do), smosd must not let
// store files take those numbers: its log lines would land in them, and detaching puts
// /dev/null there, which dropped the store's lock, so that a second daemon could serve the
// same store (found by a review).
TEST_F(DaemonTest, ClosedStandardDescriptorsTakeNoStoreFile) {
  const std::string command = std::string("exec ") + SMOSD_PATH + " --store=" + smosd_.store() +
                              " --memory=64M " + smosd_.mountpoint() + " <&- >&- 2>&-";
  ASSERT_EQ(std::system(("sh -c '" + command + "'").c_str()), 0);
  ASSERT_TRUE(Eventually([&] { return StatSpace(smosd_.mountpoint()).type == kFuseSuperMagic; }));
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  Smosd second;
  EXPECT_EQ(second.RunToExit({"-f", "--store=" + smosd_.store(), second.mountpoint()}), 1)
      << "the store's lock is still held\n" << second.Log();
  EXPECT_TRUE(smosd_.Unmount());
}

// libfuse handles a signal only if it was not ignored when smosd started, and a shell script
// starts its background jobs with SIGINT ignored (found by an audit).
TEST_F(DaemonTest, AnInheritedIgnoredSigintStillStopsIt) {
  struct sigaction ignore {}, old {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGINT, &ignore, &old), 0);
  const bool started = smosd_.Start();
  sigaction(SIGINT, &old, nullptr);
  ASSERT_TRUE(started);
  EXPECT_EQ(smosd_.Stop(SIGINT), 0);
  EXPECT_FALSE(smosd_.IsMounted());
}

TEST_F(DaemonTest, WithoutDashFItRunsInTheBackground) {
  std::optional<int> status =
      smosd_.RunToExit({"--store=" + smosd_.store(), "--memory=64M", smosd_.mountpoint()});
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(Eventually([&] { return StatSpace(smosd_.mountpoint()).type == kFuseSuperMagic; }));
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  EXPECT_EQ(WriteFile(smosd_.Path("obj/e"), "bg"), kOk);
  EXPECT_EQ(ReadFile(smosd_.Path("obj/e")), "bg");
  // The background daemon is not our child: unmounting is how it is stopped.
  EXPECT_TRUE(smosd_.Unmount());
}

TEST_F(DaemonTest, HelpAndVersionExitZero) {
  for (const char* flag : {"-h", "--help", "-V", "--version"}) {
    Smosd run;
    EXPECT_EQ(run.RunToExit({flag}), 0) << flag;
    // More than the header line the fixture writes.
    EXPECT_GT(run.Log().size(), std::string("=== ").size() + std::strlen(SMOSD_PATH) + 2)
        << flag << " printed nothing";
  }
}

// A test name from a parameter: its letters and digits, at most 24 of them.
template <typename Param>
std::string ParamName(const ::testing::TestParamInfo<Param>& info, std::string_view text) {
  std::string name;
  for (char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c)) && name.size() < 24) name += c;
  }
  return std::to_string(info.index) + "_" + name;
}

class BadOptionTest : public DaemonTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(BadOptionTest, ExitsWithTwoAndAMessage) {
  EXPECT_EQ(smosd_.RunToExit({"-f", "--store=" + smosd_.store(), GetParam(), smosd_.mountpoint()}),
            2);
  EXPECT_FALSE(smosd_.IsMounted());
  std::string log = smosd_.Log();
  EXPECT_GT(log.size(), log.find('\n') + 1) << "no message";
}

INSTANTIATE_TEST_SUITE_P(Options, BadOptionTest,
                         ::testing::Values("--no-such-option", "--memory=12Q", "--memory=lots",
                                           "--block-size=-1", "--block-size=1X", "--capacity=abc",
                                           "--log-level=loud", "--store=bad/name",
                                           "--store=bad.name", "--store=" + std::string(65, 's'),
                                           "--max-objects=many", "--max-entries=-3"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return ParamName(info, info.param);
                         });

TEST_F(DaemonTest, BadFuseOptionsChangeNothing) {
  ASSERT_TRUE(smosd_.Start());
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  ASSERT_EQ(WriteFile(smosd_.Path("obj/e"), "kept"), kOk);
  ASSERT_EQ(smosd_.Stop(), 0);
  // Refused before the store is opened: --reset does not empty it.
  EXPECT_EQ(smosd_.RunToExit({"-f", "--reset", "--store=" + smosd_.store(), "-o",
                              "no_such_option", smosd_.mountpoint()}),
            2);
  EXPECT_NE(smosd_.Log().find("unknown option(s): `-o no_such_option'"), std::string::npos)
      << "libfuse's message, in one line: " << smosd_.Log();
  ASSERT_TRUE(smosd_.Start({}, /*reset=*/false));
  EXPECT_EQ(ReadFile(smosd_.Path("obj/e")), "kept");
}

// A store file that this smosd cannot trust is refused with exit status 1 and a message that
// names it, and is left in place: the store may hold what someone still wants.
TEST_F(DaemonTest, AnUntrustedMetaFileIsRefusedAndLeftInPlace) {
  ASSERT_TRUE(smosd_.Start());
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  ASSERT_EQ(smosd_.Stop(), 0);
  const std::string meta = "/dev/shm/" + smosd_.store() + ".meta";
  const std::vector<std::string> args = {"-f", "--store=" + smosd_.store(), smosd_.mountpoint()};

  ASSERT_EQ(::chmod(meta.c_str(), 0622), 0);
  EXPECT_EQ(smosd_.RunToExit(args), 1);
  EXPECT_NE(smosd_.Log().find("others may write it (mode 622)"), std::string::npos)
      << smosd_.Log();
  ASSERT_EQ(::chmod(meta.c_str(), 0600), 0);

  ASSERT_EQ(::truncate(meta.c_str(), 0), 0);  // as a smosd killed while creating it leaves it
  EXPECT_EQ(smosd_.RunToExit(args), 1);
  EXPECT_NE(smosd_.Log().find("was left half-made"), std::string::npos) << smosd_.Log();
  EXPECT_EQ(StatErr(meta), kOk) << "the file was removed";

  ASSERT_EQ(::unlink(meta.c_str()), 0);
  ASSERT_EQ(::mkfifo(meta.c_str(), 0600), 0);  // not waited on for a writer
  EXPECT_EQ(smosd_.RunToExit(args), 1);
  EXPECT_NE(smosd_.Log().find("it is not a regular file; start with --reset"), std::string::npos)
      << smosd_.Log();
  EXPECT_FALSE(smosd_.IsMounted());

  ASSERT_TRUE(smosd_.Start({}, /*reset=*/true)) << "--reset discards it";
  EXPECT_EQ(StatErr(smosd_.Path("obj")), Err(ENOENT));
}

TEST_F(DaemonTest, AMissingMountpointExitsWithTwo) {
  EXPECT_EQ(smosd_.RunToExit({"-f", "--store=" + smosd_.store()}), 2);
}

// --capacity and --block-size are the defaults of new objects; sizes take K, M, G, T
// suffixes (powers of 1024, any case, with an optional B or iB).
using SizeAndBytes = std::pair<std::string, std::string>;
class DefaultsTest : public DaemonTest, public ::testing::WithParamInterface<SizeAndBytes> {};

TEST_P(DefaultsTest, NewObjectsGetTheConfiguredDefaults) {
  auto [block_size, bytes] = GetParam();
  ASSERT_TRUE(smosd_.Start({"--capacity=7", "--block-size=" + block_size}));
  std::string obj = smosd_.Path("obj");
  ASSERT_EQ(ErrOf(::mkdir(obj.c_str(), 0755)), kOk);
  EXPECT_EQ(GetXattr(obj, xattr::kCapacity), "7");
  EXPECT_EQ(GetXattr(obj, xattr::kBlockSize), bytes);
  // The object's own settings still win.
  std::string own = smosd_.Path("own");
  ASSERT_EQ(ErrOf(::mkdir(own.c_str(), 0755)), kOk);
  ASSERT_EQ(SetXattr(own, xattr::kCapacity, "3"), kOk);
  EXPECT_EQ(GetXattr(own, xattr::kCapacity), "3");
  EXPECT_EQ(GetXattr(obj, xattr::kCapacity), "7");
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, DefaultsTest,
    ::testing::Values(SizeAndBytes{"4096", "4096"}, SizeAndBytes{"64K", "65536"},
                      SizeAndBytes{"1m", "1048576"}, SizeAndBytes{"2G", "2147483648"},
                      SizeAndBytes{"3MiB", "3145728"}, SizeAndBytes{"5kb", "5120"},
                      SizeAndBytes{"1T", "1099511627776"}),
    [](const ::testing::TestParamInfo<SizeAndBytes>& info) {
      return ParamName(info, info.param.first);
    });

TEST_F(DaemonTest, DefaultCapacityIsEnforced) {
  ASSERT_TRUE(smosd_.Start({"--capacity=2", "--block-size=4K"}));
  std::string obj = smosd_.Path("obj");
  ASSERT_EQ(ErrOf(::mkdir(obj.c_str(), 0755)), kOk);
  ASSERT_EQ(WriteFile(obj + "/a", "a"), kOk);
  ASSERT_EQ(WriteFile(obj + "/b", std::string(4096, 'b')), kOk);
  EXPECT_EQ(OpenErr(obj + "/c", O_WRONLY | O_CREAT), Err(ENOSPC));
  ASSERT_EQ(ErrOf(::unlink((obj + "/b").c_str())), kOk);
  Fd fd = Open(obj + "/c", O_WRONLY | O_CREAT);
  ASSERT_TRUE(fd.ok()) << LastErr();
  EXPECT_EQ(ErrOf(::ftruncate(fd.get(), 4097)), Err(EFBIG));
  EXPECT_EQ(ErrOf(::ftruncate(fd.get(), 4096)), kOk);
}

TEST_F(DaemonTest, StatfsReportsTheBudgetAndItsUse) {
  ASSERT_TRUE(smosd_.Start({"--memory=64M"}));
  Space empty = StatSpace(smosd_.mountpoint());
  ASSERT_EQ(empty.err, kOk);
  EXPECT_EQ(empty.type, kFuseSuperMagic);
  EXPECT_EQ(empty.total, 64u << 20);
  EXPECT_EQ(empty.used, 0u);

  std::string obj = smosd_.Path("obj");
  ASSERT_EQ(ErrOf(::mkdir(obj.c_str(), 0755)), kOk);
  ASSERT_EQ(WriteFile(obj + "/e", Pattern(1 << 20, 1)), kOk);
  Space used = StatSpace(smosd_.mountpoint());
  EXPECT_EQ(used.total, 64u << 20);
  EXPECT_EQ(used.used, 1u << 20);

  ASSERT_EQ(ErrOf(::unlink((obj + "/e").c_str())), kOk);
  EXPECT_TRUE(Eventually([&] { return StatSpace(smosd_.mountpoint()).used == 0; }))
      << StatSpace(smosd_.mountpoint()).used;
}

TEST_F(DaemonTest, DashDLogsTheRequests) {
  ASSERT_TRUE(smosd_.Start({"-d"}));
  std::size_t before = smosd_.Log().size();
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  ASSERT_EQ(WriteFile(smosd_.Path("obj/e"), "x"), kOk);
  EXPECT_TRUE(Eventually([&] { return smosd_.Log().size() > before; }))
      << "nothing logged about a mkdir and a write";
}

TEST_F(DaemonTest, LogLevelOffIsSilent) {
  ASSERT_TRUE(smosd_.Start({"--log-level=off"}));
  ASSERT_EQ(ErrOf(::mkdir(smosd_.Path("obj").c_str(), 0755)), kOk);
  ASSERT_EQ(WriteFile(smosd_.Path("obj/e"), "x"), kOk);
  ASSERT_TRUE(smosd_.Stop().has_value());
  std::string log = smosd_.Log();
  EXPECT_EQ(log.find('\n'), log.size() - 1) << "more than the fixture's header line:\n" << log;
}

}  // namespace
}  // namespace smos::test
