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
  shared one): a file another command holds is EBUSY;
- a device keeps its backing file between commands (as the kernel's zram holds its bdev for
  as long as the device exists), and the flock ends with the command: so the file's block 0,
  which never holds a page, holds a CLAIM naming the owning image (its random image_id, and
  its path for messages).  It is read and written only under the exclusive flock.  All zero:
  free (a writer takes it: claim written and fsync'd before the commit that records the
  file).  Another image's claim, a damaged claim or anything else: not ours, never
  overwritten (EBUSY, in words with the fix).  The claim is cleared only after the commit
  that no longer names the file (a reset): a crash leaves at worst a stale claim, which the
  message's ``dd`` clears, never a file two devices write to;
- ``nr_pages`` = size // 4096; block 0 is never used for pages; the lowest free block is
  handed out;
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
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..crc import crc32
from ..errors import ZramError
from ..kernel.profiles import PAGE_SIZE
from .format import MAGIC, MAX_DICT
from .io import CrashPoints


def _fail(code: int, what: str, path: str, words: str | None = None) -> ZramError:
    return ZramError(code, what, f"{path}: {words or os.strerror(code)}")


# --- the claim: who owns a backing file, in its block 0 --------------------------------

CLAIM_MAGIC = b"ZRAMBACK"
CLAIM_VERSION = 1
CLAIM_SIZE = 512
"""The record lies in the file's first 512-byte sector, which a disk writes whole: a crash
while it is written or cleared leaves the old record or the new one."""
CLAIM_HEAD = struct.Struct("<8sII16s")
"""magic, version, path length, owner image_id; then the path, zeros, and at CLAIM_SIZE - 4
the CRC-32 of every byte before it.  The rest of block 0 is zero."""
CLAIM_PATH_MAX = CLAIM_SIZE - CLAIM_HEAD.size - 4
"""Bytes of the owner's path kept (for messages only; a longer one is cut)."""


@dataclass(frozen=True)
class Owner:
    """Who claims a backing file: an image's image_id, and its path when it claimed (for messages)."""

    image_id: bytes
    path: str


def encode_claim(owner: Owner) -> bytes:
    """The CLAIM_SIZE bytes of ``owner``'s claim."""
    path = os.fsencode(owner.path)[:CLAIM_PATH_MAX]
    body = CLAIM_HEAD.pack(CLAIM_MAGIC, CLAIM_VERSION, len(path), owner.image_id) + path
    body += bytes(CLAIM_SIZE - 4 - len(body))
    return body + crc32(body).to_bytes(4, "little")


def decode_claim(block: bytes) -> Owner | str | None:
    """Block 0 of a backing file: None if all zero (free), the Owner of a sound claim, or words
    saying what else it holds (a damaged claim is never trusted)."""
    if not any(block):
        return None
    if block[: len(CLAIM_MAGIC)] != CLAIM_MAGIC:
        return "block 0 holds other data, not a zram writeback claim; it is not taken over"
    rec = block[:CLAIM_SIZE]
    magic, version, length, image_id = CLAIM_HEAD.unpack_from(rec)
    sound = (
        len(rec) == CLAIM_SIZE
        and crc32(rec[:-4]) == int.from_bytes(rec[-4:], "little")
        and version == CLAIM_VERSION
        and length <= CLAIM_PATH_MAX
        and not any(rec[CLAIM_HEAD.size + length : -4])
        and not any(block[CLAIM_SIZE:])
        and any(image_id)
    )
    if not sound:
        return "block 0 holds a damaged zram writeback claim, which is not trusted"
    path = os.fsdecode(rec[CLAIM_HEAD.size : CLAIM_HEAD.size + length])
    return Owner(image_id, path)


def clear_claim_hint(path: str) -> str:
    """The command that clears a claim by hand (zram-image(5), BACKING FILE)."""
    return f"dd if=/dev/zero of={path} bs=4096 count=1 conv=notrunc"


class FileBackingDev:
    """An open backing file (the BackingDev of an image); see the module docstring."""

    def __init__(
        self,
        path: str,
        fd: int,
        nr_pages: int,
        crash: CrashPoints,
        in_use: Callable[[], Iterable[int]],
        owner: Owner | None = None,
        writable: bool = True,
    ) -> None:
        self._path = path
        self.fd = fd
        self.owner = owner
        """The image opening it, whose claim it must hold to allocate (None: no claims kept)."""
        self.writable = writable
        self.claimed = False
        """Block 0 held our claim when last looked at, under our lock (so it still does)."""
        self.refused: str | None = None
        """Why block 0 is not ours (writeback fails EBUSY with these words); None: it is."""
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

    # --- the claim -------------------------------------------------------------------

    def claim(self, *, strict: bool) -> None:
        """Make block 0 name our owner: taken if free (written and fsync'd), kept if ours.

        Not ours: ``strict`` (the backing_dev store) raises EBUSY in words with the fix; else
        (a device reopening its recorded file) ``refused`` says why, so writeback fails and
        reads of written-back pages still work.  A reader only looks.
        """
        if self.owner is None:
            return
        found = decode_claim(self.read_block(0))
        if found is None and self.writable:
            self.crash.point()
            self._write0(encode_claim(self.owner))
            found = self.owner
        if isinstance(found, Owner) and found.image_id == self.owner.image_id:
            self.claimed, self.refused = True, None
            return
        self.claimed = False
        hint = clear_claim_hint(self._path)
        if found is None:  # a reader: nothing to take, nothing to allocate
            self.refused = f"{self._path}: holds no claim of this device's"
        elif isinstance(found, Owner):
            self.refused = (
                f"{self._path} is the writeback device of another zram image ({found.path}); "
                f"reset that device, or, if it is gone, clear the claim: {hint}"
            )
        else:
            self.refused = f"{self._path}: {found}; if no zram device uses this file, clear it: {hint}"
        if strict:
            raise ZramError(errno.EBUSY, "backing_dev", self.refused)

    def release(self) -> None:
        """Clear our claim (the caller has committed a state that no longer names the file).

        Looked at again first: only our own claim is ever cleared."""
        if not self.claimed or self.fd < 0 or self.owner is None:
            return
        self.claimed = False
        found = decode_claim(self.read_block(0))
        if isinstance(found, Owner) and found.image_id == self.owner.image_id:
            self.crash.point()
            self._write0(bytes(CLAIM_SIZE))

    def _write0(self, data: bytes) -> None:
        """Write the claim sector and make it durable (the crash points bracket a whole write)."""
        try:
            if os.pwrite(self.fd, data, 0) != len(data):
                raise OSError(errno.EIO, "short write")
            os.fsync(self.fd)
        except OSError as exc:
            raise _fail(exc.errno or errno.EIO, "backing_dev", self._path, exc.strerror) from None
        self.crash.point()

    def alloc_block(self) -> int | None:
        if self.refused is not None:
            raise ZramError(errno.EBUSY, "writeback", self.refused)
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
    path: str,
    *,
    writable: bool,
    crash: CrashPoints,
    in_use: Callable[[], Iterable[int]],
    owner: Owner | None = None,
    strict: bool = True,
) -> FileBackingDev:
    """Open and lock a backing file (see the module docstring); ZramError in one line otherwise.

    ``writable``: O_RDWR and an exclusive lock; else O_RDONLY and a shared lock (readers of one
    device share its backing file, as they share its image).  ``owner``: the claim in block 0
    is then checked (and taken if free) under that lock, see FileBackingDev.claim.
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
        dev = FileBackingDev(path, fd, nr_pages, crash, in_use, owner, writable)
        dev.claim(strict=strict)
    except BaseException:
        os.close(fd)
        raise
    return dev


def release_claim(path: str, owner: Owner, crash: CrashPoints) -> None:
    """Clear ``owner``'s claim on the backing file at ``path``, which this command never opened
    (a reset of a device whose recorded file it did not touch).  Only if the file can be had
    under the exclusive lock and still holds that claim; otherwise nothing (best effort: a
    claim left behind is stale, and the refusal it causes says how to clear it)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < PAGE_SIZE:
            return
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.set_blocking(fd, True)
        dev = FileBackingDev(path, fd, st.st_size // PAGE_SIZE, crash, lambda: (), owner)
        dev.claimed = True
        dev.release()
    except (OSError, ZramError):
        pass
    finally:
        os.close(fd)


class DeferredBackingDev:
    """A device's recorded backing file, opened at its first use.

    Opening a device does not open its backing file: a status listing never touches it.  If
    it cannot be opened (missing, locked, replaced by something else), what does not need it
    still works; a read of a written-back page or a writeback fails with EIO, in one line
    naming the file.  If its block 0 no longer holds this device's claim, it is opened all the
    same: written-back pages read (each CRC-checked), and writeback fails EBUSY in words.
    Freeing a block needs no file: it is remembered for the next commit.
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
