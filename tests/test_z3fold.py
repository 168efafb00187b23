"""The z3fold model against the rules of mm/z3fold.c (6.14), worked by hand.

Numbers used throughout (docs/allocators.md): a chunk is 64 bytes; the header
takes chunks 0-1 (ZHDR_CHUNKS = 2), so 62 chunks are for objects and chunk
positions run 2..63.  FIRST starts at chunk 2, LAST ends at chunk 64, MIDDLE
starts at ``start_middle``.  Objects over 3904 bytes get a headless page.  A page
with a free buddy is on unbuddied[free chunks]; malloc takes the head of the
first non-empty list with index >= chunks needed.  After a free that leaves
objects, the page is compacted: a lone native object moves to another listed
page with room; else the middle buddy may slide.

``layout`` gives each page as (first, middle, start_middle, last, list), chunks;
start_middle is None without a middle buddy, list is -1 for a full page.
"""

from __future__ import annotations

import errno
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zramctl.kernel.allocator import Allocator, AllocError, ZsmallocAllocator
from zramctl.kernel.profiles import LEGACY, MODERN
from zramctl.kernel.z3fold import (
    BIG_CHUNK_GAP,
    CHUNK_SIZE,
    FIRST,
    HEADLESS,
    LAST,
    MAX_HEADED_SIZE,
    MIDDLE,
    TOTAL_CHUNKS,
    ZHDR_CHUNKS,
    Z3foldAppendOnly,
    Z3foldPage,
    Z3foldPool,
    get_free_buddy,
    size_to_chunks,
)
from zramctl.kernel.zbud import ZbudAppendOnly, ZbudPool
from zramctl.kernel.zsmalloc import Pool


def layout(pool: Z3foldPool) -> list[tuple[int, int, int | None, int, int]]:
    return [
        (
            p.first_chunks,
            p.middle_chunks,
            p.start_middle if p.middle_chunks else None,
            p.last_chunks,
            p.on_list,
        )
        for _, p in sorted(pool.pages.items())
        if not p.headless
    ]


def where(pool: Z3foldPool, handle: int) -> tuple[int, int]:
    """(page id, buddy) of a live object."""
    page, bud = pool.locate(handle)
    return page.id, bud


def chunks(n: int) -> int:
    """The largest size that takes exactly ``n`` chunks."""
    return n * CHUNK_SIZE


def test_constants_are_the_kernels():
    assert CHUNK_SIZE == 64 and TOTAL_CHUNKS == 64 and ZHDR_CHUNKS == 2
    assert TOTAL_CHUNKS - ZHDR_CHUNKS == 62  # NCHUNKS: the number of unbuddied lists
    assert MAX_HEADED_SIZE == 3904 and size_to_chunks(MAX_HEADED_SIZE) == 61
    assert BIG_CHUNK_GAP == 3
    assert len(Z3foldPool().unbuddied) == 62


def test_pool_is_an_allocator():
    assert isinstance(Z3foldPool(), Allocator)


def test_three_1000s_share_one_page():
    """1000 B = 16 chunks, three times.

    - new page P0, FIRST (chunks 2-17); free 62 - 16 = 46 -> unbuddied[46];
    - P0 from list 46: FIRST taken, no middle -> LAST (chunks 48-63); free 30;
    - P0 from list 30: FIRST and LAST taken -> MIDDLE at first + 2 = 18
      (chunks 18-33); all three taken -> on no list.
    One page, where zbud needs two.
    """
    pool = Z3foldPool()
    a, b, c = (pool.malloc(1000) for _ in range(3))
    assert [where(pool, h) for h in (a, b, c)] == [(0, FIRST), (0, LAST), (0, MIDDLE)]
    assert layout(pool) == [(16, 16, 18, 16, -1)]
    assert pool.pages_allocated == 1
    zbud = ZbudPool()
    for _ in range(3):
        zbud.malloc(1000)
    assert zbud.pages_allocated == 2
    # A fourth: no page on a list -> a new page.
    pool.malloc(1000)
    assert pool.pages_allocated == 2
    pool.check()


def test_free_first_of_a_full_page_slides_the_middle_up():
    """Free FIRST of [16 | M16@18 | 16].

    The page was full (on no list), so z3fold_free compacts at once.  Two buddies
    are left (not single), so z3fold_compact_page: LAST taken, FIRST free, the gap
    after the middle is 64 - (16 + 18 + 16) = 14 >= 3 -> the middle moves to
    64 - 16 - 16 = 32.  Free chunks: before the middle, 32 - 2 = 30 -> list 30.
    Without the slide it would have been 18 - 2 = 16.
    """
    pool = Z3foldPool()
    a, _, c = (pool.malloc(1000) for _ in range(3))
    pool.free(a)
    assert layout(pool) == [(0, 16, 32, 16, 30)]
    assert where(pool, c) == (0, MIDDLE)
    # 30 chunks fit before the middle: FIRST, and the page is full again.
    d = pool.malloc(chunks(30))
    assert where(pool, d) == (0, FIRST)
    assert layout(pool) == [(30, 16, 32, 16, -1)]
    assert pool.pages_allocated == 1
    pool.check()


def test_31_chunks_do_not_fit_before_the_slid_middle():
    pool = Z3foldPool()
    a, _, _ = (pool.malloc(1000) for _ in range(3))
    pool.free(a)
    d = pool.malloc(chunks(30) + 1)  # 31 chunks: lists 31.. are empty -> new page
    assert where(pool, d) == (1, FIRST)
    assert pool.pages_allocated == 2
    pool.check()


def test_a_lone_middle_becomes_first():
    """[10 | M10@12 | 10] (640 B each), then free FIRST, then LAST.

    - free FIRST: gap after the middle 64 - (10 + 12 + 10) = 32 >= 3 -> middle to
      64 - 10 - 10 = 44; free = 44 - 2 = 42 -> list 42;
    - free LAST: the middle is alone and native, but no other page exists for
      compact_single_buddy; z3fold_compact_page moves it to chunk 2: it is now
      the FIRST buddy (10 chunks), free 62 - 10 = 52 -> list 52.
    A 52-chunk object then fits as LAST: still one page.
    """
    pool = Z3foldPool()
    a, b, c = (pool.malloc(640) for _ in range(3))
    assert layout(pool) == [(10, 10, 12, 10, -1)]
    pool.free(a)
    assert layout(pool) == [(0, 10, 44, 10, 42)]
    pool.free(b)
    assert layout(pool) == [(10, 0, None, 0, 52)]
    assert where(pool, c) == (0, FIRST)  # the handle follows it (first_num++ in the kernel)
    d = pool.malloc(chunks(52))
    assert where(pool, d) == (0, LAST)
    assert pool.pages_allocated == 1
    pool.free(c)
    pool.free(d)
    assert pool.pages_allocated == 0
    pool.check()


def big_gap_page() -> tuple[Z3foldPool, int, int]:
    """[20 | M10@22 | 10], free FIRST -> the middle slides to 44 (gap 22 >= 3); list 42."""
    pool = Z3foldPool()
    # The second object takes LAST, the third MIDDLE (FIRST and LAST both taken).
    f, last, m = pool.malloc(chunks(20)), pool.malloc(chunks(10)), pool.malloc(chunks(10))
    assert [where(pool, h)[1] for h in (f, last, m)] == [FIRST, LAST, MIDDLE]
    assert layout(pool) == [(20, 10, 22, 10, -1)]
    pool.free(f)
    assert layout(pool) == [(0, 10, 44, 10, 42)]
    return pool, m, last


def test_middle_slides_down_to_first_when_the_gap_is_big():
    """A 5-chunk FIRST (chunks 2-6) leaves 44 - 7 = 37 chunks before the middle.

    Free LAST: FIRST taken, LAST free, gap 37 >= 3 -> the middle moves to 7.
    Free chunks after it: 64 - (7 + 10) = 47 -> list 47.
    """
    pool, _, last = big_gap_page()
    pool.malloc(chunks(5))
    assert layout(pool) == [(5, 10, 44, 10, -1)]
    pool.free(last)
    assert layout(pool) == [(5, 10, 7, 0, 47)]
    pool.check()


def test_middle_stays_when_the_gap_is_small():
    """A 40-chunk FIRST (chunks 2-41) leaves 44 - 42 = 2 < BIG_CHUNK_GAP chunks.

    Free LAST: nothing moves; free chunks after the middle: 64 - 54 = 10 -> list 10
    (12 if it had moved).  So an 11-chunk object needs a new page, a 10-chunk one
    does not.
    """
    pool, _, last = big_gap_page()
    pool.malloc(chunks(40))
    pool.free(last)
    assert layout(pool) == [(40, 10, 44, 0, 10)]
    pool.malloc(chunks(11))
    assert pool.pages_allocated == 2
    h = pool.malloc(chunks(10))
    assert where(pool, h) == (0, LAST)
    pool.check()


def test_a_lone_object_moves_to_another_page():
    """compact_single_buddy.

    - 3904 B = 61 chunks: P0 FIRST, free 1 -> list 1;
    - 1000 B = 16 chunks: lists 16.. empty -> P1 FIRST, free 46 -> list 46;
    - 64 B = 1 chunk: list 1 -> P0, LAST; free 0 -> list 0 (never searched);
    - free P0's FIRST: P0 keeps the 1-chunk LAST alone, native -> it looks for
      a page from list 1 up: P1 (list 46) takes it as LAST; P0 is released.
      P1 = FIRST 16 + LAST 1 (foreign), free 62 - 17 = 45.
    - free P1's FIRST: one buddy left, but it is foreign -> it does not move;
      no middle, nothing slides; free 61 -> list 61.
    """
    pool = Z3foldPool()
    a, b, c = pool.malloc(MAX_HEADED_SIZE), pool.malloc(1000), pool.malloc(64)
    assert [where(pool, h) for h in (a, b, c)] == [(0, FIRST), (1, FIRST), (0, LAST)]
    assert layout(pool) == [(61, 0, None, 1, 0), (16, 0, None, 0, 46)]
    pool.free(a)
    assert pool.pages_allocated == 1 and pool.moved == 1
    assert where(pool, c) == (1, LAST)
    assert layout(pool) == [(16, 0, None, 1, 45)]
    assert pool.pages[1].foreign_handles == 1
    pool.free(b)
    assert layout(pool) == [(0, 0, None, 1, 61)]
    assert pool.moved == 1
    pool.free(c)
    assert pool.pages_allocated == 0
    pool.check()


def test_a_lone_object_stays_when_no_page_has_room():
    pool = Z3foldPool()
    a, c = pool.malloc(MAX_HEADED_SIZE), pool.malloc(64)
    pool.free(a)
    assert layout(pool) == [(0, 0, None, 1, 61)]
    assert where(pool, c) == (0, LAST)
    assert pool.moved == 0
    pool.check()


def test_get_free_buddy_beside_a_middle():
    """FIRST beside a middle only if it fits before it; else LAST if free."""
    page = Z3foldPage(0, middle_chunks=10, start_middle=20)  # 18 chunks free before, 34 after
    assert get_free_buddy(page, 18) == FIRST
    assert get_free_buddy(page, 19) == LAST
    page.last_chunks = 5
    assert get_free_buddy(page, 19) == HEADLESS
    page = Z3foldPage(0, first_chunks=3, last_chunks=4)
    assert get_free_buddy(page, 1) == MIDDLE


def test_headless_and_edge_sizes():
    pool = Z3foldPool()
    h = pool.malloc(MAX_HEADED_SIZE + 1)  # 3905 B: a headless page
    assert where(pool, h)[1] == HEADLESS and pool.pages_allocated == 1
    pool.malloc(4096)  # the largest: headless too
    assert pool.pages_allocated == 2
    pool.malloc(64)  # never joins a headless page
    assert pool.pages_allocated == 3
    for size, code in ((4097, errno.ENOSPC), (0, errno.EINVAL)):
        with pytest.raises(AllocError) as e:
            pool.malloc(size)
        assert e.value.errno == code
    pool.free(h)  # a headless page is freed at once
    assert pool.pages_allocated == 2
    with pytest.raises(AllocError) as e:
        pool.free(h)
    assert e.value.errno == errno.EINVAL
    assert [(s.name, s.objects, s.pages) for s in pool.class_stats()] == [
        ("1 buddy", 1, 1),
        ("headless", 1, 1),
    ]
    pool.check()


def test_same_list_is_lifo():
    pool = Z3foldPool()
    pool.malloc(MAX_HEADED_SIZE)  # P0: 1 free -> list 1
    pool.malloc(MAX_HEADED_SIZE)  # P1: list 1, the head
    h = pool.malloc(1)
    assert where(pool, h) == (1, LAST)
    pool.check()


sizes = st.integers(1, 4096)
ops = st.lists(st.one_of(sizes, st.tuples(st.just("free"), st.integers(0, 10**6))), max_size=300)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_invariants(script):
    """Any sequence of malloc/free: records consistent, handles distinct, bounds hold, all free -> 0."""
    pool = Z3foldPool()
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
        headless = sum(s > MAX_HEADED_SIZE for s in live.values())
        headed = [size_to_chunks(s) for s in live.values() if s <= MAX_HEADED_SIZE]
        assert pool.pages_allocated >= headless + math.ceil(sum(headed) / (TOTAL_CHUNKS - ZHDR_CHUNKS))
        assert pool.pages_allocated >= headless + math.ceil(len(headed) / 3)
        assert pool.pages_allocated <= len(live)
        assert pool.objects == len(live)
        assert sum(s.pages for s in pool.class_stats()) == pool.pages_allocated
    for h in list(live):
        pool.free(h)
    assert pool.pages_allocated == 0 and pool.objects == 0
    pool.check()


@settings(max_examples=200, deadline=None)
@given(st.lists(sizes, max_size=400))
def test_append_only_counts_the_same_pages(script):
    """With mallocs only, the one-byte-per-listed-page model reaches the full model's count at every step."""
    full, stream = Z3foldPool(), Z3foldAppendOnly()
    for size in script:
        full.malloc(size)
        stream.malloc(size)
        assert stream.pages_allocated == full.pages_allocated
        assert stream.objects == full.objects
    want = [(s.name, s.objects, s.pages) for s in full.class_stats()]
    assert [(s.name, s.objects, s.pages) for s in stream.class_stats()] == want


def test_append_only_worked_example():
    """1000 x 3 share a page; a 4th opens a second; 3905 is headless; free is refused."""
    pool = Z3foldAppendOnly()
    for _ in range(4):
        pool.malloc(1000)
    pool.malloc(MAX_HEADED_SIZE + 1)
    assert pool.pages_allocated == 3
    assert [(s.name, s.pages) for s in pool.class_stats()] == [
        ("1 buddy", 1),
        ("3 buddies", 1),
        ("headless", 1),
    ]
    with pytest.raises(AllocError) as e:
        pool.free(0)
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(AllocError) as e:
        pool.malloc(4097)
    assert e.value.errno == errno.ENOSPC


# --- the Allocator interface, across the models ---------------------------------


@pytest.mark.parametrize("make", [Z3foldPool, Z3foldAppendOnly, ZbudPool, ZbudAppendOnly, ZsmallocAllocator])
def test_every_model_is_an_allocator(make):
    pool = make()
    assert isinstance(pool, Allocator)
    with pytest.raises(AllocError) as e:
        pool.malloc(0)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(AllocError) as e:
        pool.malloc(pool.max_size + 1)
    assert e.value.errno == errno.ENOSPC
    handles = [pool.malloc(size) for size in (1, 100, 1000, 2000, 3000, pool.max_size)]
    assert len(set(handles)) == len(handles)
    assert pool.objects == 6 and pool.pages_allocated >= 1
    assert sum(s.pages for s in pool.class_stats()) == pool.pages_allocated
    assert sum(s.objects for s in pool.class_stats()) == pool.objects


@pytest.mark.parametrize("profile", [MODERN, LEGACY], ids=lambda p: p.name)
def test_zsmalloc_adapter_is_the_pool(profile):
    """The adapter's pages are zsmalloc.Pool's for the same sizes, and a stale handle is refused."""
    adapter, pool = ZsmallocAllocator(profile), Pool(profile)
    sizes_ = [37 * k % 4096 + 1 for k in range(1, 400)]
    handles = []
    for n, size in enumerate(sizes_):
        handles.append(adapter.malloc(size))
        pool.zs_malloc(size, n)
        assert adapter.pages_allocated == pool.zs_get_total_pages()
    assert adapter.objects == len(sizes_)
    for h in handles:
        adapter.free(h)
    assert adapter.pages_allocated == 0 and adapter.objects == 0
    with pytest.raises(AllocError) as e:
        adapter.free(handles[0])
    assert e.value.errno == errno.EINVAL
