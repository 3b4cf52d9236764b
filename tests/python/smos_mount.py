"""Mounts a private smos store for a test module, and always unmounts it.

The daemon is $SMOSD, else build/smosd of this checkout. Each Mount gets its own
mountpoint (mktemp -d) and store name; stop() unmounts (fusermount3 -u, then -uz), waits for
the daemon it started (killing only that pid if it hangs), and removes /dev/shm/<store>.*.
Tests skip cleanly where /dev/fuse or the daemon is missing.
"""

import atexit
import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "python"))

import smos_client  # noqa: E402

_counter = itertools.count()
_live = set()


def smosd_path():
    return os.environ.get("SMOSD") or os.path.join(REPO, "build", "smosd")


def _mounted(path):
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return os.path.ismount(path)


class Mount:
    """A running smosd on a temporary mountpoint."""

    def __init__(self, memory="2G", extra=(), timeout=15):
        binary = smosd_path()
        if not os.path.exists("/dev/fuse"):
            raise unittest.SkipTest("no /dev/fuse")
        if not os.access(binary, os.X_OK):
            raise unittest.SkipTest(f"no smosd at {binary} (set SMOSD)")
        if shutil.which("fusermount3") is None:
            raise unittest.SkipTest("no fusermount3")
        self.store = f"pyt{os.getpid()}x{next(_counter)}"
        self.path = os.path.realpath(tempfile.mkdtemp(prefix="smos-py-"))
        self.log_path = self.path + ".log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "-f", f"--store={self.store}", "--reset", f"--memory={memory}", *extra,
             self.path], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _live.add(self)
        deadline = time.monotonic() + timeout
        while not _mounted(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"smosd did not mount {self.path}:\n{self.log()}")
            time.sleep(0.02)
        self.client = smos_client.Client(self.path)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=15):
        """Unmounts, waits for the daemon, removes the mountpoint and the store's files."""
        if self not in _live:
            return
        _live.discard(self)
        for args in (["-u"], ["-uz"]):
            if not _mounted(self.path):
                break
            subprocess.run(["fusermount3", *args, self.path], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=timeout)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own daemon only, by its pid
            self.proc.wait(timeout=timeout)
        self._log.close()
        try:
            os.rmdir(self.path)
        except OSError:
            pass
        for f in glob.glob(f"/dev/shm/{self.store}.*") + [self.log_path]:
            try:
                os.unlink(f)
            except OSError:
                pass


@atexit.register
def _stop_all():
    for m in list(_live):
        try:
            m.stop()
        except Exception:
            pass


class MountedTestCase(unittest.TestCase):
    """One mount per test class; each test gets a fresh object name from obj()."""

    memory = "2G"
    extra = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mount = Mount(memory=cls.memory, extra=cls.extra)
        cls.mnt = cls.mount.path
        cls.client = cls.mount.client

    @classmethod
    def tearDownClass(cls):
        log = cls.mount.log()
        alive = cls.mount.alive()
        cls.mount.stop()
        super().tearDownClass()
        if not alive:
            raise AssertionError(f"smosd died during {cls.__name__}:\n{log}")

    def setUp(self):
        self._objects = itertools.count()
        self.assertTrue(self.mount.alive(), "smosd died:\n" + self.mount.log())

    def obj(self, **kwargs):
        """Creates a fresh object for this test and returns its name."""
        name = f"{self._testMethodName[:40]}_{next(self._objects)}"
        self.client.create_object(name, **kwargs)
        return name

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def assertErrno(self, err, fn, *args, **kwargs):
        with self.assertRaises(OSError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.errno, err,
                         f"expected {os.strerror(err)}, got {cm.exception!r}")
