"""A device image: the whole engine state in one sparse file, committed atomically.

Why this shape: a device must outlive the process, a command must cost what
it touches (not what the device holds), and ``kill -9`` at any instant must
leave the last commit intact.  So the image is a block file read lazily, with
the allocator's frames *in* it (mem_used_total is real disk), and commits go
through a redo log.  zram-image(5) is the specification; the names below are
its names, and ``format.py`` holds the OFFSET/SIZE tables as code.

Layout (little-endian, 4096-byte blocks, 8-block *extents*)::

    extent 0   block 0      HEADER: magic "ZRAMIMG\\0", version 2, txid, the
                            settings (ZramConfig), counters (ZramStats), pool
                            counters, allocator counters, tree roots
               blocks 1..7  CLASS AREA: one CLASS RECORD per size class
                            (geometry + objs_allocated/inuse + list heads +
                            zspages per fullness group); absent if disksize 0
    extent k   either a ZSPAGE: its pages_per_zspage frames are blocks 8k..,
               the rest of the extent is a hole; the zspage's KEY is k
               (first frame = 8 * key, handle = first << 11 | obj_idx)
               or METADATA: up to 8 POINTER / PAGE-TABLE / ZSPAGE-RECORD blocks
               or BLOB: up to 8 blocks of a setting too long for the header
               (the backing_dev path, a dictionary), chained
               or free (a hole, or past the end of the file)

- Every metadata block ends in a CRC-32 of (u64 block number, u32 block type,
  payload); a block read in the wrong place or role fails its check.
- PAGE TABLE: a sparse TREE (256 TABLE_ROOTS in the header, TABLE_DEPTH
  levels of POINTER blocks of 1023 u32 block numbers) over leaves of 255
  sixteen-byte PAGE-TABLE ENTRIES, each a 128-bit integer: kind (0 unwritten,
  1 same-filled, 2 object, 3 written back), the slot's flags (huge, idle,
  incompressible, priority), size, obj_idx, key (or the backing block, or
  the fill word), crc and ac_time (format.ENTRY_LAYOUT).  An initialised
  empty device of any size has no leaves.  A version 1 image (372 eleven-byte
  entries a leaf) is read as it is, and converted at its first writable open.
- BACKING FILE: written-back pages live in the file backing_dev names
  (``backing.py``); its pages are fsync'd before the commit that names them.
- ZSPAGE RECORDS: the same tree shape (ZSMAP_ROOTS, ZSMAP_DEPTH) over leaves
  of 341 twelve-byte records, one per extent (free / zspage / metadata): the
  extent map.
- COMMIT: see ``io.py``: every changed block goes to ``zramN.wal``
  first, then in place; opening replays a complete log.  The exception
  (``_ahead``): a big commit writes the frames of extents that hold nothing
  committed in place *before* its COMMIT record, after logging an intent
  naming them, and leaves them out of the log; an interrupted one is undone
  at the next open (punched, the file cut back).

Metadata cost: 16 bytes per stored page (object CRC and ac_time included), 12 per zspage,
plus one pointer block per 1023 leaves past the first 256.  ``Image`` is what
the store opens; ``maps.py`` holds the lazy maps the engine works on.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ZramError
from ..interrupts import Deferred
from ..kernel.zram_drv import ZRAM_MAX_COMPS, ZRAM_WB, Backing, Zram, ZramConfig, ZramStats
from ..kernel.zsmalloc import Pool, SizeClass
from .backing import (
    DeferredBackingDev,
    FileBackingDev,
    Owner,
    open_backing_file,
    read_dictionary,
    release_claim,
)
from .format import (
    BLOCK_SIZE,
    CLASS_BLOCKS,
    EXTENT_BLOCKS,
    EXTENT_SIZE,
    IMAGE_ID_SIZE,
    RECORD_BLOB,
    RECORD_FREE,
    RECORD_META,
    ROOTS,
    VERSION,
    BlobRef,
    ClassRecord,
    Header,
    blob_blocks,
    class_blocks,
    corrupt,
    decode_blob_block,
    decode_classes,
    decode_header,
    encode_blob,
    encode_classes,
    encode_header,
    zspage_first,
    zspage_key,
)
from .io import (
    WAL_BLOCK,
    WAL_CHUNK,
    WAL_PUNCH,
    WAL_SHRINK,
    Ahead,
    BlockFile,
    CrashPoints,
    LogRecord,
    Op,
    apply_ops,
    block_runs,
    clear_log,
    clear_op,
    hole_ranges,
    io_error,
    log_ops,
    punch_hole,
    recover,
    run_ops,
    undo_ahead,
    wal_pending,
)
from .maps import ImageState

__all__ = ["CrashPoints", "Image", "empty_image", "wal_pending"]

AHEAD_MIN_BLOCKS = 16
"""A commit writes frames ahead of its COMMIT record (``Image._ahead``) only when it has at
least this many: it costs two more fsyncs (~0.15 ms each here), which logging a few frames
twice costs less than."""


@dataclass
class Plan:
    """A commit made ready (``Image._plan``): what it commits, and its I/O as operations."""

    header: Header
    blocks: dict[int, bytes | bytearray]
    """Every block it writes (the header's included), by number: never changed after."""
    blobs: dict[str, Blob]
    dropped: Blob | None
    """The backing file the last commit named, if this one may stop naming it."""
    before: list[Op]
    """Space reserved, the log written and fsynced: up to and with the COMMIT record."""
    after: list[Op]
    """The records carried out in place, the image fsynced, the log emptied."""
    size: int
    """The committed image's length in bytes."""
    early: set[int]
    """The blocks written in place ahead of the COMMIT record (``Image._ahead``)."""
    reserved: list[tuple[int, int]]
    """The holes of the committed image that ``before`` fills (byte ranges)."""


class Flight:
    """A commit whose I/O runs on a thread of its own (``Image.commit(background=True)``).

    The thread runs the two compiled calls of ``Image._carry_out`` (the GIL released
    throughout each), so the caller's thread keeps the CPU it has.  Not a daemon: a
    process that ends meanwhile finishes the commit first.
    """

    def __init__(self, image: Image, plan: Plan) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(image, plan), name="zramctl-commit")
        try:
            self.thread.start()
        except RuntimeError:  # no thread to be had (a limit on threads): the commit is done at once
            self._run(image, plan)

    def wait(self) -> None:
        if self.thread.ident is not None:
            self.thread.join()

    def _run(self, image: Image, plan: Plan) -> None:
        try:
            image._carry_out(plan)
        except BaseException as exc:  # raised in the caller's thread, by Image.land
            self.error = exc


@dataclass
class Blob:
    """A blob-held setting as committed: its bytes, its extents (in chain order) and where it starts."""

    data: bytes
    extents: list[int]
    ref: BlobRef


def new_image_id() -> bytes:
    """A new image's identity (who owns a backing file's claim): random, so no two images share
    one unless one is a copy of the other."""
    return os.urandom(IMAGE_ID_SIZE)


def empty_image() -> bytes:
    """The bytes of a new, uninitialised device (disksize 0): the header block alone, with a
    new image_id."""
    h = Header(txid=0, config=ZramConfig(), stats=ZramStats(), image_id=new_image_id())
    return encode_header(h)


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

    def __init__(
        self,
        fd: int,
        wal: int | None,
        *,
        writable: bool,
        crash: CrashPoints,
        name: str,
        path: str | None = None,
    ) -> None:
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
        self.path = path or name
        """The image file's path, named in a backing file's claim (for messages)."""
        if writable and not any(header.image_id):  # written before image ids: one from now on
            header.image_id = new_image_id()
        self.state = ImageState(self.file, header, self._classes, writable=writable)
        self.blobs: dict[str, Blob] = {}
        """The blob-held settings as the last commit has them."""
        self._bdevs: list[FileBackingDev] = []
        """Backing files this image opened: synced before each commit, closed with the image."""
        self._flight: Flight | None = None
        """The commit whose I/O is running in the background (``commit(background=True)``)."""
        backing = Backing(
            frames=self.state.frames,
            table=self.state.table,
            zspages=self.state.zspages,
            open_bdev=self._open_bdev,
            read_file=read_dictionary,
        )
        self.zram = Zram(header.config, header.stats, backing)
        if self.zram.pool is not None:
            _restore_pool(self.zram.pool, header, records)
        self._load_blobs(header)  # after the pool: checking a blob's extents reads records
        if header.config.backing_dev is not None:
            self.zram.bdev = DeferredBackingDev(header.config.backing_dev, self._reopen_bdev)
        if writable and header.version != VERSION:
            self._convert()

    # --- the backing file ------------------------------------------------------------

    def _open_bdev(self, path: str, strict: bool = True) -> FileBackingDev:
        """Backing.open_bdev: open and lock a backing file for this device, and claim it (see
        backing.py): another image's file is EBUSY (``strict``, the backing_dev store) or
        opened refusing writeback (the device's recorded file, reopened).

        A file this image already has open (set again after a reset) is handed back as it
        is, its claim looked at again: it still knows which blocks the last commit points at.
        """
        full = os.path.abspath(path)
        for dev in self._bdevs:
            if dev.path == full:
                dev.claim(strict=strict)
                dev.released = False
                return dev
        owner = Owner(self.header.image_id, self.path)
        crash = self.file.crash
        dev = open_backing_file(
            full, writable=self.writable, crash=crash, in_use=self._wb_blocks, owner=owner, strict=strict
        )
        self._bdevs.append(dev)
        return dev

    def _reopen_bdev(self, path: str) -> FileBackingDev:
        """The recorded backing file, opened at its first use (DeferredBackingDev)."""
        return self._open_bdev(path, strict=False)

    def _release_claims(self, dropped: Blob | None = None) -> None:
        """Clear the claim of every backing file this image holds that the last commit does not
        name: one it opened (a backing_dev set and never committed, or a reset), and
        ``dropped``, the file the commit before named (a reset that never opened it).  Only
        after that commit: a crash before leaves a stale claim (cleared by hand), never a file
        without the claim of a device whose pages it holds.  Best effort: the commit stands."""
        if self.broken or not self.writable:
            return
        named = self.blobs.get("backing_dev")
        kept = named.data if named is not None else None
        for dev in self._bdevs:
            if os.fsencode(dev.path) != kept:
                try:
                    dev.release()
                except OSError:
                    pass
        if dropped is not None and dropped.data != kept:
            path = os.fsdecode(dropped.data)
            if all(dev.path != path for dev in self._bdevs):
                release_claim(path, Owner(self.header.image_id, self.path), self.file.crash)

    def _wb_blocks(self) -> Iterator[int]:
        """The backing blocks the page table points at: a walk of the whole table."""
        for flags, handle, _, _ in self.zram.table.values():
            if flags & ZRAM_WB:
                yield handle

    # --- blobs ------------------------------------------------------------------------

    def _load_blobs(self, header: Header) -> None:
        """Read the blob-held settings into the config: every block checked, the chain bounded."""
        config = header.config
        limit = self.state.extent_count * EXTENT_BLOCKS
        for name, ref in header.blobs.items():
            data = bytearray()
            extents: list[int] = []
            block = ref.block
            for _ in range(blob_blocks(ref.length)):
                if block == 0:
                    break
                e = block // EXTENT_BLOCKS
                if e not in extents:
                    if self.state.zspages.slot(e) != RECORD_BLOB:
                        raise corrupt(f"the {name} blob's block {block} is not in a blob extent")
                    extents.append(e)
                block, piece = decode_blob_block(block, self.file.read(block), limit)
                data += piece
            if block != 0 or len(data) != ref.length:
                raise corrupt(f"the {name} blob's chain does not hold its {ref.length} bytes")
            self.blobs[name] = Blob(bytes(data), extents, ref)
            if name == "backing_dev":
                path = os.fsdecode(bytes(data))
                if not path.startswith("/") or "\0" in path:
                    raise corrupt("the backing_dev path in the image is not an absolute path")
                config.backing_dev = path
            else:
                config.params[int(name[4:])].dict_data = bytes(data)

    def _blob_values(self) -> dict[str, bytes | None]:
        """What each blob should hold now (None: nothing)."""
        c = self.zram.config
        out: dict[str, bytes | None] = {
            "backing_dev": os.fsencode(c.backing_dev) if c.backing_dev is not None else None
        }
        for p in range(ZRAM_MAX_COMPS):
            out[f"dict{p}"] = c.params[p].dict_data or None
        return out

    def _sync_blobs(self, blocks: dict[int, bytes | bytearray]) -> dict[str, Blob]:
        """Lay out the blobs that changed since the last commit (adding their blocks to ``blocks``),
        free the extents of those replaced; return the blobs the commit will hold."""
        st = self.state
        out: dict[str, Blob] = {}
        for name, want in self._blob_values().items():
            have = None if st.cleared else self.blobs.get(name)
            if have is not None and have.data == want:
                out[name] = have
                continue
            if have is not None:
                for e in have.extents:
                    st.zspages.set_slot(e, RECORD_FREE)
                    st.free_extent(e)
            if want is None:
                continue
            n = blob_blocks(len(want))
            extents = []
            for _ in range(-(-n // EXTENT_BLOCKS)):
                e = st.alloc_extent()
                st.zspages.set_slot(e, RECORD_BLOB)
                st.reserved.discard(e)
                extents.append(e)
            chain = [e * EXTENT_BLOCKS + i for e in extents for i in range(EXTENT_BLOCKS)][:n]
            blocks.update(encode_blob(chain, want))
            out[name] = Blob(want, extents, BlobRef(chain[0], len(want)))
        return out

    # --- version 1 -----------------------------------------------------------------

    def _convert(self) -> None:
        """A version 1 image opened for writing becomes version 2 in one commit.

        Every page-table leaf is rewritten with 16-byte entries (the whole table is read and
        held: a one-off O(device) cost); the metadata extents that held only the old table are
        freed.  A crash before the commit leaves the version 1 image as it was.
        """
        st = self.state
        table = st.table
        old: set[int] = set()
        entries = []
        for n, block in table.radix.leaves():
            old.add(block)
            leaf = table._leaf(n, False)
            assert leaf is not None
            base = n * table.per
            entries += [(base + i, e) for i, e in enumerate(leaf.entries) if e is not None]
        old |= {node.block for node in table.radix.nodes.values()}
        live = {block for _, block in st.zspages.radix.leaves()}
        live |= {node.block for node in st.zspages.radix.nodes.values()}
        live_extents = {b // EXTENT_BLOCKS for b in live}
        for e in sorted({b // EXTENT_BLOCKS for b in old} - live_extents - {st.meta_extent}):
            if st.zspages.slot(e) == RECORD_META:
                st.zspages.set_slot(e, RECORD_FREE)
                st.free_extent(e)
        h = st.header
        h.version = VERSION
        h.table_roots, h.table_depth, h.table_entries = [0] * ROOTS, 0, 0
        table.load(h)
        for index, entry in entries:
            table[index] = entry
        self.commit()

    def _classes(self) -> list[SizeClass]:
        pool = self.zram.pool
        return pool.classes if pool is not None else []

    @staticmethod
    def recover(fd: int, wal: int, crash: CrashPoints) -> bool:
        """Complete (or discard) an interrupted commit; the caller holds the exclusive lock.

        An interrupted commit's intent (io.Ahead) is undone only if it is for
        the commit after the header's txid; with a header that cannot be read,
        never (the open then fails on the header anyway).
        """
        try:
            txid = decode_header(BlockFile(fd, crash).read(0)).txid + 1
        except ZramError:
            txid = -1
        return recover(fd, wal, crash, txid)

    # --- commit -----------------------------------------------------------------

    def _new_header(self) -> Header:
        """The header describing the state in memory now."""
        z, st, pool = self.zram, self.state, self.zram.pool
        h = Header(txid=self.header.txid, config=z.config, stats=z.stats, image_id=self.header.image_id)
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

    def _changes(self) -> tuple[Header, dict[int, bytes | bytearray], list[int], dict[str, Blob]]:
        """(new header, changed blocks but the header's, blocks to punch, the blobs it holds)."""
        st = self.state
        blocks: dict[int, bytes | bytearray] = {}
        blobs = self._sync_blobs(blocks)
        st.settle()
        if st.reserved:
            detail = f"internal error: extents {sorted(st.reserved)} are half-allocated"
            raise ZramError(errno.EIO, "commit", detail)
        st.shrink()
        h = self._new_header()
        h.blobs = {name: blob.ref for name, blob in blobs.items()}
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
        return h, blocks, punch, blobs

    def commit(self, *, background: bool = False) -> None:
        """Write every change since the last commit, atomically (see io.py).

        Nothing changed: no I/O at all.  ENOSPC/EFBIG/EIO before the log's
        commit record leave the last commit intact and this handle unusable.
        A signal that arrives meanwhile is acted on once the commit is complete
        (interrupts.Deferred), so Ctrl-C never leaves a log for the next open to finish.

        ``background``: once the commit's blocks and operations are made, its I/O
        runs on a thread of its own (``Flight``) while the caller goes on changing
        the device: a long write stores its next pages meanwhile.  The file is read
        through the commit's blocks until it is done (``BlockFile.pending``).  The
        next ``commit`` (or ``land``) waits for it first and raises its failure;
        ``close`` waits for it too.  Where a backing file is involved, or after a
        reset, the commit is done at once all the same: their claims and syncs stay
        in step with the caller.
        """
        with Deferred(redeliver=True):
            self.land()
            plan = self._plan()
            if plan is None:
                return
            background = background and plan.dropped is None and not self._bdevs and not self.state.cleared
            if not background:
                self._carry_out(plan)
            self._committed(plan.header, plan.blocks)
            self.blobs = plan.blobs
            if background:
                self.file.pending = plan.blocks
                self._flight = Flight(self, plan)
                return
            for dev in self._bdevs:
                dev.committed()
            self._release_claims(plan.dropped)

    def land(self) -> None:
        """Wait for the commit running in the background, if one is; raise its failure (once).

        A commit that failed leaves the handle broken, and reads going through
        its blocks: they are what the device holds in memory."""
        flight = self._flight
        if flight is None:
            return
        flight.wait()
        self._flight = None
        if flight.error is not None:
            raise flight.error
        self.file.pending = {}

    def _plan(self) -> Plan | None:
        """The next commit, made ready: its header and blocks, and its I/O as operations (io.Op).
        None when nothing changed since the last commit."""
        if self.broken:
            raise ZramError(errno.EIO, "commit", self.broken)
        if not self.writable:
            raise ZramError(errno.EBADF, "commit", "the device is open read-only")
        st = self.state
        dropped = self.blobs.get("backing_dev")
        h, blocks, punch, blobs = self._changes()
        header = encode_header(h)
        if not blocks and not punch and not st.cleared and header == self._loaded[0]:
            return None
        h.txid += 1
        blocks[0] = encode_header(h)
        size = self.file.size()
        early = self._ahead()
        order = sorted(blocks)
        logged = [b for b in order if b not in early]  # written in place after the COMMIT record
        ahead_blocks = [b for b in order if b in early]
        records = [LogRecord(WAL_SHRINK, 0)] if st.cleared else []
        records += [LogRecord(WAL_BLOCK, b, blocks[b]) for b in logged]
        records += [LogRecord(WAL_PUNCH, b) for b in punch]
        records.append(LogRecord(WAL_SHRINK, st.extent_count * EXTENT_SIZE))
        ahead = Ahead(self.file, size, ahead_blocks, [blocks[b] for b in ahead_blocks])
        assert self.wal is not None
        reserved, before = self._preallocate(logged, size)
        before += log_ops(self.wal, h.txid, records, ahead)[0]
        after = [*apply_ops(self.file, records), clear_op(self.wal)]
        return Plan(h, blocks, blobs, dropped, before, after, size, early, reserved)

    def _carry_out(self, plan: Plan) -> None:
        """A commit's I/O: the backing files synced, then ``plan.before`` (up to the COMMIT
        record's fsync: a failure leaves the last commit intact, its reservations given back),
        then ``plan.after`` (in place: a failure leaves the commit for the next open to finish).
        Either failure is a ZramError, and leaves the handle broken."""
        try:
            for dev in self._bdevs:  # the pages the new page table points at are on disk first
                dev.sync()
            run_ops(plan.before, self.file.crash)
        except OSError as exc:
            self.broken = "an earlier commit failed; reopen the device"
            self._give_back(plan.reserved, plan.size, plan.early)
            assert self.wal is not None
            try:
                clear_log(self.wal, self.file.crash)
            except OSError:
                pass
            detail = "the last commit is intact; what came after it was not kept"
            raise io_error(exc, "commit", detail) from None
        try:
            run_ops(plan.after, self.file.crash)
        except OSError as exc:
            self.broken = "an earlier commit is unfinished; reopen the device"
            raise io_error(exc, "commit", "committed to the log; completed at the next open") from None

    def _ahead(self) -> set[int]:
        """The frames this commit writes in place before its COMMIT record, unlogged (io.Ahead).

        Those of the extents that hold nothing committed: allocated by this
        transaction (``fresh``) and not freed by it (an extent freed and
        reused may hold committed objects).  None after a reset in this
        transaction (the old file is still there until the log's SHRINK 0),
        and none when there are fewer than AHEAD_MIN_BLOCKS.  ``fresh`` only
        ever holds zspage extents: metadata extents are never in it.
        """
        st = self.state
        if st.cleared:
            return set()
        fresh = st.fresh - st.freed
        early = {b for b in st.frames.dirty if b // EXTENT_BLOCKS in fresh}
        return early if len(early) >= AHEAD_MIN_BLOCKS else set()

    def _preallocate(self, blocks: list[int], size: int) -> tuple[list[tuple[int, int]], list[Op]]:
        """(the holes about to be reserved, the operations that reserve the space of ``blocks``,
        those written in place after the COMMIT record): run before anything is committed.

        So ENOSPC and EFBIG (a file-size limit) come then, while the last commit
        is intact, and never while blocks are being written in place.  The blocks
        written ahead of the COMMIT record need no reservation: their own writes
        come while the last commit is intact, and a failure among them is undone
        like one of these (``_give_back``).  Reserving them too cost a
        fallocate(2) per zspage extent, some 10,000 for 256 MiB.  The holes
        of the committed file (``size`` bytes long) that the operations fill are
        listed (byte ranges), so that a failure can give exactly those back
        (``_give_back``); one not yet reserved when it failed is a hole still,
        and punching it again changes nothing.
        """
        reserved: list[tuple[int, int]] = []
        ops: list[Op] = []
        start = prev = -2
        for b in blocks + [-1]:
            if b == prev + 1:
                prev = b
                continue
            if start >= 0:
                lo, hi = start * BLOCK_SIZE, (prev + 1) * BLOCK_SIZE
                if lo < size:
                    reserved += hole_ranges(self.file.fd, lo, min(hi, size))
                ops.append(self.file.allocate_op(start, prev - start + 1))
            start = prev = b
        return reserved, ops

    def _give_back(self, reserved: list[tuple[int, int]], size: int, early: set[int]) -> None:
        """After a failed commit: free the space it reserved, so the device works once space returns.

        The committed file is ``size`` bytes long: what lies past it is cut off;
        the holes inside it that were reserved are punched again, and so are the
        blocks written ahead of the COMMIT record (``early``), as recovery would.
        None holds anything committed (a hole reads as zeros before and after).
        Done before the log is cleared, so a crash meanwhile is undone at the
        next open.  Best effort: the commit's own error is what the user is told.
        """
        try:
            if early:
                undo_ahead(self.file, size, block_runs(sorted(early), WAL_CHUNK))
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
        """Close the file (releasing the lock); uncommitted changes are dropped with it, and so is
        the claim of a backing file set and never committed.  A commit running in the
        background is waited for first; its failure, if nobody landed it, is dropped with the
        handle (the last commit before it is intact, or the log completes it at the next open)."""
        if self._flight is not None:
            with Deferred(redeliver=True):
                self._flight.wait()
            self._flight = None
        self._release_claims()
        for dev in self._bdevs:
            dev.shut()
        if self.wal is not None:
            wal, self.wal = self.wal, None
            os.close(wal)
        if self.file.fd >= 0:
            fd, self.file.fd = self.file.fd, -1
            os.close(fd)
