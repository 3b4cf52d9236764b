"""The Python client: one test class per row of issue 3's SMOS parity table, plus values,
views and handle lifetimes."""

import errno
import os
import pickle
import subprocess
import time
import unittest

import numpy as np

from smos_mount import MountedTestCase, smos_client


def xattr(path, name):
    try:
        return os.getxattr(path, name).decode()
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


def wait_for_bytes(test, obj, want):
    """Waits until object obj holds want bytes, zombies included: until the releases of the
    handles closed before have reached the daemon, which comes after close() returns (with
    io_uring, possibly through another CPU's queue)."""
    path = test.path(obj)
    for _ in range(1000):
        if xattr(path, "user.smos.bytes") == str(want):
            break
        time.sleep(0.01)
    test.assertEqual(xattr(path, "user.smos.bytes"), str(want))


def open_files():
    """What this process's descriptors are open on."""
    files = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            files.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the listing's own descriptor
            pass
    return files


class CreateRemoveObjectTest(MountedTestCase):
    """create_object(name, max_capacity, track_count, block_size, track_name) / remove_object."""

    def test_create_sets_capacity_and_block_size(self):
        name = self.obj(max_capacity=7, block_size=4096)
        p = self.path(name)
        self.assertTrue(os.path.isdir(p))
        self.assertEqual(xattr(p, "user.smos.capacity"), "7")
        self.assertEqual(xattr(p, "user.smos.block_size"), "4096")
        self.assertIsNone(xattr(p, "user.smos.tracks"))

    def test_create_commit_mode(self):
        name = self.obj(commit="explicit")
        self.assertEqual(xattr(self.path(name), "user.smos.commit"), "explicit")
        # The client commits explicitly, so its writes work in either mode.
        key = self.client.push_to_object(name, np.arange(3))
        np.testing.assert_array_equal(self.client.get(name, [key]), np.arange(3))

    def test_create_smos_style_tracks(self):
        name = self.obj(max_capacity=4, track_count=2, block_size=[100, 30],
                        track_name=["obs", "info"])
        self.assertEqual(xattr(self.path(name), "user.smos.tracks"),
                         "obs:uint8:100,info:uint8:30")
        self.assertEqual(self.client.get_track_count(name), 2)

    def test_create_typed_tracks(self):
        name = self.obj(tracks=[("obs", np.uint8, (4, 4)), ("reward", np.float32, 1)])
        self.assertEqual(xattr(self.path(name), "user.smos.tracks"),
                         "obs:uint8:4x4,reward:float32:1")

    def test_create_existing_fails(self):
        name = self.obj()
        self.assertErrno(errno.EEXIST, self.client.create_object, name)

    def test_create_bad_setting_leaves_nothing(self):
        self.assertErrno(errno.EINVAL, self.client.create_object, "bad_tracks",
                         tracks="obs:nosuchtype:3")
        self.assertFalse(os.path.exists(self.path("bad_tracks")))

    def test_remove_object_with_entries_and_readers(self):
        name = self.obj()
        for i in range(5):
            self.client.push_to_object(name, np.full(10, i))
        reader = self.client.read_from_object(name, 1)
        self.client.remove_object(name)
        self.assertFalse(os.path.exists(self.path(name)))
        np.testing.assert_array_equal(reader.value, np.full(10, 0))  # zombie stays readable
        reader.release()

    def test_rm_r_removes_object(self):
        name = self.obj()
        self.client.push_to_object(name, b"x")
        subprocess.run(["rm", "-r", self.path(name)], check=True)
        self.assertFalse(os.path.exists(self.path(name)))

    def test_remove_missing_object(self):
        self.assertRaises(FileNotFoundError, self.client.remove_object, "no_such_object")


class PutGetTest(MountedTestCase):
    """put(name, data, as_list) / get(name, entry_idx_list): write entries, read copies."""

    def test_put_get_array(self):
        a = np.random.default_rng(0).random((84, 84, 4), dtype=np.float32)
        self.client.put("pg_array", a)
        b = self.client.get("pg_array")
        np.testing.assert_array_equal(a, b)
        self.assertEqual(b.dtype, np.float32)
        self.assertTrue(b.flags.writeable and b.flags.owndata)  # a copy
        self.assertEqual(xattr(self.path("pg_array"), "user.smos.capacity"), "1")

    def test_put_as_list_and_get_subset(self):
        data = [np.arange(i + 1, dtype=np.int16) for i in range(5)] + [{"k": "v"}, "text"]
        keys = self.client.put("pg_list", data, as_list=True, redundancy=3)
        self.assertEqual(len(keys), 7)
        self.assertEqual(self.client.get_entry_count("pg_list"), 7)
        self.assertEqual(xattr(self.path("pg_list"), "user.smos.capacity"), "10")
        out = self.client.get("pg_list")
        for x, y in zip(data[:5], out[:5]):
            np.testing.assert_array_equal(x, y)
        self.assertEqual(out[5:], data[5:])
        sub = self.client.get("pg_list", [keys[6], keys[0]])
        self.assertEqual(sub[0], "text")
        np.testing.assert_array_equal(sub[1], data[0])
        self.assertIsNone(self.client.get("pg_list", [10**9]))  # a missing entry

    def test_put_list_without_as_list_is_tracks(self):
        self.client.put("pg_tracks", [np.arange(6).reshape(2, 3), "info", 3.5])
        out = self.client.get("pg_tracks")
        np.testing.assert_array_equal(out[0], np.arange(6).reshape(2, 3))
        self.assertEqual(out[1:], ["info", 3.5])

    def test_put_multi_track_list(self):
        data = [[np.full((2, 2), i, np.float64), {"i": i}] for i in range(3)]
        self.client.put("pg_multi", data, as_list=True)
        out = self.client.get("pg_multi")
        for i, (arr, info) in enumerate(out):
            np.testing.assert_array_equal(arr, np.full((2, 2), i))
            self.assertEqual(info, {"i": i})

    def test_put_one_track_lists(self):
        data = [[np.arange(3) + i] for i in range(2)]
        self.client.put("pg_one_track", data, as_list=True)
        out = self.client.get("pg_one_track")
        for i, entry in enumerate(out):
            self.assertEqual(len(entry), 1)
            np.testing.assert_array_equal(entry[0], np.arange(3) + i)

    def test_put_mismatched_tracks(self):
        self.assertRaises(ValueError, self.client.put, "pg_bad", [[1, 2], [3]], as_list=True)
        self.assertFalse(os.path.exists(self.path("pg_bad")))

    def test_put_existing_object(self):
        self.client.put("pg_twice", 1)
        self.assertErrno(errno.EEXIST, self.client.put, "pg_twice", 2)


class CreateOpenShmCommitTest(MountedTestCase):
    """create_entry -> open_shm -> commit_entry: a writable zero-copy view, then commit."""

    def _roundtrip(self, client):
        name = self.obj()
        h = client.create_entry(name, np.int32, (64, 32))
        view = client.open_shm(h)
        self.assertTrue(view.flags.writeable)
        self.assertEqual(h.state, "write")
        # Invisible to others until committed.
        self.assertEqual(client.list_entries(name), [])
        view[:] = np.arange(64 * 32).reshape(64, 32)
        key = client.commit_entry(h)
        self.assertIsInstance(key, int)
        self.assertEqual(client.list_entries(name), [smos_client.entry_name(key)])
        got = client.get(name, [key])
        np.testing.assert_array_equal(got, np.arange(64 * 32).reshape(64, 32))
        self.assertEqual(xattr(self.path(name, smos_client.entry_name(key)), "user.dtype"),
                         "<i4")
        self.assertEqual(xattr(self.path(name, smos_client.entry_name(key)), "user.shape"),
                         "64,32")

    def test_via_segment(self):
        self._roundtrip(self.client)

    def test_via_mount(self):
        self._roundtrip(smos_client.Client(self.mnt, via="mount"))

    def test_named_entry_and_context_manager(self):
        name = self.obj()
        with self.client.create_entry(name, np.float64, (), entry="scalar") as h:
            h.value[()] = 2.5
        self.assertEqual(self.client.get(name, ["scalar"]), 2.5)
        self.assertEqual(self.client.get(name, ["scalar"]).shape, ())

    def test_exception_in_block_aborts(self):
        name = self.obj(max_capacity=1)
        with self.assertRaises(RuntimeError):
            with self.client.create_entry(name, np.uint8, 10, entry="x") as h:
                h.value[:] = 1
                raise RuntimeError
        self.assertEqual(self.client.list_entries(name), [])
        with self.client.create_entry(name, np.uint8, 10, entry="x"):
            pass  # the slot came back
        self.assertEqual(self.client.list_entries(name), ["x"])

    def test_release_without_commit_aborts(self):
        name = self.obj(max_capacity=1)
        h = self.client.create_entry(name, np.uint8, 10)
        h.release()
        self.assertEqual(self.client.get_entry_count(name), 0)
        self.client.push_to_object(name, 1)  # no slot leaked

    def test_pickle_buffer(self):
        name = self.obj()
        blob = pickle.dumps({"a": [1, 2]})
        h = self.client.create_entry(name, is_numpy=False, nbytes=len(blob) + 10)
        h.value[:len(blob)] = np.frombuffer(blob, np.uint8)
        key = self.client.commit_entry(h)
        self.assertEqual(self.client.get(name, [key]), {"a": [1, 2]})

    def test_view_dies_with_commit(self):
        name = self.obj()
        h = self.client.create_entry(name, np.uint8, 4096)
        view = h.value
        view[:] = 9
        self.client.commit_entry(h)
        # The writer's view no longer aliases the entry: writing it cannot change the entry.
        view[:] = 1
        self.assertEqual(int(self.client.get(name)[0]), 9)

    def test_too_big_for_block_size(self):
        name = self.obj(block_size=1024)
        self.assertErrno(errno.EFBIG, self.client.create_entry, name, np.uint8, 2048)
        self.assertEqual(self.client.get_entry_count(name), 0)

    def test_capacity_full(self):
        name = self.obj(max_capacity=2)
        self.client.push_to_object(name, 1)
        h = self.client.create_entry(name, np.uint8, 1)  # a write entry takes a slot too
        self.assertErrno(errno.ENOSPC, self.client.create_entry, name, np.uint8, 1)
        self.assertErrno(errno.ENOSPC, self.client.push_to_object, name, 2)
        h.release()
        self.client.push_to_object(name, 2)


class OpenReleaseTest(MountedTestCase):
    """open_entry -> open_shm -> release_entry: a read-only zero-copy view, then close."""

    def test_read_only_view_and_busy(self):
        name = self.obj()
        a = np.arange(1000, dtype=np.uint16)
        key = self.client.push_to_object(name, a)
        p = self.path(name, smos_client.entry_name(key))
        h = self.client.open_entry(name, key)
        view = self.client.open_shm(h)
        np.testing.assert_array_equal(view, a)
        self.assertFalse(view.flags.writeable)
        with self.assertRaises(ValueError):
            view[0] = 1
        self.assertEqual(h.state, "busy")
        self.assertEqual(xattr(p, "user.smos.readers"), "1")
        self.assertEqual(h.key, key)
        self.client.release_entry(h)
        self.assertTrue(h.released)
        self.assertIsNone(h.value)
        self.client.release_entry(h)  # twice is harmless
        for _ in range(100):  # release reaches the daemon after close() returns
            if xattr(p, "user.smos.state") == "idle":
                break
        self.assertEqual(xattr(p, "user.smos.state"), "idle")

    def test_zero_copy(self):
        name = self.obj()
        key = self.client.push_to_object(name, np.zeros(1 << 20, np.uint8))
        with self.client.open_entry(name, key) as h1, self.client.open_entry(name, key) as h2:
            # Both views map the same shared memory: the segment, not a private copy.
            seg = os.getxattr(h1.fd, "user.smos.segment").decode()
            self.assertTrue(seg.startswith("/dev/shm/"))
            with open("/proc/self/maps") as f:
                maps = f.read()
            self.assertIn(seg, maps)

    def test_view_after_release_shows_no_other_entry(self):
        name = self.obj(max_capacity=1)
        key = self.client.push_to_object(name, np.full(8192, 7, np.uint8))
        h = self.client.open_entry(name, key)
        stale = h.value
        h.release()
        self.client.delete_entry(name, key)
        self.client.push_to_object(name, np.full(8192, 5, np.uint8))  # reuses the slot
        self.assertEqual(int(stale.max()), 0)  # zeros, never the new entry's 5s

    def test_cp_written_entry_reads_as_bytes(self):
        name = self.obj()
        with open(self.path(name, "raw"), "wb") as f:
            f.write(b"hello")
        with self.client.open_entry(name, "raw") as h:
            self.assertEqual(h.value.dtype, np.uint8)
            self.assertEqual(h.value.tobytes(), b"hello")

    def test_empty_entry(self):
        name = self.obj()
        key = self.client.push_to_object(name, np.zeros((0, 3), np.float32))
        with self.client.open_entry(name, key) as h:
            self.assertEqual(h.value.shape, (0, 3))

    def test_missing_entry(self):
        name = self.obj()
        self.assertRaises(FileNotFoundError, self.client.open_entry, name, 12345)
        self.assertRaises(FileNotFoundError, self.client.open_entry, "no_such_object", 1)

    def test_dtypes_roundtrip(self):
        name = self.obj()
        for dt in ["bool", "i1", "u1", ">i2", "<u4", "i8", "f2", "f4", ">f8", "c8", "c16",
                   "M8[ns]", "m8[s]", "U3", "S5", "V4"]:
            a = np.zeros((3, 2), dt)
            key = self.client.push_to_object(name, a)
            with self.client.read_from_object(name, key) as h:
                self.assertEqual(h.value.dtype, np.dtype(dt), dt)
                self.assertEqual(h.value.shape, (3, 2))
                np.testing.assert_array_equal(h.value, a)

    def test_structured_and_object_arrays_are_pickled(self):
        name = self.obj()
        rec = np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
        rec["a"] = [1, 2, 3]
        objs = np.array([{"x": 1}, None], dtype=object)
        for a in (rec, objs):
            key = self.client.push_to_object(name, a)
            self.assertEqual(xattr(self.path(name, smos_client.entry_name(key)), "user.dtype"),
                             "pickle")
            got = self.client.get(name, [key])
            self.assertEqual(got.dtype, a.dtype)
            self.assertEqual(list(got), list(a))

    def test_non_contiguous_array(self):
        name = self.obj()
        a = np.arange(100).reshape(10, 10)[::2, 1::3]
        key = self.client.push_to_object(name, a)
        np.testing.assert_array_equal(self.client.get(name, [key]), a)
        f = np.asfortranarray(np.arange(12).reshape(3, 4))
        key = self.client.push_to_object(name, f)
        np.testing.assert_array_equal(self.client.get(name, [key]), f)


class DeleteEntryTest(MountedTestCase):
    """delete_entry(force_delete): unlink, safe with readers (zombie)."""

    def test_delete_idle(self):
        name = self.obj(max_capacity=1)
        key = self.client.push_to_object(name, np.arange(4))
        self.client.delete_entry(name, key)
        self.assertEqual(self.client.get_entry_count(name), 0)
        self.assertRaises(FileNotFoundError, self.client.read_from_object, name, key)
        self.client.push_to_object(name, 1)  # the slot is free at once

    def test_delete_with_readers_is_a_zombie(self):
        name = self.obj(max_capacity=2)
        key = self.client.push_to_object(name, np.arange(1 << 16, dtype=np.int64))
        h = self.client.read_from_object(name, key)
        self.client.delete_entry(name, key, force_delete=False)
        self.assertEqual(h.state, "zombie")
        self.assertEqual(self.client.list_entries(name), [])
        # The reader's view is unchanged while others fill the object's other slot.
        self.client.push_to_object(name, np.full(1 << 16, -1, np.int64))
        np.testing.assert_array_equal(h.value, np.arange(1 << 16))
        h.release()
        wait_for_bytes(self, name, 8 << 16)  # the other entry's: the zombie is freed
        self.client.push_to_object(name, 3)  # and its slot reused

    def test_delete_missing(self):
        name = self.obj()
        self.assertRaises(FileNotFoundError, self.client.delete_entry, name, 1)


class PushPopTest(MountedTestCase):
    """push_to_object / pop_from_object -> free_handle: .push / .pop -> close."""

    def test_push_pop_fifo(self):
        name = self.obj()
        values = [np.full((2, 3), i, np.float32) for i in range(5)] + ["s", {"d": 1}]
        keys = [self.client.push_to_object(name, v) for v in values]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual(self.client.list_entries(name), [smos_client.entry_name(k) for k in keys])
        for k, v in zip(keys, values):
            h = self.client.pop_from_object(name)
            self.assertEqual(h.key, k)
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(h.value, v)
                self.assertFalse(h.value.flags.writeable)
            else:
                self.assertEqual(h.value, v)
            self.assertEqual(h.state, "zombie")
            self.client.free_handle(h)
        self.assertEqual(self.client.get_entry_count(name), 0)
        self.assertIsNone(self.client.pop_from_object(name, block=False))

    def test_popped_slot_freed_on_free_handle(self):
        name = self.obj(max_capacity=1)
        self.client.push_to_object(name, 1)
        h = self.client.pop_from_object(name)
        self.assertErrno(errno.ENOSPC, self.client.push_to_object, name, 2)
        self.client.free_handle(h)
        wait_for_bytes(self, name, 0)
        self.client.push_to_object(name, 2)

    def test_pop_skips_busy_entries(self):
        name = self.obj()
        k1 = self.client.push_to_object(name, 1)
        k2 = self.client.push_to_object(name, 2)
        with self.client.read_from_object(name, k1):
            with self.client.pop_from_object(name) as h:
                self.assertEqual((h.key, h.value), (k2, 2))
            self.assertIsNone(self.client.pop_from_object(name, block=False))
        with self.client.pop_from_object(name) as h:
            self.assertEqual(h.value, 1)

    def test_pop_missing_object(self):
        self.assertRaises(FileNotFoundError, self.client.pop_from_object, "no_such_object")


class FailureTest(MountedTestCase):
    """A call that raises leaves nothing behind: no entry half written, no memory held."""

    def assertEmpty(self, name):
        self.assertEqual(self.client.list_entries(name), [])
        hidden = set(os.listdir(self.path(name))) - {".push", ".pop", ".latest"}
        self.assertEqual(hidden, set())  # no .tmp.* either
        self.assertIsNone(self.client.pop_from_object(name, block=False))

    def test_a_push_that_fails_publishes_nothing(self):
        name = self.obj(max_capacity=4, block_size=1024)
        self.assertErrno(errno.EFBIG, self.client.push_to_object, name, np.ones(1000, np.int32))
        self.assertEmpty(name)
        tracked = self.obj(tracks=[("a", np.int64, 4), ("b", np.float32, 2)])
        self.assertRaises(ValueError, self.client.push_to_object, tracked, [np.arange(4)])
        self.assertEmpty(tracked)

    def test_a_write_entry_that_fails_publishes_nothing(self):
        name = self.obj(block_size=1024)
        self.client.write_entry(name, "w", np.arange(4))
        self.assertErrno(errno.EFBIG, self.client.write_entry, name, "w", np.ones(1000, np.int32))
        self.assertEqual(self.client.list_entries(name), ["w"])
        with self.client.read_latest_from_object(name) as h:
            np.testing.assert_array_equal(h.value, np.arange(4))

    def test_a_view_kept_after_release_holds_no_memory(self):
        for via in ("mount", "segment"):
            with self.subTest(via=via):
                client = smos_client.Client(self.mnt, via=via)
                name = self.obj(max_capacity=1)
                client.push_to_object(name, np.ones(1 << 20, np.uint8))
                h = client.pop_from_object(name)
                kept = h.value[:10]
                h.release()
                self.assertEqual(kept.sum(), 0, "a view after release reads zeros")
                wait_for_bytes(self, name, 0)
                client.push_to_object(name, 1)  # its slot is free
                self.assertFalse([f for f in open_files() if f.startswith(("/dev/shm/", self.mnt + "/"))])
                del kept

    def test_names_of_digits_are_names(self):
        name = self.obj()
        with open(self.path(name, "0"), "wb") as f:  # what `cp x obj/0` does
            f.write(b"raw")
        self.client.write_entry(name, "7", np.arange(3))
        self.assertEqual(self.client.list_entries(name), ["0", "7"])
        raw, seven = self.client.get(name)
        np.testing.assert_array_equal(seven, np.arange(3))
        self.assertEqual(bytes(raw), b"raw")
        with self.client.read_from_object(name, "7") as h:
            self.assertEqual(h.key, "7")

    def test_the_name_of_a_released_handle_is_a_clear_error(self):
        name = self.obj()
        self.client.push_to_object(name, 1)
        h = self.client.pop_from_object(name)
        h.release()
        self.assertRaises(ValueError, getattr, h, "name")

    def test_a_pop_that_cannot_be_decoded_hands_over_its_bytes(self):
        name = self.obj()
        fd = os.open(self.path(name, ".push"), os.O_WRONLY)
        os.setxattr(fd, "user.dtype", b"pickle")
        os.write(fd, b"not a pickle")
        os.close(fd)
        with self.assertRaises(smos_client.DecodeError) as cm:
            self.client.pop_from_object(name)
        self.assertEqual(cm.exception.data, b"not a pickle")
        self.assertEqual(self.client.get_entry_count(name), 0)  # popped all the same

    def test_put_of_an_empty_list(self):
        self.assertRaises(ValueError, self.client.put, "empty_list", [], as_list=True)
        self.assertFalse(os.path.exists(self.path("empty_list")))


class ReadTest(MountedTestCase):
    """read_from_object / read_latest_from_object -> release_entry."""

    def test_read_by_index_and_name(self):
        name = self.obj()
        k = self.client.push_to_object(name, np.arange(5))
        with self.client.read_from_object(name, k) as h:
            np.testing.assert_array_equal(h.value, np.arange(5))
        with self.client.read_from_object(name, smos_client.entry_name(k)) as h:
            np.testing.assert_array_equal(h.value, np.arange(5))

    def test_read_latest(self):
        name = self.obj()
        for i in range(4):
            k = self.client.push_to_object(name, np.full(3, i))
        h = self.client.read_latest_from_object(name)
        self.assertEqual(h.key, k)
        np.testing.assert_array_equal(h.value, np.full(3, 3))
        self.assertEqual(h.state, "busy")
        self.client.release_entry(h)
        # write_entry replaces by name, and the new version is the latest.
        self.client.write_entry(name, "weights", np.ones(2))
        with self.client.read_latest_from_object(name) as h:
            self.assertEqual(h.key, "weights")
            np.testing.assert_array_equal(h.value, np.ones(2))

    def test_write_entry_replaces_atomically_for_readers(self):
        name = self.obj()
        s1 = self.client.write_entry(name, "w", np.zeros(1000))
        old = self.client.read_from_object(name, "w")
        s2 = self.client.write_entry(name, "w", np.ones(1000))
        self.assertGreater(s2, s1)
        np.testing.assert_array_equal(old.value, np.zeros(1000))
        self.assertEqual(old.state, "zombie")
        with self.client.read_from_object(name, "w") as new:
            np.testing.assert_array_equal(new.value, np.ones(1000))
        old.release()
        self.assertEqual(self.client.list_entries(name), ["w"])

    def test_latest_of_empty_object(self):
        name = self.obj()
        self.assertRaises(FileNotFoundError, self.client.read_latest_from_object, name)


class BatchTest(MountedTestCase):
    """batch_read_from_object / batch_release_entry: open many / close many."""

    def test_batch(self):
        name = self.obj()
        keys = [self.client.push_to_object(name, np.full(4, i)) for i in range(6)]
        hs = self.client.batch_read_from_object(name, keys[1:4])
        for i, h in zip(range(1, 4), hs):
            np.testing.assert_array_equal(h.value, np.full(4, i))
            self.assertEqual(h.state, "busy")
        self.client.batch_release_entry(hs)
        self.assertTrue(all(h.released for h in hs))

    def test_batch_all_or_nothing(self):
        name = self.obj()
        k = self.client.push_to_object(name, 1)
        p = self.path(name, smos_client.entry_name(k))
        self.assertRaises(FileNotFoundError, self.client.batch_read_from_object, name,
                          [k, k + 1000])
        for _ in range(100):
            if xattr(p, "user.smos.readers") == "0":
                break
        self.assertEqual(xattr(p, "user.smos.readers"), "0")


class EntryCountTest(MountedTestCase):
    """get_entry_count: user.smos.entries."""

    def test_counts_committed_only(self):
        name = self.obj()
        self.assertEqual(self.client.get_entry_count(name), 0)
        self.client.push_to_object(name, 1)
        h = self.client.create_entry(name, np.uint8, 3)
        self.assertEqual(self.client.get_entry_count(name), 1)
        h.commit()
        self.assertEqual(self.client.get_entry_count(name), 2)
        with self.client.pop_from_object(name):
            self.assertEqual(self.client.get_entry_count(name), 1)


if __name__ == "__main__":
    unittest.main()
