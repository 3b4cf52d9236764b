"""Typed tracks: user.smos.tracks layouts, offsets, sizes, errnos, and the client's views."""

import errno
import os
import subprocess

import numpy as np

from smos_mount import MountedTestCase, smos_client

LAYOUT = "obs:uint8:84x84x4,action:int64:1,reward:float32:1"


def xattr(path_or_fd, name):
    return os.getxattr(path_or_fd, name).decode()


def setx(path_or_fd, name, value):
    os.setxattr(path_or_fd, name, value.encode())


class LayoutTest(MountedTestCase):
    """The layout on objects and entries, through plain syscalls."""

    def test_layout_offsets_and_block_size(self):
        p = self.path(self.obj())
        setx(p, "user.smos.tracks", LAYOUT)
        self.assertEqual(xattr(p, "user.smos.tracks"), LAYOUT)
        # obs: 28224 bytes at 0; action at 28224 (a multiple of 64); reward at 28288.
        self.assertEqual(xattr(p, "user.smos.block_size"), str(28288 + 4))
        fd = os.open(os.path.join(p, ".push"), os.O_WRONLY)
        self.assertEqual(xattr(fd, "user.smos.tracks"),
                         "obs:uint8:84x84x4@0,action:int64:1@28224,reward:float32:1@28288")
        self.assertEqual(os.fstat(fd).st_size, 28292)  # created at block_size, zero-filled
        os.pwrite(fd, np.int64(7).tobytes(), 28224)
        name = xattr(fd, "user.smos.name")
        os.close(fd)
        e = os.path.join(p, name)
        self.assertEqual(os.stat(e).st_size, 28292)
        self.assertEqual(xattr(e, "user.smos.tracks"),
                         "obs:uint8:84x84x4@0,action:int64:1@28224,reward:float32:1@28288")
        with open(e, "rb") as f:
            data = f.read()
        self.assertEqual(data[:28224], bytes(28224))
        self.assertEqual(np.frombuffer(data, np.int64, 1, 28224)[0], 7)

    def test_alignment(self):
        p = self.path(self.obj())
        setx(p, "user.smos.tracks", "a:uint8:1,b:float64:3,c:bool:65,d:complex128:2")
        fd = os.open(os.path.join(p, ".push"), os.O_WRONLY)
        got = xattr(fd, "user.smos.tracks")
        os.close(fd)
        self.assertEqual(got, "a:uint8:1@0,b:float64:3@64,c:bool:65@128,d:complex128:2@256")
        self.assertEqual(xattr(p, "user.smos.block_size"), str(256 + 32))

    def test_every_dtype(self):
        p = self.path(self.obj())
        dtypes = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                  "uint64", "float16", "float32", "float64", "complex64", "complex128"]
        setx(p, "user.smos.tracks", ",".join(f"t{i}:{d}:2x3" for i, d in enumerate(dtypes)))
        k = self.client.push_to_object(os.path.basename(p),
                                       [np.ones((2, 3), d) for d in dtypes])
        with self.client.read_from_object(os.path.basename(p), k) as h:
            for i, d in enumerate(dtypes):
                self.assertEqual(h.value[i].dtype, np.dtype(d))
                self.assertEqual(h.value[f"t{i}"].shape, (2, 3))
                np.testing.assert_array_equal(h.value[i], np.ones((2, 3)))
                self.assertEqual(h.value[i].ctypes.data % 64, h.value[0].ctypes.data % 64)

    def test_malformed_layouts_are_einval(self):
        p = self.path(self.obj())
        for bad in ["obs", "obs:uint8", "obs:uint8:", "obs:uint8:0", "obs:uint8:3x",
                    "obs:uint8:x3", "obs:uint8:-1", "obs:float128:1", "obs:f4:1",
                    "obs:nosuch:1", ":uint8:1", "a:uint8:1,a:uint8:1", "a b:uint8:1",
                    "a:uint8:1,", ",a:uint8:1", "a:uint8:1:2", "a:uint8:99999999999999999999"]:
            with self.subTest(layout=bad):
                self.assertErrno(errno.EINVAL, setx, p, "user.smos.tracks", bad)
        self.assertErrno(errno.ENODATA, os.getxattr, p, "user.smos.tracks")

    def test_after_first_entry_is_ebusy(self):
        p = self.path(self.obj())
        setx(p, "user.smos.tracks", "a:uint8:4")
        with open(os.path.join(p, ".push"), "wb"):
            pass
        self.assertErrno(errno.EBUSY, setx, p, "user.smos.tracks", "b:uint8:4")
        self.assertErrno(errno.EBUSY, setx, p, "user.smos.tracks", "")
        self.assertEqual(xattr(p, "user.smos.tracks"), "a:uint8:4")
        p2 = self.path(self.obj())
        with open(os.path.join(p2, "x"), "wb") as f:
            f.write(b"1")
        self.assertErrno(errno.EBUSY, setx, p2, "user.smos.tracks", "a:uint8:4")
        self.assertErrno(errno.ENODATA, os.getxattr, p2, "user.smos.tracks")
        with open(os.path.join(p2, "x"), "rb") as f:
            self.assertEqual(f.read(), b"1")

    def test_block_size_with_tracks_is_ebusy(self):
        p = self.path(self.obj())
        setx(p, "user.smos.tracks", "a:uint8:4")
        block_size = xattr(p, "user.smos.block_size")
        self.assertErrno(errno.EBUSY, setx, p, "user.smos.block_size", "1024")
        self.assertEqual(xattr(p, "user.smos.block_size"), block_size)
        self.assertEqual(xattr(p, "user.smos.tracks"), "a:uint8:4")

    def test_clear_and_reset_before_first_entry(self):
        p = self.path(self.obj())
        setx(p, "user.smos.tracks", "a:uint8:4")
        setx(p, "user.smos.tracks", "a:uint8:8,b:int32:2")
        self.assertEqual(xattr(p, "user.smos.block_size"), str(64 + 8))
        setx(p, "user.smos.tracks", "")
        self.assertErrno(errno.ENODATA, os.getxattr, p, "user.smos.tracks")
        # The block size the layout implied goes with it.
        self.assertEqual(xattr(p, "user.smos.block_size"),
                         xattr(self.path(self.obj()), "user.smos.block_size"))
        setx(p, "user.smos.block_size", "100")
        with open(os.path.join(p, "x"), "wb") as f:
            f.write(b"free-form")
        self.assertEqual(os.stat(os.path.join(p, "x")).st_size, 9)

    def test_entries_cannot_be_resized(self):
        p = self.path(self.obj())
        setx(p, "user.smos.tracks", "a:uint8:100")
        fd = os.open(os.path.join(p, ".push"), os.O_RDWR)
        self.assertErrno(errno.EINVAL, os.ftruncate, fd, 50)
        self.assertEqual(os.fstat(fd).st_size, 100)
        self.assertErrno(errno.EFBIG, os.ftruncate, fd, 200)  # past block_size
        self.assertEqual(os.fstat(fd).st_size, 100)
        os.ftruncate(fd, 100)  # its own size is fine
        self.assertErrno(errno.EFBIG, os.pwrite, fd, b"x", 100)
        os.close(fd)
        fd = os.open(os.path.join(p, "named"), os.O_CREAT | os.O_WRONLY)
        self.assertEqual(os.fstat(fd).st_size, 100)  # named entries too
        os.close(fd)
        self.assertEqual(os.stat(os.path.join(p, "named")).st_size, 100)

    def test_shell_cp_fills_a_track_layout(self):
        p = self.path(self.obj())
        setx(p, "user.smos.tracks", "a:uint8:8")
        with open(os.path.join(p, "x"), "wb") as f:  # O_TRUNC of a new tracked entry
            f.write(b"abc")
        with open(os.path.join(p, "x"), "rb") as f:
            self.assertEqual(f.read(), b"abc" + bytes(5))
        # A replace too is born at full size, zero-filled (it was left as short as what was
        # written).
        subprocess.run(f"echo z > {os.path.join(p, 'x')}", shell=True, check=True, timeout=10)
        self.assertEqual(os.stat(os.path.join(p, "x")).st_size, 8)
        with open(os.path.join(p, "x"), "rb") as f:
            self.assertEqual(f.read(), b"z\n" + bytes(6))
        subprocess.run(["cp", "/dev/null", os.path.join(p, "x")], check=True, timeout=10)
        with open(os.path.join(p, "x"), "rb") as f:
            self.assertEqual(f.read(), bytes(8))


class ClientTracksTest(MountedTestCase):
    """Entries of a tracked object through the client: one zero-copy view per track."""

    def test_push_read_views(self):
        name = self.obj(tracks=LAYOUT)
        obs = np.random.default_rng(1).integers(0, 255, (84, 84, 4), np.uint8)
        k = self.client.push_to_object(name, (obs, np.array([3]), 0.5))
        with self.client.read_from_object(name, k) as h:
            v = h.value
            self.assertIsInstance(v, smos_client.Tracks)
            self.assertEqual(v.names, ("obs", "action", "reward"))
            np.testing.assert_array_equal(v["obs"], obs)
            self.assertEqual(v["action"].dtype, np.int64)
            self.assertEqual(v["action"].shape, (1,))
            self.assertEqual(int(v[1][0]), 3)
            self.assertEqual(float(v[2][0]), 0.5)
            self.assertFalse(v[0].flags.writeable)
            base = v[0].ctypes.data
            self.assertEqual(v[1].ctypes.data - base, 28224)
            self.assertEqual(v[2].ctypes.data - base, 28288)
            self.assertEqual(sorted(v.asdict()), ["action", "obs", "reward"])
        # No per-entry xattrs were needed: every value had its track's type.
        entry = self.path(name, smos_client.entry_name(k))
        self.assertNotIn("user.dtype", os.listxattr(entry))

    def test_push_dict_missing_tracks_are_zero(self):
        name = self.obj(tracks=LAYOUT)
        k = self.client.push_to_object(name, {"reward": 2.0})
        out = self.client.get(name, [k])
        self.assertEqual(int(out[0].sum()), 0)
        self.assertEqual(float(out[2][0]), 2.0)
        self.assertRaises(KeyError, self.client.push_to_object, name, {"nope": 1})
        self.assertRaises(ValueError, self.client.push_to_object, name, (1, 2))

    def test_create_entry_writable_track_views(self):
        name = self.obj(tracks=LAYOUT)
        for client in (self.client, smos_client.Client(self.mnt, via="mount")):
            h = client.create_entry(name)
            obs, action, reward = h.value
            self.assertTrue(obs.flags.writeable)
            obs[:] = 9
            action[0] = -4
            reward[0] = 1.25
            k = client.commit_entry(h)
            with client.pop_from_object(name) as p:
                self.assertEqual(p.key, k)
                self.assertEqual(int(p.value["obs"].min()), 9)
                self.assertEqual(int(p.value["action"][0]), -4)
                self.assertEqual(float(p.value["reward"][0]), 1.25)

    def test_smos_byte_tracks_hold_any_value(self):
        name = self.obj(max_capacity=8, track_count=3, block_size=[4096, 256, 64],
                        track_name=["arr", "meta", "n"])
        a = np.arange(100, dtype=np.float64).reshape(10, 10)
        k = self.client.push_to_object(name, [a, {"ep": 5}, 17])
        entry = self.path(name, smos_client.entry_name(k))
        self.assertEqual(xattr(entry, "user.dtype"), "<f8;pickle;pickle")
        with self.client.read_from_object(name, k) as h:
            arr, meta, n = h.value
            np.testing.assert_array_equal(arr, a)
            self.assertEqual(arr.shape, (10, 10))
            self.assertEqual(meta, {"ep": 5})
            self.assertEqual(n, 17)
        self.assertRaises(ValueError, self.client.push_to_object, name,
                          [np.zeros(1000), None, None])  # 8000 bytes > 4096

    def test_smos_create_entry_per_track_types(self):
        name = self.obj(track_count=2, block_size=[1024, 128])
        h = self.client.create_entry(name, dtype=[np.float32, None], shape=[(4, 4), None],
                                     is_numpy=[True, False])
        arr, buf = self.client.open_shm(h)
        arr[:] = 2
        blob = __import__("pickle").dumps(("x", 1))
        buf[:len(blob)] = np.frombuffer(blob, np.uint8)
        k = self.client.commit_entry(h)
        arr2, obj = self.client.get(name, [k])
        np.testing.assert_array_equal(arr2, np.full((4, 4), 2, np.float32))
        self.assertEqual(obj, ("x", 1))

    def test_write_entry_on_tracked_object(self):
        name = self.obj(tracks="w:float32:16")
        self.client.write_entry(name, "weights", [np.arange(16, dtype=np.float32)])
        self.client.write_entry(name, "weights", [np.ones(16, dtype=np.float32)])
        with self.client.read_latest_from_object(name) as h:
            np.testing.assert_array_equal(h.value["w"], np.ones(16))
        self.assertEqual(self.client.list_entries(name), ["weights"])
