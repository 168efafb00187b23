"""Durable I/O for an image: the block file, the commit log (redo WAL) and the crash hook.

Why a redo log: a commit changes frames (object bytes) and metadata blocks in
place, and a crash half-way through must not leave a mixture.  So every block
a commit will write is first appended to ``zramN.wal`` with a chained CRC-32,
then a COMMIT record, then one fsync; only then are the blocks written in
place, the image fsynced and the log truncated.  Opening a device replays a
complete log (idempotently: the same blocks again) and discards an incomplete
one.  zram-image(5), "THE COMMIT LOG", has the record layout.

Why some frames skip the log (``Ahead``): the frames of an extent that holds
nothing committed (allocated by this transaction, free in the last commit)
can be overwritten at any time without harming the last commit, so logging
them only doubled a big write's I/O.  Such a commit first logs its *intent*
(a LENGTH record: the committed image's length, then FRESH_RUNS records naming
the runs of blocks it will write early) and fsyncs the log; then writes those
blocks in place and fsyncs the image; then appends the other records and the
COMMIT record (which counts the intent's records too) and fsyncs the log.  A log
that ends before its COMMIT record is *undone* at the next open: the blocks its
intent names are punched and the image is cut back to LENGTH, so a free extent
is a hole (or past the end of the file) again, as zram-image(5) says; the last
commit is untouched either way.  A complete log replays as before (an intent's
records do nothing then: the early blocks were durable before the COMMIT record).

Recovery streams the log twice, about a MiB at a time: once to check every
record up to the COMMIT record, then to apply them, so a log of any length
never has to fit in memory.  The store hands these functions the log as an fd
it opened relative to its directory (see ``open_regular``); a path is opened
with O_NOFOLLOW.  A commit that fails before its COMMIT record gives back the
space it reserved (``hole_ranges`` tells which reserved blocks were holes).

A commit's I/O is made first, as a list of operations (``Op``), and then run
in one compiled call that holds no GIL (``_durable.c``; ``run_reference`` is
its readable definition): so it can run on a thread of its own while the next
pages are stored (``Image.commit(background=True)``).

Every operation that changes a file is a *durable point*.  ``CrashPoints``
counts them; with ``ZRAMCTL_CRASH_AT=N`` the process SIGKILLs itself at the
N-th, after writing the first half of the bytes when the point is a write (a
torn write), so tests can stop a commit at every step.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import stat
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..crc import crc32
from ..errors import ZramError
from ._durable import OP_ALLOCATE, OP_CLEAR, OP_PUNCH, OP_SHRINK, OP_SYNC, OP_TRUNCATE, OP_WRITE
from ._durable import run as _run_compiled

BLOCK_SIZE = 4096
Buffer = bytes | bytearray | memoryview

# --- log records -------------------------------------------------------------
WAL_MAGIC = b"ZWAL"
# Record header: magic, type, txid, argument, data length, CRC-32 (chained, see _record).
WAL_RECORD = struct.Struct("<4sIQQII")
WAL_COVERED = struct.Struct(WAL_RECORD.format[:-1])
"""A record header without its CRC: what the CRC covers (with the data)."""
WAL_BLOCK = 1
"""Write the 4096 data bytes at block ``arg`` of the image."""
WAL_PUNCH = 2
"""Give back the space of block ``arg`` (punch a hole; consecutive ones in one call)."""
WAL_SHRINK = 3
"""If the image is longer than ``arg`` bytes, truncate it to ``arg``."""
WAL_COMMIT = 4
"""The transaction is complete: ``arg`` records precede this one."""
WAL_FRESH = 5
"""Block ``arg`` (holding nothing committed) is written in place ahead of the COMMIT record:
a log without its COMMIT record punches it.  Nothing to do in a complete log.  Logs are no
longer written with it (WAL_FRESH_RUNS says the same of 256 runs in a record), but one left
by an interrupted commit of an earlier version is still undone."""
WAL_LENGTH = 6
"""The committed image is ``arg`` bytes long: a log without its COMMIT record cuts the image
back to it (an intent's first record).  Nothing to do in a complete log."""
WAL_FRESH_RUNS = 7
"""Runs of blocks (holding nothing committed) written in place ahead of the COMMIT record:
the data is ``arg`` pairs of little-endian 64-bit words, (first block, blocks), in block
order, FRESH_RUNS_MOST of them at most.  A log without its COMMIT record punches them.
Nothing to do in a complete log.  Why runs: a zspage's frames are consecutive, and one
record a block made a 256 MiB write's intent 33,000 records: with a LogRecord a frame to write
them, half the time spent planning its commits (Image._plan: 0.110 s, 0.052 s with runs)."""
FRESH_RUN = struct.Struct("<QQ")
FRESH_RUNS_MOST = BLOCK_SIZE // FRESH_RUN.size
_BLOCKS_MOST = (1 << 63) // BLOCK_SIZE
"""Blocks a file can have (offsets are signed 64-bit): a run past them is no writer's."""
# Records per write(2) while streaming the log: bounds memory at about 1 MiB.
WAL_CHUNK = 256
# Bytes per read(2) while streaming the log back (recovery): also about 1 MiB, whatever the log's length.
WAL_READ = WAL_CHUNK * (WAL_RECORD.size + BLOCK_SIZE)

Log = Path | int
"""The commit log: an fd the store opened (relative to its directory, never through a symlink),
or a path (tools and tests), which is then opened with O_NOFOLLOW."""

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


@functools.cache
def _load_fallocate() -> object | None:
    """libc's fallocate, looked up on the first hole punched: find_library runs ldconfig (~15 ms),
    which every command (a status listing too) paid at import before; importing ctypes at all
    costs 1.5 ms, which a command that punches no hole need not pay either."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fn.restype = ctypes.c_int
    return fn


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range (fallocate PUNCH_HOLE|KEEP_SIZE); silently nothing where unsupported."""
    fallocate = _load_fallocate()
    if fallocate is None:
        return
    rc = fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)  # type: ignore[operator]
    if rc != 0:
        import ctypes  # (loaded by _load_fallocate)

        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err))


def io_error(exc: OSError, what: str, detail: str) -> ZramError:
    """A host I/O failure as a ZramError: ENOSPC/EFBIG/EIO keep their errno (strerror says it)."""
    code = exc.errno if exc.errno is not None else errno.EIO
    return ZramError(code, what, detail)


def open_regular(name: str | Path, flags: int, *, dir_fd: int | None = None, what: str = "open") -> int:
    """Open a store file without following a symlink, and only if it is a regular file.

    ``name`` is relative to ``dir_fd`` (the store's directory) when given.  A
    symbolic link, a FIFO, a device or a directory at the name is refused in
    words: a file the store did not make is never read, written or truncated.
    O_NONBLOCK keeps a planted FIFO from blocking the open; it is cleared after.
    """
    shown = os.fspath(name) if dir_fd is None else os.path.basename(name)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ZramError(errno.ELOOP, what, f"{shown} is a symbolic link; refusing to follow it") from None
        if exc.errno == errno.EISDIR:
            words = f"{shown} is not a regular file; refusing to use it"
            raise ZramError(errno.EISDIR, what, words) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ZramError(errno.EINVAL, what, f"{shown} is not a regular file; refusing to use it")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_log(log: Log, flags: int) -> tuple[int, bool]:
    """(fd, whether we opened it and must close it)."""
    if isinstance(log, int):
        return log, False
    return open_regular(log, flags), True


def hole_ranges(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """The byte ranges within [start, end) that are holes (SEEK_DATA/SEEK_HOLE).

    Where the file system cannot tell, everything counts as data: no holes.
    """
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data after pos
                return []
            data = end
        data = min(data, end)
        if data > pos:
            out.append((pos, data))
        if data >= end:
            break
        try:
            pos = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError:
            break
    return out


class Op(NamedTuple):
    """One operation of a commit's I/O, as ``run_ops`` carries it out (the kinds are
    ``_durable.c``'s ``OP_*``, which say what each does and where its durable point is).

    Why a list of them: a commit's I/O is built first, then run in one call that holds no GIL
    (``_durable.run``), so that it can run beside the thread storing the next pages."""

    kind: int
    fd: int
    arg: int = 0
    """The byte offset (WRITE, ALLOCATE, PUNCH) or the length the file is cut to (SHRINK,
    TRUNCATE, CLEAR)."""
    length: int = 0
    """Bytes reserved (ALLOCATE) or punched (PUNCH)."""
    data: list[Buffer] | None = None
    """What a WRITE writes, in order (at most IOV_MAX buffers)."""


def run_ops(ops: Sequence[Op], crash: CrashPoints) -> None:
    """Carry out ``ops`` in order, without the GIL (``_durable.c``); OSError at the first that
    fails, the ones before it done.  ``crash`` counts their durable points, and at the chosen one
    the process writes half (a write) and dies, exactly as ``run_reference`` does."""
    crash_in = crash.crash_at - crash.count - 1 if crash.crash_at > crash.count else -1
    _, points, err = _run_compiled(ops, crash_in)
    crash.count += points
    if err:
        raise OSError(err, os.strerror(err))


def run_reference(ops: Sequence[Op], crash_in: int) -> tuple[int, int, int]:
    """``_durable.run`` in Python, the same in and out: the readable definition of each kind,
    tested equal to the compiled one (and put in its place by tests that make a call fail)."""
    crash = CrashPoints(crash_in + 1 if crash_in >= 0 else 0)
    for done, op in enumerate(ops):
        try:
            _run_one(op, crash)
        except OSError as exc:
            return done, crash.count, exc.errno or errno.EIO
    return len(ops), crash.count, 0


def _nbytes(buffers: list[Buffer]) -> int:
    """The bytes ``buffers`` hold (a memoryview's length counts items, not bytes)."""
    return sum(memoryview(b).nbytes for b in buffers)


def _run_one(op: Op, crash: CrashPoints) -> None:
    fd, arg, length = op.fd, op.arg, op.length
    if op.kind == OP_WRITE:
        assert op.data is not None
        crash.point(fd, op.data, arg)
        if os.pwritev(fd, op.data, arg) != _nbytes(op.data):
            raise OSError(errno.EIO, "short write")
    elif op.kind == OP_ALLOCATE:
        crash.point()
        try:
            os.posix_fallocate(fd, arg, length)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    elif op.kind == OP_PUNCH:
        crash.point()
        punch_hole(fd, arg, length)
    elif op.kind == OP_SHRINK:
        if os.fstat(fd).st_size > arg:
            crash.point()
            os.ftruncate(fd, arg)
    elif op.kind == OP_TRUNCATE:
        os.ftruncate(fd, arg)
    elif op.kind == OP_SYNC:
        crash.point()
        os.fsync(fd)
    elif op.kind == OP_CLEAR:
        crash.point()
        os.ftruncate(fd, arg)
    else:
        raise ValueError(f"an operation's kind {op.kind} is not one run_ops knows")


class BlockFile:
    """The image file as 4 KiB blocks; every change goes through a durable point (``run_ops``).

    ``pending``: the blocks of a commit whose I/O is still running (``Image.commit(background=
    True)``), read from there until it is done, since the file may not hold them yet."""

    def __init__(self, fd: int, crash: CrashPoints) -> None:
        self.fd = fd
        self.crash = crash
        self.pending: dict[int, Buffer] = {}

    def read(self, block: int, count: int = 1) -> bytes:
        """``count`` blocks from ``block``; past the end of the file they read as zeros."""
        pending = self.pending
        if pending and any(b in pending for b in range(block, block + count)):
            blocks = range(block, block + count)
            return b"".join(bytes(pending[b]) if b in pending else self.read(b) for b in blocks)
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

    # --- durable points, as operations for run_ops --------------------------

    def write_op(self, block: int, buffers: list[Buffer]) -> Op:
        """Write consecutive blocks from ``block`` on."""
        return Op(OP_WRITE, self.fd, block * BLOCK_SIZE, data=buffers)

    def allocate_op(self, block: int, count: int) -> Op:
        """Reserve disk space (posix_fallocate) so writing these blocks later cannot fail for space."""
        return Op(OP_ALLOCATE, self.fd, block * BLOCK_SIZE, count * BLOCK_SIZE)

    def punch_op(self, block: int, count: int) -> Op:
        return Op(OP_PUNCH, self.fd, block * BLOCK_SIZE, count * BLOCK_SIZE)

    def shrink_op(self, size: int) -> Op:
        """Truncate to ``size`` bytes if the file is longer (never grows it)."""
        return Op(OP_SHRINK, self.fd, size)

    def sync_op(self) -> Op:
        return Op(OP_SYNC, self.fd)


# --- the commit log ------------------------------------------------------------


class LogRecord(NamedTuple):
    """One step of a transaction: a block write, a block punch or a shrink.  A named tuple: a
    commit of 256 MiB makes some 60,000 of them, and a frozen dataclass costs 1 µs each."""

    kind: int
    arg: int
    data: bytes | bytearray | memoryview | None = None


def _record(kind: int, txid: int, arg: int, data: Buffer, prev: int) -> tuple[bytes, int]:
    """A record's header; its CRC covers the header's first 28 bytes and the data, seeded with ``prev``."""
    head = WAL_COVERED.pack(WAL_MAGIC, kind, txid, arg, len(data))
    crc = crc32(head, prev)
    if data:  # most records (an intent's) have none
        crc = crc32(data, crc)
    return head + crc.to_bytes(4, "little"), crc


def block_runs(blocks: Iterable[int], most: int) -> list[tuple[int, int]]:
    """(first block, count) for each run of consecutive ``blocks`` (ascending), ``most`` blocks
    at most in a run."""
    runs: list[tuple[int, int]] = []
    start = count = 0
    for b in blocks:
        if count and b == start + count and count < most:
            count += 1
            continue
        if count:
            runs.append((start, count))
        start, count = b, 1
    if count:
        runs.append((start, count))
    return runs


def wal_pending(log: Log | None) -> bool:
    """Whether a log is waiting to be replayed or discarded (a non-empty zramN.wal)."""
    if log is None:
        return False
    try:
        st = os.fstat(log) if isinstance(log, int) else os.stat(log, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return st.st_size > 0


@dataclass(frozen=True)
class Ahead:
    """Blocks a commit writes in place before its COMMIT record instead of logging them.

    Only blocks that hold nothing committed qualify (the frames of an extent
    free in the last commit): writing them early cannot harm the last commit,
    and the intent logged first lets recovery give their space back.
    """

    file: BlockFile
    length: int
    """The committed image's length in bytes (an undo cuts the image back to it)."""
    blocks: list[int] = field(default_factory=list)
    """The blocks, in block order."""
    data: list[Buffer] = field(default_factory=list)
    """Their bytes (BLOCK_SIZE each), in the same order."""

    def runs(self) -> list[tuple[int, int]]:
        """The blocks as runs of consecutive ones, WAL_CHUNK at most (one pwritev(2) each)."""
        return block_runs(self.blocks, WAL_CHUNK)

    def intent(self, runs: list[tuple[int, int]]) -> list[LogRecord]:
        """The records that let an interrupted commit be undone: LENGTH first, then FRESH_RUNS."""
        recs = [LogRecord(WAL_LENGTH, self.length)]
        for i in range(0, len(runs), FRESH_RUNS_MOST):
            part = runs[i : i + FRESH_RUNS_MOST]
            recs.append(LogRecord(WAL_FRESH_RUNS, len(part), b"".join(FRESH_RUN.pack(*r) for r in part)))
        return recs

    def writes(self, runs: list[tuple[int, int]]) -> list[Op]:
        """The blocks written in place, a run an operation, then the image fsynced."""
        ops: list[Op] = []
        at = 0
        for start, count in runs:
            ops.append(self.file.write_op(start, self.data[at : at + count]))
            at += count
        ops.append(self.file.sync_op())
        return ops


def write_log(
    log: Log, txid: int, records: Iterable[LogRecord], crash: CrashPoints, ahead: Ahead | None = None
) -> int:
    """Write a complete transaction to the log and fsync it: after this it is committed.

    Returns the log's length.  See ``log_ops``, which says what is written.
    """
    fd, own = _open_log(log, os.O_WRONLY | os.O_CREAT)
    try:
        ops, length = log_ops(fd, txid, records, ahead)
        run_ops(ops, crash)
        return length
    finally:
        if own:
            os.close(fd)


def log_ops(
    fd: int, txid: int, records: Iterable[LogRecord], ahead: Ahead | None = None
) -> tuple[list[Op], int]:
    """The operations that write a complete transaction to the log ``fd`` and fsync it, and the
    log's length after them.

    The log is written from offset 0 over whatever was there: the chain of
    CRCs makes any leftover of an older, longer log unreadable as part of
    this one.  With ``ahead``, its intent is written and fsynced first, then
    its blocks in place (and the image fsynced), and only then ``records`` and
    the COMMIT record: see the module docstring.  WAL_CHUNK records a write.
    """
    ops: list[Op] = []
    offset = 0
    crc = 0
    n = 0
    chunk: list[Buffer] = []
    held = 0

    def flush() -> None:
        nonlocal offset, held
        if not chunk:
            return
        ops.append(Op(OP_WRITE, fd, offset, data=chunk.copy()))
        offset += _nbytes(chunk)
        chunk.clear()
        held = 0

    def append(recs: Iterable[LogRecord]) -> None:
        nonlocal crc, n, held
        for rec in recs:
            data = rec.data if rec.data is not None else b""
            head, crc = _record(rec.kind, txid, rec.arg, data, crc)
            chunk.append(head)
            if data:
                chunk.append(data)
            n += 1
            held += 1
            if held >= WAL_CHUNK:
                flush()

    def sync() -> None:
        flush()
        ops.append(Op(OP_TRUNCATE, fd, offset))
        ops.append(Op(OP_SYNC, fd))

    if ahead is not None and ahead.blocks:
        runs = ahead.runs()
        append(ahead.intent(runs))
        sync()  # the intent is durable before any block it names is written
        ops.extend(ahead.writes(runs))  # in place, then fsync: durable before COMMIT
    append(records)
    head, crc = _record(WAL_COMMIT, txid, n, b"", crc)
    chunk.append(head)
    sync()
    return ops, offset


def _walk(fd: int) -> Iterator[tuple[int, int, Buffer]]:
    """The log's records (kind, arg, payload) in order, each checked, up to the first bad one.

    Reads WAL_READ bytes at a time: memory stays bounded whatever the log's length.
    """
    size = WAL_RECORD.size
    buf = b""
    base = 0  # file offset of buf[0]
    at = 0  # next record's offset in buf
    crc = 0
    txid = None
    while True:
        if len(buf) - at < size + BLOCK_SIZE:
            more = os.pread(fd, WAL_READ, base + len(buf))
            buf, base, at = buf[at:] + more, base + at, 0
        if len(buf) - at < size:
            return
        magic, kind, tx, arg, length, stored = WAL_RECORD.unpack_from(buf, at)
        if magic != WAL_MAGIC or length > BLOCK_SIZE or at + size + length > len(buf):
            return
        if txid is None:
            txid = tx
        payload = memoryview(buf)[at + size : at + size + length]
        crc = crc32(payload, crc32(memoryview(buf)[at : at + 28], crc))
        if tx != txid or crc != stored:
            return
        at += size + length
        yield kind, arg, payload


_KINDS = (WAL_BLOCK, WAL_PUNCH, WAL_SHRINK, WAL_FRESH, WAL_LENGTH, WAL_FRESH_RUNS)


def _fresh_runs(arg: int, payload: Buffer) -> list[tuple[int, int]] | None:
    """A FRESH_RUNS record's runs, or None when its data is not ``arg`` pairs of (block, count),
    each count at least 1, in block order, the most a record holds."""
    if not 1 <= arg <= FRESH_RUNS_MOST or len(payload) != arg * FRESH_RUN.size:
        return None
    runs = list(FRESH_RUN.iter_unpack(payload))
    last = 0
    for start, count in runs:
        if count < 1 or start < last or start + count > _BLOCKS_MOST:
            return None
        last = start + count
    return runs


def _complete(fd: int) -> bool:
    """The first, streaming pass: is there a whole transaction, every record checked, in the log?"""
    n = 0
    for kind, arg, payload in _walk(fd):
        if kind == WAL_COMMIT:
            return arg == n
        if kind == WAL_BLOCK and len(payload) != BLOCK_SIZE or kind not in _KINDS:
            return False
        if kind == WAL_FRESH_RUNS and _fresh_runs(arg, payload) is None:
            return False
        n += 1
    return False


def _replay(fd: int, own: bool) -> Iterator[LogRecord]:
    """The second pass: the records again, streamed; the first pass found them whole."""
    try:
        for kind, arg, payload in _walk(fd):
            if kind == WAL_COMMIT:
                return
            yield LogRecord(kind, arg, payload if kind == WAL_BLOCK else None)
    finally:
        if own:
            os.close(fd)


def read_log(log: Log) -> Iterator[LogRecord] | None:
    """The records of a complete log, streamed, or None when there is no complete transaction in it.

    Two passes over the file, neither holding more than about a MiB: the first
    checks every record's CRC up to the COMMIT record; only then does the
    second hand the records out (the caller holds the exclusive lock, so the
    log cannot change in between).
    """
    if isinstance(log, int):
        return _replay(log, False) if _complete(log) else None
    try:
        fd = open_regular(log, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if not _complete(fd):
            return None
    finally:
        os.close(fd)
    path = log

    def reopened() -> Iterator[LogRecord]:
        yield from _replay(open_regular(path, os.O_RDONLY), True)

    return reopened()


def apply_records(file: BlockFile, records: Iterable[LogRecord]) -> None:
    """Carry out a transaction's records in place, in order, then fsync (the redo step).

    Run as ``apply_ops`` makes them, one at a time: a log replayed at an open
    is streamed, and never has to be in memory at once.
    """
    for op in apply_ops(file, records):
        run_ops([op], file.crash)


def apply_ops(file: BlockFile, records: Iterable[LogRecord]) -> Iterator[Op]:
    """The operations that carry out ``records`` in place, then fsync the image.

    Consecutive BLOCK records go out as one pwritev(2), consecutive PUNCH
    records as one fallocate(2), up to WAL_CHUNK blocks each.
    """
    kind = 0
    start = -1
    run: list[Buffer] = []
    count = 0
    for rec in records:
        if rec.kind in (WAL_BLOCK, WAL_PUNCH):
            if rec.kind == kind and rec.arg == start + count and count < WAL_CHUNK:
                count += 1
                if rec.data is not None:
                    run.append(rec.data)
                continue
            yield from _run_op(file, kind, start, run, count)
            kind, start, count, run = rec.kind, rec.arg, 1, []
            if rec.kind == WAL_BLOCK:
                assert rec.data is not None
                run.append(rec.data)
            continue
        yield from _run_op(file, kind, start, run, count)
        kind, count, run = 0, 0, []
        if rec.kind == WAL_SHRINK:
            yield file.shrink_op(rec.arg)
        # WAL_FRESH, WAL_LENGTH: an intent, for undoing an incomplete log; nothing to redo.
    yield from _run_op(file, kind, start, run, count)
    yield file.sync_op()


def _run_op(file: BlockFile, kind: int, start: int, run: list[Buffer], count: int) -> Iterator[Op]:
    """The one operation for a run of consecutive BLOCK or PUNCH records, if there is a run."""
    if kind == WAL_BLOCK and run:
        yield file.write_op(start, run)
    elif kind == WAL_PUNCH and count:
        yield file.punch_op(start, count)


def undo_ahead(file: BlockFile, length: int, runs: Iterable[tuple[int, int]]) -> None:
    """Undo the blocks an interrupted commit wrote ahead of its COMMIT record, then fsync.

    The image is cut back to ``length`` (its committed length) and each run of
    blocks (first, count) still inside it is punched: they held nothing
    committed, and a free extent is a hole or past the end of the file.
    Overlapping and adjacent runs are punched as one.  Idempotent.
    """
    ops = [file.shrink_op(length)]
    end = -(-length // BLOCK_SIZE)  # nothing past the committed length is left to punch
    lo = hi = 0
    for start, count in sorted(runs):
        start, stop = min(start, end), min(start + count, end)
        if start <= hi and hi > lo:
            hi = max(hi, stop)
            continue
        if hi > lo:
            ops.append(file.punch_op(lo, hi - lo))
        lo, hi = start, stop
    if hi > lo:
        ops.append(file.punch_op(lo, hi - lo))
    ops.append(file.sync_op())
    run_ops(ops, file.crash)


@dataclass(frozen=True)
class Intent:
    """What an incomplete log says its commit wrote ahead of the COMMIT record."""

    txid: int
    """The txid the commit would have committed (its header's txid + 1)."""
    length: int
    """The committed image's length, in bytes."""
    runs: list[tuple[int, int]]
    """The blocks written (or about to be written) in place, as (first block, count), in block order."""

    def blocks(self) -> list[int]:
        """Every block the runs name, in order (for tests and tools: undoing works on the runs)."""
        return [b for start, count in self.runs for b in range(start, start + count)]


def read_intent(log: Log, size: int | None = None) -> Intent | None:
    """An incomplete log's intent, or None when it has none.

    Only for a log ``read_log`` found incomplete: its valid records (up to the
    first that fails a check) are read; the blocks they name hold nothing the
    last commit holds, so undoing them is safe whatever follows.  A writer
    names its runs in block order after the LENGTH record; the first record
    that does not ends the valid ones.  With ``size`` (the image's length now,
    as recovery reads it), runs that start past it or past the intent's length
    are not kept: undoing cuts the image there, and nothing past the end needs
    punching, so what is kept is bounded by the image, not by the log, however
    long a forged one is.
    """
    try:
        fd, own = _open_log(log, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        first = WAL_RECORD.unpack_from(os.pread(fd, WAL_RECORD.size, 0).ljust(WAL_RECORD.size, b"\0"))
        length: int | None = None
        runs: list[tuple[int, int]] = []
        end = 0  # the block the runs read so far end at
        for kind, arg, payload in _walk(fd):
            if kind == WAL_LENGTH and length is None:
                length = arg
            elif kind in (WAL_FRESH, WAL_FRESH_RUNS):
                more = [(arg, 1)] if kind == WAL_FRESH else _fresh_runs(arg, payload)
                if length is None or not more or more[0][0] < end:
                    break  # not what a writer makes: the valid records end here
                last = None if size is None else -(-min(length, size) // BLOCK_SIZE)
                kept = more if last is None else [r for r in more if r[0] < last]
                runs += kept
                end = sum(more[-1])
                if len(kept) < len(more):
                    break  # the rest lie past the end (runs are in block order)
        return None if length is None else Intent(first[2], length, runs)
    finally:
        if own:
            os.close(fd)


def clear_log(log: Log, crash: CrashPoints) -> None:
    """Empty the log once its transaction is in place (or found incomplete)."""
    try:
        fd, own = _open_log(log, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        run_ops([clear_op(fd)], crash)
    finally:
        if own:
            os.close(fd)


def clear_op(fd: int) -> Op:
    """The operation that empties the log ``fd`` (a durable point)."""
    return Op(OP_CLEAR, fd, 0)


def recover(fd: int, log: Log, crash: CrashPoints, txid: int | None = None) -> bool:
    """Replay a complete log into the image, or discard an incomplete one (undoing its intent).

    Called under the exclusive lock.  Returns whether a transaction was
    replayed.  Replaying is idempotent, so a crash during recovery is
    recovered the same way at the next open.  An intent is undone only if it
    is for ``txid`` (the commit after the image's header; None: any): one
    left from another transaction or another image never cuts this image.
    """
    if not wal_pending(log):
        return False
    try:
        records = read_log(log)
        replayed = records is not None
        if records is not None:
            apply_records(BlockFile(fd, crash), records)
        else:
            intent = read_intent(log, os.fstat(fd).st_size)
            if intent is not None and txid in (None, intent.txid):  # blocks written ahead of no COMMIT
                undo_ahead(BlockFile(fd, crash), intent.length, intent.runs)
        clear_log(log, crash)
        return replayed
    except OSError as exc:
        raise io_error(exc, "open", "recovering the last commit from the log") from None
