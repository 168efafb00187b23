"""The zbud model against the rules of mm/zbud.c (6.14), worked by hand.

Numbers used throughout (docs/allocators.md): a chunk is 64 bytes, an object of
``s`` bytes takes ceil(s / 64) chunks, a page has 63 chunks for objects (the
header takes the 64th), the largest object is 3968 bytes (62 chunks).  A page
with one buddy is on unbuddied[63 - its chunks]; malloc takes the head (most
recent) of the first non-empty list whose index is >= the chunks it needs.
"""

from __future__ import annotations

import errno
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zramctl.kernel.allocator import Allocator, AllocError
from zramctl.kernel.zbud import (
    BUDDIED,
    CHUNK_SIZE,
    FIRST,
    LAST,
    NCHUNKS,
    ZBUD_MAX_SIZE,
    ZbudAppendOnly,
    ZbudPool,
    size_to_chunks,
)


def place(pool: ZbudPool, handle: int) -> tuple[int, int]:
    """(page id, buddy) of a handle."""
    return handle >> 1, handle & 1


def layout(pool: ZbudPool) -> list[tuple[int, int, int]]:
    """(first_chunks, last_chunks, list index) of every page, by page id."""
    return [(p.first_chunks, p.last_chunks, p.on_list) for _, p in sorted(pool.pages.items())]


def test_constants_are_the_kernels():
    assert CHUNK_SIZE == 64
    assert NCHUNKS == 63
    assert ZBUD_MAX_SIZE == 3968
    assert [size_to_chunks(s) for s in (1, 64, 65, 1000, 3000, 3968)] == [1, 1, 2, 16, 47, 62]


def test_pool_is_an_allocator():
    assert isinstance(ZbudPool(), Allocator)


def test_1000_1000_3000():
    """The brief's example.

    - 1000 B = 16 chunks: no page on any list -> new page P0, FIRST; P0 has
      63 - 16 = 47 free chunks -> unbuddied[47].
    - 1000 B = 16 chunks: lists 16.. -> unbuddied[47] has P0; its FIRST is taken
      -> LAST.  P0 is full -> buddied.
    - 3000 B = 47 chunks: lists 47..62 are empty (P0 is buddied) -> new page P1,
      FIRST; 63 - 47 = 16 free -> unbuddied[16].
    Two pages; the 2:1 bound is reached only by the first page.
    """
    pool = ZbudPool()
    a, b, c = (pool.malloc(s) for s in (1000, 1000, 3000))
    assert [place(pool, h) for h in (a, b, c)] == [(0, FIRST), (0, LAST), (1, FIRST)]
    assert layout(pool) == [(16, 16, BUDDIED), (47, 0, 16)]
    assert pool.pages_allocated == 2
    # 1024 B = 16 chunks: unbuddied[16] has P1 -> its LAST; 47 + 16 = 63 chunks, full.
    d = pool.malloc(1024)
    assert place(pool, d) == (1, LAST)
    assert layout(pool) == [(16, 16, BUDDIED), (47, 16, BUDDIED)]
    assert pool.pages_allocated == 2
    pool.check()


def test_tightest_list_wins_not_the_newest_page():
    """Lists are searched upward from the chunks needed: the page with the least room that fits.

    P0 gets 40 chunks (23 free), P1 gets 30 chunks (33 free).  A 20-chunk object
    searches lists 20.. and meets unbuddied[23] (P0) before unbuddied[33] (P1),
    although P1 is the newer page.
    """
    pool = ZbudPool()
    pool.malloc(40 * 64)
    pool.malloc(30 * 64)  # 30 chunks: lists 30.. are empty (P0 is on 23) -> new page P1
    assert layout(pool) == [(40, 0, 23), (30, 0, 33)]
    h = pool.malloc(20 * 64)
    assert place(pool, h) == (0, LAST)
    assert layout(pool) == [(40, 20, BUDDIED), (30, 0, 33)]
    pool.check()


def test_same_list_is_lifo():
    """Two pages on one list: the one added last is the head, and is taken first."""
    pool = ZbudPool()
    a = pool.malloc(62 * 64)  # P0: 1 free chunk -> unbuddied[1]
    b = pool.malloc(62 * 64)  # P1: a second page, unbuddied[1]; P1 is the head
    assert layout(pool) == [(62, 0, 1), (62, 0, 1)]
    h = pool.malloc(1)
    assert place(pool, h) == (1, LAST)
    # Freeing P0's only object empties it: freed at once.  P1 (full) is left.
    pool.free(a)
    assert pool.pages_allocated == 1
    # Free P1's FIRST: P1 keeps its 1-chunk LAST; 62 free -> unbuddied[62], head.
    pool.free(b)
    assert layout(pool) == [(0, 1, 62)]
    # The freed FIRST is reused: a new 62-chunk object goes there (first_chunks == 0 -> FIRST).
    h2 = pool.malloc(ZBUD_MAX_SIZE)
    assert place(pool, h2) == (1, FIRST)
    assert pool.pages_allocated == 1
    pool.check()


def test_edge_sizes():
    pool = ZbudPool()
    h = pool.malloc(ZBUD_MAX_SIZE)  # 62 chunks: the largest; 1 chunk left
    assert layout(pool) == [(62, 0, 1)]
    with pytest.raises(AllocError) as e:
        pool.malloc(ZBUD_MAX_SIZE + 1)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(AllocError) as e:
        pool.malloc(4096)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(AllocError) as e:
        pool.malloc(0)
    assert e.value.errno == errno.EINVAL
    # A 64-byte object fits in the last chunk: exactly 63 chunks used.
    pool.malloc(64)
    assert layout(pool) == [(62, 1, BUDDIED)]
    # 65 bytes is 2 chunks: a new page.
    pool.malloc(65)
    assert pool.pages_allocated == 2
    pool.free(h)
    pool.check()


def test_free_patterns_that_empty_a_page():
    pool = ZbudPool()
    a, b = pool.malloc(100), pool.malloc(200)  # one page: 2 + 4 chunks
    assert pool.pages_allocated == 1
    pool.free(b)  # the LAST: the page keeps FIRST, 61 free
    assert layout(pool) == [(2, 0, 61)]
    pool.free(a)  # now empty: freed at once
    assert pool.pages_allocated == 0 and pool.objects == 0
    a, b = pool.malloc(100), pool.malloc(200)
    pool.free(a)  # FIRST first, then LAST
    assert layout(pool) == [(0, 4, 59)]
    pool.free(b)
    assert pool.pages_allocated == 0
    pool.check()


def test_bad_handles_are_refused():
    pool = ZbudPool()
    a = pool.malloc(100)
    pool.free(a)
    for h in (a, a ^ 1, 12345):
        with pytest.raises(AllocError) as e:
            pool.free(h)
        assert e.value.errno == errno.EINVAL
    b = pool.malloc(100)
    with pytest.raises(AllocError):
        pool.free(b ^ 1)  # the LAST of b's page is free
    pool.check()


def test_two_per_page_at_best():
    """n objects of any size take at least ceil(n / 2) pages: the 2:1 cap."""
    pool = ZbudPool()
    for _ in range(100):
        pool.malloc(64)
    assert pool.pages_allocated == 50
    stats = pool.class_stats()
    assert [(s.name, s.objects, s.pages) for s in stats] == [("2 buddies", 100, 50)]


sizes = st.integers(1, ZBUD_MAX_SIZE)
ops = st.lists(st.one_of(sizes, st.tuples(st.just("free"), st.integers(0, 10**6))), max_size=300)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_invariants(script):
    """Any sequence of malloc/free: records consistent, handles distinct, bounds hold, all free -> 0."""
    pool = ZbudPool()
    live: dict[int, int] = {}
    for op in script:
        if isinstance(op, int):
            h = pool.malloc(op)
            assert h not in live
            live[h] = op
        elif live:
            h = list(live)[op[1] % len(live)]
            pool.free(h)
            del live[h]
        pool.check()
        chunks = sum(size_to_chunks(s) for s in live.values())
        assert pool.pages_allocated >= math.ceil(chunks / NCHUNKS)
        assert math.ceil(len(live) / 2) <= pool.pages_allocated <= len(live)
        assert pool.objects == len(live)
        assert sum(s.pages for s in pool.class_stats()) == pool.pages_allocated
    for h in list(live):
        pool.free(h)
    assert pool.pages_allocated == 0 and pool.objects == 0
    pool.check()


@settings(max_examples=200, deadline=None)
@given(st.lists(sizes, max_size=400))
def test_append_only_counts_the_same_pages(script):
    """With mallocs only, the O(1) model reaches the full model's page count after every step."""
    full, counts = ZbudPool(), ZbudAppendOnly()
    for size in script:
        full.malloc(size)
        counts.malloc(size)
        assert counts.pages_allocated == full.pages_allocated
        assert counts.objects == full.objects
    want = [(s.name, s.objects, s.pages) for s in full.class_stats()]
    assert [(s.name, s.objects, s.pages) for s in counts.class_stats()] == want


def test_append_only_refuses_what_zbud_refuses_and_any_free():
    pool = ZbudAppendOnly()
    assert isinstance(pool, Allocator)
    for size, code in ((0, errno.EINVAL), (ZBUD_MAX_SIZE + 1, errno.ENOSPC)):
        with pytest.raises(AllocError) as e:
            pool.malloc(size)
        assert e.value.errno == code
    h = pool.malloc(100)
    with pytest.raises(AllocError) as e:
        pool.free(h)
    assert e.value.errno == errno.EOPNOTSUPP
    # 100 B (2 chunks) opened page A on unbuddied[61]; then 1000 B (16 chunks) is A's
    # LAST; 1000 B opens B (unbuddied[47]); 3000 B (47 chunks) is B's LAST; 1024 B
    # (16 chunks) finds no list from 16 up: a third page, waiting on unbuddied[47].
    for size in (1000, 1000, 3000, 1024):
        pool.malloc(size)
    assert pool.pages_allocated == 3
    assert pool.waiting[47] == 1 and sum(pool.waiting) == 1
