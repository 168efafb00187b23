"""The compiled zsmalloc: ``zsmalloc.Pool``'s work in C memory, for a device in memory.

Why: a page costs the kernel about 6 µs to compress and store; the Python pool spends about
as much again on each page's bookkeeping (finding the class and zspage, popping the free
chain, moving the zspage between fullness lists, the table entry).  ``_zsmalloc.c`` does that
bookkeeping, and zram's per-page store and read loops, in C, step for step as ``zsmalloc.py``
and ``zram_drv.py`` do it: same handles, same free-chain words, same list links, same counters.
``zsmalloc.py`` stays the readable reference, and the one used for images (whose frames and
records are untrusted bytes, checked as they are used: an image's reads go through
``_zsmalloc.read_entries`` or ``list_entries``, over zspages that ``Pool.object_zspage``
checks and describes, and its writes through ``_zsmalloc.store_entries``, which changes the
reference's own records in place, as its zs_malloc would); ``tests/test_zsmalloc_compiled.py``
runs both pools on the same operations and compares every counter, record and frame, and
``tests/test_store_compiled.py`` does the same for two images, file bytes included.

The class table is the reference's own (``Pool(profile)`` builds it, no frame allocated), so
geometry, merging and huge_class_size stay one fact in one place.  ``CompiledPool`` answers the
reference's interface, so that nothing else needs to know which pool a device has; its
``zspages`` and ``frames`` are read-only snapshots of the C state (for checks and tests).
"""

from __future__ import annotations

from collections.abc import Callable

from ..crc import crc32
from ..errors import ZsError
from . import _zsmalloc
from .profiles import PAGE_SIZE, Profile
from .zsmalloc import OBJ_INDEX_BITS, ZS_MAX_ALLOC_SIZE, Pool, SizeClass, ZsPage, _unpack_word

PROFILE_BITS = (
    ("same_word", _zsmalloc.PROFILE_SAME_WORD),
    ("same_counts_stored", _zsmalloc.PROFILE_SAME_COUNTS_STORED),
    ("huge_by_class", _zsmalloc.PROFILE_HUGE_BY_CLASS),
    ("free_old_first", _zsmalloc.PROFILE_FREE_OLD_FIRST),
    ("mem_limit", _zsmalloc.PROFILE_MEM_LIMIT),
)
"""The profile's switches the compiled store path reads, as the bits it takes them in."""

# What store_pages, store_entries and read_pages say about where they stopped.
DONE, HANDBACK, NOMEM, FAILED = _zsmalloc.DONE, _zsmalloc.HANDBACK, _zsmalloc.NOMEM, _zsmalloc.FAILED


def profile_bits(profile: Profile) -> int:
    return sum(bit for name, bit in PROFILE_BITS if getattr(profile, name))


def geometry(ref: Pool) -> dict[str, object]:
    """The reference pool's class table and fullness lists, as ``_zsmalloc.Pool`` takes them (the
    positions, groups and lists as the compiled store path over the reference reads them too)."""
    class_of_size, _, groups, list_index, alloc_lists, *_ = ref.store_geometry()
    return {
        "classes": [(c.index, c.size, c.pages_per_zspage, c.objs_per_zspage, c.huge) for c in ref.classes],
        "class_of_size": class_of_size,
        "groups": groups,
        "list_index": list_index,
        "alloc_lists": alloc_lists,
        "listed": ref.fullness.listed,
        "empty": ref.fullness.empty,
        "full": ref.fullness.full,
        "handle_size": ref.profile.handle_size,
    }


class SnapshotFrames:
    """The compiled pool's frames, as a FrameStore shows them: ``view`` (a copy), ``mutable`` (a
    FrameWriter) and ``frames_in_use``; for checks and tests, which look at (or damage) bytes."""

    def __init__(self, pool: CompiledPool) -> None:
        self._pool = pool
        self._firsts: dict[int, int] = {}
        self._version = -1

    def _place(self, frame: int) -> tuple[int, int]:
        """(the first frame of the zspage holding ``frame``, the frame's offset in it)."""
        if self._version != self._pool.c.version:
            classes = self._pool.classes
            self._firsts = {
                first + k: first
                for first, zspage in self._pool.zspages.items()
                for k in range(classes[zspage.cls].pages_per_zspage)
            }
            self._version = self._pool.c.version
        first = self._firsts[frame]
        return first, (frame - first) * PAGE_SIZE

    def view(self, frame: int) -> memoryview:
        first, at = self._place(frame)
        return memoryview(self._pool.zspage_bytes(first))[at : at + PAGE_SIZE]

    def mutable(self, frame: int) -> FrameWriter:
        return FrameWriter(self._pool, *self._place(frame))

    @property
    def frames_in_use(self) -> int:
        return self._pool.pages_allocated


class FrameWriter:
    """One frame of the compiled pool, to write: ``w[i] = byte`` and ``w[i:j] = bytes``."""

    def __init__(self, pool: CompiledPool, first: int, at: int) -> None:
        self._pool, self._first, self._at = pool, first, at

    def __getitem__(self, i: int | slice) -> int | bytes:
        return self._pool.frames.view(self._first + self._at // PAGE_SIZE)[i]  # type: ignore[return-value]

    def __setitem__(self, i: int | slice, value: int | bytes) -> None:
        if isinstance(i, slice) and i.step not in (None, 1):
            raise ValueError("a frame is written in contiguous bytes")
        start = i.indices(PAGE_SIZE)[0] if isinstance(i, slice) else range(PAGE_SIZE)[i]
        data = bytes([value]) if isinstance(value, int) else bytes(value)
        if isinstance(i, slice) and len(range(*i.indices(PAGE_SIZE))) != len(data):
            raise ValueError("a frame's slice is written with as many bytes")
        self._pool.c.zspage_write(self._first, self._at + start, data)


class CompiledPool:
    """A zs_pool whose zspages and frames live in C memory: ``zsmalloc.Pool``'s interface."""

    untrusted = False
    """Its bytes never leave this process: nothing to check them against."""

    def __init__(self, profile: Profile, relocate: Callable[[int, int], None] | None = None) -> None:
        ref = Pool(profile)  # the class table only: no frame is allocated
        self.profile = profile
        self.fullness = ref.fullness
        self.huge_class_size = ref.huge_class_size
        self._ref = ref
        self._classes = ref.classes
        self._version = self._classes_version = -1
        self._zspages: dict[int, ZsPage] = {}
        self._frames: dict[int, bytes] = {}
        """zspage_bytes already copied out since the last change (checks read them word by word)."""
        self.c = _zsmalloc.Pool(**geometry(ref), relocate=relocate, crc32=crc32)
        self.profile_bits = profile_bits(profile)
        self.frames = SnapshotFrames(self)

    # --- the reference's interface ------------------------------------------------------

    @property
    def pages_allocated(self) -> int:
        return self.c.pages_allocated

    @property
    def pages_compacted(self) -> int:
        return self.c.pages_compacted

    @pages_compacted.setter
    def pages_compacted(self, value: int) -> None:
        self.c.pages_compacted = value

    def zs_get_total_pages(self) -> int:
        return self.c.pages_allocated

    @property
    def classes(self) -> list[SizeClass]:
        """The class table, its statistics as they are now (the same SizeClass objects each time,
        refreshed from C after any change)."""
        if self._classes_version != self.c.version:
            for pos, cls in enumerate(self._classes):
                cls.objs_allocated, cls.objs_inuse, cls.heads, cls.zspages = self.c.class_stats(pos)
            self._classes_version = self.c.version
        return self._classes

    def class_for(self, size: int) -> SizeClass:
        return self._ref.class_for(size)

    def class_position(self, cls: SizeClass) -> int:
        return self._ref.class_position(cls)

    def zs_malloc(self, size: int, owner: int) -> int:
        if size <= 0:
            raise ZsError(22, "zs_malloc: size 0")
        if size > ZS_MAX_ALLOC_SIZE:
            raise ZsError(28, "zs_malloc: larger than a page")
        return self.c.zs_malloc(size, owner)

    def zs_free(self, handle: int) -> None:
        self.c.zs_free(handle)

    def zs_obj_write(self, handle: int, data: bytes | memoryview) -> None:
        self.c.zs_obj_write(handle, data)

    def zs_obj_read(self, handle: int, length: int) -> bytes:
        return self.c.zs_obj_read(handle, length)

    def zs_can_compact(self, cls: SizeClass) -> int:
        wasted = cls.objs_allocated - cls.objs_inuse
        return 0 if wasted <= 0 else wasted // cls.objs_per_zspage * cls.pages_per_zspage

    def zs_compact(self) -> int:
        return self.c.zs_compact()

    def destroy(self) -> None:
        self.c.destroy()

    def is_huge(self, handle: int) -> bool:
        return self.classes[self.zspages[handle >> OBJ_INDEX_BITS].cls].huge

    # --- snapshots, for checks and tests ---------------------------------------------------

    @property
    def zspages(self) -> dict[int, ZsPage]:
        """Every zspage's record by first frame (a copy, made again after any change)."""
        self._snapshot()
        return self._zspages

    def _snapshot(self) -> None:
        """After any change: the records again, and no frames copied yet."""
        if self._version != self.c.version:
            records: dict[int, ZsPage] = {}
            for first, cls, inuse, freeobj, fullness, prev, nxt, owner in self.c.zspages():
                z = records[first] = ZsPage(first, cls)
                z.inuse, z.freeobj, z.fullness = inuse, freeobj, fullness
                z.prev, z.next, z.owner = prev, nxt, owner
            self._zspages, self._frames, self._version = records, {}, self.c.version

    def zspage_bytes(self, first: int) -> bytes:
        """A zspage's frames (a copy, kept until the next change)."""
        self._snapshot()
        data = self._frames.get(first)
        if data is None:
            data = self._frames[first] = self.c.zspage_bytes(first)
        return data

    def _read_word(self, cls: SizeClass, first: int, idx: int) -> int:
        return _unpack_word(self.zspage_bytes(first), idx * cls.size)[0]
