"""A device image: the whole engine state in one sparse file, committed atomically.

Why this shape: a device must outlive the process, a command must cost what
it touches (not what the device holds), and ``kill -9`` at any instant must
leave the last commit intact.  So the image is a block file read lazily, with
the allocator's frames *in* it (mem_used_total is real disk), and commits go
through a redo log.  zram-image(5) is the specification; the names below are
its names, and ``format.py`` holds the OFFSET/SIZE tables as code.

Layout (little-endian, 4096-byte blocks, 8-block *extents*)::

    extent 0   block 0      HEADER: magic "ZRAMIMG\\0", version 1, txid, the
                            settings (ZramConfig), counters (ZramStats), pool
                            counters, allocator counters, tree roots
               blocks 1..7  CLASS AREA: one CLASS RECORD per size class
                            (geometry + objs_allocated/inuse + list heads +
                            zspages per fullness group); absent if disksize 0
    extent k   either a ZSPAGE: its pages_per_zspage frames are blocks 8k..,
               the rest of the extent is a hole; the zspage's KEY is k
               (first frame = 8 * key, handle = first << 11 | obj_idx)
               or METADATA: up to 8 POINTER / PAGE-TABLE / ZSPAGE-RECORD blocks
               or free (a hole, or past the end of the file)

- Every metadata block ends in a CRC-32 of (u64 block number, u32 block type,
  payload); a block read in the wrong place or role fails its check.
- PAGE TABLE: a sparse TREE (256 TABLE_ROOTS in the header, TABLE_DEPTH
  levels of POINTER blocks of 1023 u32 block numbers) over leaves of 372
  eleven-byte PAGE-TABLE ENTRIES, each an 88-bit integer: kind (0 unwritten,
  1 same-filled, 2 object, 3 huge object) | size << 2 | obj_idx << 15 |
  key << 26 | crc << 56, or fill_word << 24 for same-filled pages.  An
  initialised empty device of any size has no leaves.
- ZSPAGE RECORDS: the same tree shape (ZSMAP_ROOTS, ZSMAP_DEPTH) over leaves
  of 341 twelve-byte records, one per extent (free / zspage / metadata): the
  extent map.
- COMMIT: see ``io.py``: every changed block goes to ``zramN.wal``
  first, then in place; opening replays a complete log.

Metadata cost: 11 bytes per stored page (object CRC included), 12 per zspage,
plus one pointer block per 1023 leaves past the first 256.  ``Image`` is what
the store opens; ``maps.py`` holds the lazy maps the engine works on.
"""

from __future__ import annotations

import errno
import os

from ..errors import ZramError
from ..interrupts import Deferred
from ..kernel.zram_drv import Backing, Zram, ZramConfig, ZramStats
from ..kernel.zsmalloc import Pool, SizeClass
from .format import (
    BLOCK_SIZE,
    CLASS_BLOCKS,
    EXTENT_BLOCKS,
    EXTENT_SIZE,
    ClassRecord,
    Header,
    class_blocks,
    corrupt,
    decode_classes,
    decode_header,
    encode_classes,
    encode_header,
    zspage_first,
    zspage_key,
)
from .io import (
    WAL_BLOCK,
    WAL_PUNCH,
    WAL_SHRINK,
    BlockFile,
    CrashPoints,
    LogRecord,
    apply_records,
    clear_log,
    hole_ranges,
    io_error,
    punch_hole,
    recover,
    wal_pending,
    write_log,
)
from .maps import ImageState

__all__ = ["CrashPoints", "Image", "empty_image", "wal_pending"]


def empty_image() -> bytes:
    """The bytes of a new, uninitialised device (disksize 0): the header block alone."""
    return encode_header(Header(txid=0, config=ZramConfig(), stats=ZramStats()))


def _class_records(pool: Pool) -> list[ClassRecord]:
    return [
        ClassRecord(
            c.index,
            c.size,
            c.pages_per_zspage,
            c.huge,
            c.objs_per_zspage,
            c.objs_allocated,
            c.objs_inuse,
            [zspage_key(h) for h in c.heads],
            list(c.zspages),
        )
        for c in pool.classes
    ]


def _restore_pool(pool: Pool, header: Header, records: list[ClassRecord]) -> None:
    """Put the committed allocator state into a freshly built pool, checking it fits the profile."""
    if (header.nclasses, header.ngroups, header.nlists) != (
        len(pool.classes),
        pool.fullness.ngroups,
        len(pool.fullness.listed),
    ):
        raise corrupt(f"the class table does not match profile {pool.profile.name}")
    for c, r in zip(pool.classes, records, strict=True):
        if (r.index, r.size, r.pages_per_zspage, r.huge, r.objs_per_zspage) != (
            c.index,
            c.size,
            c.pages_per_zspage,
            c.huge,
            c.objs_per_zspage,
        ):
            raise corrupt(f"class {r.index}'s geometry does not match profile {pool.profile.name}")
        if r.objs_inuse > r.objs_allocated:
            raise corrupt(f"class {r.index} has more objects in use than allocated")
        c.objs_allocated, c.objs_inuse = r.objs_allocated, r.objs_inuse
        c.heads = [zspage_first(k) for k in r.heads]
        c.zspages = list(r.zspages)
    pool.pages_allocated = header.pages_allocated
    pool.pages_compacted = header.pages_compacted


class Image:
    """An open image: ``zram`` works on it lazily; ``commit()`` makes its changes durable.

    Takes ownership of ``fd`` (already locked by the store) and of ``wal``, the
    open commit log (None for a reader where there is none); ``close()``
    closes both, which releases the lock.
    """

    def __init__(self, fd: int, wal: int | None, *, writable: bool, crash: CrashPoints, name: str) -> None:
        if writable and wal is None:
            raise ValueError("a writable image needs its commit log")
        self.file = BlockFile(fd, crash)
        self.wal = wal
        self.name = name
        self.writable = writable
        self.broken: str | None = None
        head = self.file.read(0, 1 + CLASS_BLOCKS)
        header = decode_header(head)
        records = decode_classes(header, memoryview(head)[BLOCK_SIZE:])
        self._loaded: dict[int, bytes] = {0: head[:BLOCK_SIZE]}
        for b in range(class_blocks(header)):
            self._loaded[1 + b] = head[(1 + b) * BLOCK_SIZE : (2 + b) * BLOCK_SIZE]
        self.header = header
        self.state = ImageState(self.file, header, self._classes, writable=writable)
        backing = Backing(frames=self.state.frames, table=self.state.table, zspages=self.state.zspages)
        self.zram = Zram(header.config, header.stats, backing)
        if self.zram.pool is not None:
            _restore_pool(self.zram.pool, header, records)

    def _classes(self) -> list[SizeClass]:
        pool = self.zram.pool
        return pool.classes if pool is not None else []

    @staticmethod
    def recover(fd: int, wal: int, crash: CrashPoints) -> bool:
        """Complete (or discard) an interrupted commit; the caller holds the exclusive lock."""
        return recover(fd, wal, crash)

    # --- commit -----------------------------------------------------------------

    def _new_header(self) -> Header:
        """The header describing the state in memory now."""
        z, st, pool = self.zram, self.state, self.zram.pool
        h = Header(txid=self.header.txid, config=z.config, stats=z.stats)
        h.pages_allocated = pool.pages_allocated if pool else 0
        h.pages_compacted = pool.pages_compacted if pool else 0
        h.table_entries = len(st.table)
        h.zspage_count = len(st.zspages)
        h.extent_count, h.free_hint = st.extent_count, st.free_hint
        h.meta_extent, h.meta_used = st.meta_extent, st.meta_used
        h.table_roots, h.table_depth = list(st.table.radix.roots), st.table.radix.depth
        h.zsmap_roots, h.zsmap_depth = list(st.zspages.radix.roots), st.zspages.radix.depth
        if pool is not None:
            h.nclasses, h.ngroups = len(pool.classes), pool.fullness.ngroups
            h.nlists = len(pool.fullness.listed)
        return h

    def _changes(self) -> tuple[Header, dict[int, bytes | bytearray], list[int]]:
        """(new header, changed blocks but the header's, blocks to punch)."""
        st = self.state
        st.settle()
        if st.reserved:
            detail = f"internal error: extents {sorted(st.reserved)} are half-allocated"
            raise ZramError(errno.EIO, "commit", detail)
        st.shrink()
        h = self._new_header()
        blocks: dict[int, bytes | bytearray] = {}
        if self.zram.pool is not None:
            for i, data in enumerate(encode_classes(h, _class_records(self.zram.pool))):
                if st.cleared or self._loaded.get(1 + i) != data:
                    blocks[1 + i] = data
        blocks.update(st.table.dirty())
        blocks.update(st.zspages.dirty())
        blocks.update(st.frames.dirty)
        # Freed extents give their space back; one reused meanwhile keeps the blocks it writes.
        punch = [
            b
            for e in sorted(st.freed)
            if e < st.extent_count
            for b in range(e * EXTENT_BLOCKS, (e + 1) * EXTENT_BLOCKS)
            if b not in blocks
        ]
        return h, blocks, punch

    def commit(self) -> None:
        """Write every change since the last commit, atomically (see io.py).

        Nothing changed: no I/O at all.  ENOSPC/EFBIG/EIO before the log's
        commit record leave the last commit intact and this handle unusable.
        A signal that arrives meanwhile is acted on once the commit is complete
        (interrupts.Deferred), so Ctrl-C never leaves a log for the next open to finish.
        """
        with Deferred(redeliver=True):
            self._commit()

    def _commit(self) -> None:
        if self.broken:
            raise ZramError(errno.EIO, "commit", self.broken)
        if not self.writable:
            raise ZramError(errno.EBADF, "commit", "the device is open read-only")
        st = self.state
        h, blocks, punch = self._changes()
        header = encode_header(h)
        if not blocks and not punch and not st.cleared and header == self._loaded[0]:
            return
        h.txid += 1
        blocks[0] = encode_header(h)
        records = [LogRecord(WAL_SHRINK, 0)] if st.cleared else []
        records += [LogRecord(WAL_BLOCK, b, blocks[b]) for b in sorted(blocks)]
        records += [LogRecord(WAL_PUNCH, b) for b in punch]
        records.append(LogRecord(WAL_SHRINK, st.extent_count * EXTENT_SIZE))
        assert self.wal is not None
        reserved: list[tuple[int, int]] = []
        size = self.file.size()
        try:
            self._preallocate(sorted(blocks), reserved)
            write_log(self.wal, h.txid, records, self.file.crash)
        except OSError as exc:
            self.broken = "an earlier commit failed; reopen the device"
            try:
                clear_log(self.wal, self.file.crash)
            except OSError:
                pass
            self._give_back(reserved, size)
            detail = "the last commit is intact; what came after it was not kept"
            raise io_error(exc, "commit", detail) from None
        try:
            apply_records(self.file, records)
            clear_log(self.wal, self.file.crash)
        except OSError as exc:
            self.broken = "an earlier commit is unfinished; reopen the device"
            raise io_error(exc, "commit", "committed to the log; completed at the next open") from None
        self._committed(h, blocks)

    def _preallocate(self, blocks: list[int], reserved: list[tuple[int, int]]) -> None:
        """Reserve the space of every block about to be written, before anything is committed.

        So ENOSPC and EFBIG (a file-size limit) come now, while the last commit
        is intact, and never while blocks are being written in place.  Each
        hole of the committed file that is about to be reserved is added to
        ``reserved`` (byte ranges) *before* the reservation, so that a failure
        can give exactly those back (``_give_back``).
        """
        size = self.file.size()
        start = prev = -2
        for b in blocks + [-1]:
            if b == prev + 1:
                prev = b
                continue
            if start >= 0:
                lo, hi = start * BLOCK_SIZE, (prev + 1) * BLOCK_SIZE
                if lo < size:
                    reserved += hole_ranges(self.file.fd, lo, min(hi, size))
                self.file.allocate(start, prev - start + 1)
            start = prev = b

    def _give_back(self, reserved: list[tuple[int, int]], size: int) -> None:
        """After a failed commit: free the space it reserved, so the device works once space returns.

        The committed file is ``size`` bytes long: what lies past it is cut off;
        the holes inside it that were reserved are punched again.  Neither holds
        anything committed (a hole reads as zeros before and after).  Best
        effort: the commit's own error is what the user is told.
        """
        try:
            if self.file.size() > size:
                os.ftruncate(self.file.fd, size)
            for lo, hi in reserved:
                punch_hole(self.file.fd, lo, hi - lo)
        except OSError:
            pass

    def _committed(self, h: Header, blocks: dict[int, bytes | bytearray]) -> None:
        st = self.state
        self.header = h
        if st.cleared:  # the file was truncated: only what this commit wrote is there
            self._loaded = {}
        for b in range(1 + CLASS_BLOCKS):
            if b in blocks:
                self._loaded[b] = bytes(blocks[b])
        st.table.committed()
        st.zspages.committed(blocks)
        st.frames.committed()
        st.fresh.clear()
        st.freed.clear()
        st.cleared = False

    def close(self) -> None:
        """Close the file (releasing the lock); uncommitted changes are dropped with it."""
        if self.wal is not None:
            wal, self.wal = self.wal, None
            os.close(wal)
        if self.file.fd >= 0:
            fd, self.file.fd = self.file.fd, -1
            os.close(fd)
