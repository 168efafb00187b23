"""Durable I/O for an image: the block file, the commit log (redo WAL) and the crash hook.

Why a redo log: a commit changes frames (object bytes) and metadata blocks in
place, and a crash half-way through must not leave a mixture.  So every block
a commit will write is first appended to ``zramN.wal`` with a chained CRC-32,
then a COMMIT record, then one fsync; only then are the blocks written in
place, the image fsynced and the log truncated.  Opening a device replays a
complete log (idempotently: the same blocks again) and discards an incomplete
one.  zram-image(5), "THE COMMIT LOG", has the record layout.

Every operation that changes a file is a *durable point*.  ``CrashPoints``
counts them; with ``ZRAMCTL_CRASH_AT=N`` the process SIGKILLs itself at the
N-th, after writing the first half of the bytes when the point is a write (a
torn write), so tests can stop a commit at every step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .device import ZramError

BLOCK_SIZE = 4096
Buffer = bytes | bytearray | memoryview

# --- log records -------------------------------------------------------------
WAL_MAGIC = b"ZWAL"
# Record header: magic, type, txid, argument, data length, CRC-32 (chained, see _record).
WAL_RECORD = struct.Struct("<4sIQQII")
WAL_BLOCK = 1
"""Write the 4096 data bytes at block ``arg`` of the image."""
WAL_PUNCH = 2
"""Give back the space of block ``arg`` (punch a hole; consecutive ones in one call)."""
WAL_SHRINK = 3
"""If the image is longer than ``arg`` bytes, truncate it to ``arg``."""
WAL_COMMIT = 4
"""The transaction is complete: ``arg`` records precede this one."""
# Records per write(2) while streaming the log: bounds memory at about 1 MiB.
WAL_CHUNK = 256

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


@dataclass
class CrashPoints:
    """The crash-injection hook: SIGKILL at the ``crash_at``-th durable point (0: never)."""

    crash_at: int = 0
    count: int = 0
    """Durable points passed so far in this process."""

    @classmethod
    def from_env(cls) -> CrashPoints:
        value = os.environ.get("ZRAMCTL_CRASH_AT", "")
        return cls(int(value) if value.isdigit() else 0)

    def point(self, fd: int = -1, data: list[Buffer] | None = None, offset: int = 0) -> None:
        """One durable point; at the chosen one, write half of ``data`` (if any) and die."""
        self.count += 1
        if self.count != self.crash_at:
            return
        if data and fd >= 0:
            joined = b"".join(data)
            os.pwrite(fd, joined[: len(joined) // 2], offset)
        os.kill(os.getpid(), signal.SIGKILL)


def _load_fallocate() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _load_fallocate()


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range (fallocate PUNCH_HOLE|KEEP_SIZE); silently nothing where unsupported."""
    if _FALLOCATE is None:
        return
    rc = _FALLOCATE(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)  # type: ignore[operator]
    if rc != 0:
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err))


def io_error(exc: OSError, what: str, detail: str) -> ZramError:
    """A host I/O failure as a ZramError: ENOSPC/EFBIG/EIO keep their errno (strerror says it)."""
    code = exc.errno if exc.errno is not None else errno.EIO
    return ZramError(code, what, detail)


class BlockFile:
    """The image file as 4 KiB blocks; every change goes through a durable point."""

    def __init__(self, fd: int, crash: CrashPoints) -> None:
        self.fd = fd
        self.crash = crash

    def read(self, block: int, count: int = 1) -> bytes:
        """``count`` blocks from ``block``; past the end of the file they read as zeros."""
        want = count * BLOCK_SIZE
        try:
            data = os.pread(self.fd, want, block * BLOCK_SIZE)
        except OSError as exc:
            raise io_error(exc, "read", f"reading image block {block}") from None
        if len(data) < want:
            data += bytes(want - len(data))
        return data

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    # --- durable points -----------------------------------------------------

    def write(self, block: int, buffers: list[bytes | bytearray | memoryview]) -> None:
        """Write consecutive blocks from ``block`` on."""
        offset = block * BLOCK_SIZE
        self.crash.point(self.fd, buffers, offset)
        written = os.pwritev(self.fd, buffers, offset)
        if written != BLOCK_SIZE * len(buffers):
            raise OSError(errno.EIO, "short write")

    def allocate(self, block: int, count: int) -> None:
        """Reserve disk space (posix_fallocate) so writing these blocks later cannot fail for space."""
        self.crash.point()
        try:
            os.posix_fallocate(self.fd, block * BLOCK_SIZE, count * BLOCK_SIZE)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise

    def punch(self, block: int, count: int) -> None:
        self.crash.point()
        punch_hole(self.fd, block * BLOCK_SIZE, count * BLOCK_SIZE)

    def shrink(self, size: int) -> None:
        """Truncate to ``size`` bytes if the file is longer (never grows it)."""
        if self.size() > size:
            self.crash.point()
            os.ftruncate(self.fd, size)

    def sync(self) -> None:
        self.crash.point()
        os.fsync(self.fd)


# --- the commit log ------------------------------------------------------------


@dataclass(frozen=True)
class LogRecord:
    """One step of a transaction: a block write, a block punch or a shrink."""

    kind: int
    arg: int
    data: bytes | bytearray | memoryview | None = None


def _record(kind: int, txid: int, arg: int, data: Buffer, prev: int) -> tuple[bytes, int]:
    """A record's header; its CRC covers the header's first 28 bytes and the data, seeded with ``prev``."""
    head = WAL_RECORD.pack(WAL_MAGIC, kind, txid, arg, len(data), 0)[:28]
    crc = zlib.crc32(data, zlib.crc32(head, prev))
    return head + crc.to_bytes(4, "little"), crc


def wal_pending(path: Path) -> bool:
    """Whether a log is waiting to be replayed or discarded (a non-empty zramN.wal)."""
    try:
        return os.stat(path).st_size > 0
    except FileNotFoundError:
        return False


def write_log(path: Path, txid: int, records: Iterable[LogRecord], crash: CrashPoints) -> int:
    """Write a complete transaction to the log and fsync it: after this it is committed.

    Returns the log's length.  The log is written from offset 0 over whatever
    was there: the chain of CRCs makes any leftover of an older, longer log
    unreadable as part of this one.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        offset = 0
        crc = 0
        n = 0
        chunk: list[bytes | bytearray | memoryview] = []

        def flush() -> None:
            nonlocal offset
            if not chunk:
                return
            data = b"".join(chunk)
            crash.point(fd, [data], offset)
            os.pwrite(fd, data, offset)
            offset += len(data)
            chunk.clear()

        for rec in records:
            data = rec.data if rec.data is not None else b""
            head, crc = _record(rec.kind, txid, rec.arg, data, crc)
            chunk += (head, data)
            n += 1
            if len(chunk) >= 2 * WAL_CHUNK:
                flush()
        head, crc = _record(WAL_COMMIT, txid, n, b"", crc)
        chunk.append(head)
        flush()
        os.ftruncate(fd, offset)
        crash.point()
        os.fsync(fd)
        return offset
    finally:
        os.close(fd)


def read_log(path: Path) -> Iterator[LogRecord] | None:
    """The records of a complete log, or None when there is no complete transaction in it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    records: list[LogRecord] = []
    pos = 0
    crc = 0
    txid = None
    size = WAL_RECORD.size
    while pos + size <= len(data):
        magic, kind, tx, arg, length, stored = WAL_RECORD.unpack_from(data, pos)
        if magic != WAL_MAGIC or length > BLOCK_SIZE or pos + size + length > len(data):
            return None
        if txid is None:
            txid = tx
        payload = memoryview(data)[pos + size : pos + size + length]
        crc = zlib.crc32(payload, zlib.crc32(data[pos : pos + 28], crc))
        if tx != txid or crc != stored:
            return None
        pos += size + length
        if kind == WAL_COMMIT:
            return iter(records) if arg == len(records) else None
        if kind == WAL_BLOCK and length != BLOCK_SIZE or kind not in (WAL_BLOCK, WAL_PUNCH, WAL_SHRINK):
            return None
        records.append(LogRecord(kind, arg, payload if kind == WAL_BLOCK else None))
    return None


def apply_records(file: BlockFile, records: Iterable[LogRecord]) -> None:
    """Carry out a transaction's records in place, in order, then fsync (the redo step).

    Consecutive BLOCK records go out as one pwritev(2), consecutive PUNCH
    records as one fallocate(2).
    """
    kind = 0
    start = -1
    run: list[Buffer] = []
    count = 0

    def flush() -> None:
        nonlocal count
        if kind == WAL_BLOCK and run:
            file.write(start, run)
        elif kind == WAL_PUNCH and count:
            file.punch(start, count)
        run.clear()
        count = 0

    for rec in records:
        if rec.kind in (WAL_BLOCK, WAL_PUNCH):
            if rec.kind == kind and rec.arg == start + count and count < WAL_CHUNK:
                count += 1
                if rec.data is not None:
                    run.append(rec.data)
                continue
            flush()
            kind, start, count = rec.kind, rec.arg, 1
            if rec.kind == WAL_BLOCK:
                assert rec.data is not None
                run.append(rec.data)
            continue
        flush()
        kind = 0
        if rec.kind == WAL_SHRINK:
            file.shrink(rec.arg)
    flush()
    file.sync()


def clear_log(path: Path, crash: CrashPoints) -> None:
    """Empty the log once its transaction is in place (or found incomplete)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        crash.point()
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def recover(fd: int, path: Path, crash: CrashPoints) -> bool:
    """Replay a complete log into the image, or discard an incomplete one.

    Called under the exclusive lock.  Returns whether a transaction was
    replayed.  Replaying is idempotent, so a crash during recovery is
    recovered the same way at the next open.
    """
    if not wal_pending(path):
        return False
    try:
        records = read_log(path)
        replayed = records is not None
        if records is not None:
            apply_records(BlockFile(fd, crash), records)
        clear_log(path, crash)
        return replayed
    except OSError as exc:
        raise io_error(exc, "open", "recovering the last commit from the log") from None
