"""The control files .push, .pop and .latest, and user.smos.name: every rule and errno of
issue 3, through plain syscalls (os.*) unless the client is the subject."""

import ctypes
import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

from smos_mount import MountedTestCase, smos_client

CONTROL = (".push", ".pop", ".latest")
SEQ1 = "00000000000000000001"  # the name of an object's first push
SEQ2 = "00000000000000000002"
FORK = multiprocessing.get_context("fork")


def xattr(path_or_fd, name):
    return os.getxattr(path_or_fd, name).decode()


def push(obj_path, payload):
    """Pushes bytes through .push with plain syscalls; returns the entry's name."""
    fd = os.open(os.path.join(obj_path, ".push"), os.O_WRONLY)
    try:
        os.write(fd, payload)
        return xattr(fd, "user.smos.name")
    finally:
        os.close(fd)


def entries(obj_path):
    """The committed entries an object lists, without its control files."""
    return sorted(e for e in os.listdir(obj_path) if not e.startswith("."))


def _pop_child(obj_path, out, flags=0):
    """Child process: one blocking pop; reports ("ok", bytes) or ("err", errno)."""
    try:
        fd = os.open(os.path.join(obj_path, ".pop"), os.O_RDONLY | flags)
    except OSError as e:
        out.put(("err", e.errno))
        return
    with os.fdopen(fd, "rb") as f:
        out.put(("ok", f.read()))


def _hold_open(path, opened, release):
    fd = os.open(path, os.O_RDONLY)
    opened.set()
    release.wait(30)
    os.close(fd)


def _start_poppers(obj_path, n):
    out = FORK.Queue()
    procs = [FORK.Process(target=_pop_child, args=(obj_path, out)) for _ in range(n)]
    for p in procs:
        p.start()
    return procs, out


def _join(test, procs, timeout=20):
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()  # only our own children
        p.join()
    test.assertEqual(alive, [], "poppers still blocked")


class ControlFileNamesTest(MountedTestCase):
    """Listed by ls -a, hidden from ls; creating, removing, renaming them: EPERM."""

    def test_listed_by_ls_a_only(self):
        p = self.path(self.obj())
        self.assertTrue(set(CONTROL) <= set(os.listdir(p)))
        ls = subprocess.run(["ls", p], capture_output=True, text=True, check=True).stdout
        ls_a = subprocess.run(["ls", "-a", p], capture_output=True, text=True, check=True).stdout
        self.assertEqual(ls.split(), [])
        self.assertTrue(set(CONTROL) <= set(ls_a.split()))

    def test_lstat(self):
        p = self.path(self.obj())
        for c in CONTROL[:2]:
            st = os.lstat(os.path.join(p, c))
            self.assertTrue(st.st_mode & 0o170000 == 0o100000, c)  # regular files

    def test_create_fails(self):
        # The names always exist, so the kernel answers EEXIST before asking the daemon.
        p = self.path(self.obj())
        push(p, b"x")
        for c in CONTROL:
            f = os.path.join(p, c)
            for fn, args in ((os.open, (f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
                             (os.mkdir, (f,)), (os.symlink, ("x", f)), (os.mknod, (f,)),
                             (os.link, (p + "/.push", f))):
                with self.subTest(name=c, op=fn.__name__):
                    self.assertErrno(errno.EEXIST, fn, *args)
        self.assertErrno(errno.EPERM, os.open, os.path.join(p, ".pop"),
                         os.O_CREAT | os.O_WRONLY)
        self.assertEqual(sorted(os.listdir(p)), sorted(CONTROL + (SEQ1,)))
        self.assertEqual(xattr(p, "user.smos.entries"), "1")

    def test_unlink_is_eperm_while_the_object_has_entries(self):
        p = self.path(self.obj())
        push(p, b"x")  # so that .latest resolves
        for c in CONTROL:
            self.assertErrno(errno.EPERM, os.unlink, os.path.join(p, c))
        self.assertEqual(len(os.listdir(p)), 4)
        # A write entry counts too.
        p2 = self.path(self.obj())
        fd = os.open(os.path.join(p2, ".push"), os.O_WRONLY)
        self.assertErrno(errno.EPERM, os.unlink, os.path.join(p2, ".pop"))
        os.close(fd)

    def test_unlink_on_an_empty_object_does_nothing(self):
        p = self.path(self.obj())
        for c in CONTROL:
            os.unlink(os.path.join(p, c))  # accepted, so that rm -r can work
        self.assertEqual(sorted(os.listdir(p)), sorted(CONTROL))

    def test_listed_after_entries(self):
        p = self.path(self.obj())
        push(p, b"x")
        with open(os.path.join(p, "zzz"), "wb") as f:
            f.write(b"z")
        names = os.listdir(p)  # readdir order: rm -r unlinks entries first
        self.assertEqual(sorted(names[-3:]), sorted(CONTROL))

    def test_rename_is_eperm(self):
        p = self.path(self.obj())
        # Not the latest entry: a rename onto a name for the same inode is a no-op in the VFS.
        name = push(p, b"x")
        push(p, b"newer")
        for c in CONTROL:
            self.assertErrno(errno.EPERM, os.rename, os.path.join(p, c), os.path.join(p, "y"))
            self.assertErrno(errno.EPERM, os.rename, os.path.join(p, name), os.path.join(p, c))
        with open(os.path.join(p, name), "rb") as f:
            self.assertEqual(f.read(), b"x")

    def test_truncate_chmod_chown_and_utime_are_eperm(self):
        p = self.path(self.obj())
        push(p, b"x")
        before = os.stat(os.path.join(p, SEQ1))
        for c in CONTROL:
            f = os.path.join(p, c)
            for fn, args in ((os.truncate, (f, 0)), (os.chmod, (f, 0o600)),
                             (os.chown, (f, 1, 1)), (os.utime, (f, (1, 1)))):
                with self.subTest(name=c, op=fn.__name__):
                    self.assertErrno(errno.EPERM, fn, *args)
        after = os.stat(os.path.join(p, SEQ1))
        self.assertEqual((after.st_mode, after.st_uid, after.st_size, after.st_mtime_ns),
                         (before.st_mode, before.st_uid, before.st_size, before.st_mtime_ns))
        self.assertEqual(sorted(os.listdir(p)), sorted(CONTROL + (SEQ1,)))
        with open(os.path.join(p, SEQ1), "rb") as f:
            self.assertEqual(f.read(), b"x")

    def test_touch_and_cp_p_of_push(self):
        # touch(1) opens .push, then sets the times of what it opened: the push's own entry.
        p = self.path(self.obj())
        subprocess.run(["touch", os.path.join(p, ".push")], check=True, timeout=10)
        self.assertEqual(sorted(os.listdir(p)), sorted(CONTROL + (SEQ1,)))
        self.assertEqual(os.stat(os.path.join(p, SEQ1)).st_size, 0)
        # cp -p sets the mode and times of the entry it pushed.
        fd, src = tempfile.mkstemp()
        self.addCleanup(os.unlink, src)
        with os.fdopen(fd, "wb") as f:
            f.write(b"kept")
        os.chmod(src, 0o600)
        os.utime(src, (1_000_000, 1_000_000))
        subprocess.run(["cp", "-p", src, os.path.join(p, ".push")], check=True, timeout=10)
        st = os.stat(os.path.join(p, SEQ2))
        self.assertEqual((st.st_mode & 0o7777, int(st.st_mtime), st.st_size),
                         (0o600, 1_000_000, 4))
        os.unlink(os.path.join(p, SEQ1))
        # touch of .pop opens it for writing: EPERM, and nothing is popped.
        r = subprocess.run(["touch", os.path.join(p, ".pop")], capture_output=True, timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"Operation not permitted", r.stderr)
        self.assertEqual(sorted(os.listdir(p)), sorted(CONTROL + (SEQ2,)))

    def test_rm_r_and_rmdir(self):
        p = self.path(self.obj())
        push(p, b"x")
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, p)
        subprocess.run(["rm", "-rf", p], check=True)
        self.assertFalse(os.path.exists(p))
        p2 = self.path(self.obj())
        os.rmdir(p2)  # an empty object: the control files do not count


class PushTest(MountedTestCase):
    """.push: each open for writing creates a new anonymous entry, named by its seq."""

    def test_push_names_and_fifo_order(self):
        p = self.path(self.obj())
        names = [push(p, str(i).encode()) for i in range(12)]
        for n in names:
            self.assertEqual(len(n), 20)
            self.assertTrue(n.isdigit())
        self.assertEqual(names, sorted(names))
        self.assertEqual(len(set(names)), 12)
        self.assertEqual(sorted(os.listdir(p))[3:], names)
        ls = subprocess.run(["ls", p], capture_output=True, text=True, check=True).stdout
        self.assertEqual(ls.split(), names)
        for i, n in enumerate(names):
            with open(os.path.join(p, n), "rb") as f:
                self.assertEqual(f.read(), str(i).encode())
            self.assertEqual(xattr(os.path.join(p, n), "user.smos.name"), n)
            self.assertEqual(int(xattr(os.path.join(p, n), "user.smos.seq")), int(n))

    def test_name_before_and_after_commit(self):
        p = self.path(self.obj())
        fd = os.open(os.path.join(p, ".push"), os.O_RDWR)
        before = xattr(fd, "user.smos.name")
        self.assertEqual(xattr(fd, "user.smos.state"), "write")
        os.write(fd, b"abc")
        self.assertNotIn(before, os.listdir(p))  # invisible until committed
        os.setxattr(fd, "user.smos.state", b"idle")
        self.assertEqual(xattr(fd, "user.smos.name"), before)
        self.assertIn(before, os.listdir(p))
        os.close(fd)
        self.assertEqual(xattr(os.path.join(p, before), "user.smos.name"), before)

    def test_close_commits(self):
        p = self.path(self.obj())
        with open(os.path.join(p, ".push"), "wb") as f:
            f.write(b"hello")
        self.assertEqual(len(os.listdir(p)), 4)

    def test_shell_push(self):
        p = self.path(self.obj())
        subprocess.run(f"echo hi > {p}/.push && echo ho > {p}/.push", shell=True, check=True)
        entries = sorted(e for e in os.listdir(p) if not e.startswith("."))
        contents = []
        for e in entries:
            with open(os.path.join(p, e)) as f:
                contents.append(f.read())
        self.assertEqual(contents, ["hi\n", "ho\n"])

    def test_a_child_processes_close_does_not_commit_a_push(self):
        # A fork (or any subprocess) inherits the descriptor; its exit closes its copy. Only
        # the writer's own close commits, and the entry holds everything the writer wrote.
        p = self.path(self.obj())
        fd = os.open(os.path.join(p, ".push"), os.O_WRONLY)
        os.write(fd, b"first half, ")
        child = os.fork()
        if child == 0:
            os._exit(0)
        self.assertEqual(os.waitpid(child, 0)[1], 0)
        self.assertEqual(xattr(fd, "user.smos.state"), "write")
        self.assertEqual(entries(p), [])
        os.write(fd, b"second half")
        os.close(fd)
        (name,) = entries(p)
        with open(os.path.join(p, name), "rb") as f:
            self.assertEqual(f.read(), b"first half, second half")

    def test_a_compound_shell_command_pushes_one_whole_entry(self):
        # The subshell opens .push; head and tail are its children, and head's exit comes
        # before tail writes.
        p = self.path(self.obj())
        with tempfile.NamedTemporaryFile() as src:
            src.write(bytes(range(256)) * 8)
            src.flush()
            subprocess.run(f"(head -c 100 {src.name}; sleep 0.2; tail -c +101 {src.name})"
                           f" > {p}/.push", shell=True, check=True)
        (name,) = entries(p)
        with open(os.path.join(p, name), "rb") as f:
            self.assertEqual(f.read(), bytes(range(256)) * 8)

    def test_a_push_whose_write_fails_is_not_committed(self):
        p = self.path(self.obj(block_size=1024))
        shell = subprocess.run(f"head -c 4096 /dev/zero > {p}/.push", shell=True,
                               stderr=subprocess.PIPE)
        self.assertNotEqual(shell.returncode, 0)
        self.assertIn(b"too large", shell.stderr)  # EFBIG
        self.assertEqual(entries(p), [])
        self.assertEqual(xattr(p, "user.smos.bytes"), "0")

    def test_a_cp_that_fails_leaves_the_old_version(self):
        p = self.path(self.obj(block_size=1024))
        with open(os.path.join(p, "e"), "wb") as f:
            f.write(b"old")
        with tempfile.NamedTemporaryFile() as big:
            big.write(b"n" * 4096)
            big.flush()
            cp = subprocess.run(["cp", big.name, os.path.join(p, "e")], stderr=subprocess.PIPE)
        self.assertNotEqual(cp.returncode, 0)
        with open(os.path.join(p, "e"), "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(entries(p), ["e"])

    def test_fd_is_the_entry(self):
        p = self.path(self.obj())
        fd = os.open(os.path.join(p, ".push"), os.O_RDWR)
        os.ftruncate(fd, 8192)
        os.setxattr(fd, "user.note", b"n1")
        self.assertEqual(os.fstat(fd).st_size, 8192)
        seg = xattr(fd, "user.smos.segment")
        self.assertTrue(seg.startswith("/dev/shm/"))
        os.pwrite(fd, b"tail", 8188)
        os.close(fd)
        (name,) = [e for e in os.listdir(p) if not e.startswith(".")]
        self.assertEqual(os.stat(os.path.join(p, name)).st_size, 8192)
        self.assertEqual(xattr(os.path.join(p, name), "user.note"), "n1")

    def test_open_read_only_is_eperm(self):
        p = self.path(self.obj())
        self.assertErrno(errno.EPERM, os.open, os.path.join(p, ".push"), os.O_RDONLY)

    def test_capacity(self):
        p = self.path(self.obj(max_capacity=2))
        push(p, b"1")
        fd = os.open(os.path.join(p, ".push"), os.O_WRONLY)  # a write entry holds a slot
        self.assertErrno(errno.ENOSPC, os.open, os.path.join(p, ".push"), os.O_WRONLY)
        os.close(fd)

    def test_explicit_mode_uncommitted_push_is_discarded(self):
        p = self.path(self.obj(commit="explicit", max_capacity=1))
        fd = os.open(os.path.join(p, ".push"), os.O_WRONLY)
        os.write(fd, b"half")
        os.close(fd)
        time.sleep(0.05)
        self.assertEqual(sorted(os.listdir(p)), sorted(CONTROL))
        push(p, b"x")  # its slot came back

    def test_concurrent_pushers_get_distinct_names(self):
        p = self.path(self.obj())
        out = FORK.Queue()

        def pusher(k):
            out.put([push(p, f"{k}.{i}".encode()) for i in range(50)])

        procs = [FORK.Process(target=pusher, args=(k,)) for k in range(4)]
        for pr in procs:
            pr.start()
        names = [n for _ in procs for n in out.get(timeout=30)]
        _join(self, procs)
        self.assertEqual(len(set(names)), 200)
        self.assertEqual(int(xattr(p, "user.smos.entries")), 200)


class PopTest(MountedTestCase):
    """.pop: claims the oldest idle entry; blocks, EAGAIN, EINTR, ENOENT."""

    def test_pop_takes_oldest_and_removes_name(self):
        p = self.path(self.obj())
        names = [push(p, f"v{i}".encode()) for i in range(3)]
        fd = os.open(os.path.join(p, ".pop"), os.O_RDONLY)
        self.assertEqual(os.read(fd, 100), b"v0")
        self.assertEqual(xattr(fd, "user.smos.state"), "zombie")
        self.assertEqual(xattr(fd, "user.smos.readers"), "1")
        self.assertNotIn(names[0], os.listdir(p))
        self.assertErrno(errno.ENOENT, os.open, os.path.join(p, names[0]), os.O_RDONLY)
        self.assertEqual(xattr(p, "user.smos.entries"), "2")
        os.close(fd)

    def test_pop_fd_reads_mmaps_and_xattrs(self):
        p = self.path(self.obj())
        fd = os.open(os.path.join(p, ".push"), os.O_WRONLY)
        os.setxattr(fd, "user.dtype", b"<i8")
        os.write(fd, np.arange(1024, dtype=np.int64).tobytes())
        os.close(fd)
        fd = os.open(os.path.join(p, ".pop"), os.O_RDONLY)
        try:
            self.assertEqual(os.fstat(fd).st_size, 8192)
            self.assertEqual(xattr(fd, "user.dtype"), "<i8")
            import mmap
            m = mmap.mmap(fd, 8192, prot=mmap.PROT_READ)
            np.testing.assert_array_equal(np.frombuffer(m, np.int64), np.arange(1024))
            del m
        finally:
            os.close(fd)

    def test_pop_for_writing_is_eperm(self):
        p = self.path(self.obj())
        push(p, b"x")
        for flags in (os.O_WRONLY, os.O_RDWR):
            self.assertErrno(errno.EPERM, os.open, os.path.join(p, ".pop"), flags)
        self.assertEqual(xattr(p, "user.smos.entries"), "1")

    def test_nonblocking_empty_is_eagain(self):
        p = self.path(self.obj())
        self.assertErrno(errno.EAGAIN, os.open, os.path.join(p, ".pop"),
                         os.O_RDONLY | os.O_NONBLOCK)
        push(p, b"x")
        fd = os.open(os.path.join(p, ".pop"), os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
        self.assertErrno(errno.EAGAIN, os.open, os.path.join(p, ".pop"),
                         os.O_RDONLY | os.O_NONBLOCK)

    def test_busy_entries_are_not_popped(self):
        p = self.path(self.obj())
        name = push(p, b"x")
        reader = os.open(os.path.join(p, name), os.O_RDONLY)
        self.assertErrno(errno.EAGAIN, os.open, os.path.join(p, ".pop"),
                         os.O_RDONLY | os.O_NONBLOCK)
        os.close(reader)
        deadline = time.monotonic() + 5  # the release reaches the daemon after close()
        while True:
            try:
                os.close(os.open(os.path.join(p, ".pop"), os.O_RDONLY | os.O_NONBLOCK))
                break
            except BlockingIOError:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)

    def test_write_entries_are_not_popped(self):
        p = self.path(self.obj())
        fd = os.open(os.path.join(p, ".push"), os.O_WRONLY)
        self.assertErrno(errno.EAGAIN, os.open, os.path.join(p, ".pop"),
                         os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)

    def test_blocked_pop_woken_by_push(self):
        p = self.path(self.obj())
        procs, out = _start_poppers(p, 1)
        time.sleep(0.3)
        self.assertTrue(procs[0].is_alive(), "pop did not block")
        push(p, b"wake")
        self.assertEqual(out.get(timeout=10), ("ok", b"wake"))
        _join(self, procs)

    def test_blocked_pop_woken_by_reader_release(self):
        p = self.path(self.obj())
        name = push(p, b"held")
        # The reader is a process of its own: a descriptor opened here would be inherited by
        # the forked popper, and the entry would stay busy until the popper exits.
        opened, release = FORK.Event(), FORK.Event()
        reader = FORK.Process(target=_hold_open, args=(os.path.join(p, name), opened, release))
        reader.start()
        self.assertTrue(opened.wait(10), "the reader did not open the entry")
        procs, out = _start_poppers(p, 1)
        time.sleep(0.3)
        self.assertTrue(procs[0].is_alive(), "pop took a busy entry")
        release.set()
        reader.join(10)
        self.assertEqual(out.get(timeout=10), ("ok", b"held"))
        _join(self, procs)

    def test_blocked_pop_woken_by_replace(self):
        p = self.path(self.obj())
        procs, out = _start_poppers(p, 1)
        time.sleep(0.2)
        with open(os.path.join(p, "named"), "wb") as f:  # any commit wakes poppers
            f.write(b"n")
        self.assertEqual(out.get(timeout=10), ("ok", b"n"))
        _join(self, procs)

    def test_many_poppers_each_get_one(self):
        p = self.path(self.obj())
        procs, out = _start_poppers(p, 6)
        time.sleep(0.3)
        for i in range(6):
            push(p, f"{i}".encode())
        got = sorted(out.get(timeout=10)[1] for _ in range(6))
        self.assertEqual(got, [f"{i}".encode() for i in range(6)])
        _join(self, procs)

    def test_signal_interrupts_blocked_pop_with_eintr(self):
        p = self.path(self.obj())
        script = r"""
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
signal.signal(signal.SIGALRM, lambda *a: None)   # no SA_RESTART: syscalls see EINTR
signal.setitimer(signal.ITIMER_REAL, 0.4)
t = time.monotonic()
fd = libc.open(sys.argv[1].encode(), os.O_RDONLY)
print(fd, ctypes.get_errno(), round(time.monotonic() - t, 3))
"""
        proc = subprocess.run([sys.executable, "-c", script, os.path.join(p, ".pop")],
                              capture_output=True, text=True, timeout=20)
        fd, err, waited = proc.stdout.split()
        self.assertEqual((int(fd), int(err)), (-1, errno.EINTR), proc.stdout + proc.stderr)
        self.assertGreaterEqual(float(waited), 0.35)
        # The interrupted pop claimed nothing: the next push is there for a non-blocking pop.
        push(p, b"after")
        fd = os.open(os.path.join(p, ".pop"), os.O_RDONLY | os.O_NONBLOCK)
        self.assertEqual(os.read(fd, 10), b"after")
        os.close(fd)

    def test_python_signal_handler_interrupts_client_pop(self):
        name = self.obj()
        script = r"""
import signal, sys
sys.path.insert(0, sys.argv[3])
import smos_client
class Interrupted(Exception):
    pass
def raise_(*a):
    raise Interrupted
signal.signal(signal.SIGALRM, raise_)
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    smos_client.Client(sys.argv[1]).pop_from_object(sys.argv[2])
    print("popped")
except Interrupted:
    print("interrupted")
"""
        pydir = os.path.dirname(smos_client.__file__)
        proc = subprocess.run([sys.executable, "-c", script, self.mnt, name, pydir],
                              capture_output=True, text=True, timeout=20)
        self.assertEqual(proc.stdout.strip(), "interrupted", proc.stderr)

    def test_removing_object_wakes_poppers_with_enoent(self):
        name = self.obj()
        p = self.path(name)
        procs, out = _start_poppers(p, 4)
        time.sleep(0.3)
        self.assertTrue(all(pr.is_alive() for pr in procs))
        self.client.remove_object(name)
        results = [out.get(timeout=10) for _ in procs]
        self.assertEqual(results, [("err", errno.ENOENT)] * 4)
        _join(self, procs)

    def test_renamed_object_keeps_poppers(self):
        name = self.obj()
        procs, out = _start_poppers(self.path(name), 1)
        time.sleep(0.2)
        os.rename(self.path(name), self.path(name + "_moved"))
        push(self.path(name + "_moved"), b"m")
        self.assertEqual(out.get(timeout=10), ("ok", b"m"))
        _join(self, procs)

    def test_blocked_poppers_do_not_starve_the_daemon(self):
        """1000 blocked pops; every other operation still runs; all wake with ENOENT."""
        name = self.obj()
        p = self.path(name)
        n = 1000
        out = FORK.Queue()

        def many():
            threading.stack_size(128 * 1024)
            errs = []

            def one():
                try:
                    os.close(os.open(os.path.join(p, ".pop"), os.O_RDONLY))
                    errs.append(0)
                except OSError as e:
                    errs.append(e.errno)

            ts = [threading.Thread(target=one) for _ in range(n)]
            for t in ts:
                t.start()
            out.put("started")
            for t in ts:
                t.join()
            out.put(errs)

        proc = FORK.Process(target=many)
        proc.start()
        try:
            self.assertEqual(out.get(timeout=60), "started")
            time.sleep(0.5)
            # Other clients are served while 1000 pops wait.
            t0 = time.monotonic()
            other = self.obj()
            k = self.client.push_to_object(other, np.arange(10))
            with self.client.pop_from_object(other) as h:
                np.testing.assert_array_equal(h.value, np.arange(10))
            os.listdir(self.mnt)
            self.assertLess(time.monotonic() - t0, 5)
            self.assertEqual(k, 1)
            # A few pushes are each popped by exactly one waiter.
            for i in range(5):
                push(p, b"x")
            time.sleep(0.5)
            self.client.remove_object(name)
            errs = out.get(timeout=60)
        finally:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.assertEqual(len(errs), n)
        self.assertEqual(errs.count(0), 5)
        self.assertEqual(errs.count(errno.ENOENT), n - 5)


class LatestTest(MountedTestCase):
    """.latest: the committed entry with the highest seq, held as a reader."""

    def test_empty_object_is_enoent(self):
        p = self.path(self.obj())
        self.assertErrno(errno.ENOENT, os.open, os.path.join(p, ".latest"), os.O_RDONLY)
        push(p, b"x")
        fd = os.open(os.path.join(p, ".pop"), os.O_RDONLY)
        self.assertErrno(errno.ENOENT, os.open, os.path.join(p, ".latest"), os.O_RDONLY)
        os.close(fd)

    def test_latest_is_highest_seq_and_busy(self):
        p = self.path(self.obj())
        for i in range(3):
            name = push(p, f"v{i}".encode())
        fd = os.open(os.path.join(p, ".latest"), os.O_RDONLY)
        self.assertEqual(os.read(fd, 10), b"v2")
        self.assertEqual(xattr(fd, "user.smos.name"), name)
        self.assertEqual(xattr(os.path.join(p, name), "user.smos.state"), "busy")
        self.assertEqual(xattr(os.path.join(p, name), "user.smos.readers"), "1")
        os.close(fd)

    def test_latest_follows_replace_and_ignores_write_entries(self):
        p = self.path(self.obj())

        def latest():
            with open(os.path.join(p, ".latest"), "rb") as f:
                return f.read()

        with open(os.path.join(p, "weights"), "wb") as f:
            f.write(b"one")
        pending = os.open(os.path.join(p, ".push"), os.O_WRONLY)  # not committed: invisible
        os.write(pending, b"pending")
        self.assertEqual(latest(), b"one")
        held = os.open(os.path.join(p, ".latest"), os.O_RDONLY)
        subprocess.run(["cp", "/dev/stdin", os.path.join(p, "weights")], input=b"two",
                       check=True)
        self.assertEqual(latest(), b"two")
        self.assertEqual(os.pread(held, 10, 0), b"one")  # its reader keeps the old version
        os.close(held)
        os.close(pending)
        # Now the highest seq of the two committed entries wins. (A pushed entry's seq is
        # taken when .push is opened.)
        seqs = {}
        for e in os.listdir(p):
            if not e.startswith("."):
                with open(os.path.join(p, e), "rb") as f:
                    seqs[int(xattr(os.path.join(p, e), "user.smos.seq"))] = f.read()
        self.assertEqual(sorted(seqs.values()), [b"pending", b"two"])
        self.assertEqual(latest(), seqs[max(seqs)])

    def test_popped_entry_is_not_latest(self):
        p = self.path(self.obj())
        push(p, b"a")
        push(p, b"b")
        fd = os.open(os.path.join(p, ".pop"), os.O_RDONLY)  # takes "a"
        fd2 = os.open(os.path.join(p, ".pop"), os.O_RDONLY)  # takes "b"
        self.assertEqual(os.read(fd2, 1), b"b")
        self.assertErrno(errno.ENOENT, os.open, os.path.join(p, ".latest"), os.O_RDONLY)
        os.close(fd)
        os.close(fd2)

    def test_latest_entry_is_not_popped_while_held(self):
        p = self.path(self.obj())
        push(p, b"a")
        fd = os.open(os.path.join(p, ".latest"), os.O_RDONLY)
        self.assertErrno(errno.EAGAIN, os.open, os.path.join(p, ".pop"),
                         os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)

    def test_latest_mmap(self):
        name = self.obj()
        self.client.push_to_object(name, np.arange(4096, dtype=np.float32))
        via_mount = smos_client.Client(self.mnt, via="mount")
        for c in (self.client, via_mount):
            with c.read_latest_from_object(name) as h:
                np.testing.assert_array_equal(h.value, np.arange(4096, dtype=np.float32))


class NameXattrTest(MountedTestCase):
    """user.smos.name is readable on any entry."""

    def test_named_entry(self):
        p = self.path(self.obj())
        with open(os.path.join(p, "foo"), "wb") as f:
            f.write(b"x")
            f.flush()
            self.assertEqual(xattr(f.fileno(), "user.smos.name"), "foo")
        self.assertEqual(xattr(os.path.join(p, "foo"), "user.smos.name"), "foo")
        os.rename(os.path.join(p, "foo"), os.path.join(p, "bar"))
        self.assertEqual(xattr(os.path.join(p, "bar"), "user.smos.name"), "bar")

    def test_read_only(self):
        p = self.path(self.obj())
        name = push(p, b"x")
        self.assertErrno(errno.EPERM, os.setxattr, os.path.join(p, name), "user.smos.name",
                         b"other")
        listed = os.listxattr(os.path.join(p, name))
        self.assertIn("user.smos.name", listed)


if __name__ == "__main__":
    unittest.main()
