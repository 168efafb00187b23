"""z3fold: up to three compressed objects per page, a model of mm/z3fold.c (Linux 6.14, its last).

Why it existed: zbud's simplicity, with a better ratio.  z3fold keeps an
integral number of objects per page, like zbud, but fits a third one (the
*middle* buddy) between the first and the last, and stores objects up to a
whole page.  Its documentation promised about 2.7:1 where zbud reached 1.7:1.

How it works (every fact, with its source, is in ``docs/allocators.md``):

- A page is 64 chunks of 64 bytes.  The header (``struct z3fold_header``, 88
  bytes on x86-64) takes ``ZHDR_CHUNKS`` = 2 chunks, so 62 are for objects.
- An object of at most 3904 bytes (61 chunks) goes to a page with a header:
  FIRST right after the header, LAST at the end, MIDDLE at ``start_middle``.
  Larger objects (up to PAGE_SIZE) get a *headless* page each, on no list.
- A page with a free buddy sits at the head of ``unbuddied[free chunks]`` (with
  a middle buddy, the larger free region beside it).  ``malloc`` takes the head of
  the first non-empty list with index >= chunks needed; the object becomes FIRST
  if free (and, beside a middle, if it fits before it), else LAST, else MIDDLE —
  placed right after FIRST.  No such page: a new page, FIRST.
- A page's reference count is its object count; the free that drops it to 0
  releases the page.
- Any other free compacts the page: if one object is left, none of its objects
  came from elsewhere (``foreign``), and another listed page has room, the object
  *moves there* and this page is released (``compact_single_buddy``).  Otherwise
  the middle object may slide inside the page (``z3fold_compact_page``): to the
  start when it is alone (it becomes FIRST), or next to its neighbour when that
  frees at least BIG_CHUNK_GAP chunks beside it.  Then the page is re-filed.
- The pool's size is ``pages_nr``: pages with objects, headless ones included.

Modelled with one CPU (per-CPU lists become one set; the exact-fit search of
other CPUs' lists finds nothing) and with the deferred compaction work run
before the next call (the kernel runs it at once only when the page was full).
No migration, mapping or reclaim.  Sizes only, no bytes.

Handles work as the kernel's do, without the slot memory: a handle is
``page id << 2 | idx`` with ``idx = (buddy + first_num) & 3``, so that when a lone
middle buddy slides to the start and becomes FIRST, ``first_num += 1`` keeps its
handle pointing at it.  When compact_single_buddy moves an object, its handle
(whose slot stayed with the old page) is *forwarded* to ``(new page, new idx)``:
that is what makes it foreign in the new page.  A page records which of its
buddies are foreign, so a stale handle is refused rather than freeing one.
About 60 bytes of records per stored object.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from .allocator import AllocError, ClassStat, check_size
from .profiles import PAGE_SHIFT, PAGE_SIZE

# A page is 2**NCHUNKS_ORDER chunks: the allocation granularity.
NCHUNKS_ORDER = 6
CHUNK_SHIFT = PAGE_SHIFT - NCHUNKS_ORDER
CHUNK_SIZE = 1 << CHUNK_SHIFT
TOTAL_CHUNKS = PAGE_SIZE >> CHUNK_SHIFT
# sizeof(struct z3fold_header) is 88 on x86-64 (no lockdep), rounded up to whole chunks: 2.
ZHDR_CHUNKS = 2
# Objects larger than this get a headless page (so a page with a header always keeps a chunk free).
MAX_HEADED_SIZE = PAGE_SIZE - (ZHDR_CHUNKS << CHUNK_SHIFT) - CHUNK_SIZE
# z3fold_compact_page() moves the middle buddy next to a neighbour only to free at least this many chunks.
BIG_CHUNK_GAP = 3

HEADLESS = 0
FIRST = 1
MIDDLE = 2
LAST = 3
# A handle's slot index is two bits: four slots, one per enum buddy value.
BUDDY_MASK = 0x3


def size_to_chunks(size: int) -> int:
    """Chunks an object of ``size`` bytes takes (rounded up)."""
    return (size + CHUNK_SIZE - 1) >> CHUNK_SHIFT


@dataclass(eq=False, slots=True)
class Z3foldPage:
    """A z3fold page: what its header (or, headless, its page flags) records."""

    id: int
    headless: bool = False
    first_chunks: int = 0
    middle_chunks: int = 0
    last_chunks: int = 0
    start_middle: int = 0
    """Chunk where the middle buddy starts (stale once it is freed: read only while middle_chunks)."""
    first_num: int = 0
    """Added to a buddy to make its handle's idx (2 bits in the kernel; kept whole here, used & 3)."""
    foreign: int = 0
    """Bit ``1 << bud`` for each buddy holding an object moved in from another page."""
    on_list: int = -1
    """Index of the unbuddied list the page is on; -1: none (full, headless, or being worked on)."""

    @property
    def refcount(self) -> int:
        """kref: one per object in the page."""
        if self.headless:
            return 1
        return (self.first_chunks != 0) + (self.middle_chunks != 0) + (self.last_chunks != 0)

    @property
    def foreign_handles(self) -> int:
        """zhdr->foreign_handles: objects whose handle's slot lives in another page's slots."""
        return bin(self.foreign).count("1")

    def chunks_of(self, bud: int) -> int:
        return (0, self.first_chunks, self.middle_chunks, self.last_chunks)[bud]

    def set_chunks(self, bud: int, chunks: int) -> None:
        if bud == FIRST:
            self.first_chunks = chunks
        elif bud == MIDDLE:
            self.middle_chunks = chunks
        else:
            self.last_chunks = chunks

    def idx(self, bud: int) -> int:
        """__idx(): the slot index a handle to this buddy carries."""
        return (bud + self.first_num) & BUDDY_MASK

    def bud_of(self, idx: int) -> int:
        """handle_to_buddy(): the buddy a slot index names now."""
        return (idx - self.first_num) & BUDDY_MASK


def num_free_chunks(page: Z3foldPage) -> int:
    """Free chunks: with a middle buddy, the larger free region beside it; else the gap between ends."""
    if page.middle_chunks:
        before = 0 if page.first_chunks else page.start_middle - ZHDR_CHUNKS
        after = 0 if page.last_chunks else TOTAL_CHUNKS - (page.start_middle + page.middle_chunks)
        return max(before, after)
    return TOTAL_CHUNKS - ZHDR_CHUNKS - page.first_chunks - page.last_chunks


def get_free_buddy(page: Z3foldPage, chunks: int) -> int:
    """Which buddy a ``chunks``-chunk object takes in ``page`` (HEADLESS: none fits)."""
    if page.middle_chunks:
        if not page.first_chunks and chunks <= page.start_middle - ZHDR_CHUNKS:
            return FIRST
        if not page.last_chunks:
            return LAST
        return HEADLESS
    if not page.first_chunks:
        return FIRST
    if not page.last_chunks:
        return LAST
    return MIDDLE


def buddy_single(page: Z3foldPage) -> bool:
    """At most one buddy in use."""
    return (page.first_chunks != 0) + (page.middle_chunks != 0) + (page.last_chunks != 0) <= 1


def z3fold_compact_page(page: Z3foldPage) -> bool:
    """In-page compaction: slide the middle buddy (mchunk_memmove).  True if it moved."""
    if page.middle_chunks == 0:
        return False
    if page.first_chunks == 0 and page.last_chunks == 0:
        # Alone: to the start, where it becomes the first buddy; first_num + 1 keeps its handle valid.
        page.first_chunks, page.middle_chunks, page.start_middle = page.middle_chunks, 0, 0
        page.first_num += 1
        if page.foreign & 1 << MIDDLE:
            page.foreign ^= 1 << MIDDLE | 1 << FIRST
        return True
    if (
        page.first_chunks
        and not page.last_chunks
        and page.start_middle - (page.first_chunks + ZHDR_CHUNKS) >= BIG_CHUNK_GAP
    ):
        page.start_middle = page.first_chunks + ZHDR_CHUNKS
        return True
    if (
        page.last_chunks
        and not page.first_chunks
        and TOTAL_CHUNKS - (page.last_chunks + page.start_middle + page.middle_chunks) >= BIG_CHUNK_GAP
    ):
        page.start_middle = TOTAL_CHUNKS - page.last_chunks - page.middle_chunks
        return True
    return False


@dataclass
class Z3foldPool:
    """A z3fold pool on one CPU: its lists and pages (the ``Allocator`` interface)."""

    name: str = "z3fold"
    max_size: int = PAGE_SIZE
    unbuddied: list[dict[int, Z3foldPage]] = field(
        default_factory=lambda: [{} for _ in range(TOTAL_CHUNKS - ZHDR_CHUNKS)]
    )
    """``unbuddied[i]``: pages with a free buddy and i free chunks, oldest first (the head is the last)."""
    pages: dict[int, Z3foldPage] = field(default_factory=dict)
    """Every page by id, headless ones included."""
    forwarded: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Handles of moved objects -> (page id, idx) where the object is now (the rewritten slot)."""
    pages_nr: int = 0
    """pool->pages_nr."""
    live: int = 0
    """Objects stored."""
    moved: int = 0
    """Objects compact_single_buddy() moved to another page, ever (each released a page)."""
    slid: int = 0
    """Middle buddies z3fold_compact_page() moved inside their page, ever."""
    _nonempty: int = 0
    """Bit i set when unbuddied[i] (i > 0) has a page: the list search is one bit scan."""
    _next_page: int = 0

    # --- lists ---------------------------------------------------------

    def _list_del(self, page: Z3foldPage) -> None:
        """list_del_init(): off its list, if on one."""
        if page.on_list < 0:
            return
        lst = self.unbuddied[page.on_list]
        del lst[page.id]
        if not lst:
            self._nonempty &= ~(1 << page.on_list)
        page.on_list = -1

    def _add_to_unbuddied(self, page: Z3foldPage) -> None:
        """add_to_unbuddied(): a page with a free buddy goes to the head of unbuddied[free chunks]."""
        if page.first_chunks and page.middle_chunks and page.last_chunks:
            return
        i = num_free_chunks(page)
        self.unbuddied[i][page.id] = page
        page.on_list = i
        if i:
            self._nonempty |= 1 << i

    def _find_unbuddied(self, chunks: int) -> Z3foldPage | None:
        """__z3fold_alloc()'s search: the head of the first non-empty unbuddied[i], i >= chunks, taken off."""
        above = self._nonempty >> chunks
        if not above:
            return None
        i = chunks + (above & -above).bit_length() - 1
        page = next(reversed(self.unbuddied[i].values()))
        self._list_del(page)
        return page

    # --- pages and handles ---------------------------------------------

    def _new_page(self, headless: bool) -> Z3foldPage:
        page = Z3foldPage(self._next_page, headless=headless)
        self._next_page += 1
        self.pages[page.id] = page
        self.pages_nr += 1
        return page

    def _release(self, page: Z3foldPage) -> None:
        """The last reference is gone: off its list, out of pages_nr (the page itself goes stale)."""
        self._list_del(page)
        del self.pages[page.id]
        self.pages_nr -= 1

    def _place(self, page: Z3foldPage, bud: int, chunks: int) -> None:
        page.set_chunks(bud, chunks)
        if bud == MIDDLE:
            page.start_middle = page.first_chunks + ZHDR_CHUNKS

    def locate(self, handle: int) -> tuple[Z3foldPage, int]:
        """The page and buddy (HEADLESS for a headless page) a live handle names; AllocError if none."""
        moved = handle in self.forwarded
        page_id, idx = self.forwarded[handle] if moved else (handle >> 2, handle & BUDDY_MASK)
        page = self.pages.get(page_id)
        if page is not None:
            if page.headless:
                if idx == 0 and not moved:
                    return page, HEADLESS
            else:
                bud = page.bud_of(idx)
                if bud != HEADLESS and page.chunks_of(bud) and bool(page.foreign >> bud & 1) == moved:
                    return page, bud
        raise AllocError(errno.EINVAL, f"{self.name}: no object with handle {handle:#x}")

    # --- the API ---------------------------------------------------------

    def malloc(self, size: int) -> int:
        """z3fold_alloc(): place an object of ``size`` bytes; return its handle."""
        check_size(size, PAGE_SIZE, self.name)
        self.live += 1
        if size > MAX_HEADED_SIZE:
            return self._new_page(headless=True).id << 2
        chunks = size_to_chunks(size)
        page = self._find_unbuddied(chunks)
        if page is not None:
            bud = get_free_buddy(page, chunks)
            # A page on list i >= chunks always has room; the kernel WARNs if not.
            assert bud != HEADLESS, "z3fold: no free chunks in unbuddied"
        else:
            page, bud = self._new_page(headless=False), FIRST
        self._place(page, bud, chunks)
        self._add_to_unbuddied(page)
        return page.id << 2 | page.idx(bud)

    def free(self, handle: int) -> None:
        """z3fold_free(): clear the buddy; release an empty page, else compact it."""
        page, bud = self.locate(handle)
        self.live -= 1
        if page.headless:
            self._release(page)
            return
        page.set_chunks(bud, 0)
        if page.foreign >> bud & 1:
            page.foreign &= ~(1 << bud)
            del self.forwarded[handle]
        if page.refcount == 0:
            self._release(page)
            return
        self._do_compact_page(page)

    def _do_compact_page(self, page: Z3foldPage) -> None:
        """do_compact_page(): move a lone object out if it can, else compact in place and re-file."""
        self._list_del(page)
        if not page.foreign and buddy_single(page) and self._compact_single_buddy(page):
            return
        if z3fold_compact_page(page):
            self.slid += 1
        self._add_to_unbuddied(page)

    def _compact_single_buddy(self, page: Z3foldPage) -> bool:
        """compact_single_buddy(): move the page's one (native) object to a listed page with room."""
        bud = FIRST if page.first_chunks else MIDDLE if page.middle_chunks else LAST
        chunks = page.chunks_of(bud)
        target = self._find_unbuddied(chunks)
        if target is None:
            return False
        new_bud = get_free_buddy(target, chunks)
        if new_bud == HEADLESS:  # out_fail: put it back (cannot happen: see malloc)
            self._add_to_unbuddied(target)
            return False
        self._place(target, new_bud, chunks)
        target.foreign |= 1 << new_bud
        self._add_to_unbuddied(target)
        self.forwarded[page.id << 2 | page.idx(bud)] = (target.id, target.idx(new_bud))
        page.set_chunks(bud, 0)
        self._release(page)
        self.moved += 1
        return True

    @property
    def pages_allocated(self) -> int:
        """z3fold_get_pool_pages()."""
        return self.pages_nr

    @property
    def objects(self) -> int:
        return self.live

    def class_stats(self) -> list[ClassStat]:
        """Headless pages, and pages with one, two and three buddies."""
        counts = [0, 0, 0, 0]
        headless = 0
        for page in self.pages.values():
            if page.headless:
                headless += 1
            else:
                counts[page.refcount] += 1
        rows = [
            ClassStat(f"{n} {'buddy' if n == 1 else 'buddies'}", n * counts[n], counts[n])
            for n in (1, 2, 3)
            if counts[n]
        ]
        if headless:
            rows.append(ClassStat("headless", headless, headless))
        return rows

    def check(self) -> None:
        """Assert every invariant of the pool's records (for tests)."""
        assert self.pages_nr == len(self.pages)
        assert sum(p.refcount for p in self.pages.values()) == self.live
        assert sum(p.foreign_handles for p in self.pages.values()) == len(self.forwarded)
        for handle, (page_id, idx) in self.forwarded.items():
            assert self.locate(handle) == (self.pages[page_id], self.pages[page_id].bud_of(idx))
        for page in self.pages.values():
            assert page.refcount >= 1
            if page.headless:
                assert page.on_list == -1 and not page.foreign
                continue
            for bud in (FIRST, MIDDLE, LAST):
                if page.foreign >> bud & 1:
                    assert page.chunks_of(bud)
                elif page.chunks_of(bud):
                    assert self.locate(page.id << 2 | page.idx(bud)) == (page, bud)
            # The buddies do not overlap and stay inside the page.
            end_first = ZHDR_CHUNKS + page.first_chunks
            start_last = TOTAL_CHUNKS - page.last_chunks
            if page.middle_chunks:
                assert end_first <= page.start_middle
                assert page.start_middle + page.middle_chunks <= start_last
            assert end_first <= start_last
            full = page.first_chunks and page.middle_chunks and page.last_chunks
            want = -1 if full else num_free_chunks(page)
            assert page.on_list == want
            if want >= 0:
                assert page.id in self.unbuddied[want]
        assert sum(len(lst) for lst in self.unbuddied) == sum(p.on_list >= 0 for p in self.pages.values())
        for i in range(1, len(self.unbuddied)):
            assert bool(self._nonempty >> i & 1) == bool(self.unbuddied[i])


ONE_BUDDY = 1
TWO_BUDDIES = 2


@dataclass
class Z3foldAppendOnly:
    """z3fold when nothing is ever freed (a replay of a stream of pages, as ``estimate`` does).

    With no free there is no compaction, and a listed page is either FIRST alone
    or FIRST and LAST: on unbuddied[i] the first kind has ``first_chunks = 62 - i``
    and takes its next object as LAST; the second takes it as MIDDLE and is then
    full for good.  So a list is a stack of one byte per page (which kind), in the
    kernel's order (the head is the top); full pages, and pages with no chunk free
    (on unbuddied[0], never searched), are only counted.  The page count equals
    ``Z3foldPool``'s for every sequence of mallocs; ``free`` is refused (EOPNOTSUPP).
    """

    name: str = "z3fold"
    max_size: int = PAGE_SIZE
    unbuddied: list[bytearray] = field(
        default_factory=lambda: [bytearray() for _ in range(TOTAL_CHUNKS - ZHDR_CHUNKS)]
    )
    """``unbuddied[i]``: ONE_BUDDY or TWO_BUDDIES for each page on list i, oldest first."""
    pages_nr: int = 0
    headless: int = 0
    """Headless pages (included in pages_nr)."""
    by_buddies: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """Pages with a header, by how many buddies they hold."""
    live: int = 0
    _nonempty: int = 0

    def _push(self, i: int, kind: int) -> None:
        if i:
            self.unbuddied[i].append(kind)
            self._nonempty |= 1 << i

    def malloc(self, size: int) -> int:
        check_size(size, PAGE_SIZE, self.name)
        self.live += 1
        if size > MAX_HEADED_SIZE:
            self.pages_nr += 1
            self.headless += 1
            return self.live - 1
        chunks = size_to_chunks(size)
        above = self._nonempty >> chunks
        if above:
            i = chunks + (above & -above).bit_length() - 1
            stack = self.unbuddied[i]
            kind = stack.pop()
            if not stack:
                self._nonempty &= ~(1 << i)
            self.by_buddies[kind] -= 1
            self.by_buddies[kind + 1] += 1
            if kind == ONE_BUDDY:  # the object is its LAST; i - chunks chunks are left between
                self._push(i - chunks, TWO_BUDDIES)
            # TWO_BUDDIES: the object is its MIDDLE, and the page is full.
        else:
            self.pages_nr += 1
            self.by_buddies[ONE_BUDDY] += 1
            self._push(TOTAL_CHUNKS - ZHDR_CHUNKS - chunks, ONE_BUDDY)
        return self.live - 1

    def free(self, handle: int) -> None:
        raise AllocError(errno.EOPNOTSUPP, f"{self.name}: this pool never frees (append-only)")

    @property
    def pages_allocated(self) -> int:
        return self.pages_nr

    @property
    def objects(self) -> int:
        return self.live

    def class_stats(self) -> list[ClassStat]:
        rows = [
            ClassStat(f"{n} {'buddy' if n == 1 else 'buddies'}", n * self.by_buddies[n], self.by_buddies[n])
            for n in (1, 2, 3)
        ]
        rows.append(ClassStat("headless", self.headless, self.headless))
        return [r for r in rows if r.pages]
