"""zsmalloc: the compressed-object allocator behind zram, with real bytes.

Why it exists (the kernel's own argument): compressed pages come in every size
from a few bytes to a whole page.  A general allocator wastes a lot on such a
spread, and a high-order allocation (several contiguous pages) fails under
memory pressure.  zsmalloc therefore groups objects of similar size into *size
classes* (32, 48, ... 4096 bytes, a step of ZS_SIZE_CLASS_DELTA) and stores the
objects of one class in *zspages*: a few order-0 pages chained together, so an
object may start in one page and end in the next.

How it works here, beside mm/zsmalloc.c:

- Pages are *frames* of a FrameStore (4 KiB each, allocated in runs of
  ``pages_per_zspage`` consecutive numbers).  In memory they are bytearrays; in
  an image they are blocks of the image file.  ``pages_allocated`` frames are in
  use at any time, so mem_used_total is real.
- A zspage is identified by its first frame.  Object ``i`` of a zspage lives at
  byte ``i * class.size`` of the zspage's frames, and may cross a frame boundary.
- A free object holds a ``link_free`` in its first 8 bytes: the index of the
  next free object, shifted left by OBJ_TAG_BITS (tag 0).  Allocation pops the
  head of that chain; freeing pushes onto it (LIFO), as the kernel does.
- An allocated object of the modern kernel starts with its handle (8 bytes,
  tag 1).  We keep there the *owner* the caller gave (zram's page index), which
  is what compaction needs to tell the owner that its object moved.  Huge
  zspages (one object per page) keep it in the zspage instead, as the kernel
  keeps it in the page descriptor.
- zspages that are neither empty nor full sit on per-class *fullness lists*;
  allocation takes the head (most recently inserted) zspage of the fullest
  non-empty list.  Empty zspages are released at once.
- Handles are ``first_frame << OBJ_INDEX_BITS | obj_idx``.  The modern kernel's
  handle is an indirection that compaction rewrites (record_obj); ours tells the
  owner the new handle through the ``relocate`` callback instead, so that no
  second table is needed.

Untrusted frames (``untrusted=True``, an image): no checksum covers the link
words and handle headers inside the frames, so the pool checks them before it
acts on them, and raises ZsCorrupt (EUCLEAN, in words) instead of looping,
handing out an allocated slot or telling the wrong page its object moved:

- before a zspage's free chain is used, the whole chain is walked once (at most
  ``objs_per_zspage - inuse`` steps: distinct slots in range, tag 0, ending in
  FREE_END exactly there);
- before compaction moves anything from or into a zspage, every allocated slot's
  header must name a page whose handle (``owner_handle``) is that slot;
- handles (from the page table) must name a zspage and a slot inside it, and an
  object's length must fit its slot;
- every list head must be in the group and class whose list it heads, and
  compaction of a class stops with an error after twice as many rounds as the
  class has zspages (each round empties a source or fills a destination).

Each check runs before the operation changes anything (compaction: before it
moves anything from or into the zspage; the caller must not commit a failed
compaction).  A zspage checked once stays sound for the life of the pool: only
the pool writes its frames.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ZsCorrupt, ZsError
from .profiles import PAGE_SIZE, Profile

# Objects are 8-byte aligned so that a link_free never crosses a page.
ZS_ALIGN = 8
# Smallest object: 32 bytes (MAX(32, chain << PAGE_SHIFT >> OBJ_INDEX_BITS) on 64-bit).
ZS_MIN_ALLOC_SIZE = 32
ZS_MAX_ALLOC_SIZE = PAGE_SIZE
# Classes are PAGE_SIZE >> CLASS_BITS (= 16) bytes apart: 255 of them, 32 .. 4096.
ZS_SIZE_CLASS_DELTA = PAGE_SIZE >> 8
ZS_SIZE_CLASSES = -(-(ZS_MAX_ALLOC_SIZE - ZS_MIN_ALLOC_SIZE) // ZS_SIZE_CLASS_DELTA) + 1
# A free object's link keeps the next index above the tag bit; an allocated
# object's handle has the tag bit set (OBJ_ALLOCATED_TAG).
OBJ_TAG_BITS = 1
OBJ_ALLOCATED_TAG = 1
# Bits of a handle that hold the object index (objs_per_zspage <= 2048 for chains <= 16).
OBJ_INDEX_BITS = 11
OBJ_INDEX_MASK = (1 << OBJ_INDEX_BITS) - 1
# link_free value that ends a zspage's free chain.
FREE_END = (1 << 63) - 1
NO_ZSPAGE = -1
READ_CACHE_ZSPAGES = 2048
"""Zspages a read keeps described (see Pool.read_cache), and then one read call's more at most:
8 MiB of frames if they are one-page zspages, 64 MiB if all are of eight pages."""
ReadZspage = tuple[int, int, int, int, bytes]
"""A zspage as the compiled read path reads its objects: (slot size, objects per zspage, the
most an object may hold, where its data starts in its slot, the zspage's frames)."""
# Link words and handle headers are little-endian 64-bit words inside the frames.
_WORD = struct.Struct("<Q")
_unpack_word = _WORD.unpack_from
_pack_word = _WORD.pack_into
StoreGeometry = tuple[
    list[int], list[tuple["SizeClass", int, int, int, bool]], list[list[int]], list[int],
    tuple[int, ...], int, int, MutableMapping[int, "ZsPage"], set[int], "Pool",
]
"""The pool as zram's compiled store path reads it (see Pool.store_geometry)."""
NewFrames = list[bytes]
"""A new zspage's frames as init_zspage leaves them: zeros, and the free chain's link words."""


class FrameStore(Protocol):
    """Where the allocator's pages come from: 4 KiB frames, by number."""

    def alloc(self, count: int) -> int:
        """Reserve ``count`` consecutive frames; return the first frame's number."""

    def free(self, first: int, count: int) -> None:
        """Give back frames ``first .. first + count - 1``."""

    def view(self, frame: int) -> memoryview:
        """The 4096 bytes of a frame, to read."""

    def mutable(self, frame: int) -> memoryview:
        """The 4096 bytes of a frame, to write."""

    def open_new(self, first: int, contents: NewFrames) -> None:
        """Frames ``first ..`` of a zspage just allocated, opened for writing holding ``contents``
        (one bytes per frame): what ``mutable`` and writing each would do, in one call."""

    def clear(self) -> None:
        """Give back every frame (pool destruction)."""

    def poison(self, reason: str) -> None:
        """The pool's state in these frames was left half-changed: it must never be committed."""

    def span(self, first: int, count: int) -> bytes:
        """Frames ``first .. first + count - 1`` as one bytes (a copy): a zspage, to read."""

    @property
    def frames_in_use(self) -> int: ...

    @property
    def generation(self) -> int:
        """Changes whenever a frame may have (alloc, free, mutable, clear): what ``span`` copied
        before is stale once it does."""


class InPlaceFrames(FrameStore, Protocol):
    """A FrameStore that also lends the frames it holds open for writing, so that zram's compiled
    store path (``_zsmalloc.store_entries``) writes objects into them in place."""

    @property
    def in_place(self) -> dict[int, bytearray]:
        """Frame -> its bytes, for every frame ``mutable`` has opened and nothing has closed since:
        written in place (any other frame is opened with ``mutable`` first, which checks it)."""

    def wrote_in_place(self) -> None:
        """Frames of ``in_place`` were written: ``generation`` changes."""


class MemoryFrames:
    """A FrameStore in process memory: one bytearray per frame, handed out as a memoryview.

    The same memoryview is returned every time (no per-call object): callers
    must not ``release()`` it.
    """

    def __init__(self) -> None:
        self._frames: dict[int, memoryview] = {}
        self._next = 0
        self.generation = 0

    def alloc(self, count: int) -> int:
        first = self._next
        self._next += count
        for n in range(first, first + count):
            self._frames[n] = memoryview(bytearray(PAGE_SIZE))
        self.generation += 1
        return first

    def free(self, first: int, count: int) -> None:
        for n in range(first, first + count):
            del self._frames[n]
        self.generation += 1

    def view(self, frame: int) -> memoryview:
        return self._frames[frame]

    def mutable(self, frame: int) -> memoryview:
        self.generation += 1
        return self._frames[frame]

    def open_new(self, first: int, contents: NewFrames) -> None:
        self.generation += 1
        for n, data in enumerate(contents, first):
            self._frames[n][:] = data

    def span(self, first: int, count: int) -> bytes:
        return b"".join(self._frames[n] for n in range(first, first + count))

    def clear(self) -> None:
        """Every frame given back; numbering starts again from 0, as a new pool's would."""
        self._frames.clear()
        self._next = 0
        self.generation += 1

    def poison(self, reason: str) -> None:
        pass  # nothing in memory is ever committed

    @property
    def frames_in_use(self) -> int:
        return len(self._frames)


# --------------------------------------------------------------------------
# Size classes


@dataclass
class SizeClass:
    """One size class: its geometry (fixed by the profile) and its statistics."""

    index: int
    size: int
    """Bytes per object slot, handle header included."""
    pages_per_zspage: int
    objs_per_zspage: int
    huge: bool
    """One object of one page per zspage: no handle header inside the object."""
    objs_allocated: int = 0
    """ZS_OBJS_ALLOCATED: object slots in all this class's zspages."""
    objs_inuse: int = 0
    """ZS_OBJS_INUSE: objects allocated and not yet freed."""
    heads: list[int] = field(default_factory=list)
    """First zspage of each fullness list, NO_ZSPAGE when the list is empty."""
    zspages: list[int] = field(default_factory=list)
    """Number of zspages in each fullness group (listed or not)."""


def chain_size_min_waste(size: int, chain: int) -> int:
    """Modern calculate_zspage_chain_size(): the chain length with the least waste.

    A power-of-two size fits a page exactly: one page.  Otherwise the smallest
    k in 1..chain whose tail waste (k * PAGE_SIZE) % size is least.
    """
    if size & (size - 1) == 0:
        return 1
    best_k, best_waste = 1, PAGE_SIZE % size
    for k in range(2, chain + 1):
        waste = (k * PAGE_SIZE) % size
        if waste < best_waste:
            best_k, best_waste = k, waste
    return best_k


def chain_size_usedpc(size: int, chain: int) -> int:
    """2013 get_pages_per_zspage(): the k in 1..chain using the largest integer percentage."""
    best_k, best_pc = 1, 0
    for k in range(1, chain + 1):
        zspage_size = k * PAGE_SIZE
        usedpc = (zspage_size - zspage_size % size) * 100 // zspage_size
        if usedpc > best_pc:
            best_k, best_pc = k, usedpc
    return best_k


def build_classes(profile: Profile, ngroups: int, nlists: int) -> tuple[list[SizeClass], int]:
    """zs_create_pool(): the class table indexed by class index, and huge_class_size.

    Built from the largest class down, as the kernel does, so that merged
    indices alias the *largest* size of their run.  huge_class_size is the
    size of the largest non-huge class less ZS_HANDLE_SIZE - 1 (0 in 2013,
    which has no such notion).
    """
    table: list[SizeClass | None] = [None] * ZS_SIZE_CLASSES
    prev: SizeClass | None = None
    huge_class_size = 0
    for i in range(ZS_SIZE_CLASSES - 1, -1, -1):
        size = min(ZS_MIN_ALLOC_SIZE + i * ZS_SIZE_CLASS_DELTA, ZS_MAX_ALLOC_SIZE)
        if profile.min_waste_chain:
            pages = chain_size_min_waste(size, profile.chain_size)
        else:
            pages = chain_size_usedpc(size, profile.chain_size)
        objs = pages * PAGE_SIZE // size
        if profile.merge_classes and pages != 1 and objs != 1 and huge_class_size == 0:
            huge_class_size = size - (profile.handle_size - 1)
        if profile.merge_classes and prev and prev.pages_per_zspage == pages and prev.objs_per_zspage == objs:
            table[i] = prev
            continue
        prev = SizeClass(
            index=i,
            size=size,
            pages_per_zspage=pages,
            objs_per_zspage=objs,
            huge=pages == 1 and objs == 1,
            heads=[NO_ZSPAGE] * nlists,
            zspages=[0] * ngroups,
        )
        table[i] = prev
    distinct: list[SizeClass] = []
    for c in table:
        if c is not None and (not distinct or distinct[-1] is not c):
            distinct.append(c)
    return distinct, huge_class_size


def get_size_class_index(size: int) -> int:
    """Class index for an object of ``size`` bytes: DIV_ROUND_UP(size - 32, 16), capped."""
    idx = 0
    if size > ZS_MIN_ALLOC_SIZE:
        idx = -(-(size - ZS_MIN_ALLOC_SIZE) // ZS_SIZE_CLASS_DELTA)
    return min(ZS_SIZE_CLASSES - 1, idx)


# --------------------------------------------------------------------------
# Fullness groups


@dataclass(frozen=True)
class Fullness:
    """How a profile sorts zspages by how full they are."""

    ngroups: int
    empty: int
    full: int
    listed: tuple[int, ...]
    """Groups that keep a list of zspages (the others are only counted)."""
    alloc_order: tuple[int, ...]
    """Lists zs_malloc looks at, in order (find_get_zspage)."""
    names: tuple[str, ...]

    def group(self, inuse: int, objs: int) -> int:
        raise NotImplementedError


class RatioFullness(Fullness):
    """Modern: ZS_INUSE_RATIO_0, _10 .. _99, _100, by integer percentage in use."""

    def group(self, inuse: int, objs: int) -> int:
        if inuse == 0:
            return 0
        if inuse == objs:
            return 11
        return (100 * inuse // objs) // 10 + 1


class QuarterFullness(Fullness):
    """2013: ZS_ALMOST_FULL (0) and ZS_ALMOST_EMPTY (1, at most 1/4 in use); EMPTY, FULL unlisted."""

    def group(self, inuse: int, objs: int) -> int:
        if inuse == 0:
            return 2
        if inuse == objs:
            return 3
        if inuse <= objs // 4:
            return 1
        return 0


RATIO_FULLNESS = RatioFullness(
    ngroups=12,
    empty=0,
    full=11,
    listed=tuple(range(1, 11)),
    alloc_order=tuple(range(10, 0, -1)),
    names=("0%", "10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%", "99%", "100%"),
)
QUARTER_FULLNESS = QuarterFullness(
    ngroups=4,
    empty=2,
    full=3,
    listed=(0, 1),
    alloc_order=(0, 1),
    names=("almost_full", "almost_empty", "empty", "full"),
)


class ZsPage:
    """One zspage: ``pages_per_zspage`` frames from ``first`` on, holding one class's objects."""

    __slots__ = ("first", "cls", "inuse", "freeobj", "fullness", "prev", "next", "owner")

    def __init__(self, first: int, cls: int) -> None:
        self.first = first
        self.cls = cls
        """Index of the class's representative in the class table."""
        self.inuse = 0
        self.freeobj = 0
        """Index of the first free object; FREE_END when full."""
        self.fullness = -1
        self.prev = NO_ZSPAGE
        self.next = NO_ZSPAGE
        self.owner = -1
        """The only object's owner, for huge zspages (kept in the page descriptor by the kernel)."""

    def __repr__(self) -> str:
        return (
            f"ZsPage(first={self.first}, cls={self.cls}, inuse={self.inuse}, freeobj={self.freeobj}, "
            f"fullness={self.fullness}, prev={self.prev}, next={self.next}, owner={self.owner})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZsPage) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__
        )


def encode_handle(first: int, idx: int) -> int:
    return first << OBJ_INDEX_BITS | idx


def decode_handle(handle: int) -> tuple[int, int]:
    return handle >> OBJ_INDEX_BITS, handle & OBJ_INDEX_MASK


# --------------------------------------------------------------------------
# The pool


class Pool:
    """A zs_pool: the class table, its zspages and the frames under them.

    ``zspages`` maps a zspage's first frame to its ZsPage; ``frames`` is where
    bytes live.  Both are injected so that an image can keep them on disk.
    ``relocate(owner, handle)`` is called when compaction moves an object.
    """

    def __init__(
        self,
        profile: Profile,
        frames: FrameStore | None = None,
        zspages: MutableMapping[int, ZsPage] | None = None,
        relocate: Callable[[int, int], None] | None = None,
        *,
        owner_handle: Callable[[int], int | None] | None = None,
        untrusted: bool = False,
    ) -> None:
        self.profile = profile
        self.fullness: Fullness = RATIO_FULLNESS if profile.merge_classes else QUARTER_FULLNESS
        self._list_of = {g: i for i, g in enumerate(self.fullness.listed)}
        self.classes, self.huge_class_size = build_classes(
            profile, self.fullness.ngroups, len(self.fullness.listed)
        )
        # Index -> representative: merged indices share one SizeClass.
        self._by_index: list[int] = [0] * ZS_SIZE_CLASSES
        for pos, c in enumerate(self.classes):
            lo = self.classes[pos - 1].index + 1 if pos else 0
            for i in range(lo, c.index + 1):
                self._by_index[i] = pos
        # Size (handle header included) -> class, for every size zs_malloc can be asked.
        # (class_for() per size, without a method call each: every command opening a device builds it)
        by_index = [self.classes[pos] for pos in self._by_index]
        self._class_by_size: list[SizeClass] = [
            by_index[get_size_class_index(size)]
            for size in range(ZS_MAX_ALLOC_SIZE + profile.handle_size + 1)
        ]
        # find_get_zspage()'s lists, in the order it looks at them.
        self._alloc_lists = tuple(self._list_of[g] for g in self.fullness.alloc_order)
        # Group -> list index (None: counted, not listed), and per class inuse -> group.
        self._list_index: list[int | None] = [self._list_of.get(g) for g in range(self.fullness.ngroups)]
        self._groups: list[list[int]] = [
            [self.fullness.group(n, c.objs_per_zspage) for n in range(c.objs_per_zspage + 1)]
            for c in self.classes
        ]
        self._handle_size = profile.handle_size
        self.frames: FrameStore = frames if frames is not None else MemoryFrames()
        self.zspages: MutableMapping[int, ZsPage] = zspages if zspages is not None else {}
        self.relocate = relocate
        self.owner_handle = owner_handle
        """Page -> the handle its entry holds (None: no object): how compaction checks a slot's header."""
        self.untrusted = untrusted
        self._sound: set[int] = set()
        """Zspages (first frames) whose free chain was checked (untrusted only)."""
        self._whole: set[int] = set()
        """Zspages whose every slot header was also checked against its owner (compaction)."""
        self.pages_allocated = 0
        """pool->pages_allocated: frames held by zspages (zs_get_total_pages)."""
        self.pages_compacted = 0
        """pool->stats.pages_compacted: pages freed by zs_compact, ever."""
        self._read_cache: dict[int, ReadZspage | None] = {}
        self._read_generation = -1
        """``frames.generation`` when ``_read_cache`` was started."""
        self._new_frames: dict[int, NewFrames] = {}
        """A new zspage's frames per class (by class index), made at the class's first zspage."""
        self._store_geometry: StoreGeometry | None = None
        self._malloced: tuple[int, SizeClass] | None = None
        """(handle, class) of the object zs_malloc made last, until zs_obj_write or zs_free takes
        it: zram writes each object just after allocating it, and need not look its zspage up
        twice.  Forgotten whenever a zspage is freed (its first frame may return in another class)."""

    def store_geometry(self) -> StoreGeometry:
        """What ``_zsmalloc.store_entries`` (zram's compiled store path over this pool: an image's)
        reads of the pool, as it reads it: the class position of every size zs_malloc may be
        asked (handle header included); each class's (SizeClass, slot size, pages and objects per
        zspage, huge); each class's inuse -> fullness group; group -> list (-1: unlisted);
        find_get_zspage()'s lists in order; the number of groups; the handle size; the zspage map;
        the zspages whose free chain is checked (it stores only into those, and new ones, which
        it has ``_alloc_zspage`` make); the pool.  Made once: every part is the pool's own,
        changed in place."""
        if self._store_geometry is None:
            positions = self._by_index
            self._store_geometry = (
                [positions[c.index] for c in self._class_by_size],
                [(c, c.size, c.pages_per_zspage, c.objs_per_zspage, c.huge) for c in self.classes],
                self._groups,
                [-1 if li is None else li for li in self._list_index],
                self._alloc_lists,
                self.fullness.ngroups,
                self._handle_size,
                self.zspages,
                self._sound,
                self,
            )
        return self._store_geometry

    # --- class lookup ---------------------------------------------------

    def class_for(self, size: int) -> SizeClass:
        """The class that holds a slot of ``size`` bytes (handle header included)."""
        return self.classes[self._by_index[get_size_class_index(size)]]

    def class_position(self, cls: SizeClass) -> int:
        return self._by_index[cls.index]

    # --- fullness lists -------------------------------------------------

    def _insert_zspage(self, cls: SizeClass, zspage: ZsPage, fg: int) -> None:
        """insert_zspage(): count it in group ``fg`` and, if that group is listed, put it at the head."""
        zspage.fullness = fg
        cls.zspages[fg] += 1
        li = self._list_index[fg]
        if li is None:
            return
        head = cls.heads[li]
        zspage.prev = NO_ZSPAGE
        zspage.next = head
        if head != NO_ZSPAGE:
            self._zspage(head).prev = zspage.first
        cls.heads[li] = zspage.first

    def _remove_zspage(self, cls: SizeClass, zspage: ZsPage) -> None:
        """remove_zspage(): take it off its group's list and count."""
        fg = zspage.fullness
        if not 0 <= fg < self.fullness.ngroups:
            raise ZsCorrupt(f"zspage at frame {zspage.first} is in no fullness group ({fg})")
        li = self._list_index[fg]
        prev = self._zspage(zspage.prev) if li is not None and zspage.prev != NO_ZSPAGE else None
        nxt = self._zspage(zspage.next) if li is not None and zspage.next != NO_ZSPAGE else None
        cls.zspages[fg] -= 1
        if li is None:
            return
        if prev is not None:
            prev.next = zspage.next
        else:
            cls.heads[li] = zspage.next
        if nxt is not None:
            nxt.prev = zspage.prev
        zspage.prev = zspage.next = NO_ZSPAGE

    def _fix_fullness_group(self, cls: SizeClass, zspage: ZsPage) -> int:
        """Move a zspage to the list its use now calls for; keep its place if unchanged."""
        fg = self._groups[zspage.cls][zspage.inuse]
        if fg != zspage.fullness:
            self._remove_zspage(cls, zspage)
            self._insert_zspage(cls, zspage, fg)
        return fg

    # --- checks of untrusted bytes (see the module docstring) ---------------

    def _zspage(self, first: int, for_object: bool = False) -> ZsPage:
        """The zspage at ``first``; ZsCorrupt when there is none (a handle's, or a list link's)."""
        try:
            return self.zspages[first]
        except KeyError:
            if for_object:
                raise ZsCorrupt(f"the zspage holding its object (frame {first}) is missing") from None
            raise ZsCorrupt(f"a fullness list names frame {first}, which holds no zspage") from None

    def _head(self, cls: SizeClass, li: int) -> ZsPage:
        """The zspage heading list ``li`` of ``cls``, after checking it belongs there."""
        first = cls.heads[li]
        try:  # once a page: the look-up inline, _zspage only to say what is missing
            zspage = self.zspages[first]
        except KeyError:
            zspage = self._zspage(first)
        pos = self._by_index[cls.index]  # class_position()
        if (
            zspage.cls != pos
            or not 0 <= zspage.fullness < self.fullness.ngroups
            or self._list_index[zspage.fullness] != li
            or self._groups[pos][zspage.inuse] != zspage.fullness
        ):
            raise ZsCorrupt(
                f"zspage at frame {zspage.first} heads a list of class {cls.index} it does not belong to"
            )
        return zspage

    def _check_chain(self, cls: SizeClass, zspage: ZsPage) -> set[int]:
        """Walk a zspage's free chain (at most objs - inuse links); its free slots, or ZsCorrupt."""
        first, objs = zspage.first, cls.objs_per_zspage
        want = objs - zspage.inuse
        free: set[int] = set()
        cur = zspage.freeobj
        tagged = self._handle_size and not cls.huge
        while cur != FREE_END:
            if len(free) == want or not 0 <= cur < objs or cur in free:
                what = "a used or repeated slot" if 0 <= cur < objs else "no slot"
                raise ZsCorrupt(
                    f"zspage at frame {first}: free slot {len(free)} of {want} links to {what} ({cur:#x}); "
                    "its free chain is broken"
                )
            free.add(cur)
            word = self._read_word(cls, first, cur)
            if tagged and word & OBJ_ALLOCATED_TAG:
                raise ZsCorrupt(
                    f"zspage at frame {first}: slot {cur} is on the free chain but marked allocated"
                )
            cur = word >> OBJ_TAG_BITS
        if len(free) != want:
            raise ZsCorrupt(
                f"zspage at frame {first}: its free chain ends after {len(free)} of {want} free slots"
            )
        self._sound.add(first)
        return free

    def _check_zspage(self, cls: SizeClass, zspage: ZsPage) -> None:
        """The whole zspage: its free chain, and every other slot's header naming the page that owns it."""
        if zspage.first in self._whole or not self.untrusted:
            return
        first = zspage.first
        if zspage.cls != self.class_position(cls) or not 0 <= zspage.inuse <= cls.objs_per_zspage:
            raise ZsCorrupt(f"zspage at frame {first}: its record does not fit class {cls.index}")
        free = self._check_chain(cls, zspage)
        if self._handle_size and not cls.huge:
            for idx in range(cls.objs_per_zspage):
                if idx in free:
                    continue
                word = self._read_word(cls, first, idx)
                owner = word >> OBJ_TAG_BITS
                if not word & OBJ_ALLOCATED_TAG:
                    raise ZsCorrupt(
                        f"zspage at frame {first}: slot {idx} is neither on the free chain nor allocated "
                        f"(word {word:#x})"
                    )
                if self.owner_handle is not None and self.owner_handle(owner) != encode_handle(first, idx):
                    raise ZsCorrupt(
                        f"zspage at frame {first}: slot {idx} holds handle {word:#x} that names no page "
                        "stored there"
                    )
        self._whole.add(first)

    def check_handle(self, handle: int, length: int) -> tuple[SizeClass, ZsPage]:
        """An object's class and zspage, after checking the handle and ``length`` fit a slot (ZsCorrupt)."""
        first, idx = handle >> OBJ_INDEX_BITS, handle & OBJ_INDEX_MASK
        try:  # every object read asks: the look-up inline, _zspage only to say what is missing
            zspage = self.zspages[first]
        except KeyError:
            zspage = self._zspage(first, for_object=True)
        if not 0 <= zspage.cls < len(self.classes):
            raise ZsCorrupt(f"zspage at frame {first} has no class")
        cls = self.classes[zspage.cls]
        room = cls.size if cls.huge else cls.size - self._handle_size
        if idx >= cls.objs_per_zspage or not 0 < length <= room or zspage.inuse == 0:
            raise ZsCorrupt(f"a {length}-byte object in slot {idx} does not fit the zspage at frame {first}")
        return cls, zspage

    # --- the compiled read path's look at an object's zspage --------------------

    def read_cache(self) -> dict[int, ReadZspage | None]:
        """The zspages ``object_zspage`` has described since the frames last changed (at most
        about READ_CACHE_ZSPAGES): where ``_zsmalloc.read_entries`` looks an object's zspage up
        first.  Kept across reads, so that a zspage whose objects a long read meets in several
        calls is read once; emptied whenever a frame may have changed (``frames.generation``)."""
        if self._read_generation != self.frames.generation:
            self._read_cache = {}
            self._read_generation = self.frames.generation
        elif len(self._read_cache) > READ_CACHE_ZSPAGES:
            self._read_cache.clear()
        return self._read_cache

    def object_zspage(self, first: int) -> ReadZspage | None:
        """What reading an object of the zspage at ``first`` needs, checked as ``check_handle``
        checks it whatever the slot; None where that fails, or its frames cannot be read (the
        caller's own path then reads the page, and says why)."""
        try:
            zspage = self.zspages[first]
        except (KeyError, ZsError, OSError):
            return None
        if not 0 <= zspage.cls < len(self.classes) or zspage.inuse == 0:
            return None
        cls = self.classes[zspage.cls]
        header = 0 if cls.huge else self._handle_size
        try:
            data = self.frames.span(first, cls.pages_per_zspage)
        except OSError:
            return None
        return cls.size, cls.objs_per_zspage, cls.size - header, header, data

    # --- slots ------------------------------------------------------------

    def _slot_place(self, cls: SizeClass, first: int, idx: int) -> tuple[int, int]:
        """(frame, offset in frame) where object ``idx`` of a zspage starts."""
        off = idx * cls.size
        return first + (off >> 12), off & (PAGE_SIZE - 1)

    def _read_word(self, cls: SizeClass, first: int, idx: int) -> int:
        frame, off = self._slot_place(cls, first, idx)
        return _unpack_word(self.frames.view(frame), off)[0]

    def _init_zspage(self, cls: SizeClass, zspage: ZsPage) -> None:
        """init_zspage(): chain every object slot into the free list, 0 -> 1 -> ... -> end.

        The chain is the same for every zspage of a class, so its frames are made once
        (``_chained_frames``) and each new zspage's frames are opened holding a copy of them,
        in one call (``FrameStore.open_new``): a 256 MiB write makes some 10,000 zspages.
        """
        frames = self._new_frames.get(cls.index)
        if frames is None:
            frames = self._new_frames[cls.index] = self._chained_frames(cls)
        self.frames.open_new(zspage.first, frames)  # every frame, even one no object starts in
        zspage.freeobj = 0

    def _chained_frames(self, cls: SizeClass) -> NewFrames:
        """A new zspage's frames, each zeros but for its link words: object ``idx`` (at byte
        ``idx * size``, 8-aligned) links to ``idx + 1``, the last to FREE_END; the objects starting
        in frame ``k`` are ``ceil(k * PAGE_SIZE / size)`` up to the next frame's first, ``size / 8``
        words apart."""
        n, size = cls.objs_per_zspage, cls.size
        frames: NewFrames = []
        for k in range(cls.pages_per_zspage):
            frame = bytearray(PAGE_SIZE)
            lo = -(-k * PAGE_SIZE // size)
            hi = min(n, -(-(k + 1) * PAGE_SIZE // size))
            if lo < hi:
                links = array("Q", [
                    (i + 1 if i + 1 < n else FREE_END) << OBJ_TAG_BITS for i in range(lo, hi)
                ])
                if sys.byteorder != "little":  # link words are little-endian in the frames
                    links.byteswap()
                start = (lo * size - k * PAGE_SIZE) // ZS_ALIGN
                step = size // ZS_ALIGN
                memoryview(frame).cast("Q")[start : start + step * (hi - lo) : step] = links
            frames.append(bytes(frame))
        return frames

    def _alloc_zspage(self, cls: SizeClass) -> ZsPage:
        first = self.frames.alloc(cls.pages_per_zspage)
        zspage = ZsPage(first, self.class_position(cls))
        self.zspages[first] = zspage
        self._init_zspage(cls, zspage)
        if self.untrusted:
            self._sound.add(first)
            self._whole.add(first)
        self.pages_allocated += cls.pages_per_zspage
        cls.objs_allocated += cls.objs_per_zspage
        return zspage

    def _free_zspage(self, cls: SizeClass, zspage: ZsPage) -> None:
        """free_zspage(): an empty zspage gives its frames back at once."""
        self._remove_zspage(cls, zspage)
        cls.objs_allocated -= cls.objs_per_zspage
        self.pages_allocated -= cls.pages_per_zspage
        del self.zspages[zspage.first]
        self.frames.free(zspage.first, cls.pages_per_zspage)
        self._sound.discard(zspage.first)
        self._whole.discard(zspage.first)
        self._malloced = None

    def _obj_malloc(self, cls: SizeClass, zspage: ZsPage, owner: int) -> int:
        """Pop the free chain's head; mark it allocated with its owner.  Returns the index."""
        idx = zspage.freeobj
        off = idx * cls.size
        frame, o = zspage.first + (off >> 12), off & (PAGE_SIZE - 1)
        # The slot's frame is read for its link and, with a handle header, written with the
        # owner: one mutable view serves both (no second look-up of the frame).
        header = self._handle_size and not cls.huge
        buf = self.frames.mutable(frame) if header else self.frames.view(frame)
        zspage.freeobj = _unpack_word(buf, o)[0] >> OBJ_TAG_BITS
        zspage.inuse += 1
        if cls.huge:
            zspage.owner = owner
        elif header:
            _pack_word(buf, o, owner << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG)
        return idx

    def _obj_free(self, cls: SizeClass, zspage: ZsPage, idx: int) -> None:
        """Push a slot onto its zspage's free chain (LIFO)."""
        off = idx * cls.size
        _pack_word(
            self.frames.mutable(zspage.first + (off >> 12)),
            off & (PAGE_SIZE - 1),
            zspage.freeobj << OBJ_TAG_BITS,
        )
        zspage.freeobj = idx
        zspage.inuse -= 1
        if cls.huge:
            zspage.owner = -1

    # --- the API zram uses ------------------------------------------------

    def zs_malloc(self, size: int, owner: int) -> int:
        """Allocate an object for ``size`` bytes of data; return its handle.

        ``owner`` is kept with the object (the handle slot of the modern
        kernel) and given back to ``relocate`` if compaction moves it.
        """
        if size <= 0:
            raise ZsError(22, "zs_malloc: size 0")
        if size > ZS_MAX_ALLOC_SIZE:
            raise ZsError(28, "zs_malloc: larger than a page")
        cls = self._class_by_size[size + self._handle_size]
        heads = cls.heads
        zspage = None
        for li in self._alloc_lists:  # find_get_zspage()
            if heads[li] != NO_ZSPAGE:
                if self.untrusted:
                    zspage = self._head(cls, li)
                    if zspage.first not in self._sound:
                        self._check_chain(cls, zspage)
                else:
                    zspage = self.zspages[heads[li]]
                break
        try:
            if zspage is None:
                zspage = self._alloc_zspage(cls)
                idx = self._obj_malloc(cls, zspage, owner)
                self._insert_zspage(cls, zspage, self.fullness.group(zspage.inuse, cls.objs_per_zspage))
            else:
                idx = self._obj_malloc(cls, zspage, owner)
                self._fix_fullness_group(cls, zspage)
        except ZsCorrupt as exc:
            exc.midway = True
            raise
        cls.objs_inuse += 1
        handle = zspage.first << OBJ_INDEX_BITS | idx
        self._malloced = (handle, cls)
        return handle

    def zs_free(self, handle: int) -> None:
        self._malloced = None
        first, idx = decode_handle(handle)
        if self.untrusted:
            cls, zspage = self.check_handle(handle, 1)
        else:
            zspage = self.zspages[first]
            cls = self.classes[zspage.cls]
        try:
            self._obj_free(cls, zspage, idx)
            cls.objs_inuse -= 1
            if self._fix_fullness_group(cls, zspage) == self.fullness.empty:
                self._free_zspage(cls, zspage)
        except ZsCorrupt as exc:  # a list link: the object is already freed
            exc.midway = True
            raise

    def _payload(self, handle: int, cls: SizeClass | None = None) -> tuple[int, int]:
        """(first frame, byte offset in the zspage) of an object's data: past the handle header if any.

        ``cls``: the object's class when the caller has already looked its zspage up.
        """
        first = handle >> OBJ_INDEX_BITS
        if cls is None:
            cls = self.classes[self._zspage(first, for_object=True).cls]
        off = (handle & OBJ_INDEX_MASK) * cls.size
        if not cls.huge:
            off += self._handle_size
        return first, off

    def zs_obj_write(self, handle: int, data: bytes | memoryview) -> None:
        """Copy ``data`` into the object, across a frame boundary if it spans one."""
        made, self._malloced = self._malloced, None
        first, off = self._payload(handle, made[1] if made is not None and made[0] == handle else None)
        o = off & (PAGE_SIZE - 1)
        if o + len(data) <= PAGE_SIZE:
            self.frames.mutable(first + (off >> 12))[o : o + len(data)] = data
        else:
            self._write_span(first, off, data)

    def zs_obj_read(self, handle: int, length: int) -> bytes:
        """The first ``length`` bytes of the object's data.

        One zspage look-up: the class ``check_handle`` found (untrusted) is the one ``_payload``
        would look up again.
        """
        cls = self.check_handle(handle, length)[0] if self.untrusted else None
        first, off = self._payload(handle, cls)
        o = off & (PAGE_SIZE - 1)
        if o + length <= PAGE_SIZE:
            return self.frames.view(first + (off >> 12))[o : o + length].tobytes()
        return self._read_span(first, off, length)

    def _read_span(self, first: int, off: int, length: int) -> bytes:
        """``length`` bytes at byte ``off`` of a zspage: in one frame, or across two."""
        frame, o = first + (off >> 12), off & (PAGE_SIZE - 1)
        head = min(length, PAGE_SIZE - o)
        if head < length:  # one copy of each part, straight into the result
            return b"".join((self.frames.view(frame)[o:], self.frames.view(frame + 1)[: length - head]))
        return self.frames.view(frame)[o : o + head].tobytes()

    def _write_span(self, first: int, off: int, data: bytes | memoryview) -> None:
        frame, o = first + (off >> 12), off & (PAGE_SIZE - 1)
        n = len(data)
        head = min(n, PAGE_SIZE - o)
        self.frames.mutable(frame)[o : o + head] = data[:head]
        if head < n:
            self.frames.mutable(frame + 1)[: n - head] = data[head:]

    def zs_get_total_pages(self) -> int:
        return self.pages_allocated

    # --- compaction (modern only) ----------------------------------------

    def zs_can_compact(self, cls: SizeClass) -> int:
        """Pages compaction could free in a class: whole zspages' worth of free slots."""
        wasted = cls.objs_allocated - cls.objs_inuse
        if wasted <= 0:
            return 0
        return wasted // cls.objs_per_zspage * cls.pages_per_zspage

    def _isolate(self, cls: SizeClass, groups: Iterator[int] | tuple[int, ...] | range) -> ZsPage | None:
        """Take the head of the first non-empty list of ``groups`` off it, after checking the whole zspage."""
        for fg in groups:
            li = self._list_of[fg]
            if cls.heads[li] != NO_ZSPAGE:
                zspage = self._head(cls, li)
                self._check_zspage(cls, zspage)
                self._remove_zspage(cls, zspage)
                zspage.fullness = -1  # isolated: counted nowhere until put back
                return zspage
        return None

    def _putback_zspage(self, cls: SizeClass, zspage: ZsPage) -> int:
        fg = self.fullness.group(zspage.inuse, cls.objs_per_zspage)
        self._insert_zspage(cls, zspage, fg)
        return fg

    def _migrate_zspage(self, cls: SizeClass, src: ZsPage, dst: ZsPage) -> None:
        """Move src's objects, lowest index first, into dst until dst is full or src empty."""
        for idx in range(cls.objs_per_zspage):
            word = self._read_word(cls, src.first, idx)
            if not word & OBJ_ALLOCATED_TAG:
                continue
            owner = word >> OBJ_TAG_BITS
            data = self._read_span(src.first, idx * cls.size, cls.size)
            new_idx = self._obj_malloc(cls, dst, owner)
            self._write_span(dst.first, new_idx * cls.size, data)
            self._obj_free(cls, src, idx)
            if self.relocate is not None:
                self.relocate(owner, encode_handle(dst.first, new_idx))
            if dst.inuse == cls.objs_per_zspage or src.inuse == 0:
                break

    def _compact_class(self, cls: SizeClass) -> int:
        """__zs_compact(): fill the fullest zspages from the emptiest; free what empties."""
        freed = 0
        dst: ZsPage | None = None
        src_order = self.fullness.listed  # 10% .. 99%
        dst_order = tuple(reversed(self.fullness.listed))  # 99% .. 10%
        # Each round empties its source or fills its destination: more rounds than twice the
        # zspages means the lists or counts lie (the bound that keeps a damaged image from hanging).
        rounds = 2 * sum(cls.zspages) + 2
        while self.zs_can_compact(cls):
            rounds -= 1
            if rounds < 0:
                raise ZsCorrupt(
                    f"compaction of class {cls.index} does not end: its lists or counts are wrong"
                )
            if dst is None:
                dst = self._isolate(cls, dst_order)
                if dst is None:
                    break
            src = self._isolate(cls, src_order)
            if src is None:
                break
            self._migrate_zspage(cls, src, dst)
            if self._putback_zspage(cls, src) == self.fullness.empty:
                self._free_zspage(cls, src)
                freed += cls.pages_per_zspage
            if self.fullness.group(dst.inuse, cls.objs_per_zspage) == self.fullness.full:
                self._putback_zspage(cls, dst)
                dst = None
        if dst is not None:
            self._putback_zspage(cls, dst)
        return freed

    def zs_compact(self) -> int:
        """Compact every class, largest first; return (and count) the pages freed."""
        freed = 0
        for cls in reversed(self.classes):
            freed += self._compact_class(cls)
        self.pages_compacted += freed
        return freed

    # --- whole pool -------------------------------------------------------

    def destroy(self) -> None:
        """zs_destroy_pool(): every zspage and frame given back at once."""
        self._malloced = None
        self.zspages.clear()
        self.frames.clear()
        self.pages_allocated = 0
        for cls in self.classes:
            cls.objs_allocated = cls.objs_inuse = 0
            cls.heads = [NO_ZSPAGE] * len(cls.heads)
            cls.zspages = [0] * len(cls.zspages)

    def is_huge(self, handle: int) -> bool:
        return self.classes[self.zspages[decode_handle(handle)[0]].cls].huge
