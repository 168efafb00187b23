"""zsmalloc against the facts (``mm/zsmalloc.c`` of Linux 6.18 and 3.14): class tables, lookups, fullness
groups, which zspage and slot an allocation takes, release, compaction, spanning objects."""

from __future__ import annotations

import dataclasses
import random

import pytest

from zramctl.kernel.profiles import LEGACY, MODERN, PAGE_SIZE
from zramctl.kernel.zsmalloc import (
    FREE_END,
    OBJ_ALLOCATED_TAG,
    OBJ_TAG_BITS,
    QUARTER_FULLNESS,
    RATIO_FULLNESS,
    ZS_SIZE_CLASSES,
    MemoryFrames,
    Pool,
    ZsCorrupt,
    ZsError,
    build_classes,
    chain_size_min_waste,
    chain_size_usedpc,
    decode_handle,
    get_size_class_index,
)

# --------------------------------------------------------------------------
# Class tables


def reps(pool: Pool) -> list[str]:
    return [f"{c.size}/{c.pages_per_zspage}/{c.objs_per_zspage}" for c in pool.classes]


def test_chain8_has_119_classes_and_huge_class_size_3625():
    pool = Pool(MODERN)
    assert MODERN.chain_size == 8
    assert len(pool.classes) == 119
    assert pool.huge_class_size == 3625


def test_chain8_representatives_from_the_facts():
    table = reps(Pool(MODERN))
    head = "32/1/128 48/3/256 64/1/64 80/5/256 96/3/128 112/7/256 128/1/32 144/7/199 160/5/128 176/4/93 "
    head += "192/3/64 208/3/59 224/7/128 240/1/17 256/1/16"
    tail = "3072/3/4 3184/7/9 3264/4/5 3408/5/6 3504/6/7 3584/7/8 3632/8/9 4096/1/1"
    assert table[:15] == head.split()
    assert table[-8:] == tail.split()
    assert "2048/1/2" in table
    # Sizes ascend, each representative is the largest size of its merged run.
    sizes = [int(r.split("/")[0]) for r in table]
    assert sizes == sorted(set(sizes))


def independent_modern_table(chain: int) -> tuple[list[tuple[int, int, int]], int]:
    """§1.2 written again, plainly, to check build_classes against."""
    out: list[tuple[int, int, int]] = []
    huge = 0
    prev = None
    for i in range(254, -1, -1):
        size = min(32 + 16 * i, 4096)
        if size & (size - 1) == 0:
            pages = 1
        else:
            pages = min(range(1, chain + 1), key=lambda k: ((k * 4096) % size, k))
        objs = pages * 4096 // size
        if pages != 1 and objs != 1 and huge == 0:
            huge = size - 7
        if prev and prev[1:] == (pages, objs):
            continue
        prev = (size, pages, objs)
        out.append(prev)
    return sorted(out), huge


@pytest.mark.parametrize(("chain", "count", "huge"), [(8, 119, 3625), (4, 69, 3257), (16, None, 3833)])
def test_chain_sizes_follow_the_min_waste_rule(chain, count, huge):
    pool = Pool(dataclasses.replace(MODERN, chain_size=chain))
    expected, expected_huge = independent_modern_table(chain)
    assert [(c.size, c.pages_per_zspage, c.objs_per_zspage) for c in pool.classes] == expected
    assert pool.huge_class_size == expected_huge == huge
    if count is not None:
        assert len(pool.classes) == count
    assert all(c.pages_per_zspage <= chain for c in pool.classes)


def test_indices_from_226_alias_the_4096_class():
    pool = Pool(MODERN)
    huge = pool.classes[-1]
    assert (huge.size, huge.pages_per_zspage, huge.objs_per_zspage, huge.huge) == (4096, 1, 1, True)
    for i in range(226, ZS_SIZE_CLASSES):
        assert pool.class_for(32 + 16 * i) is huge, i
    below = pool.class_for(32 + 16 * 225)
    assert (below.size, below.pages_per_zspage, below.objs_per_zspage, below.huge) == (3632, 8, 9, False)
    # Exactly one huge class in the modern table.
    assert [c.size for c in pool.classes if c.huge] == [4096]


def test_merged_indices_alias_the_larger_class():
    pool = Pool(MODERN)
    for i in range(ZS_SIZE_CLASSES):
        nominal = min(32 + 16 * i, 4096)
        cls = pool.class_for(nominal)
        assert cls.size >= nominal
        # Nothing between the nominal size and the representative has other geometry.
        assert cls.pages_per_zspage * PAGE_SIZE // nominal == cls.objs_per_zspage


def usedpc_pages(size: int) -> int:
    best, best_pc = 1, 0
    for k in range(1, 5):
        zs = k * 4096
        pc = (zs - zs % size) * 100 // zs
        if pc > best_pc:
            best, best_pc = k, pc
    return best


def test_legacy_has_255_unmerged_classes_by_usedpc():
    pool = Pool(LEGACY)
    assert len(pool.classes) == 255
    assert pool.huge_class_size == 0
    for i, cls in enumerate(pool.classes):
        assert cls.index == i and cls.size == 32 + 16 * i
        assert cls.pages_per_zspage == usedpc_pages(cls.size) <= 4
        assert cls.objs_per_zspage == cls.pages_per_zspage * 4096 // cls.size
        assert pool.class_for(cls.size) is cls


def test_legacy_examples():
    by_size = {c.size: c for c in Pool(LEGACY).classes}
    # 48: 99 % with 1 or 2 pages, 100 % with 3; 3088: 75 % up to 3 pages, 94 % with 4.
    assert (by_size[48].pages_per_zspage, by_size[48].objs_per_zspage) == (3, 256)
    assert (by_size[3088].pages_per_zspage, by_size[3088].objs_per_zspage) == (4, 5)
    # 4080: 99 % with one page already; ties keep the smaller chain.
    assert (by_size[4080].pages_per_zspage, by_size[4080].objs_per_zspage) == (1, 1)
    assert (by_size[4096].pages_per_zspage, by_size[4096].objs_per_zspage) == (1, 1)


def test_chain_helpers():
    assert chain_size_min_waste(1024, 8) == 1
    assert chain_size_min_waste(3632, 8) == 8
    assert chain_size_min_waste(48, 8) == 3  # 12288 % 48 == 0 first at k = 3
    assert chain_size_usedpc(48, 4) == 3
    assert chain_size_usedpc(32, 4) == 1
    classes, huge = build_classes(LEGACY, 4, 2)
    assert len(classes) == 255 and huge == 0


# --------------------------------------------------------------------------
# Size lookups


@pytest.mark.parametrize(
    ("size", "index"), [(0, 0), (1, 0), (32, 0), (33, 1), (48, 1), (49, 2), (4096, 254), (9999, 254)]
)
def test_get_size_class_index(size, index):
    assert get_size_class_index(size) == index


def class_of(pool: Pool, handle: int) -> int:
    return pool.classes[pool.zspages[decode_handle(handle)[0]].cls].size


@pytest.mark.parametrize(
    ("data", "modern", "legacy"),
    [
        (1, 32, 32),
        (24, 32, 32),
        (25, 48, 32),
        (32, 48, 32),
        (33, 48, 48),
        (1016, 1024, 1024),
        (1017, 1056, 1024),
        (1025, 1056, 1040),
        (3624, 3632, 3632),
        (3625, 4096, 3632),
        (4096, 4096, 4096),
    ],
)
def test_zs_malloc_adds_the_handle_only_in_the_modern_kernel(data, modern, legacy):
    pool = Pool(MODERN)
    assert class_of(pool, pool.zs_malloc(data, 0)) == modern
    pool = Pool(LEGACY)
    assert class_of(pool, pool.zs_malloc(data, 0)) == legacy


@pytest.mark.parametrize("profile", [MODERN, LEGACY])
def test_zs_malloc_refuses_empty_and_oversized(profile):
    pool = Pool(profile)
    with pytest.raises(ZsError) as e:
        pool.zs_malloc(0, 0)
    assert e.value.errno == 22
    with pytest.raises(ZsError) as e:
        pool.zs_malloc(PAGE_SIZE + 1, 0)
    assert e.value.errno == 28
    assert pool.pages_allocated == 0


# --------------------------------------------------------------------------
# Fullness groups


@pytest.mark.parametrize(
    ("inuse", "objs", "group"),
    [
        (0, 128, 0),
        (128, 128, 11),
        (1, 128, 1),
        (12, 128, 1),
        (13, 128, 2),
        (64, 128, 6),
        (127, 128, 10),
        (9, 10, 10),
        (1, 10, 2),
        (1, 4, 3),
        (2, 4, 6),
        (3, 4, 8),
        (1, 2, 6),
        (0, 1, 0),
        (1, 1, 11),
    ],
)
def test_ratio_groups(inuse, objs, group):
    assert RATIO_FULLNESS.group(inuse, objs) == group


@pytest.mark.parametrize(
    ("inuse", "objs", "group"),
    [(0, 9, 2), (9, 9, 3), (1, 9, 1), (2, 9, 1), (3, 9, 0), (8, 9, 0), (1, 4, 1), (2, 4, 0), (1, 3, 0)],
)
def test_quarter_groups(inuse, objs, group):
    # 0 ALMOST_FULL, 1 ALMOST_EMPTY (inuse <= objs // 4), 2 EMPTY, 3 FULL
    assert QUARTER_FULLNESS.group(inuse, objs) == group


def test_group_tables():
    assert RATIO_FULLNESS.alloc_order == tuple(range(10, 0, -1))
    assert RATIO_FULLNESS.listed == tuple(range(1, 11))
    assert QUARTER_FULLNESS.alloc_order == (0, 1)


# --------------------------------------------------------------------------
# Which zspage and which slot


def first_of(handle: int) -> int:
    return decode_handle(handle)[0]


def fill_zspages(pool: Pool, size: int, zspages: int) -> list[list[int]]:
    """Allocate ``zspages`` full zspages of the class of ``size``; handles per zspage."""
    out: list[list[int]] = []
    cls = pool.class_for(size + pool.profile.handle_size)
    owner = 0
    for _ in range(zspages):
        hs = []
        for _ in range(cls.objs_per_zspage):
            hs.append(pool.zs_malloc(size, owner))
            owner += 1
        assert len({first_of(h) for h in hs}) == 1
        out.append(hs)
    return out


def test_modern_alloc_takes_the_head_of_the_fullest_group():
    pool = Pool(MODERN)
    z1, z2, z3 = fill_zspages(pool, 1016, 3)  # class 1024: one page, four objects
    for h in z1[:3]:
        pool.zs_free(h)  # 25 %
    for h in z2[:2]:
        pool.zs_free(h)  # 50 %
    pool.zs_free(z3[0])  # 75 %
    assert first_of(pool.zs_malloc(1016, 99)) == first_of(z3[0])  # 75 % first
    assert first_of(pool.zs_malloc(1016, 99)) == first_of(z2[0])  # then 50 %
    assert first_of(pool.zs_malloc(1016, 99)) == first_of(z2[0])
    assert first_of(pool.zs_malloc(1016, 99)) == first_of(z1[0])  # then 25 %


def test_modern_alloc_takes_the_most_recently_inserted_of_a_group():
    pool = Pool(MODERN)
    z1, z2 = fill_zspages(pool, 1016, 2)
    pool.zs_free(z1[0])  # z1 -> 75 % list
    pool.zs_free(z2[0])  # z2 -> 75 % list, at its head
    assert first_of(pool.zs_malloc(1016, 0)) == first_of(z2[0])
    # A zspage whose group does not change keeps its place: free in z1 twice, z2 once.
    pool = Pool(MODERN)
    cls = pool.class_for(200 + 8)  # 208: 3 pages, 59 objects
    za, zb = fill_zspages(pool, 200, 2)
    pool.zs_free(za[0])  # za -> 90 % (58/59 = 98 %)
    pool.zs_free(zb[0])  # zb -> 90 %, head
    pool.zs_free(za[1])  # za stays 90 % (57/59 = 96 %): not moved to the head
    assert cls.zspages[10] == 2
    assert first_of(pool.zs_malloc(200, 0)) == first_of(zb[0])


def test_modern_new_zspage_only_when_no_list_has_room():
    pool = Pool(MODERN)
    (z1,) = fill_zspages(pool, 1016, 1)
    assert pool.pages_allocated == 1
    h = pool.zs_malloc(1016, 0)
    assert first_of(h) != first_of(z1[0]) and pool.pages_allocated == 2


def test_legacy_alloc_takes_almost_full_then_almost_empty():
    pool = Pool(LEGACY)
    cls = pool.class_for(1024)  # one page, four objects; almost empty = at most one in use
    z1, z2, z3 = fill_zspages(pool, 1024, 3)
    for h in z1[:3]:
        pool.zs_free(h)  # 1/4: ALMOST_EMPTY
    for h in z2[:2]:
        pool.zs_free(h)  # 2/4: ALMOST_FULL
    for h in z3[:3]:
        pool.zs_free(h)  # 1/4: ALMOST_EMPTY, inserted after z1: the head
    assert cls.zspages == [1, 2, 0, 0]
    assert first_of(pool.zs_malloc(1024, 0)) == first_of(z2[0])
    assert first_of(pool.zs_malloc(1024, 0)) == first_of(z2[0])  # z2 now full
    assert first_of(pool.zs_malloc(1024, 0)) == first_of(z3[0])  # head of ALMOST_EMPTY
    # z3 is 2/4 now: ALMOST_FULL, so it is filled before z1 is used.
    assert first_of(pool.zs_malloc(1024, 0)) == first_of(z3[0])
    assert first_of(pool.zs_malloc(1024, 0)) == first_of(z3[0])
    assert first_of(pool.zs_malloc(1024, 0)) == first_of(z1[0])


@pytest.mark.parametrize("profile", [MODERN, LEGACY])
def test_fresh_zspage_hands_out_slots_in_order_and_reuses_lifo(profile):
    pool = Pool(profile)
    handles = [pool.zs_malloc(200, i) for i in range(6)]
    assert [decode_handle(h)[1] for h in handles] == list(range(6))
    pool.zs_free(handles[1])
    pool.zs_free(handles[4])
    pool.zs_free(handles[2])
    assert [decode_handle(pool.zs_malloc(200, 9))[1] for _ in range(4)] == [2, 4, 1, 6]


@pytest.mark.parametrize("profile", [MODERN, LEGACY])
def test_empty_zspage_is_released_at_once(profile):
    frames = MemoryFrames()
    pool = Pool(profile, frames)
    cls = pool.class_for(3000 + profile.handle_size)
    hs = [pool.zs_malloc(3000, i) for i in range(cls.objs_per_zspage + 1)]
    assert pool.pages_allocated == 2 * cls.pages_per_zspage == frames.frames_in_use
    assert cls.objs_allocated == 2 * cls.objs_per_zspage
    pool.zs_free(hs[-1])
    assert pool.pages_allocated == cls.pages_per_zspage == frames.frames_in_use
    assert cls.objs_allocated == cls.objs_per_zspage and len(pool.zspages) == 1
    for h in hs[:-1]:
        pool.zs_free(h)
    assert pool.pages_allocated == 0 == frames.frames_in_use == len(pool.zspages)
    assert cls.objs_allocated == cls.objs_inuse == 0 and sum(cls.zspages) == 0


def test_modern_object_starts_with_its_handle_and_huge_keeps_it_aside():
    pool = Pool(MODERN)
    h = pool.zs_malloc(100, 77)
    first, idx = decode_handle(h)
    word = bytes(pool.frames.view(first)[:8])
    assert int.from_bytes(word, "little") == 77 << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG
    pool.zs_obj_write(h, b"x" * 100)
    assert bytes(pool.frames.view(first)[8:108]) == b"x" * 100
    huge = pool.zs_malloc(PAGE_SIZE, 5)
    assert pool.is_huge(huge)
    pool.zs_obj_write(huge, b"y" * PAGE_SIZE)
    assert bytes(pool.frames.view(first_of(huge))) == b"y" * PAGE_SIZE
    assert pool.zspages[first_of(huge)].owner == 5


@pytest.mark.parametrize("profile", [MODERN, LEGACY])
@pytest.mark.parametrize("data_size", [3624, 3000, 1400, 700, 200, 100])
def test_objects_spanning_two_frames_read_back_intact(profile, data_size):
    pool = Pool(profile)
    cls = pool.class_for(data_size + profile.handle_size)
    rng = random.Random(data_size)
    payloads = {}
    for i in range(cls.objs_per_zspage):
        h = pool.zs_malloc(data_size, i)
        payloads[h] = rng.randbytes(data_size)
        pool.zs_obj_write(h, payloads[h])
    spans = 0
    for h, data in payloads.items():
        _, idx = decode_handle(h)
        start = idx * cls.size + (0 if cls.huge else profile.handle_size)
        spans += start // PAGE_SIZE != (start + data_size - 1) // PAGE_SIZE
        assert pool.zs_obj_read(h, data_size) == data
    if cls.pages_per_zspage > 1:
        assert spans > 0


# --------------------------------------------------------------------------
# Compaction


def test_zs_can_compact_counts_whole_zspages_of_free_slots():
    pool = Pool(MODERN)
    cls = pool.class_for(1024)
    zs = fill_zspages(pool, 1016, 3)
    assert pool.zs_can_compact(cls) == 0
    for h in zs[0][:3] + zs[1][:2]:
        pool.zs_free(h)
    assert pool.zs_can_compact(cls) == 1  # 5 free slots: one zspage's worth
    pool.zs_free(zs[2][0])
    assert pool.zs_can_compact(cls) == 1


def compaction_pool() -> tuple[Pool, list[list[int]], dict[int, int], dict[int, bytes]]:
    moved: dict[int, int] = {}
    pool = Pool(MODERN, relocate=lambda owner, handle: moved.__setitem__(owner, handle))
    zs = fill_zspages(pool, 1016, 4)
    data = {}
    for z in zs:
        for h in z:
            payload = random.Random(h).randbytes(1016)
            pool.zs_obj_write(h, payload)
            data[h] = payload
    return pool, zs, moved, data


def test_compaction_moves_lowest_into_highest_and_frees():
    pool, (z1, z2, z3, z4), moved, data = compaction_pool()
    for h in z1[:3]:  # z1: 25 % (owner 3 left)
        pool.zs_free(h)
    for h in z2[:2]:  # z2: 50 %
        pool.zs_free(h)
    pool.zs_free(z3[1])  # z3: 75 %, slot 1 free
    assert pool.zs_compact() == 1
    assert pool.pages_compacted == 1
    assert first_of(z1[0]) not in pool.zspages
    # The only object of z1 (owner 3) went into z3's free slot.
    assert moved == {3: z3[1]}
    assert pool.zs_obj_read(z3[1], 1016) == data[z1[3]]
    assert pool.zspages[first_of(z3[0])].inuse == 4
    assert pool.zspages[first_of(z2[0])].inuse == 2  # untouched: nothing more to gain
    assert pool.zs_compact() == 0 and pool.pages_compacted == 1
    assert pool.pages_allocated == 3 == pool.frames.frames_in_use


def test_compaction_keeps_its_destination_until_full():
    pool, (z1, z2, z3, _), moved, data = compaction_pool()
    # z1 and z2: one object each (25 %); z3: two (50 %) and the destination.
    for h in z1[:3] + z2[:3] + z3[:2]:
        pool.zs_free(h)
    cls = pool.class_for(1024)
    assert pool.zs_can_compact(cls) == 2
    assert pool.zs_compact() == 2
    # z2 entered the 25 % list last, so it is the first source; z3's freelist head is slot 1.
    assert list(moved) == [7, 3]
    assert moved == {7: z3[1], 3: z3[0]}
    assert pool.zspages[first_of(z3[0])].inuse == 4
    assert len(pool.zspages) == 2
    assert pool.zs_obj_read(moved[7], 1016) == data[z2[3]]
    assert pool.zs_obj_read(moved[3], 1016) == data[z1[3]]


def test_compaction_migrates_by_ascending_index_and_stops_when_dst_full():
    pool, (z1, z2, _, _), moved, data = compaction_pool()
    pool.zs_free(z1[0])
    pool.zs_free(z1[2])  # z1: objects 1 and 3 left (50 %): the source
    pool.zs_free(z2[2])  # z2: 75 %, one free slot: the destination
    # Nothing to gain (4 free slots... only 3): compaction does nothing.
    assert pool.zs_compact() == 0 and moved == {}
    pool.zs_free(z2[0])  # z2: 50 %, two free slots (0 on the head, then 2)
    assert pool.zs_compact() == 1
    # Object 1 of z1 (owner 1) first, into z2's freelist head (slot 0); then object 3 into slot 2.
    assert list(moved) == [1, 3]
    assert [decode_handle(moved[o])[1] for o in (1, 3)] == [0, 2]
    assert pool.zs_obj_read(moved[1], 1016) == data[z1[1]]
    assert pool.zs_obj_read(moved[3], 1016) == data[z1[3]]


def test_compaction_touches_no_full_or_single_zspage():
    pool, zs, moved, _ = compaction_pool()
    assert pool.zs_compact() == 0
    pool.zs_free(zs[0][0])  # only one partial zspage: no source and destination pair
    assert pool.zs_compact() == 0 and moved == {}


# --------------------------------------------------------------------------
# Untrusted frames: damaged words are refused before anything changes


def _untrusted_pool(objects: int = 40) -> tuple[Pool, dict[int, int], list[int]]:
    """A modern pool over 'untrusted' frames, ``objects`` 200-byte objects owned by pages 0..n-1."""
    owners: dict[int, int] = {}
    pool = Pool(MODERN, owner_handle=owners.get, untrusted=True)
    pool.relocate = owners.__setitem__
    handles = []
    for page in range(objects):
        h = pool.zs_malloc(200, page)
        owners[page] = h
        handles.append(h)
    return pool, owners, handles


def _set_word(pool: Pool, first: int, idx: int, value: int) -> None:
    cls = pool.classes[pool.zspages[first].cls]
    off = idx * cls.size
    pool.frames.mutable(first + (off >> 12))[off & 4095 : (off & 4095) + 8] = value.to_bytes(8, "little")


def _forget_checks(pool: Pool) -> None:
    """As a fresh open would be: nothing checked yet."""
    pool._sound.clear()
    pool._whole.clear()


@pytest.mark.parametrize("link", [None, 10_000, 1 << 62])
def test_a_broken_free_chain_is_refused_before_zs_malloc_changes_anything(link):
    pool, owners, handles = _untrusted_pool()
    first = handles[-1] >> 11
    zspage = pool.zspages[first]
    head = zspage.freeobj
    _set_word(pool, first, head, (head if link is None else link) << OBJ_TAG_BITS)  # a cycle, or out of range
    _forget_checks(pool)
    before = repr(zspage), pool.classes[zspage.cls].objs_inuse
    with pytest.raises(ZsCorrupt, match=f"zspage at frame {first}: .*free chain"):
        pool.zs_malloc(200, 999)
    assert (repr(zspage), pool.classes[zspage.cls].objs_inuse) == before


def test_compaction_refuses_a_handle_that_names_another_page():
    pool, owners, handles = _untrusted_pool(120)
    for page in range(0, 120, 2):
        pool.zs_free(owners.pop(page))
    damaged = {}
    for page, handle in sorted(owners.items()):  # the first object of every zspage names page 1
        first, idx = decode_handle(handle)
        if page != 1 and first not in damaged:
            _set_word(pool, first, idx, 1 << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG)
            damaged[first] = idx
    _forget_checks(pool)
    state = sorted((k, repr(z)) for k, z in pool.zspages.items()), dict(owners)
    with pytest.raises(ZsCorrupt, match=r"slot \d+ holds handle 0x3 that names no page stored there"):
        pool.zs_compact()
    assert dict(owners) == state[1]  # nothing moved: no page was told its object moved


def test_compaction_that_makes_no_progress_ends():
    """Trusted frames whose allocated slots lost their tag: migration moves nothing, yet compaction ends."""
    owners: dict[int, int] = {}
    pool = Pool(MODERN)
    for page in range(120):
        owners[page] = pool.zs_malloc(200, page)
    for page in range(0, 120, 2):
        pool.zs_free(owners.pop(page))
    for handle in owners.values():
        first, idx = decode_handle(handle)
        _set_word(pool, first, idx, 0)
    with pytest.raises(ZsCorrupt, match="does not end"):
        pool.zs_compact()


def test_a_handle_outside_its_zspage_is_refused():
    pool, owners, handles = _untrusted_pool()
    first, _ = decode_handle(handles[0])
    with pytest.raises(ZsCorrupt, match="does not fit"):
        pool.zs_obj_read(first << 11 | 2047, 100)
    with pytest.raises(ZsCorrupt, match="is missing"):
        pool.zs_obj_read((first + 8 * 1000) << 11, 100)
    with pytest.raises(ZsCorrupt, match="does not fit"):
        pool.zs_obj_read(handles[0], 4000)


@pytest.mark.parametrize("profile", [MODERN, LEGACY], ids=["6.18", "3.11"])
def test_a_new_zspage_holds_its_free_chain_and_zeros_elsewhere(profile):
    """init_zspage(): slot ``i`` (byte ``i * size`` of the zspage) links to ``i + 1`` and the last
    one to the end, each link a tagged little-endian word; every other byte is zero.  For each
    class, read back from the frames (not from how they are made)."""
    pool = Pool(profile)
    for cls in pool.classes:
        zspage = pool._alloc_zspage(cls)
        data = bytearray(b"".join(pool.frames.view(zspage.first + k) for k in range(cls.pages_per_zspage)))
        for i in range(cls.objs_per_zspage):
            off = i * cls.size
            nxt = i + 1 if i + 1 < cls.objs_per_zspage else FREE_END
            assert int.from_bytes(data[off : off + 8], "little") == nxt << OBJ_TAG_BITS, (cls.size, i)
            data[off : off + 8] = bytes(8)
        assert data == bytes(len(data)), cls.size
        assert zspage.freeobj == 0 and zspage.inuse == 0
