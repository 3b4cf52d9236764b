"""Load tests: a queue under 8 pushers and 8 poppers, and the latest value under a writer
that replaces it continuously while 8 readers read it."""

import errno
import mmap
import multiprocessing
import os
import queue
import time
import traceback
import zlib

import numpy as np

from smos_mount import MountedTestCase, smos_client

FORK = multiprocessing.get_context("fork")

PUSHERS, POPPERS, PER_PUSHER = 8, 8, 2500  # 20,000 entries


def collect(test, out, procs, timeout):
    """One result from each of procs; fails at once if one of them died without reporting
    (a crash, or a signal such as SIGBUS from a mapping)."""
    results, deadline = [], time.monotonic() + timeout
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead:
            time.sleep(0.5)  # the others' results, if they come, are not needed
            test.fail(f"{len(dead)} processes died without a result, exit codes {dead} "
                      f"(negative: killed by that signal)")
        test.assertLess(time.monotonic(), deadline, f"only {len(results)} of {len(procs)} "
                        "processes finished in time")
    return results
CAPACITY = 256


def payload(k, i):
    """Entry i of pusher k: a header (k, i, crc of the body) and a body of varying size."""
    size = 64 + (k * 7919 + i * 104729) % 16384
    body = np.random.default_rng(k * 1_000_003 + i).integers(0, 256, size, np.uint8)
    head = np.array([k, i, zlib.crc32(body)], np.int64).view(np.uint8)
    return np.concatenate([head, body])


def _pusher(mnt, obj, k, errors):
    client = smos_client.Client(mnt)
    try:
        for i in range(PER_PUSHER):
            data = payload(k, i)
            while True:
                try:
                    client.push_to_object(obj, data)
                    break
                except OSError as e:
                    if e.errno != errno.ENOSPC:  # full: back-pressure, try again
                        raise
                    time.sleep(0.0005)
    except BaseException as e:  # noqa: BLE001 - report anything to the parent
        errors.put(f"pusher {k}: {e!r}\n{traceback.format_exc()}")


def _popper(mnt, obj, popped, out):
    client = smos_client.Client(mnt)
    seen, bad = [], []
    while True:
        try:
            h = client.pop_from_object(obj)
        except FileNotFoundError:
            break  # the object was removed: done
        with h:
            v = h.value
            k, i, crc = (int(x) for x in v[:24].view(np.int64))
            if zlib.crc32(v[24:]) != crc or not np.array_equal(v, payload(k, i)):
                bad.append((k, i))
            seen.append((k, i))
        with popped.get_lock():
            popped.value += 1
    out.put((seen, bad))


class QueueUnderLoadTest(MountedTestCase):
    memory = "1G"

    def test_queue_correctness_under_load(self):
        obj = self.obj(max_capacity=CAPACITY)
        popped = FORK.Value("l", 0)
        out, errors = FORK.Queue(), FORK.Queue()
        poppers = [FORK.Process(target=_popper, args=(self.mnt, obj, popped, out))
                   for _ in range(POPPERS)]
        pushers = [FORK.Process(target=_pusher, args=(self.mnt, obj, k, errors))
                   for k in range(PUSHERS)]
        t0 = time.monotonic()
        for p in poppers + pushers:
            p.start()
        try:
            for p in pushers:
                p.join(120)
            self.assertTrue(errors.empty(), errors.get() if not errors.empty() else "")
            self.assertFalse(any(p.is_alive() for p in pushers), "pushers hang")
            total = PUSHERS * PER_PUSHER
            deadline = time.monotonic() + 60
            while popped.value < total and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(popped.value, total)
            elapsed = time.monotonic() - t0
            # Every popper is now blocked on an empty object.
            time.sleep(0.2)
            self.assertTrue(all(p.is_alive() for p in poppers))
            self.assertEqual(self.client.get_entry_count(obj), 0)
            # No slot leaks: `capacity` entries can be created (write entries, which the
            # blocked poppers cannot take), and not one more.
            self._wait_for(lambda: os.getxattr(self.path(obj), "user.smos.bytes") == b"0")
            held = [self.client.create_entry(obj, np.uint8, 1) for _ in range(CAPACITY)]
            self.assertErrno(errno.ENOSPC, self.client.create_entry, obj, np.uint8, 1)
            for h in held:
                h.abort()
            # Removing the object wakes every blocked popper, which then finishes.
            self.client.remove_object(obj)
            results = collect(self, out, poppers, timeout=30)
            for p in poppers:
                p.join(30)
            self.assertFalse(any(p.is_alive() for p in poppers), "poppers still blocked")
        finally:
            for p in poppers + pushers:
                if p.is_alive():
                    p.kill()  # our own children only
                    p.join()
        seen = [x for s, _ in results for x in s]
        bad = [x for _, b in results for x in b]
        self.assertEqual(bad, [])
        self.assertEqual(len(seen), total)
        self.assertEqual(sorted(seen), [(k, i) for k in range(PUSHERS) for i in range(PER_PUSHER)])
        self.assertGreater(min(len(s) for s, _ in results), 0, "a popper got nothing")
        print(f"\n  queue: {total} entries, {PUSHERS}+{POPPERS} processes, "
              f"{elapsed:.1f} s, {total / elapsed:.0f} entries/s", flush=True)

    def _wait_for(self, cond, timeout=10):
        deadline = time.monotonic() + timeout
        while not cond():
            self.assertLess(time.monotonic(), deadline, "timed out")
            time.sleep(0.01)


WEIGHTS_SIZES = (4096, 65536, 200_000)
READERS, READS = 8, 1500
HEADER = 16


def version_bytes(v):
    """Version v of `weights`: (v, size) then the byte v % 251, repeated."""
    size = WEIGHTS_SIZES[v % len(WEIGHTS_SIZES)]
    data = bytearray([v % 251]) * size
    data[:HEADER] = np.array([v, size], np.int64).tobytes()
    return bytes(data)


def check_version(buf):
    """The version a read saw, if it is whole and consistent; else raises."""
    a = np.frombuffer(buf, np.uint8)
    v, size = (int(x) for x in a[:HEADER].view(np.int64))
    if size != len(a):
        raise AssertionError(f"version {v}: {len(a)} bytes, expected {size}")
    if not (a[HEADER:] == v % 251).all():
        raise AssertionError(f"version {v}: mixed bytes")
    return v


def _writer(path, stop, count):
    v = 0
    while not stop.is_set():
        v += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # what cp does
        try:
            data = version_bytes(v)
            off = 0
            while off < len(data):
                off += os.write(fd, data[off:])
        finally:
            os.close(fd)
        count.value = v


def _reader(mnt, obj, r, out):
    path = os.path.join(mnt, obj, "weights")
    client = smos_client.Client(mnt, via="segment")
    versions, err = [], None
    try:
        for n in range(READS):
            how = (r + n) % 4
            if how == 0:  # read(2) by name
                with open(path, "rb") as f:
                    v = check_version(f.read())
            elif how == 1:  # mmap of user.smos.segment, leased by a descriptor of the name
                fd = os.open(path, os.O_RDONLY)
                try:
                    seg = os.open(os.getxattr(fd, "user.smos.segment"), os.O_RDONLY)
                    try:
                        with mmap.mmap(seg, os.fstat(seg).st_size, prot=mmap.PROT_READ) as m:
                            v = check_version(m)
                    finally:
                        os.close(seg)
                finally:
                    os.close(fd)
            elif how == 2:  # .latest, zero-copy through the client
                with client.read_latest_from_object(obj) as h:
                    v = check_version(h.value)
            else:  # by name through the client
                with client.read_from_object(obj, "weights") as h:
                    v = check_version(h.value)
            # An open gets the version current when it starts, or a newer one: whatever the
            # way, a reader never goes back.
            if versions and v < versions[-1]:
                raise AssertionError(f"went back from version {versions[-1]} to {v}")
            versions.append(v)
    except BaseException as e:  # noqa: BLE001
        err = f"reader {r} read {len(versions)} (method {how}): {e!r}\n{traceback.format_exc()}"
    out.put((versions, err))


class LatestUnderLoadTest(MountedTestCase):
    memory = "1G"

    def test_latest_under_load(self):
        obj = self.obj()
        path = self.path(obj, "weights")
        with open(path, "wb") as f:
            f.write(version_bytes(0))
        stop, count, out = FORK.Event(), FORK.Value("l", 0), FORK.Queue()
        writer = FORK.Process(target=_writer, args=(path, stop, count))
        readers = [FORK.Process(target=_reader, args=(self.mnt, obj, r, out))
                   for r in range(READERS)]
        t0 = time.monotonic()
        writer.start()
        for p in readers:
            p.start()
        try:
            results = collect(self, out, readers, timeout=120)
            stop.set()
            writer.join(30)
            for p in readers:
                p.join(30)
        finally:
            stop.set()
            for p in readers + [writer]:
                if p.is_alive():
                    p.kill()
                    p.join()
        elapsed = time.monotonic() - t0
        errs = [e for _, e in results if e]
        self.assertEqual(errs, [])
        self.assertEqual(writer.exitcode, 0)
        reads = sum(len(v) for v, _ in results)
        distinct = len({x for v, _ in results for x in v})
        self.assertEqual(reads, READERS * READS)
        self.assertGreater(count.value, 100, "the writer barely wrote")
        self.assertGreater(distinct, 50, "readers saw too few versions to prove anything")
        self.assertEqual(self.client.list_entries(obj), ["weights"])
        print(f"\n  latest: {reads} reads of {distinct} versions by {READERS} readers, "
              f"{count.value} replaces, {elapsed:.1f} s", flush=True)
