"""smos_client: the SMOS client's operations on a mounted smos store.

One module, standard library plus numpy, nothing to install: put this directory on
``sys.path`` (or ``PYTHONPATH=python``) and ``import smos_client``.

    c = smos_client.Client("/mnt/smos")
    c.create_object("traj", max_capacity=256)
    idx = c.push_to_object("traj", np.zeros((84, 84, 4), np.uint8))
    with c.pop_from_object("traj") as h:        # blocks until something can be popped
        obs = h.value                             # zero-copy, read-only numpy view
        ...                                       # use obs only inside the block

Model. An object is a directory of the mount, an entry a file in it. Every call here is a
plain file operation (mkdir, open, write, mmap, close, unlink, xattrs), so everything this
module writes can be read from C, the shell or any language, and the other way round.

Values.
- A numpy array with a plain dtype is stored raw; its dtype and shape go into the entry's
  ``user.dtype`` (``dtype.str``, e.g. ``<f4``) and ``user.shape`` (e.g. ``84,84,4``, ``''``
  for a 0-d array) xattrs. It is read back as a zero-copy view of the entry's memory.
- Any other Python object is pickled (``user.dtype`` = ``pickle``), as SMOS does; reading
  it unpickles a copy.
- An entry with no ``user.dtype`` (written by ``cp``, say) reads as a ``uint8`` view.
- Entries of an object with typed tracks (``user.smos.tracks``) read as a :class:`Tracks`
  tuple with one view per track, at the offsets of the entry's own ``user.smos.tracks``.
  A track may hold something other than its declared type (a pickled object, or an array of
  another dtype that fits in its bytes); the entry then records, per track, a ``;``-separated
  ``user.dtype`` and ``user.shape``, where an empty field means the declared type.

Entry keys. Entries pushed through ``.push`` are named by their sequence number, zero padded
to 20 digits. Wherever this module takes an entry key, an ``int`` means that name
(``7`` is ``00000000000000000007``) and a ``str`` is used as the name itself.

Handles and lifetimes. Every open entry is a :class:`Handle`: an open descriptor on the
mount (the lease that keeps the entry's bytes in place) plus a mapping of its bytes. The views
in ``handle.value`` are valid until the handle is released: ``release()`` (or
``release_entry``, ``free_handle``, ``commit_entry``, leaving its ``with`` block). After that
a view that is still referenced no longer shows the entry: its pages are replaced by private
zero pages, so it can never show another entry's bytes, but it must not be used. Copy
(``value.copy()``) what must outlive the handle. A ``fork`` (a worker pool started while a
handle is open) gives the child a copy of the descriptor: the entry stays leased, its memory
held, until the child exits or closes it. Start long-lived workers with handles released, or
with the ``spawn`` start method.

Mapping. Entries are mapped through ``user.smos.segment`` (the entry's own shared-memory
file, no FUSE in the data path), falling back to mapping the mounted file when the segment
cannot be opened. ``Client(via="mount")`` always maps the mounted file. Where the kernel
offers FUSE passthrough (Linux 6.9+, smosd's default), a mapping of the mounted file is a
mapping of the segment's own pages, and reads cost the same either way
(examples/zero_copy_bench.py, two runs: a 1 MiB entry just written, 0.42-0.51 ms through the
mount and 0.43 ms through the segment; 64 MiB alike). Without passthrough the mount has a page
cache of its own, which a just-written entry must first fill. Writable views (create_entry)
go through the segment, which is 1.7-2x faster than a shared writable mapping of the mount
(1 MiB: 1.5 ms against 2.6 ms).

Errors are ``OSError``\\ s with the store's errno: ``FileNotFoundError`` (no such object or
entry; a removed object while popping), ``FileExistsError``, ``ENOSPC`` (capacity or memory
full), ``EFBIG`` (larger than the block size), ``PermissionError`` (EPERM). A non-blocking
pop of an empty object returns ``None``.
"""

import ctypes
import errno
import itertools
import mmap
import os
import pickle
import weakref

import numpy as np

__all__ = ["Client", "DecodeError", "Handle", "Tracks", "entry_name", "PUSH", "POP", "LATEST"]

PUSH, POP, LATEST = ".push", ".pop", ".latest"
CONTROL_FILES = frozenset((PUSH, POP, LATEST))
SEQ_NAME_WIDTH = 20

X_CAPACITY = "user.smos.capacity"
X_BLOCK_SIZE = "user.smos.block_size"
X_COMMIT = "user.smos.commit"
X_ENTRIES = "user.smos.entries"
X_TRACKS = "user.smos.tracks"
X_STATE = "user.smos.state"
X_SEQ = "user.smos.seq"
X_SEGMENT = "user.smos.segment"
X_NAME = "user.smos.name"
X_DTYPE = "user.dtype"
X_SHAPE = "user.shape"
PICKLE = "pickle"

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_tmp_counter = itertools.count()


def entry_name(key):
    """The file name of an entry key: an int is a pushed entry's zero-padded seq."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if key < 0:
            raise ValueError(f"negative entry index {key}")
        return f"{int(key):0{SEQ_NAME_WIDTH}d}"
    if isinstance(key, str) and key and "/" not in key and key not in (".", ".."):
        return key
    raise ValueError(f"bad entry key {key!r}")


def _key_of(name):
    """The key of an entry name: its seq for a pushed entry's name (SEQ_NAME_WIDTH digits),
    else the name itself ("0", "7" and "frame" are names)."""
    if len(name) == SEQ_NAME_WIDTH and name.isascii() and name.isdigit():
        return int(name)
    return name


def _getx(path_or_fd, attr):
    """An xattr as text, or None if it is not set."""
    try:
        return os.getxattr(path_or_fd, attr).decode()
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


def _setx(path_or_fd, attr, value):
    os.setxattr(path_or_fd, attr, str(value).encode())


def _shape_text(shape):
    return ",".join(str(int(d)) for d in shape)


def _parse_shape(text):
    return tuple(int(d) for d in text.split(",")) if text else ()


def _plain_dtype(dtype):
    """Whether arrays of this dtype can be stored raw and described by dtype.str alone."""
    return dtype.fields is None and not dtype.hasobject and dtype.subdtype is None


def _as_bytes(array):
    """A C-contiguous byte view of an array (a copy only if it is not contiguous)."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


class DecodeError(ValueError):
    """An entry's bytes could not be turned back into its value (a pickle of a class this
    process lacks, say). ``data`` holds the bytes: a popped entry exists nowhere else."""

    def __init__(self, message, data):
        super().__init__(message)
        self.data = data


class _Track:
    __slots__ = ("name", "dtype", "shape", "offset", "count", "nbytes")

    def __init__(self, name, dtype, shape, offset):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.offset = offset
        self.count = int(np.prod(shape, dtype=np.int64))
        self.nbytes = self.count * self.dtype.itemsize


TRACK_ALIGN = 64


def _parse_layout(text):
    """Parses a layout: an entry's ``name:dtype:DIMS@offset,...``, or an object's, without
    offsets, which are then computed as the daemon does (64-byte aligned, end to end)."""
    tracks, end = [], 0
    for spec in text.split(","):
        spec, at, offset = spec.partition("@")
        name, dtype, dims = spec.split(":")
        shape = tuple(int(d) for d in dims.split("x"))
        offset = int(offset) if at else (end + TRACK_ALIGN - 1) // TRACK_ALIGN * TRACK_ALIGN
        track = _Track(name, dtype, shape, offset)
        end = offset + track.nbytes
        tracks.append(track)
    return tracks


def layout_text(tracks):
    """The ``user.smos.tracks`` text of a layout given as text, a dict name -> (dtype, shape),
    or a sequence of (name, dtype, shape)."""
    if isinstance(tracks, str):
        return tracks
    items = tracks.items() if isinstance(tracks, dict) else tracks
    specs = []
    for item in items:
        if isinstance(tracks, dict):
            name, (dtype, shape) = item
        else:
            name, dtype, shape = item
        dt = np.dtype(dtype)
        if dt.byteorder == ">" or not _plain_dtype(dt):
            raise ValueError(f"track {name}: dtype {dt} cannot be a track type")
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        dims = "x".join(str(int(d)) for d in shape) if shape else "1"
        specs.append(f"{name}:{dt.name}:{dims}")
    return ",".join(specs)


class Tracks(tuple):
    """The tracks of one entry, in layout order; also indexable by track name."""

    def __new__(cls, names, values):
        self = super().__new__(cls, values)
        self.names = tuple(names)
        return self

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def asdict(self):
        return dict(zip(self.names, self))


# libc mmap, to replace a released mapping that numpy views still reference.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.msync.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_MAP_FIXED = 0x10  # Linux, every architecture
_MAP_FAILED = ctypes.c_void_p(-1).value
_MS_SYNC = 4
_PAGE = mmap.PAGESIZE


def _libc_mmap(address, length, prot, flags, fd):
    res = _libc.mmap(address, length, prot, flags, fd, 0)
    if res is None or res == _MAP_FAILED:
        e = ctypes.get_errno()
        raise OSError(e, f"mmap: {os.strerror(e)}")
    return res


class _Mapping:
    """One mmap of an entry's bytes, which can be retired while numpy views still use it.

    Made with libc's mmap, not the mmap module: an mmap object keeps a duplicate of the
    descriptor for as long as any view of it lives, which would hold the entry's lease (through
    the mount) or its freed slot file (through the segment) after the handle's release.
    """

    def __init__(self, fd, size, writable):
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.size = size
        self.length = (size + _PAGE - 1) // _PAGE * _PAGE
        self.address = _libc_mmap(None, size, prot, mmap.MAP_SHARED, fd)
        pages = (ctypes.c_char * size).from_address(self.address)
        # Unmapped once nothing uses the pages: neither this mapping nor a view. Not at exit,
        # where atexit handlers and daemon threads may still read a view.
        weakref.finalize(pages, _libc.munmap, self.address, self.length).atexit = False
        view = memoryview(pages).cast("B")
        self.map = view if writable else view.toreadonly()

    def flush(self):
        if _libc.msync(self.address, self.length, _MS_SYNC) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"msync: {os.strerror(e)}")

    def retire(self):
        """Swaps the mapping's pages for private zero pages, so that views that still use it
        no longer touch the entry (or the slot's next entry), and the file is let go now."""
        if self.map is None:
            return
        # While self.map lives, so do the pages: nothing else can be mapped at the address.
        _libc_mmap(self.address, self.length, mmap.PROT_READ | mmap.PROT_WRITE,
                   _MAP_FIXED | mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1)
        self.map = None


class Handle:
    """An open entry: a descriptor on the mount (the lease) and views of its bytes.

    ``value`` is the entry's data (see the module docstring). Release the handle exactly once,
    by ``release()`` or by leaving a ``with`` block; releasing twice is harmless. A handle from
    ``create_entry`` is writable: ``commit()`` publishes it, ``abort()`` discards it, and a
    ``with`` block commits on normal exit and aborts on an exception.
    """

    def __init__(self, client, obj, fd, path, writable=False, name=None):
        self.client = client
        self.object = obj
        self.fd = fd
        self.path = path
        self.writable = writable
        self.value = None
        self.committed_key = None
        self._name = name
        self._mapping = None
        self._state = "open"

    # --- identity -------------------------------------------------------------------------
    @property
    def name(self):
        """The entry's file name (a pushed or popped entry's seq, zero padded)."""
        if self._name is None:
            if self.fd < 0:
                raise ValueError(f"the handle is {self._state}: read its name before that")
            self._name = _getx(self.fd, X_NAME)
        return self._name

    @property
    def key(self):
        """The entry's key: an int for pushed entries, else its name."""
        name = self.name
        return None if name is None else _key_of(name)

    idx = key  # SMOS's name for it

    @property
    def seq(self):
        return int(_getx(self.fd, X_SEQ))

    @property
    def state(self):
        return _getx(self.fd, X_STATE)

    def fileno(self):
        return self.fd

    @property
    def released(self):
        return self._state != "open"

    # --- lifecycle ------------------------------------------------------------------------
    def commit(self):
        """Publishes a writable entry (it becomes idle and immutable) and releases the handle.
        Returns its key."""
        if not self.writable:
            raise ValueError("commit of a read handle")
        if self._state != "open":
            raise ValueError(f"commit of a {self._state} handle")
        if self._mapping is not None:
            self._mapping.flush()  # only a mount mapping holds dirty pages of its own
        name = self.name  # a pushed entry's name, before the descriptor goes
        _setx(self.fd, X_STATE, "idle")
        self.committed_key = _key_of(name) if name is not None else None
        self._close("committed")
        return self.committed_key

    def abort(self):
        """Discards a writable entry that was not committed, and releases the handle."""
        if self._state != "open":
            return
        if self.writable:
            self._retire_views()
            try:
                # The writer's unlink discards a write-state entry.
                os.unlink(os.path.join(self.client.object_path(self.object), self.name))
            except (OSError, TypeError):
                pass
        self._close("aborted")

    def release(self):
        """Gives the entry back: its views end here. A writable handle that was not committed
        is aborted."""
        if self._state != "open":
            return
        if self.writable:
            self.abort()
        else:
            self._close("released")

    def _retire_views(self):
        self.value = None
        if self._mapping is not None:
            self._mapping.retire()
            self._mapping = None

    def _close(self, state):
        self._retire_views()
        self._state = state
        fd, self.fd = self.fd, -1
        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.writable and self._state == "open":
            if exc_type is None:
                self.commit()
            else:
                self.abort()
        else:
            self.release()
        return False

    def __del__(self):
        # A forgotten handle still gives its lease back when it is collected.
        if getattr(self, "_state", None) == "open" and self.fd >= 0:
            try:
                self.release()
            except Exception:
                pass

    def __repr__(self):
        return f"<smos Handle {self.object}/{self._name or '?'} {self._state}>"


class Client:
    """The SMOS client's operations on the smos store mounted at ``mount``.

    ``via`` chooses how entry bytes are mapped: ``"segment"`` (the default, the entry's
    ``user.smos.segment`` file, falling back to the mount) or ``"mount"``. A client holds no
    state besides these two settings; any number of clients and processes may share a store.
    """

    def __init__(self, mount="/mnt/smos", via="segment"):
        if via not in ("segment", "mount"):
            raise ValueError("via must be 'segment' or 'mount'")
        self.mount = os.fspath(mount)
        self.via = via
        if not os.path.isdir(self.mount):
            raise FileNotFoundError(errno.ENOENT, "no smos mount", self.mount)

    # --- paths ----------------------------------------------------------------------------
    def object_path(self, name):
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"bad object name {name!r}")
        return os.path.join(self.mount, name)

    def entry_path(self, name, key):
        return os.path.join(self.object_path(name), entry_name(key))

    # --- objects --------------------------------------------------------------------------
    def create_object(self, name, max_capacity=None, track_count=None, block_size=None,
                      track_name=None, *, tracks=None, commit=None):
        """Creates an object (``mkdir``) and sets its capacity, block size, commit mode and
        layout.

        ``tracks`` is a typed layout (text such as ``obs:uint8:84x84x4,reward:float32:1``, a
        dict name -> (dtype, shape), or a list of (name, dtype, shape)). Without it,
        SMOS-style arguments with more than one track (``track_count`` > 1, or lists of
        ``block_size``/``track_name``) make one ``uint8`` track of ``block_size[i]`` bytes per
        track, holding any array or pickled object that fits. A single track is a plain
        object whose entries may be up to ``block_size`` bytes.
        """
        sizes = block_size if isinstance(block_size, (list, tuple)) else None
        names = track_name if isinstance(track_name, (list, tuple)) else None
        count = track_count or (len(sizes) if sizes else len(names) if names else 1)
        if tracks is None and count > 1:
            sizes = sizes or [block_size] * count
            names = names or [f"track{i}" for i in range(count)]
            if len(sizes) != count or len(names) != count or None in sizes:
                raise ValueError("track_count, block_size and track_name disagree")
            tracks = [(n, np.uint8, (int(s),)) for n, s in zip(names, sizes)]
        elif sizes:
            block_size = sizes[0]
        path = self.object_path(name)
        os.mkdir(path)
        try:
            if max_capacity is not None:
                _setx(path, X_CAPACITY, int(max_capacity))
            if commit is not None:
                _setx(path, X_COMMIT, commit)
            if tracks is not None:
                _setx(path, X_TRACKS, layout_text(tracks))
            elif block_size is not None:
                _setx(path, X_BLOCK_SIZE, int(block_size))
        except BaseException:
            os.rmdir(path)
            raise

    def remove_object(self, name):
        """Removes an object and all its entries (``rm -r``). Readers keep what they hold;
        blocked poppers get ``ENOENT``."""
        path = self.object_path(name)
        for _ in range(100):
            for entry in self.list_entries(name):
                try:
                    os.unlink(os.path.join(path, entry))
                except FileNotFoundError:
                    pass
            try:
                os.rmdir(path)
                return
            except OSError as e:
                if e.errno != errno.ENOTEMPTY:  # entries still being written, or new ones
                    raise
        os.rmdir(path)

    def list_objects(self):
        return sorted(os.listdir(self.mount))

    def list_entries(self, name):
        """The names of an object's committed entries, sorted (FIFO order for pushed ones).
        Dot-names (the control files, write_entry's temporaries) are left out, as ``ls`` does."""
        return sorted(e for e in os.listdir(self.object_path(name)) if not e.startswith("."))

    def get_entry_count(self, name):
        """The number of committed entries (``user.smos.entries``)."""
        return int(_getx(self.object_path(name), X_ENTRIES))

    def get_track_count(self, name):
        layout = _getx(self.object_path(name), X_TRACKS)
        return len(layout.split(",")) if layout else 1

    # --- whole objects --------------------------------------------------------------------
    def put(self, name, data, as_list=False, redundancy=0):
        """Creates object ``name`` and stores ``data`` in it, as SMOS does: one entry, or with
        ``as_list`` one entry per element of the list ``data``. An entry that is itself a list
        is stored as tracks, one per element. The object's capacity is the number of entries
        plus ``redundancy``; its block size (per track) the largest value. Returns the keys.
        """
        entries = list(data) if as_list and isinstance(data, list) else [data]
        if not entries:
            raise ValueError("put of an empty list: there is no entry to store")
        multi = [isinstance(e, list) for e in entries]
        if any(multi) and not all(multi) or len({len(e) for e in entries if isinstance(e, list)}) > 1:
            raise ValueError("entries have different numbers of tracks")
        encoded = [[_encode(v) for v in e] if multi[0] else _encode(e) for e in entries]
        # A track's bytes: the largest of its values, raw or pickled.
        if multi[0]:
            count = len(entries[0])
            sizes = [max(max(len(enc[i][0]) for enc in encoded), 1) for i in range(count)]
            # Byte tracks, even for one: a list entry reads back as a list.
            self.create_object(name, max_capacity=len(entries) + redundancy,
                               tracks=[(f"track{i}", np.uint8, (s,)) for i, s in enumerate(sizes)])
        else:
            size = max(max(len(enc[0]) for enc in encoded), 1)
            self.create_object(name, max_capacity=len(entries) + redundancy, block_size=size)
        try:
            if multi[0]:
                return [self.push_to_object(name, e) for e in entries]
            return [self._push_encoded(name, enc) for enc in encoded]
        except BaseException:
            self.remove_object(name)
            raise

    def get(self, name, entry_idx_list=None):
        """Copies of entries read back (all of them, in key order, by default). A single
        entry is returned as itself, several as a list, as in SMOS; multi-track entries are
        lists of tracks."""
        keys = entry_idx_list
        if keys is None:
            keys = [_key_of(e) for e in self.list_entries(name)]
        values = []
        for key in keys:
            try:
                handle = self.read_from_object(name, key)
            except FileNotFoundError:
                values.append(None)
                continue
            with handle:
                values.append(_copy_value(handle.value))
        return values[0] if len(values) == 1 else values

    # --- fine-grained, zero copy ----------------------------------------------------------
    def create_entry(self, name, dtype=None, shape=None, is_numpy=True, *, entry=None,
                     nbytes=None):
        """Creates an entry in ``write`` state and returns a writable handle whose ``value``
        is a zero-copy numpy view of the entry's memory: fill it, then ``commit_entry``.

        Plain objects: ``dtype`` and ``shape`` give an array; ``is_numpy=False`` with
        ``nbytes`` gives a byte buffer for a pickle stream; ``nbytes`` alone raw bytes.
        Objects with tracks: ``value`` is a :class:`Tracks` of writable views, typed by the
        layout unless ``dtype``/``shape``/``is_numpy`` give per-track lists (SMOS byte
        tracks), ``None`` for a declared type.
        ``entry`` names the entry; by default it is pushed (``.push``) and named by its seq.
        """
        if entry is None:
            path = os.path.join(self.object_path(name), PUSH)
            fd = os.open(path, os.O_RDWR | _O_CLOEXEC)
        else:
            path = self.entry_path(name, entry)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
        handle = Handle(self, name, fd, path, writable=True,
                        name=entry_name(entry) if entry is not None else None)
        try:
            layout = _getx(fd, X_TRACKS)
            if layout is not None:
                self._create_tracked(handle, _parse_layout(layout), dtype, shape, is_numpy)
            else:
                self._create_plain(handle, dtype, shape, is_numpy, nbytes)
        except BaseException:
            handle.abort()
            raise
        return handle

    def _create_plain(self, handle, dtype, shape, is_numpy, nbytes):
        fd = handle.fd
        if is_numpy and dtype is not None:
            dt = np.dtype(dtype)
            if not _plain_dtype(dt):
                raise ValueError(f"dtype {dt} cannot be stored raw")
            shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape or ())
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            _setx(fd, X_DTYPE, dt.str)
            _setx(fd, X_SHAPE, _shape_text(shape))
        elif nbytes is None:
            raise ValueError("create_entry needs dtype and shape, or nbytes")
        else:
            dt, shape = np.dtype(np.uint8), (int(nbytes),)
            if not is_numpy:
                _setx(fd, X_DTYPE, PICKLE)
        os.ftruncate(fd, nbytes)
        if nbytes == 0:
            handle.value = np.zeros(shape, dt)
            return
        handle._mapping = self._map(fd, nbytes, writable=True)
        handle.value = np.frombuffer(handle._mapping.map, dt, count=int(np.prod(shape))).reshape(shape)

    def _create_tracked(self, handle, tracks, dtype, shape, is_numpy):
        n = len(tracks)
        per = lambda v: list(v) if isinstance(v, (list, tuple)) and len(v) == n else [None] * n
        dtypes, shapes = per(dtype), per(shape)
        numpy_flags = is_numpy if isinstance(is_numpy, (list, tuple)) else [True] * n
        size = os.fstat(handle.fd).st_size
        handle._mapping = self._map(handle.fd, size, writable=True)
        buf = handle._mapping.map
        views, dt_fields, shape_fields = [], [], []
        for t, dt, sh, isnp in zip(tracks, dtypes, shapes, numpy_flags):
            if not isnp:
                views.append(np.frombuffer(buf, np.uint8, t.nbytes, t.offset))
                dt_fields.append(PICKLE)
                shape_fields.append(str(t.nbytes))
            elif dt is not None:
                dt = np.dtype(dt)
                sh = (sh,) if isinstance(sh, (int, np.integer)) else tuple(sh or ())
                count = int(np.prod(sh, dtype=np.int64))
                if not _plain_dtype(dt) or count * dt.itemsize > t.nbytes:
                    raise ValueError(f"track {t.name}: {dt}{sh} does not fit {t.nbytes} bytes")
                views.append(np.frombuffer(buf, dt, count, t.offset).reshape(sh))
                dt_fields.append(dt.str)
                shape_fields.append(_shape_text(sh))
            else:
                views.append(np.frombuffer(buf, t.dtype, t.count, t.offset).reshape(t.shape))
                dt_fields.append("")
                shape_fields.append("")
        if any(dt_fields):
            _setx(handle.fd, X_DTYPE, ";".join(dt_fields))
            _setx(handle.fd, X_SHAPE, ";".join(shape_fields))
        handle.value = Tracks([t.name for t in tracks], views)

    def open_shm(self, handle):
        """SMOS compatibility: the handle's views (they are mapped when it is opened)."""
        return handle.value

    def commit_entry(self, handle):
        """Commits a writable entry: it becomes visible and immutable. Returns its key."""
        return handle.commit()

    def open_entry(self, name, entry_idx):
        """Opens a committed entry for reading (it is ``busy`` until released)."""
        return self.read_from_object(name, entry_idx)

    def release_entry(self, handle):
        """Releases a handle; its views end here."""
        handle.release()

    def batch_release_entry(self, handles):
        for handle in handles:
            handle.release()

    free_handle = release_entry

    def delete_entry(self, name, entry_idx, force_delete=False):
        """Removes an entry's name (``unlink``). Its readers keep their views until they
        release them, so ``force_delete`` is never needed and only kept for SMOS."""
        os.unlink(self.entry_path(name, entry_idx))

    # --- queue style ----------------------------------------------------------------------
    def push_to_object(self, name, data):
        """Pushes ``data`` as a new entry (``.push``) and returns its key, an int. On an
        object with tracks, ``data`` is a sequence or dict of per-track values."""
        def write(fd):
            layout = _getx(fd, X_TRACKS)
            if layout is not None:
                _write_tracked(fd, _parse_layout(layout), data)
            else:
                _write_encoded(fd, _encode(data))
        return self._push(name, write)

    def _push_encoded(self, name, encoded):
        return self._push(name, lambda fd: _write_encoded(fd, encoded))

    def _push(self, name, write):
        """Opens ``.push``, lets ``write(fd)`` fill the new entry, commits it, returns its key."""
        fd = os.open(os.path.join(self.object_path(name), PUSH), os.O_WRONLY | _O_CLOEXEC)
        try:
            entry = _getx(fd, X_NAME)
            try:
                write(fd)
                _setx(fd, X_STATE, "idle")
            except BaseException:
                # Its writer's unlink discards an entry still being written; a close would
                # commit it, half written.
                _unlink_quietly(os.path.join(self.object_path(name), entry))
                raise
            return _key_of(entry)
        finally:
            os.close(fd)

    def write_entry(self, name, entry, data):
        """Creates entry ``entry``, or atomically replaces it if it exists: readers of the
        name see the old version or the new one, never a mix. Returns the new version's seq.

        The value is written to a hidden temporary entry (``.tmp.*``), committed, and renamed
        onto the name. (``open(O_TRUNC)`` of the name, what ``cp`` does, replaces atomically
        too, but xattrs set through that descriptor would reach the old version, and the
        value's dtype and shape are xattrs.) Between its commit and the rename the temporary
        is an ordinary entry: ``.latest`` may open it (it holds the new value) and ``.pop``
        may take it, so do not pop from an object whose entries you replace. A writer that
        dies in that window leaves the temporary behind.
        """
        path = self.entry_path(name, entry)
        tmp_path = os.path.join(self.object_path(name),
                                f".tmp.{os.getpid()}.{next(_tmp_counter)}.{entry_name(entry)}")
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
        try:
            try:
                layout = _getx(fd, X_TRACKS)
                if layout is not None:
                    _write_tracked(fd, _parse_layout(layout), data)
                else:
                    _write_encoded(fd, _encode(data))
                _setx(fd, X_STATE, "idle")
                seq = int(_getx(fd, X_SEQ))
            except BaseException:
                _unlink_quietly(tmp_path)  # before the close, which would commit it
                raise
        finally:
            os.close(fd)
        try:
            os.rename(tmp_path, path)
        except BaseException:
            _unlink_quietly(tmp_path)
            raise
        return seq

    def pop_from_object(self, name, force_pop=False, block=True):
        """Claims the oldest committed entry that has no readers (``.pop``) and returns its
        handle; the entry is gone from the object and freed when the handle is released
        (``free_handle``). Blocks until there is one, unless ``block=False``: then returns
        ``None`` at once. ``force_pop`` is kept for SMOS and ignored: a busy entry is never
        popped. Raises ``FileNotFoundError`` if the object is (or gets) removed."""
        flags = os.O_RDONLY | _O_CLOEXEC | (0 if block else os.O_NONBLOCK)
        path = os.path.join(self.object_path(name), POP)
        try:
            fd = os.open(path, flags)
        except BlockingIOError:
            return None
        return self._open_handle(name, fd, path)

    def read_from_object(self, name, entry_idx):
        """Opens entry ``entry_idx`` (an int seq or a name) for reading."""
        path = self.entry_path(name, entry_idx)
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        return self._open_handle(name, fd, path, entry_name(entry_idx))

    def read_latest_from_object(self, name):
        """Opens the committed entry with the highest seq (``.latest``) for reading."""
        path = os.path.join(self.object_path(name), LATEST)
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        return self._open_handle(name, fd, path)

    def batch_read_from_object(self, name, entry_idx_batch):
        """Opens several entries; all of them, or none (the error is raised)."""
        handles = []
        try:
            for key in entry_idx_batch:
                handles.append(self.read_from_object(name, key))
        except BaseException:
            self.batch_release_entry(handles)
            raise
        return handles

    # --- mapping --------------------------------------------------------------------------
    def _map(self, fd, size, writable):
        if self.via == "segment":
            try:
                segment = os.getxattr(fd, X_SEGMENT)
                sfd = os.open(segment, (os.O_RDWR if writable else os.O_RDONLY) | _O_CLOEXEC)
            except OSError:
                sfd = None
            if sfd is not None:
                try:
                    return _Mapping(sfd, size, writable)
                finally:
                    os.close(sfd)
        return _Mapping(fd, size, writable)

    def _size(self, fd):
        """An open entry's length: every inode of the mount is one version, so fstat is exact."""
        return os.fstat(fd).st_size

    def _open_handle(self, name, fd, path, entry=None):
        handle = Handle(self, name, fd, path, name=entry)
        try:
            size = self._size(fd)
            layout = _getx(fd, X_TRACKS)
            dtype = _getx(fd, X_DTYPE)
            shape = _getx(fd, X_SHAPE) if dtype is not None and dtype != PICKLE else None
            if size == 0:
                handle.value = _decode_plain(dtype, shape, b"") if layout is None else None
                return handle
            mapping = self._map(fd, size, writable=False)
            buf = mapping.map
            if layout is not None:
                handle._mapping = mapping
                handle.value = _tracked_views(buf, _parse_layout(layout), dtype, shape)
            elif dtype == PICKLE:
                try:
                    handle.value = pickle.loads(buf)
                except Exception as e:
                    # A popped entry is gone from its object: its bytes go with the error.
                    raise DecodeError(f"{path}: cannot unpickle the entry: {e!r}",
                                      bytes(buf)) from e
                finally:
                    del buf
                    mapping.retire()  # nothing refers to the bytes any more
            else:
                handle._mapping = mapping
                handle.value = _decode_plain(dtype, shape, buf)
        except BaseException:
            handle.release()
            raise
        return handle


# --- encoding ---------------------------------------------------------------------------------
def _encode(value):
    """(bytes-like, dtype text or None, shape text or None) of a plain entry's value."""
    if isinstance(value, np.ndarray) and _plain_dtype(value.dtype):
        return _as_bytes(value), value.dtype.str, _shape_text(value.shape)
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), PICKLE, None


def _decode_plain(dtype, shape, buf):
    if dtype == PICKLE:
        return pickle.loads(buf)
    if dtype is None:
        return np.frombuffer(buf, np.uint8)
    dt, sh = np.dtype(dtype), _parse_shape(shape or "")
    count = int(np.prod(sh, dtype=np.int64))
    return np.frombuffer(buf, dt, count).reshape(sh)


def _write_all(fd, data, offset=0):
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _write_encoded(fd, encoded):
    data, dtype, shape = encoded
    if dtype is not None:
        _setx(fd, X_DTYPE, dtype)
    if shape is not None:
        _setx(fd, X_SHAPE, shape)
    _write_all(fd, data)


def _encode_track(track, value):
    """(bytes-like, dtype field, shape field) of one track's value; empty fields mean the
    track's declared type. An array of the track's shape (or a scalar, for a one-element
    track) is cast to the track's dtype; another plain array is stored raw if it fits, with
    its own dtype and shape; anything else is pickled, if it fits."""
    if isinstance(value, (np.ndarray, np.generic, bool, int, float, complex)):
        array = np.asarray(value)
        if _plain_dtype(array.dtype):
            fits_shape = array.shape == track.shape or (array.size == track.count == 1)
            if fits_shape and np.can_cast(array.dtype, track.dtype, "same_kind"):
                return _as_bytes(array.astype(track.dtype, copy=False)), "", ""
            if isinstance(value, np.ndarray) and array.nbytes <= track.nbytes:
                return _as_bytes(array), array.dtype.str, _shape_text(array.shape)
            if isinstance(value, np.ndarray):
                raise ValueError(f"track {track.name}: {array.dtype}{array.shape} does not "
                                 f"fit {track.dtype}{track.shape}")
    blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if len(blob) > track.nbytes:
        raise ValueError(f"track {track.name}: pickled value of {len(blob)} bytes does not "
                         f"fit {track.nbytes}")
    return blob, PICKLE, str(len(blob))


def _encode_tracked(tracks, data):
    """(block, dtype fields, shape fields) of an entry of a tracked object. ``data`` is a
    sequence in layout order, or a dict by track name (missing tracks stay zero)."""
    if isinstance(data, dict):
        unknown = set(data) - {t.name for t in tracks}
        if unknown:
            raise KeyError(f"no such tracks: {sorted(unknown)}")
        values = [data.get(t.name) for t in tracks]
        present = [t.name in data for t in tracks]
    else:
        values = list(data) if isinstance(data, (list, tuple)) else [data]
        if len(values) != len(tracks):
            raise ValueError(f"{len(tracks)} tracks, {len(values)} values")
        present = [True] * len(tracks)
    block = np.zeros(tracks[-1].offset + tracks[-1].nbytes, np.uint8)
    dt_fields, shape_fields = [], []
    for t, v, p in zip(tracks, values, present):
        dt = sh = ""
        if p:
            data_bytes, dt, sh = _encode_track(t, v)
            block[t.offset:t.offset + len(data_bytes)] = np.frombuffer(data_bytes, np.uint8)
        dt_fields.append(dt)
        shape_fields.append(sh)
    return block, dt_fields, shape_fields


def _write_tracked(fd, tracks, data):
    block, dt_fields, shape_fields = _encode_tracked(tracks, data)
    if any(dt_fields):
        _setx(fd, X_DTYPE, ";".join(dt_fields))
        _setx(fd, X_SHAPE, ";".join(shape_fields))
    _write_all(fd, block)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _tracked_views(buf, tracks, dtype, shape):
    n = len(tracks)
    dts = dtype.split(";") if dtype else [""] * n
    shs = shape.split(";") if shape else [""] * n
    views = []
    for t, dt, sh in zip(tracks, dts, shs):
        if dt == PICKLE:
            views.append(pickle.loads(buf[t.offset:t.offset + int(sh)]))
        elif dt:
            views.append(_decode_plain(dt, sh, memoryview(buf)[t.offset:t.offset + t.nbytes]))
        else:
            views.append(np.frombuffer(buf, t.dtype, t.count, t.offset).reshape(t.shape))
    return Tracks([t.name for t in tracks], views)


def _copy_value(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, Tracks):
        return [_copy_value(v) for v in value]
    return value
