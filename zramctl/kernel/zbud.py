"""zbud: two compressed objects per page, a model of mm/zbud.c (Linux 6.14, its last version).

Why it existed: zswap wanted an allocator whose reclaim was simple and
deterministic.  zbud "buddies" two compressed pages together in one page: the
first left-justified after a small header, the last right-justified at the end,
so that freeing either leaves one free region, as large as it can be.  It never
uses more pages than the objects it stores (at most two objects a page, at least
one), and never better than 2:1 — the argument of the 2013 thread that promoted zsmalloc.

How it works (every fact, with its source, is in ``docs/allocators.md``):

- A page is 64 *chunks* of 64 bytes.  The header takes the first chunk, so 63
  are for objects; an object takes ``ceil(size / 64)`` chunks and at most 62
  (3968 bytes): a page with one object always has a chunk free.
- A page with one buddy sits on ``unbuddied[free chunks]``; a page with two on
  ``buddied`` (the kernel's ``unbuddied[0]``, never used by a one-buddy page).
  Pages are added at the head of a list.
- ``malloc`` takes the head of the first non-empty ``unbuddied[i]`` with
  ``i >= chunks`` (the tightest fit, most recent first); the object becomes the
  FIRST buddy if that is free, else the LAST.  No such page: a new page, FIRST.
- ``free`` clears the buddy; an empty page is freed at once, else it goes back to
  the head of ``unbuddied[free chunks]``.
- The pool's size is ``pages_nr``: the pages holding objects.

The model keeps sizes only (no bytes; placement never depends on them), one CPU,
no eviction or writeback.  Handles are ``page id << 1 | buddy``; page ids are
never reused, so a stale handle is refused rather than aliasing a new object.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from .allocator import AllocError, ClassStat, check_size
from .profiles import PAGE_SHIFT, PAGE_SIZE

# A page is 2**NCHUNKS_ORDER chunks: the allocation granularity, and the number of lists.
NCHUNKS_ORDER = 6
CHUNK_SHIFT = PAGE_SHIFT - NCHUNKS_ORDER
CHUNK_SIZE = 1 << CHUNK_SHIFT
# The header (a list_head and two unsigned ints, 24 bytes) takes exactly one chunk.
ZHDR_SIZE_ALIGNED = CHUNK_SIZE
# Chunks left for the two buddies: 63; also the number of unbuddied lists.
NCHUNKS = (PAGE_SIZE - ZHDR_SIZE_ALIGNED) >> CHUNK_SHIFT
# Larger objects get -ENOSPC: one object always leaves a chunk free (so unbuddied[0] stays unused).
ZBUD_MAX_SIZE = PAGE_SIZE - ZHDR_SIZE_ALIGNED - CHUNK_SIZE

FIRST = 0
LAST = 1
# unbuddied[0] doubles as the buddied list (an anonymous union in struct zbud_pool).
BUDDIED = 0


def size_to_chunks(size: int) -> int:
    """Chunks an object of ``size`` bytes takes (rounded up)."""
    return (size + CHUNK_SIZE - 1) >> CHUNK_SHIFT


@dataclass(eq=False, slots=True)
class ZbudPage:
    """A zbud page: what its header records."""

    id: int
    first_chunks: int = 0
    """Chunks of the FIRST buddy; 0 when free."""
    last_chunks: int = 0
    """Chunks of the LAST buddy; 0 when free."""
    on_list: int = -1
    """Index in ``unbuddied`` of the list the page is on (BUDDIED for a full page)."""

    @property
    def buddies(self) -> int:
        return (self.first_chunks != 0) + (self.last_chunks != 0)


def num_free_chunks(page: ZbudPage) -> int:
    """Free chunks between the buddies (free buddies count as 0 chunks)."""
    return NCHUNKS - page.first_chunks - page.last_chunks


@dataclass
class ZbudPool:
    """A zbud pool: its lists and its page count (the ``Allocator`` interface)."""

    name: str = "zbud"
    max_size: int = ZBUD_MAX_SIZE
    unbuddied: list[dict[int, ZbudPage]] = field(default_factory=lambda: [{} for _ in range(NCHUNKS)])
    """``unbuddied[i]``, i > 0: pages with one buddy and i free chunks, oldest first (the head is the last).
    ``unbuddied[0]`` (the buddied list) stays empty: see ``_list_add``."""
    pages: dict[int, ZbudPage] = field(default_factory=dict)
    """Every page by id."""
    pages_nr: int = 0
    """pool->pages_nr: pages holding at least one object."""
    live: int = 0
    """Objects stored."""
    _nonempty: int = 0
    """Bit i set when unbuddied[i] (i > 0) has a page: the list search is one bit scan."""
    _next_id: int = 0

    # --- lists ---------------------------------------------------------

    def _list_add(self, page: ZbudPage, i: int) -> None:
        """list_add(): the page becomes the head of list i.

        The buddied list is never searched, so its order is not kept: a full page
        only records that it is on it (this halves the model's memory per page).
        """
        page.on_list = i
        if i != BUDDIED:
            self.unbuddied[i][page.id] = page
            self._nonempty |= 1 << i

    def _list_del(self, page: ZbudPage) -> None:
        if page.on_list != BUDDIED:
            lst = self.unbuddied[page.on_list]
            del lst[page.id]
            if not lst:
                self._nonempty &= ~(1 << page.on_list)
        page.on_list = -1

    def _first_fit(self, chunks: int) -> ZbudPage | None:
        """The head of the first non-empty unbuddied[i], i >= chunks (for_each_unbuddied_list)."""
        above = self._nonempty >> chunks
        if not above:
            return None
        i = chunks + (above & -above).bit_length() - 1
        return next(reversed(self.unbuddied[i].values()))

    def _file(self, page: ZbudPage) -> None:
        """Put a page on the list its buddies call for: unbuddied[free] or buddied."""
        if page.first_chunks == 0 or page.last_chunks == 0:
            self._list_add(page, num_free_chunks(page))
        else:
            self._list_add(page, BUDDIED)

    # --- the API ---------------------------------------------------------

    def malloc(self, size: int) -> int:
        """zbud_alloc(): place an object of ``size`` bytes; return its handle."""
        check_size(size, ZBUD_MAX_SIZE, self.name)
        chunks = size_to_chunks(size)
        page = self._first_fit(chunks)
        if page is not None:
            self._list_del(page)
            bud = FIRST if page.first_chunks == 0 else LAST
        else:
            page = ZbudPage(self._next_id)
            self._next_id += 1
            self.pages[page.id] = page
            self.pages_nr += 1
            bud = FIRST
        if bud == FIRST:
            page.first_chunks = chunks
        else:
            page.last_chunks = chunks
        self._file(page)
        self.live += 1
        return page.id << 1 | bud

    def free(self, handle: int) -> None:
        """zbud_free(): clear the buddy; free an empty page, else re-file it."""
        page = self.pages.get(handle >> 1)
        bud = handle & 1
        if page is None or (page.first_chunks if bud == FIRST else page.last_chunks) == 0:
            raise AllocError(errno.EINVAL, f"{self.name}: no object with handle {handle:#x}")
        if bud == FIRST:
            page.first_chunks = 0
        else:
            page.last_chunks = 0
        self._list_del(page)
        self.live -= 1
        if page.first_chunks == 0 and page.last_chunks == 0:
            del self.pages[page.id]
            self.pages_nr -= 1
        else:
            self._file(page)

    @property
    def pages_allocated(self) -> int:
        """zbud_get_pool_pages()."""
        return self.pages_nr

    @property
    def objects(self) -> int:
        return self.live

    def class_stats(self) -> list[ClassStat]:
        """Pages with one buddy and with two."""
        counts = [0, 0, 0]
        for page in self.pages.values():
            counts[page.buddies] += 1
        return [
            ClassStat(f"{n} {'buddy' if n == 1 else 'buddies'}", n * counts[n], counts[n])
            for n in (1, 2)
            if counts[n]
        ]

    def check(self) -> None:
        """Assert every invariant of the pool's records (for tests)."""
        assert self.pages_nr == len(self.pages)
        assert self.live == sum(p.buddies for p in self.pages.values())
        for page in self.pages.values():
            assert page.buddies >= 1
            assert page.first_chunks + page.last_chunks <= NCHUNKS
            assert max(page.first_chunks, page.last_chunks) <= NCHUNKS - 1
            want = BUDDIED if page.buddies == 2 else num_free_chunks(page)
            assert page.on_list == want and (want == BUDDIED or page.id in self.unbuddied[want])
        assert sum(len(lst) for lst in self.unbuddied) == sum(p.buddies == 1 for p in self.pages.values())
        for i in range(1, NCHUNKS):
            assert bool(self._nonempty >> i & 1) == bool(self.unbuddied[i])


@dataclass
class ZbudAppendOnly:
    """zbud when nothing is ever freed (a replay of a stream of pages, as ``estimate`` does).

    With no free, a page with one buddy has only its FIRST, so every page on
    unbuddied[i] has ``first_chunks = NCHUNKS - i``: the pages of one list are
    alike, their order cannot matter, and a count per list is the whole state.
    A page that gets its LAST is full for good and is only counted.  The page
    count equals ``ZbudPool``'s for every sequence of mallocs, in O(1) memory;
    ``free`` is refused (EOPNOTSUPP).
    """

    name: str = "zbud"
    max_size: int = ZBUD_MAX_SIZE
    waiting: list[int] = field(default_factory=lambda: [0] * NCHUNKS)
    """``waiting[i]``: pages on unbuddied[i] (one buddy, i free chunks)."""
    pages_nr: int = 0
    live: int = 0
    _nonempty: int = 0
    """Bit i set when waiting[i] > 0."""

    def malloc(self, size: int) -> int:
        check_size(size, ZBUD_MAX_SIZE, self.name)
        chunks = size_to_chunks(size)
        above = self._nonempty >> chunks
        if above:
            i = chunks + (above & -above).bit_length() - 1
            self.waiting[i] -= 1
            if not self.waiting[i]:
                self._nonempty &= ~(1 << i)
        else:
            self.pages_nr += 1
            i = NCHUNKS - chunks
            self.waiting[i] += 1
            self._nonempty |= 1 << i
        self.live += 1
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
        one = sum(self.waiting)
        two = self.pages_nr - one
        rows = [ClassStat("1 buddy", one, one), ClassStat("2 buddies", 2 * two, two)]
        return [r for r in rows if r.pages]
