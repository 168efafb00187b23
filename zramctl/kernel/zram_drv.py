"""The zram driver model: a page table over zsmalloc, and the read/write/discard paths.

This is drivers/block/zram/zram_drv.c without the block layer: a device of
``disksize`` bytes is a table of PAGE_SIZE slots.  Writing a page either
stores it as a *same-filled* page (no memory: the repeated word is kept in the
slot), or compresses it and keeps the compressed bytes in a zsmalloc object,
or, when it does not compress well enough, keeps the raw page in a huge object.
Every counter the kernel exports is kept here under its kernel name.

A slot is an ``Entry``: ``(flags, handle, crc, ac_time)``.  ``flags`` holds the object
size in its low ZRAM_FLAG_SHIFT bits and the ZRAM_* flags above, as the
kernel's ``zram_table_entry.flags`` does; ``handle`` is the zsmalloc handle or,
for a same-filled page, the repeated word; ``crc`` is the CRC-32 of the stored
object, checked on every read so that corruption is an error, never data;
``ac_time`` is the kernel's ``zram_table_entry.ac_time``, in wall-clock seconds.
Unwritten slots are simply absent from the table.

A 6.18 device also post-processes its slots, as the kernel's CONFIG_ZRAM_WRITEBACK,
CONFIG_ZRAM_MULTI_COMP and CONFIG_ZRAM_TRACK_ENTRY_ACTIME do (docs/kernel-facts.md,
"Post-processing"): every read and write stamps ``ac_time`` and clears IDLE; ``mark_idle``
flags slots by age; ``writeback`` moves whole pages to a ``BackingDev`` (the slot keeps its
block number and the page's CRC); ``recompress`` re-encodes objects with the secondary
algorithms (the slot records the priority, so a read decompresses with the same one).

Everything here works in memory; an image (``image.py``) supplies file-backed
frames and tables through ``Backing`` and persists ``config``, ``stats`` and the
pool's counters.  Nothing here knows about files or the command line.

A device in memory gets the compiled pool (``compiled_pool.py``), and ``write`` and ``read``
hand it whole runs of pages: it does ``_store_page`` and ``_read_entry`` in C, step for step,
and hands back any page it cannot do (written back, a failed compression or decompression, a
checksum that fails), which then goes the Python way below, where its error is made.  An
image's device keeps the Python pool (its records and frames are the image's, checked as they
are used), and the compiled paths work over it a table leaf at a time: ``_read_leaves`` reads,
``_store_leaves`` stores the pages it can (into the head zspage of a class or a new one, the
slot's old object freed) and hands back the rest.  ``Zram(compiled=False)`` uses this file's
Python for every page.

Compression streams: a write's whole pages are compressed ahead of the thread that stores
them, in page order.  The kernel's own compressors (lzo, lzo-rle, lz4) run as native threads
(``Backend.stream_job``), even for one stream, so that compressing overlaps storing; the others
on Python threads (``_batches``), or where each page is stored for one stream.
"""

from __future__ import annotations

import errno
import heapq
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import TYPE_CHECKING, Protocol

from ..crc import crc32
from ..errors import CompressionError, ZramError, ZsCorrupt, ZsError
from ._zsmalloc import STORE_COUNTS, Listed, access_entries, list_entries, read_entries, store_entries
from .compiled_pool import DONE, FAILED, HANDBACK, NOMEM, CompiledPool, profile_bits
from .profiles import DEFAULT_PROFILE, PAGE_SHIFT, PAGE_SIZE, Profile, get_profile
from .zcomp import Backend, StreamJob, check_algorithm, get_backend, safe_decompress
from .zsmalloc import FrameStore, MemoryFrames, Pool, ReadZspage, ZsPage

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

# Low bits of Entry.flags: the object size (up to PAGE_SIZE, so 13 bits).
ZRAM_FLAG_SHIFT = PAGE_SHIFT + 1
ZRAM_SIZE_MASK = (1 << ZRAM_FLAG_SHIFT) - 1
# Slot flags, at the bits of the kernel's enum zram_pageflags (zram_drv.h, 6.18), which starts
# at ZRAM_FLAG_SHIFT.  ZRAM_ENTRY_LOCK (the bit after ZRAM_SAME) is a lock, which one thread
# does not need.  ZRAM_SAME is the 2013 driver's ZRAM_ZERO when the profile only knows zero pages.
ZRAM_SAME = 1 << ZRAM_FLAG_SHIFT
ZRAM_WB = 1 << (ZRAM_FLAG_SHIFT + 2)
"""Written back: the page lives in the backing device, ``handle`` is its block there."""
ZRAM_PP_SLOT = 1 << (ZRAM_FLAG_SHIFT + 3)
"""Chosen by a post-processing pass (writeback, recompress) that has not reached it yet."""
ZRAM_HUGE = 1 << (ZRAM_FLAG_SHIFT + 4)
ZRAM_IDLE = 1 << (ZRAM_FLAG_SHIFT + 5)
ZRAM_INCOMPRESSIBLE = 1 << (ZRAM_FLAG_SHIFT + 6)
"""Recompression tried every secondary algorithm and none made the object smaller."""
ZRAM_COMP_PRIORITY_SHIFT = ZRAM_FLAG_SHIFT + 7
ZRAM_COMP_PRIORITY_MASK = 0x3
"""Entry.flags >> ZRAM_COMP_PRIORITY_SHIFT & this: which compressor (0 primary, 1..3 the
recompression algorithms) made the object, so a read uses the same one to decompress."""
ZRAM_MAX_COMPS = 4
"""Compressors per device (CONFIG_ZRAM_MULTI_COMP): the primary and three secondaries."""
ZRAM_COMP_PRIORITY_BITS = ZRAM_COMP_PRIORITY_MASK << ZRAM_COMP_PRIORITY_SHIFT
ZRAM_ACCESS_CLEARS = ZRAM_IDLE | ZRAM_PP_SLOT
"""What zram_accessed() clears on every read and write of a slot (6.18)."""
ZRAM_FREE_CLEARS = ZRAM_IDLE | ZRAM_INCOMPRESSIBLE | ZRAM_PP_SLOT | ZRAM_COMP_PRIORITY_BITS

# writeback modes (writeback_store's parse_mode) and recompress modes, as the kernel's bits.
IDLE_WRITEBACK, HUGE_WRITEBACK, INCOMPRESSIBLE_WRITEBACK = 1, 2, 4
WRITEBACK_MODES = {
    "idle": IDLE_WRITEBACK,
    "huge": HUGE_WRITEBACK,
    "huge_idle": IDLE_WRITEBACK | HUGE_WRITEBACK,
    "incompressible": INCOMPRESSIBLE_WRITEBACK,
}
RECOMPRESS_IDLE, RECOMPRESS_HUGE = 1, 2
RECOMPRESS_MODES = {
    "idle": RECOMPRESS_IDLE,
    "huge": RECOMPRESS_HUGE,
    "huge_idle": RECOMPRESS_IDLE | RECOMPRESS_HUGE,
}
PP_BUCKET_SIZE_RANGE = 64
NUM_PP_BUCKETS = PAGE_SIZE // PP_BUCKET_SIZE_RANGE + 1
LIVE_LEVEL_ALGORITHMS = frozenset({"lz4", "lz4hc"})
"""Backends that read ``params->level`` at every compression (backend_lz4, backend_lz4hc): an
``algorithm_params`` level written while the device is up changes them at once (seen on this
machine's 6.18).  The others fixed theirs when the device was set up."""
"""Post-processing candidates are sorted into buckets of 64 bytes of object size (a HUGE
slot's 4096 is the last bucket): the largest objects are processed first."""

Entry = tuple[int, int, int, int]
"""(flags | object size, handle or fill word or backing block, CRC-32 of the stored bytes,
ac_time): ac_time is the last access in whole wall-clock seconds (the kernel's ac_time with
CONFIG_ZRAM_TRACK_ENTRY_ACTIME, which counts boot time), 0 when never set."""
Run = tuple[list[Entry | None] | None, int, int, int]
"""Pages of one table leaf that a read takes: (the leaf's entries, or None where none was ever
written; where the run starts in them; its first page, counted from the read's; its pages)."""

ZERO_PAGE = bytes(PAGE_SIZE)

# read() assembles pages in a scratch buffer kept between calls, up to this size
# (a 4 MiB read spans 1025 pages when unaligned).  Building each result in
# fresh memory instead costs a page fault per page once glibc has given the
# previous result back to the kernel, which halves read speed.
SCRATCH_MAX = 8 << 20

STREAM_BATCH = 256
"""Whole pages a Python compression stream compresses in one call (one GIL release), and the
most the storing thread takes from the streams at once.  A write of many pages is compressed
a batch at a time, ahead of the thread that stores the pages.  Large, because a Python stream
needs the GIL again at the end of each batch, and the storing thread gives it up only every
switch interval (5 ms): 32-page batches made -t 2 slower than -t 1, 256 (1 MiB) a little
faster (benchmarks/README.md).  The kernel's own compressors have native streams instead."""

NATIVE_BATCH = 32
"""Whole pages a native compression stream (a compiled compressor's ``Backend.stream_job``:
a thread that never takes the GIL) compresses per claim.  Small, because those streams never
wait for the GIL: when a write's buffer starts, the storing thread waits for one small batch,
not for a large one."""


def native_threads(streams: int) -> int:
    """The threads native streams compress on: ``streams``, but never more than the CPUs left
    beside the thread that stores the pages (at least one).  That thread is what a write waits
    for; a stream thread more than the CPUs takes CPU time from it: on this 2-CPU machine, two
    stream threads made a 256 MiB write 20-30% slower than one (benchmarks/README.md)."""
    return max(1, min(streams, usable_cpus() - 1))


def native_slots(streams: int) -> int:
    """The batches native streams may compress ahead of the storing thread: twice what it takes
    at once (STREAM_BATCH pages), and two more per stream, so that none idles while it stores."""
    return 2 * -(-STREAM_BATCH // NATIVE_BATCH) + 2 * streams


@dataclass
class AlgorithmParams:
    """One priority's ``algorithm_params`` (the kernel's zcomp_params): taken at the next init."""

    level: int | None = None
    """``level=``; None = the backend's default (the kernel's ZCOMP_PARAM_NOT_SET)."""
    dict_data: bytes | None = None
    """``dict=PATH``: the dictionary's bytes, read when the parameter is set (zstd, lz4, lz4hc)."""
    deflate_winbits: int | None = None
    """``deflate.winbits=``; None = the backend's default."""


@dataclass
class ZramConfig:
    """Settings: what the user chose (sysfs stores), kept across commands."""

    compat: str = DEFAULT_PROFILE
    disksize: int = 0
    """Bytes, page aligned; 0 = not initialised."""
    comp_algorithm: str = get_profile(DEFAULT_PROFILE).default_algorithm
    """A fresh device's is its profile's default (sysfs' compat store sets it again)."""
    limit_pages: int = 0
    """mem_limit in pages; 0 = no limit."""
    max_comp_streams: int = 0
    """Compression streams (``-t``); 0 = not set: the profile's default (Zram.comp_streams)."""
    # --- post-processing (6.18 only; a 3.11 device keeps every one at its default) ---
    backing_dev: str | None = None
    """backing_dev: the absolute path of the backing image file; None shows as ``none``."""
    writeback_limit: int = 0
    """writeback_limit, in 4 KiB units: what writeback may still write while the limit is enabled."""
    writeback_limit_enable: bool = False
    recomp_algorithms: list[str | None] = field(default_factory=lambda: [None] * (ZRAM_MAX_COMPS - 1))
    """recomp_algorithm: the secondary algorithms, priorities 1..3 (index 0 = priority 1); None = unset."""
    params: list[AlgorithmParams] = field(
        default_factory=lambda: [AlgorithmParams() for _ in range(ZRAM_MAX_COMPS)]
    )
    """algorithm_params per priority (0 = the primary): applied when the device is next set up."""


@dataclass
class ZramStats:
    """zram->stats, by kernel name.  All zero after reset."""

    pages_stored: int = 0
    compr_data_size: int = 0
    """Bytes of compressed data held (object payloads, not slots)."""
    same_pages: int = 0
    """Same-filled pages (the 2013 driver's pages_zero)."""
    huge_pages: int = 0
    huge_pages_since: int = 0
    failed_reads: int = 0
    failed_writes: int = 0
    invalid_io: int = 0
    notify_free: int = 0
    miss_free: int = 0
    num_reads: int = 0
    """Page-sized read requests."""
    num_writes: int = 0
    """Page-sized write requests."""
    max_used_pages: int = 0
    good_compress: int = 0
    """2013: pages that compressed to half a page or less."""
    bad_compress: int = 0
    """2013: pages stored raw because they compressed to more than 3/4 of a page."""
    bd_count: int = 0
    """Pages held in the backing device (bd_stat field 1, shown in 4 KiB units)."""
    bd_reads: int = 0
    """Pages read back from the backing device."""
    bd_writes: int = 0
    """Pages written to the backing device."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask): a 6.18 device's default stream count,
    as the kernel has one stream per online CPU.  Asked each time: the mask can change."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - no affinity call on this system
        return os.cpu_count() or 1


def wall_clock() -> int:
    """Whole wall-clock seconds: a slot's ac_time, and the ``idle`` age's reference."""
    return int(time.time())


class BackingDev(Protocol):
    """The device ``writeback`` moves pages to: numbered PAGE_SIZE blocks (the kernel's bdev).

    Block 0 is never used (the kernel's bitmap search starts at 1), so a written-back slot's
    handle is never 0.  Which blocks are free is the backing device's business: an image's
    must not hand out a block that its last commit still uses.
    """

    @property
    def path(self) -> str:
        """What ``backing_dev`` shows: the absolute path of the backing file."""
        ...

    @property
    def nr_pages(self) -> int:
        """Blocks in the backing device, block 0 included."""
        ...

    def alloc_block(self) -> int | None:
        """The lowest free block (>= 1), now in use; None when the device is full."""
        ...

    def free_block(self, blk: int) -> None:
        """Give back a block ``alloc_block`` gave out."""
        ...

    def write_block(self, blk: int, page: bytes) -> None: ...

    def read_block(self, blk: int) -> bytes:
        """The PAGE_SIZE bytes of block ``blk`` (OSError on failure)."""
        ...


@dataclass
class Backing:
    """Where a device's state lives: in memory by default, in an image file otherwise.

    ``open_bdev`` and ``read_file`` are how the model reaches files, which it knows nothing
    of: the store supplies them (``backing_dev=PATH``, ``algorithm_params dict=PATH``).
    """

    frames: FrameStore = field(default_factory=MemoryFrames)
    table: MutableMapping[int, Entry] = field(default_factory=dict)
    zspages: MutableMapping[int, ZsPage] = field(default_factory=dict)
    open_bdev: Callable[[str], BackingDev] | None = None
    """Open the backing file at a path (ZramError with the kernel's errno when it cannot be used)."""
    read_file: Callable[[str], bytes] | None = None
    """Read a whole file (a compression dictionary)."""


class MemoryBackingDev:
    """A BackingDev in memory, for tests and library use: ``nr_pages`` blocks, block 0 unused.

    Allocation is the kernel's bitmap search, lowest free block first: freed blocks (all
    below ``_next``) wait in a heap, and every block from ``_next`` up is free.
    """

    def __init__(self, nr_pages: int, path: str = "/dev/zram-memory-backing") -> None:
        self._path = path
        self._nr_pages = nr_pages
        self._next = 1
        self._freed: list[int] = []
        self.blocks: dict[int, bytes] = {}
        """Block -> the page last written to it."""
        self.closed = False

    @property
    def path(self) -> str:
        return self._path

    @property
    def nr_pages(self) -> int:
        return self._nr_pages

    @property
    def used(self) -> int:
        """Blocks given out and not yet freed."""
        return self._next - 1 - len(self._freed)

    def alloc_block(self) -> int | None:
        if self._freed:
            return heapq.heappop(self._freed)
        if self._next >= self._nr_pages:
            return None
        self._next += 1
        return self._next - 1

    def free_block(self, blk: int) -> None:
        if not 1 <= blk < self._next or blk in self._freed:
            raise ValueError(f"block {blk} is not in use")
        self.blocks.pop(blk, None)
        heapq.heappush(self._freed, blk)

    def write_block(self, blk: int, page: bytes) -> None:
        if len(page) != PAGE_SIZE:
            raise ValueError("a backing block is one page")
        self.blocks[blk] = bytes(page)

    def read_block(self, blk: int) -> bytes:
        try:
            return self.blocks[blk]
        except KeyError:
            raise OSError(errno.EIO, f"block {blk} was never written") from None

    def close(self) -> None:
        self.closed = True


class PPControl:
    """The kernel's zram_pp_ctl: slots chosen by a post-processing scan, in size buckets.

    ``place`` is place_pp_slot() (the caller sets ZRAM_PP_SLOT); ``select`` yields what
    select_pp_slot() would take in turn: the highest non-empty bucket first, and in a bucket
    the slot placed last first (list_add at the head, taken from the head).  A slot may be
    placed twice (two scans over it); the second time it is met, it has lost PP_SLOT.
    """

    def __init__(self) -> None:
        self.buckets: list[list[int]] = [[] for _ in range(NUM_PP_BUCKETS)]
        self.placed: set[int] = set()

    def place(self, index: int, size: int) -> None:
        self.buckets[size // PP_BUCKET_SIZE_RANGE].append(index)
        self.placed.add(index)

    def select(self) -> Iterator[int]:
        for bucket in reversed(self.buckets):
            while bucket:
                yield bucket.pop()


def mem_limit_reached() -> ZramError:
    """zram_write_page()'s failure when zram_can_store_page() says no (6.18: mem_limit)."""
    return ZramError(errno.ENOMEM, "write", "mem_limit reached")


def is_same_filled(page: bytes) -> bool:
    """page_same_filled(): the page is one 8-byte word repeated (first == last word checked first)."""
    return page[:8] == page[-8:] and page[8:] == page[:-8]


def _kept_threads(
    kept: tuple[int, ThreadPoolExecutor] | None, count: int, name: str
) -> tuple[int, ThreadPoolExecutor]:
    """``kept`` if it has ``count`` threads, else a pool of ``count`` threads named ``name``
    (``kept``'s are let go): the streams and the readers of a device each keep one."""
    if kept is not None and kept[0] == count:
        return kept
    from concurrent.futures import ThreadPoolExecutor

    if kept is not None:
        kept[1].shutdown(wait=False)
    return count, ThreadPoolExecutor(count, thread_name_prefix=name)


def _taken(job: StreamJob) -> Iterator[bytes]:
    """A native stream job's results, page by page."""
    while batch := job.take():
        yield from batch


StoreRun = tuple[int, int, Exception | None]
"""What a compiled store path did with a run of pages: (pages stored, DONE or why it stopped
before the next: HANDBACK, NOMEM, or FAILED with the allocator's exception)."""


class Lookahead:
    """The whole pages of a buffer, compressed ahead by the compression streams, in page order.

    ``Zram.compress_ahead`` makes one over a buffer about to be written (perhaps by several
    ``write`` calls, as store.DeviceHandle writes a chunk a piece at a time, so that the
    streams keep working across the pieces); ``take(index)`` gives page ``index``'s result
    (its compressed bytes, or the compressor's failure), or None when it has none (then the
    page is compressed where it is stored).  ``close`` waits for the batches still running:
    until then the buffer must not change.
    """

    def __init__(
        self, first: int, results: Iterator[bytes | Exception] | None, job: StreamJob | None = None
    ) -> None:
        self._next = first
        self._results = results
        self._job = job
        """The native streams ``results`` come from, if any: closed with it."""

    def take(self, index: int) -> bytes | Exception | None:
        results = self._results
        if results is None or index < self._next:
            return None
        try:
            while self._next < index:  # pages skipped (never, for a caller in page order)
                next(results)
                self._next += 1
            self._next += 1
            return next(results)
        except StopIteration:
            self._results = None
            return None

    def take_run(self, index: int, count: int) -> list[bytes | Exception | None]:
        """``take`` for pages ``index .. index + count - 1``, in one list."""
        first = self.take(index) if count else None
        if first is None:
            return [None] * count
        run = [first, *islice(self._results or (), count - 1)]  # type: ignore[arg-type]
        self._next += len(run) - 1
        if len(run) < count:
            self._results = None
            run += [None] * (count - len(run))
        return run

    def close(self) -> None:
        if self._results is not None:
            results, self._results = self._results, None
            results.close()  # type: ignore[attr-defined]
        if self._job is not None:
            self._job.close()  # the streams stopped and joined: nothing reads the buffer now

    def __enter__(self) -> Lookahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Zram:
    """One zram device."""

    def __init__(
        self,
        config: ZramConfig | None = None,
        stats: ZramStats | None = None,
        backing: Backing | None = None,
        *,
        compiled: bool = True,
    ) -> None:
        self.config = config if config is not None else ZramConfig()
        self.stats = stats if stats is not None else ZramStats()
        self.backing = backing if backing is not None else Backing()
        self.compiled = compiled
        """Whether the compiled paths run: a pool in memory is the compiled one (compiled_pool.py),
        and a write into an image's pool (always the Python reference) stores what it can through
        ``_store_leaves``.  False: this file's Python for every page (tests compare the two)."""
        self._looked: dict[int, ZsPage] = {}
        """The zspage records ``_store_leaves`` has looked up, kept through one write() for as long
        as only it stores (emptied whenever a page is stored the Python way)."""
        self.pool: Pool | CompiledPool | None = None
        self._backend: Backend | None = None
        self._profile: Profile | None = None
        self._scratch: list[bytearray] = []
        """read()'s spare buffers; list.pop/append keep them per thread."""
        self.bdev: BackingDev | None = None
        """The backing device ``writeback`` writes to (``backing_dev``): set by the backing_dev
        store through Backing.open_bdev, or by whoever opens a device that records one."""
        self.clock: Callable[[], int] = wall_clock
        """Now, in whole seconds: ac_time and the ``idle`` cutoff (tests inject their own)."""
        self._now = 0
        """The clock, read once per write() call: what the slots that call writes get as ac_time."""
        self._comps: dict[int, Backend] = {}
        """The secondary compressors (priorities 1..3) made so far from recomp_algorithms."""
        self._streams: tuple[int, ThreadPoolExecutor] | None = None
        """The compression streams' threads (``comp_streams`` > 1), made at the first write."""
        self._readers: tuple[int, ThreadPoolExecutor] | None = None
        """The threads that decode an image's leaves at once (``_read_leaves``)."""
        self._ahead: tuple[bytes, bytes | Exception] | None = None
        """The next page write() stores and its compression, done ahead by a stream (or the
        compressor's failure); _store_page takes it for that very page, and only once."""
        if self.config.disksize:
            self._create_pool()

    # --- state -----------------------------------------------------------

    @property
    def profile(self) -> Profile:
        prof = self._profile
        if prof is None or prof.name != self.config.compat:
            prof = self._profile = get_profile(self.config.compat)
        return prof

    @property
    def comp_streams(self) -> int:
        """The compression streams a write uses (what ``max_comp_streams`` shows): ``-t``'s
        number if set, else one per usable CPU (6.18) or one (3.11).  Results never depend on it."""
        n = self.config.max_comp_streams
        if n > 0:
            return n
        return usable_cpus() if self.profile.per_cpu_streams else 1

    @property
    def initialized(self) -> bool:
        return self.config.disksize != 0

    @property
    def reads_change(self) -> bool:
        """Whether a read changes the device: 6.18's zram_accessed sets each page's ac_time and
        clears its IDLE mark; 3.11 has neither."""
        return self.profile.post_processing

    @property
    def table(self) -> MutableMapping[int, Entry]:
        return self.backing.table

    @property
    def backend(self) -> Backend:
        """comps[0]: the primary compressor, with params[0]."""
        if self._backend is None:
            self._backend = self._make_backend(0)
        return self._backend

    def _algorithm(self, prio: int) -> str | None:
        """comp_algs[prio]: the primary's name, or recomp_algorithms' (None when unset)."""
        return self.config.comp_algorithm if prio == 0 else self.config.recomp_algorithms[prio - 1]

    def _make_backend(self, prio: int) -> Backend:
        """zcomp_create(comp_algs[prio], &params[prio]) (CompressionError for a refused parameter)."""
        name = self._algorithm(prio)
        if name is None:
            raise CompressionError(errno.EINVAL, f"no algorithm at priority {prio}")
        params = self.config.params[prio]
        return get_backend(name, params.level, dict_data=params.dict_data, winbits=params.deflate_winbits)

    def comp(self, prio: int) -> Backend:
        """comps[prio]: the compressor of priority ``prio`` (0 primary, 1..3 secondaries).

        ZramError(EIO) when no usable algorithm is configured there (an object that names a
        priority without one can only come from a damaged image)."""
        if prio == 0:
            return self.backend
        backend = self._comps.get(prio)
        if backend is None:
            try:
                backend = self._comps[prio] = self._make_backend(prio)
            except CompressionError as exc:
                raise ZramError(errno.EIO, "read", f"priority {prio}: {exc}") from None
        return backend

    def set_params(self, prio: int, params: AlgorithmParams) -> None:
        """What ``algorithm_params`` does to priority ``prio`` (comp_params_store).

        Not set up: the parameters replace that priority's, for the next disksize.  Set up: 6.18
        refuses nothing, and the comps keep what they were created with, except that lz4 and
        lz4hc read the level at every compression (LIVE_LEVEL_ALGORITHMS): their level changes
        at once.  Nothing else is kept: only reset leads to a next disksize, and reset forgets
        every parameter; so the config always holds what the running comps use, and a
        dictionary or window that old objects need is never replaced under them.
        """
        if not self.initialized:
            self.config.params[prio] = params
        elif self._algorithm(prio) in LIVE_LEVEL_ALGORITHMS:
            self.config.params[prio].level = params.level
            if prio:
                self._comps.pop(prio, None)
            else:
                self._backend = None

    @property
    def num_active_comps(self) -> int:
        """The primary and every secondary algorithm set (the kernel's num_active_comps)."""
        return 1 + sum(name is not None for name in self.config.recomp_algorithms)

    def mem_used_pages(self) -> int:
        return self.pool.zs_get_total_pages() if self.pool else 0

    # The device's figures, each computed here only: sysfs (mm_stat and the pre-4.1 files),
    # the report, the progress bar and the tests read these.

    @property
    def orig_data_size(self) -> int:
        """DATA: the uncompressed bytes stored, pages_stored * PAGE_SIZE (mm_stat field 1).

        6.18 counts same-filled pages in pages_stored; 3.11 does not count its zero pages.
        """
        return self.stats.pages_stored << PAGE_SHIFT

    @property
    def mem_used_total(self) -> int:
        """TOTAL: the bytes of every page the allocator holds, metadata and fragmentation included."""
        return self.mem_used_pages() << PAGE_SHIFT

    @property
    def compression_ratio(self) -> float | None:
        """DATA/TOTAL, util-linux's COMP-RATIO; None while the allocator holds no page (TOTAL 0)."""
        total = self.mem_used_total
        return self.orig_data_size / total if total else None

    def _create_pool(self) -> None:
        in_memory = isinstance(self.backing.frames, MemoryFrames) and type(self.backing.table) is dict
        if self.compiled and in_memory:
            self.pool = CompiledPool(self.profile, relocate=self._relocate)
            return
        self.pool = Pool(
            self.profile,
            self.backing.frames,
            self.backing.zspages,
            relocate=self._relocate,
            owner_handle=self._owner_handle,
            untrusted=not isinstance(self.backing.frames, MemoryFrames),
        )

    def _owner_handle(self, index: int) -> int | None:
        """The handle page ``index``'s entry holds; None if it holds no object (or is no page)."""
        if not 0 <= index < self.config.disksize >> PAGE_SHIFT:
            return None
        entry = self.table.get(index)
        if entry is None or entry[0] & (ZRAM_SAME | ZRAM_WB):
            return None
        return entry[1]

    def _damaged(
        self, what: str, exc: ZsError, index: int | None = None, *, midway: bool = False
    ) -> ZramError:
        """The allocator found its bytes damaged: EUCLEAN in words.

        ``midway``: the operation had already changed something, so nothing of
        the state in memory may be committed (the frames are poisoned).
        """
        if midway or getattr(exc, "midway", False):
            self.backing.frames.poison(f"{what} stopped midway on a damaged image")
        where = f"page {index}: " if index is not None else ""
        return ZramError(errno.EUCLEAN, what, f"{where}{exc}; run zramctl check")

    def _relocate(self, owner: int, handle: int) -> None:
        """Compaction moved page ``owner``'s object: point its slot at the new handle."""
        flags, _, crc, ac_time = self.table[owner]
        self.table[owner] = (flags, handle, crc, ac_time)

    # --- init and reset (disksize_store, zram_reset_device) ---------------

    def init(self, disksize: int) -> None:
        """Set the size and create the pool; the page table starts empty."""
        if disksize <= 0:
            raise ZramError(errno.EINVAL, "disksize")
        if self.initialized:
            raise ZramError(errno.EBUSY, "disksize")
        check_algorithm(self.config.comp_algorithm)
        # A parameter a backend refuses fails here, as zcomp_create does, never at a write;
        # then zram_destroy_comps forgets the secondary algorithms and every priority's params.
        comps: dict[int, Backend] = {}
        try:
            for prio in range(ZRAM_MAX_COMPS):
                if self._algorithm(prio) is not None:
                    comps[prio] = self._make_backend(prio)
        except CompressionError as exc:
            if self.profile.post_processing:
                self.config.recomp_algorithms = ZramConfig().recomp_algorithms
                self.config.params = ZramConfig().params
            raise ZramError(exc.errno, "disksize", str(exc)) from None
        self.config.disksize = -(-disksize // PAGE_SIZE) * PAGE_SIZE
        self._backend = comps[0]
        self._comps = {prio: b for prio, b in comps.items() if prio}
        self._create_pool()

    KEPT_BY_RESET = ("max_comp_streams", "writeback_limit", "writeback_limit_enable")
    """Settings reset keeps: the stream count (ours), and the writeback budget, which lives in
    struct zram, not in the stats zram_reset_device zeroes (whatever zram.rst says)."""

    def reset(self) -> None:
        """zram_reset_device(): free everything, zero every counter, forget the settings
        (but KEPT_BY_RESET), drop the algorithm params and close the backing device.

        Written-back blocks are not freed one by one: the backing device is let go whole."""
        if self.pool is not None:
            self.pool.destroy()
        self.table.clear()
        self.backing.frames.clear()
        self.pool = None
        self._backend = None
        self._comps = {}
        for f in fields(ZramStats):
            setattr(self.stats, f.name, 0)
        fresh = ZramConfig()
        for f in fields(ZramConfig):
            if f.name not in self.KEPT_BY_RESET:
                setattr(self.config, f.name, getattr(fresh, f.name))
        bdev, self.bdev = self.bdev, None
        close = getattr(bdev, "close", None)
        if close is not None:
            close()

    # --- the slot paths -------------------------------------------------

    def _free_page(self, index: int, what: str = "write") -> None:
        """zram_free_page(): drop a slot's object (if any) and its counts.

        The allocator checks the handle before it changes anything, so a
        damaged one fails here with nothing changed.
        """
        entry = self.table.get(index)
        if entry is None:
            return
        flags, handle, _, _ = entry
        st = self.stats
        if flags & ZRAM_WB:  # free_block_bdev(): the page leaves the backing device
            self.table.pop(index)
            if self.bdev is not None:
                self.bdev.free_block(handle)
            st.bd_count -= 1
            st.pages_stored -= 1
            return
        if not flags & ZRAM_SAME:
            assert self.pool is not None
            try:
                self.pool.zs_free(handle)
            except ZsCorrupt as exc:
                raise self._damaged(what, exc, index) from None
        self.table.pop(index)
        prof = self.profile
        if flags & ZRAM_SAME:
            st.same_pages -= 1
            if prof.same_counts_stored:
                st.pages_stored -= 1
            return
        size = flags & ZRAM_SIZE_MASK
        if flags & ZRAM_HUGE:
            st.huge_pages -= 1
        if not prof.huge_by_class:
            if size > prof.max_zpage_size:
                st.bad_compress -= 1
            if size <= PAGE_SIZE // 2:
                st.good_compress -= 1
        st.compr_data_size -= size
        st.pages_stored -= 1

    def _write_same(self, index: int, word: int) -> None:
        self._free_page(index)
        self.table[index] = (ZRAM_SAME, word, 0, self._now)
        self.stats.same_pages += 1
        if self.profile.same_counts_stored:
            self.stats.pages_stored += 1

    def _write_page(self, index: int, page: bytes) -> None:
        """zram_write_page() / 2013 zram_bvec_write() for one whole page.

        The allocator's checks come before it changes anything and are worded
        in ``_store_page``; damage found anywhere later (which those checks
        should make impossible) leaves the page half-stored, so it poisons.
        """
        try:
            self._store_page(index, page)
        except ZsCorrupt as exc:
            raise self._damaged("write", exc, index, midway=True) from None

    def _store_page(self, index: int, page: bytes) -> None:
        ahead, self._ahead = self._ahead, None
        comp = ahead[1] if ahead is not None and ahead[0] is page else None
        prof = self.profile
        st = self.stats
        pool = self.pool
        assert pool is not None
        if prof.same_word:
            if is_same_filled(page):
                self._write_same(index, int.from_bytes(page[:8], "little"))
                return
        elif page == ZERO_PAGE:
            self._write_same(index, 0)
            return
        # The old entry, looked up once: a page never written (every page of a fresh device)
        # has nothing to free, and _free_page need not look for it again.
        table = self.backing.table
        old = table.get(index)
        if old is None:
            pass
        elif prof.free_old_first:
            self._free_page(index)
        elif pool.untrusted:  # the old object is freed after the new one is stored: check it now
            if not old[0] & (ZRAM_SAME | ZRAM_WB):
                try:
                    pool.check_handle(old[1], old[0] & ZRAM_SIZE_MASK)
                except ZsCorrupt as exc:
                    raise self._damaged("write", exc, index) from None
        if comp is None:
            try:
                comp = self.backend.compress(page)
            except Exception as exc:
                comp = exc
        if isinstance(comp, Exception):
            raise ZramError(errno.EIO, "write", f"compression failed: {comp}") from None
        clen = len(comp)
        flags = 0
        if prof.huge_by_class:
            if clen >= pool.huge_class_size:
                comp, clen, flags = page, PAGE_SIZE, ZRAM_HUGE
        elif clen > prof.max_zpage_size:
            comp, clen = page, PAGE_SIZE
        try:
            handle = pool.zs_malloc(clen, index)
        except ZsError as exc:  # checked before it changed anything; but the old page may be freed
            raise self._store_failed(exc, index, midway=prof.free_old_first) from None
        if prof.mem_limit:  # zram_can_store_page()
            alloced = pool.pages_allocated  # zs_get_total_pages()
            if alloced > st.max_used_pages:
                st.max_used_pages = alloced
            limit = self.config.limit_pages
            if limit and alloced > limit:
                pool.zs_free(handle)
                raise mem_limit_reached()
        pool.zs_obj_write(handle, comp)
        if old is not None and not prof.free_old_first:
            self._free_page(index)
        table[index] = (flags | clen, handle, crc32(comp), self._now)
        st.pages_stored += 1
        st.compr_data_size += clen
        if flags & ZRAM_HUGE:
            st.huge_pages += 1
            st.huge_pages_since += 1
        if not prof.huge_by_class:
            if clen > prof.max_zpage_size:
                st.bad_compress += 1
            if clen <= PAGE_SIZE // 2:
                st.good_compress += 1

    def _store_failed(self, exc: Exception, index: int, *, midway: bool) -> Exception:
        """What a write raises when storing page ``index`` fails in zs_malloc (or, on the compiled
        path, in the old slot's ``_free_page``): damage (EUCLEAN; ``midway``, the state was
        already changed: poisoned), or the allocator's errno, or ``exc`` itself."""
        if isinstance(exc, ZsCorrupt):
            return self._damaged("write", exc, index, midway=midway)
        if isinstance(exc, ZsError):
            return ZramError(exc.errno, "write")
        return exc

    def _read_page(self, index: int) -> bytes:
        """zram_read_page(): the page's bytes, or ZramError(EIO) if they cannot be trusted."""
        return self._read_entry(index, self.table.get(index))

    def _read_entry(self, index: int, entry: Entry | None) -> bytes:
        """_read_page for a slot already looked up (read() needs the entry again to mark it accessed)."""
        if entry is None:
            return ZERO_PAGE
        flags, handle, crc, _ = entry
        if flags & ZRAM_SAME:
            return handle.to_bytes(8, "little") * (PAGE_SIZE // 8)
        try:
            if flags & ZRAM_WB:
                return self._read_from_bdev(index, handle, crc)
            return self._object_page(index, flags, handle, crc)
        except ZsCorrupt as exc:
            self.stats.failed_reads += 1
            raise self._damaged("read", exc, index) from None
        except ZramError:
            self.stats.failed_reads += 1
            raise

    def _object_page(self, index: int, flags: int, handle: int, crc: int, what: str = "read") -> bytes:
        """zram_read_from_zspool(): the page an object holds, decompressed by the compressor of
        the slot's priority; ZsCorrupt or ZramError(EIO), and no counter changes."""
        size = flags & ZRAM_SIZE_MASK
        assert self.pool is not None
        data = self.pool.zs_obj_read(handle, size)
        if crc32(data) != crc:
            raise ZramError(errno.EIO, what, f"page {index}: stored object fails its checksum")
        if size == PAGE_SIZE:
            return data
        prio = flags >> ZRAM_COMP_PRIORITY_SHIFT & ZRAM_COMP_PRIORITY_MASK
        try:
            return safe_decompress(self.comp(prio) if prio else self.backend, data)
        except CompressionError as exc:
            raise ZramError(errno.EIO, what, f"page {index}: {exc}") from None

    def _read_from_bdev(self, index: int, blk: int, crc: int) -> bytes:
        """read_from_bdev(): a written-back page, from its block (bd_reads counts the attempt)."""
        self.stats.bd_reads += 1
        if self.bdev is None:
            raise ZramError(errno.EIO, "read", f"page {index} is written back, and no backing device is open")
        try:
            page = self.bdev.read_block(blk)
        except OSError as exc:
            code = exc.errno or errno.EIO
            raise ZramError(code, "read", f"page {index}: backing block {blk}: {exc}") from None
        if len(page) != PAGE_SIZE or crc32(page) != crc:
            raise ZramError(errno.EIO, "read", f"page {index}: backing block {blk} fails its checksum")
        return page

    # --- byte-range I/O ---------------------------------------------------

    def check_range(self, offset: int, length: int, what: str) -> None:
        """EINVAL (ENOSPC for a write) unless ``[offset, offset + length)`` lies within the device."""
        if offset < 0 or length < 0:
            raise ZramError(errno.EINVAL, what)
        code = errno.ENOSPC if what == "write" else errno.EINVAL
        if not self.initialized:
            raise ZramError(code, what, "the device is not set up (disksize 0)")
        if offset + length > self.config.disksize:
            raise ZramError(
                code,
                what,
                f"{offset + length} bytes is past the end of the device ({self.config.disksize} bytes)",
            )

    def write(
        self,
        offset: int,
        data: bytes | bytearray | memoryview,
        *,
        checked: bool = False,
        ahead: Lookahead | None = None,
    ) -> int:
        """Write ``data`` at byte ``offset``; partial pages are read, merged and rewritten.

        All of it is checked against disksize first (ENOSPC, nothing written),
        unless ``checked``: the caller checked a whole transfer once (store.DeviceHandle).
        A page that fails (compression, allocation, mem_limit) counts in
        failed_writes and stops the write: ZramError.done says how many bytes
        before it were stored; nothing stored before is lost.

        ``ahead``: a ``compress_ahead`` over a buffer that holds ``data`` (the caller closes
        it); without it, the whole pages of ``data`` are compressed ahead here.
        """
        data = memoryview(data).cast("B")
        if not checked:
            self.check_range(offset, len(data), "write")
        pos, end = 0, len(data)
        st = self.stats
        write_page = self._write_page
        # zram_accessed(): every page this call writes gets the same ac_time (one clock read);
        # the entry _store_page builds carries it, with IDLE and PP_SLOT clear.
        self._now = self.clock() if self.profile.post_processing else 0
        # The whole pages are compressed ahead, by the streams, in page order; each is stored
        # in turn exactly as if it had been compressed there (a failure included).
        own = ahead is None
        if ahead is None:
            ahead = self.compress_ahead(offset, data)
        store_run = self._compiled_store()
        batch: list[bytes | Exception | None] = []  # the compiled path's stream batch of results,
        batch_at = 0  # and the page of its first
        try:
            while pos < end:
                index, in_page = divmod(offset + pos, PAGE_SIZE)
                n = min(PAGE_SIZE - in_page, end - pos)
                try:
                    if store_run is not None and n == PAGE_SIZE:
                        # The compiled store path takes every whole page it can of a stream batch
                        # of results (taken a batch at a time, so that the streams compress the
                        # next while it stores); the first it hands back goes the Python way
                        # below, with its compression, and the path goes on with the batch's rest.
                        k = index - batch_at
                        if not 0 <= k < len(batch):
                            count = min((end - pos) // PAGE_SIZE, STREAM_BATCH)
                            batch, batch_at, k = ahead.take_run(index, count), index, 0
                        comps = batch[k:] if k else batch
                        pages = data[pos : pos + len(comps) * PAGE_SIZE]
                        done, stop, failure = store_run(index, pages, comps)
                        st.num_writes += done
                        pos += done * PAGE_SIZE
                        if stop == DONE:
                            continue
                        st.num_writes += 1
                        if stop == NOMEM:
                            raise mem_limit_reached()
                        if stop == FAILED:
                            assert failure is not None
                            raise self._store_failed(failure, index + done, midway=True) from None
                        page = data[pos : pos + PAGE_SIZE].tobytes()
                        if comps[done] is not None:
                            self._ahead = (page, comps[done])
                        self._looked.clear()  # (the Python way may free or make a zspage)
                        write_page(index + done, page)
                        pos += PAGE_SIZE
                        continue
                    if n == PAGE_SIZE:
                        # The reference pool's whole pages, a stream batch of results taken at a
                        # time; pos moves past each page only once it is stored (exc.done).
                        count = min((end - pos) // PAGE_SIZE, STREAM_BATCH)
                        for comp in ahead.take_run(index, count):
                            page = data[pos : pos + PAGE_SIZE].tobytes()
                            st.num_writes += 1
                            if comp is not None:
                                self._ahead = (page, comp)
                            write_page(index, page)
                            index += 1
                            pos += PAGE_SIZE
                        continue
                    old = self._read_page(index)
                    page = old[:in_page] + data[pos : pos + n].tobytes() + old[in_page + n :]
                    st.num_writes += 1
                    self._looked.clear()
                    write_page(index, page)
                except ZramError as exc:
                    self.stats.failed_writes += 1
                    exc.done = pos
                    raise
                pos += n
        finally:
            self._ahead = None
            self._looked.clear()
            if own:
                ahead.close()
        return pos

    def _compiled_store(self) -> Callable[[int, memoryview, list[bytes | Exception | None]], StoreRun] | None:
        """The compiled store path for this device's pool, or None (every page the Python way):
        the compiled pool's own (``_store_run``), else, for the Python pool of a table kept in
        leaves whose frames are lent in place (an image's), ``_store_leaves``."""
        pool = self.pool
        if isinstance(pool, CompiledPool):
            return self._store_run
        leaves = getattr(self.table, "run", None) is not None and hasattr(self.table, "touched")
        if self.compiled and leaves and getattr(pool.frames, "in_place", None) is not None:
            return self._store_leaves
        return None

    def _store_run(self, index: int, pages: memoryview, comps: list[bytes | Exception | None]) -> StoreRun:
        """_store_page for whole pages from ``index`` on, by the compiled pool: (pages stored,
        why it stopped).  It stops before a page it hands back, or after one mem_limit refused."""
        pool = self.pool
        assert isinstance(pool, CompiledPool)
        st = self.stats
        done, stop, stored, compr, huge, huge_since, bad, good, same, max_used = pool.c.store_pages(
            self.table, index, pages, comps, pool.profile_bits, self.profile.max_zpage_size,
            pool.huge_class_size, self.config.limit_pages, st.max_used_pages, self._now,
        )
        st.pages_stored += stored
        st.compr_data_size += compr
        st.huge_pages += huge
        st.huge_pages_since += huge_since
        st.bad_compress += bad
        st.good_compress += good
        st.same_pages += same
        st.max_used_pages = max_used
        return done, stop, None

    def _store_leaves(self, index: int, pages: memoryview, comps: list[bytes | Exception | None]) -> StoreRun:
        """_store_page for whole pages from ``index`` on, by the compiled store path over the
        Python pool and a table kept in leaves (an image's): each leaf's free slots are filled
        where they lie in its list of entries (``_zsmalloc.store_entries``), as far as the path
        goes; (pages stored, DONE, HANDBACK for the page after them, or FAILED with why).

        It stores a page only where what it needs is in memory: into the zspage heading its
        class's fullest list (checked) or a new one, a slot's old object freed by ``_free_page``
        itself.  Pages written back, huge, or that meet anything to check or refuse are handed
        back to ``_store_page``; the counters and the image cannot tell which path stored a
        page.  An exception from the path (not a page's doing) leaves the state half-changed:
        poisoned."""
        pool = self.pool
        assert isinstance(pool, Pool)
        table, frames, st, prof = self.table, pool.frames, self.stats, self.profile
        geometry, bits = pool.store_geometry(), profile_bits(prof)

        def free_page(index: int) -> None:
            allocated = pool.pages_allocated
            self._free_page(index)
            if pool.pages_allocated != allocated:  # a zspage went: its first frame may come back
                self._looked.clear()  # as another's

        total = len(pages) // PAGE_SIZE
        done = 0
        while done < total:
            entries, at, n = table.run(index + done)  # type: ignore[attr-defined]
            if entries is None:  # a leaf never written: _store_page makes it
                return done, HANDBACK, None
            n = min(n, total - done)
            counts: list = [0] * STORE_COUNTS
            try:
                stop = store_entries(
                    entries, at, index + done, pages[done * PAGE_SIZE : (done + n) * PAGE_SIZE],
                    comps[done : done + n] if done else comps, geometry, self._looked, frames, bits,
                    prof.max_zpage_size, pool.huge_class_size, self.config.limit_pages,
                    st.max_used_pages, self._now, crc32, free_page, counts,
                )  # fmt: skip
            except Exception:
                frames.poison("a write stopped midway")
                raise
            finally:
                stored, added, pages_stored, compr, good, same, max_used, failure = counts
                if stored or added:  # (3.11: a slot freed, then its page handed back, is a change too)
                    table.touched(index + done, entries, added)  # type: ignore[attr-defined]
                    frames.wrote_in_place()
                    st.pages_stored += pages_stored
                    st.compr_data_size += compr
                    st.good_compress += good
                    st.same_pages += same
                    st.max_used_pages = max(st.max_used_pages, max_used)
                done += stored
            if stop != DONE:
                return done, stop, failure
        return done, DONE, None

    def _decompressors(self) -> tuple[Callable[[bytes], bytes] | int | None, ...]:
        """The compiled read path's decompressor per priority, the primary's and each secondary's
        made so far: its compiled decoder's number, else its ``decompress``; None for one not made
        yet (its pages are handed back: ``comp`` makes it, or says why not)."""
        made = [self.backend, *(self._comps.get(p) for p in range(1, ZRAM_MAX_COMPS))]
        return tuple(
            None if b is None else b.decoder if b.decoder is not None else b.decompress for b in made
        )

    def compress_ahead(self, offset: int, data: bytes | bytearray | memoryview) -> Lookahead:
        """Start compressing the whole pages of ``data`` (to be written at ``offset``): see Lookahead."""
        data = memoryview(data).cast("B")
        first_whole = -offset % PAGE_SIZE
        whole = max(0, (len(data) - first_whole) // PAGE_SIZE)
        pages = data[first_whole : first_whole + whole * PAGE_SIZE]
        first = -(-offset // PAGE_SIZE)
        start = self.backend.stream_job
        if start is not None and whole >= 2:
            threads = native_threads(self.comp_streams)
            job = start(pages, threads, NATIVE_BATCH, native_slots(threads))
            return Lookahead(first, _taken(job), job)
        return Lookahead(first, self._compressed(pages, whole))

    def _compressed(self, pages: memoryview, count: int) -> Iterator[bytes | Exception] | None:
        """For a compressor without native streams (``Backend.stream_job``): the ``count`` whole
        pages of ``pages`` compressed, in order, a batch at a time; None when they are better
        compressed one by one where they are stored (one stream, no batch call).

        With ``comp_streams`` > 1 the batches are compressed by that many threads, at most
        two batches per stream ahead of the pages stored (memory stays bounded), and the results
        are taken in page order: what is stored never depends on the number of streams.  A
        compressor's failure is the page's result, raised when that page is stored.  Closing
        the iterator (the write stopped) waits for the batches still running, which read
        ``pages``.
        """
        backend = self.backend
        streams = self.comp_streams
        inline = streams == 1 and backend.compress_pages is None and not isinstance(self.pool, CompiledPool)
        if count < 2 or inline:
            return None
        return self._batches(backend, pages, count, streams)

    def _batches(
        self, backend: Backend, pages: memoryview, count: int, streams: int
    ) -> Iterator[bytes | Exception]:
        def job(start: int) -> list[bytes | Exception]:
            view = pages[start * PAGE_SIZE : min(count, start + STREAM_BATCH) * PAGE_SIZE]
            if backend.compress_pages is not None:
                try:
                    return list(backend.compress_pages(view))
                except Exception:  # pragma: no cover - the compiled compressors fail on no page
                    pass
            out: list[bytes | Exception] = []
            for at in range(0, len(view), PAGE_SIZE):
                try:
                    out.append(backend.compress(view[at : at + PAGE_SIZE].tobytes()))
                except Exception as exc:
                    out.append(exc)
            return out

        starts = iter(range(0, count, STREAM_BATCH))
        if streams == 1 or count <= STREAM_BATCH:
            for start in starts:
                yield from job(start)
            return
        executor = self._stream_pool(streams)
        pending: deque[Future[list[bytes | Exception]]] = deque()
        try:
            for start in starts:
                pending.append(executor.submit(job, start))
                if len(pending) >= 2 * streams:
                    break
            while pending:
                done = pending.popleft().result()
                start = next(starts, None)
                if start is not None:
                    pending.append(executor.submit(job, start))
                yield from done
        finally:
            for fut in pending:
                fut.cancel()
            for fut in pending:
                if not fut.cancelled():
                    fut.exception()  # waits; the batch's pages are no longer needed

    def _stream_pool(self, streams: int) -> ThreadPoolExecutor:
        """The compression streams: ``streams`` worker threads, kept while the count stays."""
        self._streams = _kept_threads(self._streams, streams, "zram-stream")
        return self._streams[1]

    def read(self, offset: int, length: int, *, checked: bool = False) -> bytes:
        """``length`` bytes from ``offset`` (unwritten pages read as zeros); ``checked`` as for write."""
        if not checked:
            self.check_range(offset, length, "read")
        if not length:
            return b""
        first, head = divmod(offset, PAGE_SIZE)
        span = (((offset + length - 1) >> PAGE_SHIFT) - first + 1) * PAGE_SIZE
        buf = self._scratch.pop() if self._scratch else bytearray()
        if len(buf) < span:
            buf = bytearray(span)
        try:
            with memoryview(buf) as out:
                self._read_span(offset, first, out[:span])
                return out[head : head + length].tobytes()
        finally:
            if len(buf) <= SCRATCH_MAX:
                self._scratch.append(buf)

    def read_into(self, offset: int, out: memoryview | bytearray, *, checked: bool = False) -> None:
        """``read`` into ``out`` (``len(out)`` bytes from ``offset``): whole pages at a page's start
        go straight into it, with no bytes object made and copied (what ``zramctl read`` does)."""
        out = memoryview(out).cast("B")
        if not checked:
            self.check_range(offset, len(out), "read")
        if offset % PAGE_SIZE or len(out) % PAGE_SIZE:
            out[:] = self.read(offset, len(out), checked=True)
        elif out:
            self._read_span(offset, offset >> PAGE_SHIFT, out)

    def _read_span(self, offset: int, first: int, out: memoryview) -> None:
        """Pages ``first ..`` into ``out`` (whole pages), for a read that starts at byte ``offset``:
        num_reads counts each page read or failed; a failure's ZramError.done counts the bytes from
        ``offset`` read before it."""
        last = first + len(out) // PAGE_SIZE - 1
        read_entry = self._read_entry
        table = self.table
        get = table.get
        accessed = self.reads_change
        now = self.clock() if accessed else 0
        fast = self.pool if isinstance(self.pool, CompiledPool) else None
        runs = getattr(table, "run", None) if fast is None else None
        decompress = self._decompressors() if fast is not None or runs is not None else ()
        index = first
        try:
            while index <= last:
                pos = (index - first) * PAGE_SIZE
                # The compiled read path reads every page it can; the first it hands back
                # (or none) is read the Python way below, which makes its error.
                if fast is not None:
                    done, stop = fast.c.read_pages(table, index, out[pos:], decompress, accessed, now)
                elif runs is not None:
                    done, stop = self._read_leaves(index, out[pos:], decompress, accessed, now)
                else:
                    done, stop = 0, HANDBACK
                index += done
                if stop == DONE:
                    break
                pos += done * PAGE_SIZE
                entry = get(index)
                out[pos : pos + PAGE_SIZE] = read_entry(index, entry)
                # zram_accessed() once the page read well (an unchanged slot stays as it is)
                if accessed and entry is not None and (entry[3] != now or entry[0] & ZRAM_ACCESS_CLEARS):
                    table[index] = (entry[0] & ~ZRAM_ACCESS_CLEARS, entry[1], entry[2], now)
                index += 1
        except ZramError as exc:
            self.stats.num_reads += index - first + 1
            exc.done = max(0, index * PAGE_SIZE - offset)
            raise
        self.stats.num_reads += last - first + 1

    def _read_leaves(
        self, index: int, out: memoryview, decompress: tuple[object, ...], accessed: bool, now: int
    ) -> tuple[int, int]:
        """The compiled read path over the Python pool and a table kept in leaves (an image's):
        pages ``index ..`` into ``out``, read where they lie in each leaf's list of entries
        (``_zsmalloc.read_entries``); (pages read, DONE or HANDBACK for the page after them).

        A read of several leaves decodes them on every usable CPU, as the kernel's per-CPU
        streams decompress for as many readers: one leaf is decoded while the next is listed
        (``_read_on_every_cpu``).  Either way, the pages read before the first one handed back
        then get their access times, in page order: the result, the counters and the image are
        those of reading the leaves one after another.
        """
        table = self.table
        pool = self.pool
        assert isinstance(pool, Pool)
        total = len(out) // PAGE_SIZE

        def leaves() -> Iterator[Run]:
            """The leaves' runs of pages, each looked up as it comes to be listed: the leaves
            listed before it are being decoded meanwhile."""
            page = 0
            while page < total:
                entries, at, n = table.run(index + page)  # type: ignore[attr-defined]
                n = min(n, total - page)
                yield entries, at, page, n
                page += n

        cache = pool.read_cache()
        # (a decompressor that is Python code may keep state: its leaves are read one by one)
        compiled = all(isinstance(d, int) or d is None for d in decompress)
        in_first_leaf = table.run(index)[2]  # type: ignore[attr-defined]
        readers = usable_cpus() if total > in_first_leaf and compiled else 1
        read: list[tuple[Run, tuple[int, int]]]
        if readers == 1:  # lazily: no leaf after one that hands a page back is read
            read = []
            for entries, at, p, n in leaves():
                got = read_entries(entries, at, out[p * PAGE_SIZE : (p + n) * PAGE_SIZE], decompress,
                                   pool.object_zspage, cache, crc32)  # fmt: skip
                read.append(((entries, at, p, n), got))
                if got[1] != DONE:
                    break
        else:
            read = self._read_on_every_cpu(readers, leaves(), out, decompress, cache)
        for (entries, at, p, _), (got, stop) in read:
            if accessed and entries is not None and access_entries(entries, at, got, now):
                table.touched(index + p, entries)  # type: ignore[attr-defined]
            if stop != DONE:
                return p + got, stop
        return total, DONE

    def _read_on_every_cpu(
        self,
        readers: int,
        runs: Iterable[Run],
        out: memoryview,
        decompress: tuple[object, ...],
        cache: dict[int, ReadZspage | None],
    ) -> list[tuple[Run, tuple[int, int]]]:
        """read_entries for the runs on ``readers`` CPUs: each run is listed here, in order
        (``list_entries``: that takes the GIL, and describes the zspages it meets), and decoded
        by one of ``readers - 1`` threads while the next one is listed; once all are listed, this
        thread decodes too, from the last run back.  No run after one whose listing stops at a
        page is listed.  All have finished when this returns (each writes into ``out``), even
        when a listing raises."""
        from concurrent.futures import wait

        pool = self.pool
        assert isinstance(pool, Pool)
        self._readers = _kept_threads(self._readers, readers - 1, "zram-read")
        submit = self._readers[1].submit
        listed: list[tuple[Run, Listed]] = []
        jobs: list[Future[tuple[int, int] | None]] = []
        try:
            for run in runs:
                entries, at, p, n = run
                one = list_entries(entries, at, out[p * PAGE_SIZE : (p + n) * PAGE_SIZE], decompress,
                                   pool.object_zspage, cache, crc32)  # fmt: skip
                listed.append((run, one))
                jobs.append(submit(one.decode))
                if one.stop != DONE:
                    break
            for _, one in reversed(listed):  # (one a thread has decoded, or is decoding, is passed by)
                one.decode()
        finally:
            wait(jobs)
        return [(run, one.decode()) for run, one in listed]

    def discard(self, offset: int, length: int) -> int:
        """zram_bio_discard(): free every *whole* page in the range; return pages freed.

        A partial first or last page is left alone.  notify_free counts every
        whole page, stored or not.  (The 2013 driver had no discard; there the
        same thing is what swap_slot_free_notify does, page by page.)
        """
        self.check_range(offset, length, "discard")
        index, in_page = divmod(offset, PAGE_SIZE)
        n = length
        if in_page:
            if n <= PAGE_SIZE - in_page:
                return 0
            n -= PAGE_SIZE - in_page
            index += 1
        count = n // PAGE_SIZE
        for i in self._stored_in(index, index + count):
            self._free_page(i, "discard")
        self.stats.notify_free += count
        return count

    def _stored_in(self, first: int, end: int) -> list[int]:
        """Indices ``first <= i < end`` that hold an entry, ascending: what discard must free.

        O(what is stored there), not O(end - first), so that discarding a whole
        16 TiB device is instant: an image's table walks only the leaves that
        exist (``present``); a dict is filtered by whichever side is smaller.
        """
        table = self.table
        present = getattr(table, "present", None)
        if present is not None:
            return present(first, end)
        if len(table) < end - first:
            return sorted(i for i in table if first <= i < end)
        return [i for i in range(first, end) if i in table]

    def compact(self) -> int:
        """zs_compact() through the ``compact`` attribute; pages freed."""
        if not self.initialized or self.pool is None:
            raise ZramError(errno.EINVAL, "compact")
        if not self.profile.compaction:
            raise ZramError(errno.ENOENT, "compact", "the 3.11 allocator has no compaction")
        try:
            return self.pool.zs_compact()
        except ZsCorrupt as exc:  # zspages already moved stay uncommitted: the image keeps its last commit
            raise self._damaged("compact", exc, midway=True) from None

    # --- post-processing (6.18): idle, writeback, recompress, block_state -------

    def _require_pp(self, what: str) -> None:
        if not self.profile.post_processing:
            raise ZramError(errno.ENOENT, what, "the 3.11 driver has no post-processing")

    def mark_idle(self, cutoff: int | None) -> None:
        """mark_idle(): IDLE on every stored slot (not SAME, not WB) whose ac_time is before
        ``cutoff`` (strictly), or on every one when ``cutoff`` is None (``idle`` = all); the
        others lose IDLE.  EINVAL when the device is not set up."""
        self._require_pp("idle")
        if not self.initialized:
            raise ZramError(errno.EINVAL, "idle", "the device is not set up (disksize 0)")
        table = self.table
        for index in self._stored_in(0, self.config.disksize >> PAGE_SHIFT):
            flags, handle, crc, ac_time = table[index]
            if flags & (ZRAM_SAME | ZRAM_WB):
                continue
            if cutoff is None or ac_time < cutoff:
                new = flags | ZRAM_IDLE
            else:
                new = flags & ~ZRAM_IDLE
            if new != flags:
                table[index] = (new, handle, crc, ac_time)

    def idle_pages(self) -> int:
        """Slots marked IDLE (O(stored))."""
        return sum(1 for entry in self.table.values() if entry[0] & ZRAM_IDLE)

    def _place_pp_slot(self, ctl: PPControl, index: int, entry: Entry) -> None:
        flags, handle, crc, ac_time = entry
        ctl.place(index, flags & ZRAM_SIZE_MASK)
        if not flags & ZRAM_PP_SLOT:
            self.table[index] = (flags | ZRAM_PP_SLOT, handle, crc, ac_time)

    def _release_pp_slots(self, ctl: PPControl) -> None:
        """release_pp_slot() for every slot placed: PP_SLOT is cleared where still set."""
        table = self.table
        for index in sorted(ctl.placed):
            entry = table.get(index)
            if entry is not None and entry[0] & ZRAM_PP_SLOT:
                table[index] = (entry[0] & ~ZRAM_PP_SLOT, entry[1], entry[2], entry[3])

    def writeback_check(self) -> None:
        """writeback_store()'s checks before it parses: EINVAL not set up, ENODEV no backing_dev."""
        self._require_pp("writeback")
        if not self.initialized:
            raise ZramError(errno.EINVAL, "writeback", "the device is not set up (disksize 0)")
        if self.bdev is None:
            raise ZramError(errno.ENODEV, "writeback", "no backing_dev is set")

    def writeback(self, scans: Iterable[tuple[int, int, int]]) -> int:
        """writeback_store() after its parse: each scan ``(mode, lo, hi)`` queues the slots of
        ``[lo, hi)`` that the mode (WRITEBACK_MODES; 0 = every one) selects, then the queued
        pages are written to the backing device, largest objects first.

        Returns the pages written back.  Pages written before a failure stay written back;
        the last failure is raised then: EIO for a spent writeback_limit, ENOSPC for a full
        backing device, or a block write's error.
        """
        self.writeback_check()
        bdev = self.bdev
        assert bdev is not None
        table = self.table
        cfg = self.config
        st = self.stats
        ctl = PPControl()
        for mode, lo, hi in scans:  # scan_slots_for_writeback()
            for index in self._stored_in(lo, hi):
                entry = table[index]
                flags = entry[0]
                if flags & (ZRAM_WB | ZRAM_SAME):
                    continue
                if mode & IDLE_WRITEBACK and not flags & ZRAM_IDLE:
                    continue
                if mode & HUGE_WRITEBACK and not flags & ZRAM_HUGE:
                    continue
                if mode & INCOMPRESSIBLE_WRITEBACK and not flags & ZRAM_INCOMPRESSIBLE:
                    continue
                self._place_pp_slot(ctl, index, entry)
        ret = 0
        detail = ""
        written = 0
        blk = 0
        try:
            for index in ctl.select():  # zram_writeback_slots()
                if cfg.writeback_limit_enable and cfg.writeback_limit == 0:
                    ret, detail = errno.EIO, "writeback_limit is spent"
                    break
                if not blk:
                    blk = bdev.alloc_block() or 0
                    if not blk:
                        ret, detail = errno.ENOSPC, "the backing device is full"
                        break
                    st.bd_count += 1
                entry = table.get(index)
                if entry is None or not entry[0] & ZRAM_PP_SLOT:
                    continue
                flags, handle, crc, _ = entry
                try:
                    page = self._object_page(index, flags, handle, crc, "writeback")
                except ZsCorrupt as exc:
                    raise self._damaged("writeback", exc, index) from None
                except ZramError:
                    continue  # the kernel skips a slot it cannot read, keeping the block
                try:
                    bdev.write_block(blk, page)
                except ZramError as exc:
                    ret, detail = exc.errno, exc.detail or ""
                    continue
                except OSError as exc:  # the bio's error; the block stays reserved for the next slot
                    ret, detail = exc.errno or errno.EIO, f"backing block {blk}: {exc}"
                    continue
                st.bd_writes += 1
                self._free_page(index, "writeback")
                table[index] = (ZRAM_WB, blk, crc32(page), 0)
                st.pages_stored += 1
                written += 1
                blk = 0
                if cfg.writeback_limit_enable and cfg.writeback_limit > 0:
                    cfg.writeback_limit -= 1
        finally:
            if blk:  # a block reserved and not used
                bdev.free_block(blk)
                st.bd_count -= 1
            self._release_pp_slots(ctl)
        if ret:
            raise ZramError(ret, "writeback", detail or None)
        return written

    def recompress(
        self,
        *,
        mode: int = 0,
        max_pages: int | None = None,
        threshold: int = 0,
        algo: str | None = None,
        priority: int | None = None,
    ) -> int:
        """recompress_store() after its parse: recompress the stored slots the mode
        (RECOMPRESS_MODES; 0 = every one) selects with the secondary algorithms, largest first.

        ``priority``: try only that one (0 means 1); ``algo``: the first priority from
        ``priority`` (default 1) with that algorithm.  A slot is recompressed when some
        algorithm puts it in a smaller size class (zs_lookup_class_index, no handle header)
        and, with a ``threshold``, below it; a slot no algorithm up to the last active one
        improves becomes INCOMPRESSIBLE.  ``max_pages`` (None: no limit) counts the slots
        tried.  Returns the slots recompressed.
        """
        self._require_pp("recompress")
        prio = 1
        prio_max = self.num_active_comps
        if priority is not None:
            prio = priority or 1
            prio_max = prio + 1
        if not self.initialized or self.pool is None:
            raise ZramError(errno.EINVAL, "recompress", "the device is not set up (disksize 0)")
        pool = self.pool
        if threshold >= pool.huge_class_size:
            raise ZramError(errno.EINVAL, "recompress", f"threshold must be below {pool.huge_class_size}")
        if algo is not None:
            for p in range(prio, ZRAM_MAX_COMPS):
                if self._algorithm(p) == algo:
                    prio, prio_max = p, p + 1
                    break
            else:
                detail = f"{algo[:32]!r} is no recompression algorithm here"
                raise ZramError(errno.EINVAL, "recompress", detail)
        active = self.num_active_comps
        prio_max = min(prio_max, active)
        if prio >= prio_max:
            raise ZramError(errno.EINVAL, "recompress", "no secondary algorithm at that priority")
        table = self.table
        ctl = PPControl()
        for index in self._stored_in(0, self.config.disksize >> PAGE_SHIFT):  # scan_slots_for_recompress()
            entry = table[index]
            flags = entry[0]
            if mode & RECOMPRESS_IDLE and not flags & ZRAM_IDLE:
                continue
            if mode & RECOMPRESS_HUGE and not flags & ZRAM_HUGE:
                continue
            if flags & (ZRAM_WB | ZRAM_SAME | ZRAM_INCOMPRESSIBLE):
                continue
            if (flags >> ZRAM_COMP_PRIORITY_SHIFT & ZRAM_COMP_PRIORITY_MASK) + 1 >= prio_max:
                continue
            self._place_pp_slot(ctl, index, entry)
        left = max_pages
        done = 0
        try:
            for index in ctl.select():
                if left == 0:
                    break
                entry = table.get(index)
                if entry is None or not entry[0] & ZRAM_PP_SLOT:
                    continue
                outcome = self._recompress_slot(index, entry, threshold, prio, prio_max, active)
                if outcome is None:
                    continue  # below the threshold: not counted
                if left is not None:
                    left -= 1
                done += outcome
        finally:
            self._release_pp_slots(ctl)
        return done

    def _recompress_slot(
        self, index: int, entry: Entry, threshold: int, prio: int, prio_max: int, active: int
    ) -> int | None:
        """recompress_slot(): 1 recompressed, 0 tried, None not tried (small enough already)."""
        flags, handle, crc, ac_time = entry
        size_old = flags & ZRAM_SIZE_MASK
        if size_old < threshold:
            return None
        try:
            page = self._object_page(index, flags, handle, crc, "recompress")
        except ZsCorrupt as exc:
            raise self._damaged("recompress", exc, index) from None
        flags &= ~ZRAM_IDLE  # touched: not idle any more, whatever comes of it
        self.table[index] = (flags, handle, crc, ac_time)
        pool = self.pool
        assert pool is not None
        idx_old = pool.class_for(size_old).index
        p = max(prio, (flags >> ZRAM_COMP_PRIORITY_SHIFT & ZRAM_COMP_PRIORITY_MASK) + 1)
        if p >= prio_max:
            return 0
        new: bytes | None = None
        while p < prio_max:
            if self._algorithm(p) is not None:
                try:
                    comp = self.comp(p).compress(page)
                except Exception as exc:
                    raise ZramError(errno.EIO, "recompress", f"compression failed: {exc}") from None
                if pool.class_for(len(comp)).index < idx_old and (not threshold or len(comp) < threshold):
                    new = comp
                    break
            p += 1
        if new is None:
            if p >= active:  # the last algorithm could not do better either
                self.table[index] = (flags | ZRAM_INCOMPRESSIBLE, handle, crc, ac_time)
            return 0
        try:
            new_handle = pool.zs_malloc(len(new), index)
        except ZsCorrupt as exc:
            raise self._damaged("recompress", exc, index, midway=True) from None
        except ZsError as exc:
            raise ZramError(exc.errno, "recompress") from None
        pool.zs_obj_write(new_handle, new)
        self._free_page(index, "recompress")
        self.table[index] = (len(new) | p << ZRAM_COMP_PRIORITY_SHIFT, new_handle, crc32(new), 0)
        st = self.stats
        st.compr_data_size += len(new)
        st.pages_stored += 1
        return 1

    BLOCK_STATE_FLAGS = (
        (ZRAM_SAME, "s"),
        (ZRAM_WB, "w"),
        (ZRAM_HUGE, "h"),
        (ZRAM_IDLE, "i"),
        (ZRAM_COMP_PRIORITY_BITS, "r"),
        (ZRAM_INCOMPRESSIBLE, "n"),
    )

    def block_state(self) -> str:
        """debugfs block_state: one line per stored slot, ascending (EINVAL when not set up).

        ``%12zd %12lld.%06lu %c%c%c%c%c%c``: index, ac_time (whole seconds here, so the
        microseconds are 000000) and the flags s w h i r n, ``.`` for each one not set.
        """
        self._require_pp("block_state")
        if not self.initialized:
            raise ZramError(errno.EINVAL, "block_state", "the device is not set up (disksize 0)")
        table = self.table
        lines = []
        for index in self._stored_in(0, self.config.disksize >> PAGE_SHIFT):
            flags, _, _, ac_time = table[index]
            marks = "".join(c if flags & bit else "." for bit, c in self.BLOCK_STATE_FLAGS)
            lines.append(f"{index:12d} {ac_time:12d}.000000 {marks}\n")
        return "".join(lines)

    def set_backing_dev(self, path: str) -> None:
        """backing_dev_store(): open ``path`` through Backing.open_bdev (EBUSY once set up,
        ENOTBLK where nothing can be opened); a backing device set before replaces it."""
        self._require_pp("backing_dev")
        if self.initialized:
            raise ZramError(errno.EBUSY, "backing_dev", "the device is set up; reset it first")
        opener = self.backing.open_bdev
        if opener is None:
            raise ZramError(errno.ENOTBLK, "backing_dev", "no backing file can be opened here")
        try:
            bdev = opener(path)
        except ZramError:
            raise
        except OSError as exc:
            raise ZramError(exc.errno or errno.EINVAL, "backing_dev", f"{path}: {exc.strerror}") from None
        old, self.bdev = self.bdev, bdev
        if old is not None and old is not bdev:
            close = getattr(old, "close", None)
            if close is not None:
                close()
        self.config.backing_dev = bdev.path

    # --- introspection ------------------------------------------------------

    def stored_pages(self) -> int:
        """Slots holding something (same-filled included, whatever the profile counts)."""
        return len(self.table)
