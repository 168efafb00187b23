"""The backing file of ``writeback``: the kernel's backing block device, as a file of 4 KiB blocks.

Why here, in the image layer: the backing file is part of a device's durable state (its
written-back pages) and the image's commit must order its writes: a page written to the
backing file is fsync'd before the commit whose page table points at it (``sync``), and a
block the last commit still points at is never overwritten (``alloc_block``).  So a crash
anywhere leaves the last commit's written-back pages intact and readable.

Rules (zram-image(5), BACKING FILE):

- the path a user gives is made absolute; it is opened O_RDWR|O_NOFOLLOW|O_CLOEXEC (a
  symbolic link is refused: ELOOP); it must be a regular file (else ENOTBLK, the kernel's
  answer for what is not a block device), of at least one block (else EINVAL), and not a
  device image;
- an exclusive flock(2) is held while the device is open (a reader of the device holds a
  shared one): a file another device or command holds is EBUSY, so one backing file never
  has two owners;
- ``nr_pages`` = size // 4096; block 0 is never used; the lowest free block is handed out;
- which blocks are in use is not stored: it is derived from the page table's written-back
  entries the first time a block is allocated (O(stored), once per open).  A block freed
  since the last commit stays in use until the next commit.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import os
import stat
from collections.abc import Callable, Iterable

from ..errors import ZramError
from ..kernel.profiles import PAGE_SIZE
from .format import MAGIC, MAX_DICT
from .io import CrashPoints


def _fail(code: int, what: str, path: str, words: str | None = None) -> ZramError:
    return ZramError(code, what, f"{path}: {words or os.strerror(code)}")


class FileBackingDev:
    """An open backing file (the BackingDev of an image); see the module docstring."""

    def __init__(
        self, path: str, fd: int, nr_pages: int, crash: CrashPoints, in_use: Callable[[], Iterable[int]]
    ) -> None:
        self._path = path
        self.fd = fd
        self._nr_pages = nr_pages
        self.crash = crash
        self._in_use = in_use
        """The blocks the page table's written-back entries hold now (a whole-table walk)."""
        self.held: set[int] | None = None
        """Blocks not to hand out: held by the state in memory or by the last commit (None: not
        derived yet)."""
        self.freed: set[int] = set()
        """Blocks freed since the last commit: the last commit may still point at them."""
        self._free: list[int] = []
        """Free blocks below ``_cursor`` (a heap)."""
        self._cursor = 1
        """Every block from here up is free unless in ``used``."""
        self.unsynced = False
        """Pages written since the last fsync."""
        self.released = False
        """The device let go of it (reset, or another backing_dev): kept open and locked
        until the image closes, since the last commit may still point into it."""
        self.rederive = False
        """Released since the last commit: the next commit's page table is the whole truth."""

    @property
    def path(self) -> str:
        return self._path

    @property
    def nr_pages(self) -> int:
        return self._nr_pages

    def _derive(self) -> set[int]:
        if self.held is None:
            self.held = set(self._in_use()) | self.freed
        return self.held

    @property
    def used(self) -> int:
        """Blocks not free now: held by a page, or freed since the last commit."""
        return len(self._derive())

    def alloc_block(self) -> int | None:
        used = self._derive()
        while self._free:
            blk = heapq.heappop(self._free)
            if blk not in used:
                used.add(blk)
                return blk
        while self._cursor < self._nr_pages and self._cursor in used:
            self._cursor += 1
        if self._cursor >= self._nr_pages:
            return None
        blk = self._cursor
        self._cursor += 1
        used.add(blk)
        return blk

    def free_block(self, blk: int) -> None:
        """Free at the next commit: until then the last commit may still point at the block."""
        self.freed.add(blk)

    def write_block(self, blk: int, page: bytes) -> None:
        assert 1 <= blk < self._nr_pages and len(page) == PAGE_SIZE
        offset = blk * PAGE_SIZE
        self.crash.point(self.fd, [page], offset)
        if os.pwrite(self.fd, page, offset) != PAGE_SIZE:
            raise OSError(errno.EIO, f"{self._path}: short write")
        self.unsynced = True

    def read_block(self, blk: int) -> bytes:
        """Block ``blk``; past the end of a file someone shortened: zeros (the CRC then fails)."""
        data = os.pread(self.fd, PAGE_SIZE, blk * PAGE_SIZE)
        return data + bytes(PAGE_SIZE - len(data))

    # --- the commit's hooks ------------------------------------------------------

    def sync(self) -> None:
        """Before the commit: the pages it points at are on disk."""
        if self.unsynced:
            self.crash.point()
            try:
                os.fsync(self.fd)
            except OSError as exc:
                raise _fail(exc.errno or errno.EIO, "commit", self._path, exc.strerror) from None
            self.unsynced = False

    def committed(self) -> None:
        """After the commit: the blocks freed before it are free now.  After a reset the page
        table no longer names the blocks it held: derive the set again when next needed."""
        if self.rederive:
            self.held, self._free, self._cursor = None, [], 1
            self.rederive = False
        elif self.held is not None:
            self.held -= self.freed
            for blk in self.freed:
                if blk < self._cursor:
                    heapq.heappush(self._free, blk)
        self.freed.clear()

    def close(self) -> None:
        """What the model calls when it lets go (reset): see ``released``."""
        self.released = self.rederive = True

    def shut(self) -> None:
        """Close the file and its lock: the image is closing."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def open_backing_file(
    path: str, *, writable: bool, crash: CrashPoints, in_use: Callable[[], Iterable[int]]
) -> FileBackingDev:
    """Open and lock a backing file (see the module docstring); ZramError in one line otherwise.

    ``writable``: O_RDWR and an exclusive lock; else O_RDONLY and a shared lock (readers of one
    device share its backing file, as they share its image).
    """
    what = "backing_dev"
    path = os.path.abspath(path)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        code = exc.errno or errno.EIO
        if code == errno.ELOOP:
            raise _fail(code, what, path, "is a symbolic link; refusing to follow it") from None
        raise _fail(code, what, path, exc.strerror) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _fail(errno.ENOTBLK, what, path, "not a regular file")
        nr_pages = st.st_size // PAGE_SIZE
        if nr_pages == 0:
            raise _fail(errno.EINVAL, what, path, "smaller than one 4096-byte block")
        if os.pread(fd, len(MAGIC), 0) == MAGIC:
            raise _fail(errno.EINVAL, what, path, "is a zram device image")
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if writable else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _fail(errno.EBUSY, what, path, "in use by another device or command") from None
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return FileBackingDev(path, fd, nr_pages, crash, in_use)


class DeferredBackingDev:
    """A device's recorded backing file, opened at its first use.

    Opening a device does not open its backing file: a status listing never touches it.  If
    it cannot be opened (missing, locked, replaced by something else), what does not need it
    still works; a read of a written-back page or a writeback fails with EIO, in one line
    naming the file.  Freeing a block needs no file: it is remembered for the next commit.
    """

    def __init__(self, path: str, opener: Callable[[str], FileBackingDev]) -> None:
        self._path = path
        self._opener = opener
        self._dev: FileBackingDev | None = None
        self._error: ZramError | None = None
        self._freed: set[int] = set()

    @property
    def path(self) -> str:
        return self._path

    def dev(self) -> FileBackingDev:
        if self._dev is None:
            if self._error is None:
                try:
                    self._dev = self._opener(self._path)
                    for blk in self._freed:
                        self._dev.free_block(blk)
                except ZramError as exc:
                    self._error = exc
            if self._dev is None:
                assert self._error is not None
                why = self._error.detail or self._error.strerror
                raise ZramError(errno.EIO, "backing_dev", f"backing file unusable: {why}")
        return self._dev

    @property
    def nr_pages(self) -> int:
        return self.dev().nr_pages

    @property
    def used(self) -> int:
        return self.dev().used

    def alloc_block(self) -> int | None:
        return self.dev().alloc_block()

    def free_block(self, blk: int) -> None:
        if self._dev is not None:
            self._dev.free_block(blk)
        else:
            self._freed.add(blk)

    def write_block(self, blk: int, page: bytes) -> None:
        self.dev().write_block(blk, page)

    def read_block(self, blk: int) -> bytes:
        return self.dev().read_block(blk)

    def close(self) -> None:
        if self._dev is not None:
            self._dev.close()


def read_dictionary(path: str) -> bytes:
    """algorithm_params ``dict=PATH``: the whole file, which must be regular, non-empty and at
    most MAX_DICT bytes (ZramError in one line otherwise; the model reports EINVAL, as the
    kernel does for any failure of kernel_read_file_from_path)."""
    what = "algorithm_params"
    path = os.path.abspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise _fail(exc.errno or errno.EIO, what, path, exc.strerror) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _fail(errno.EINVAL, what, path, "not a regular file")
        if st.st_size == 0:
            raise _fail(errno.EINVAL, what, path, "empty")
        if st.st_size > MAX_DICT:
            raise _fail(errno.EFBIG, what, path, f"larger than {MAX_DICT} bytes")
        chunks = []
        total = 0
        while total <= MAX_DICT:
            chunk = os.read(fd, min(1 << 20, MAX_DICT + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_DICT:
            raise _fail(errno.EFBIG, what, path, f"larger than {MAX_DICT} bytes")
        if total == 0:
            raise _fail(errno.EINVAL, what, path, "empty")
        return b"".join(chunks)
    except OSError as exc:
        if isinstance(exc, ZramError):
            raise
        raise _fail(exc.errno or errno.EIO, what, path, exc.strerror) from None
    finally:
        os.close(fd)
