"""``zramctl check``: verify an image and say, in words, everything that is wrong with it.

Why a separate walk: the engine trusts what it loads; check does not.  It
reads every metadata block of the image from disk (not through the engine's
caches), verifies each checksum and structural rule of zram-image(5), then the
allocator's invariants, the way a kernel developer would check zsmalloc by
hand:

- every zspage on a fullness list sits in that group, lists link both ways,
  list lengths equal the class's counts per group;
- Σ objects in use = Σ class objs_inuse = object entries in the page table;
  slots allocated = zspages × objs_per_zspage;
- frames in use = Σ zspages × pages_per_zspage = pages_allocated;
- Σ entry sizes = compr_data_size; pages_stored and same_pages agree;
- written-back pages: bd_count counts them; each block lies in the backing file, belongs to
  one page and holds that page (its CRC); every blob extent belongs to a setting;
- each zspage's free chain has exactly objs - inuse links, and every
  allocated slot names the page that points at it.

With ``data=True`` every stored page is also read through the device's read
path (CRC check and decompression).  ``check_image`` returns the problems;
an empty list means clean.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

from ..crc import crc32
from ..errors import ZramError
from ..kernel.profiles import PAGE_SHIFT, PAGE_SIZE
from ..kernel.zram_drv import ZRAM_HUGE, ZRAM_SAME, ZRAM_SIZE_MASK, ZRAM_WB, Entry, Zram
from ..kernel.zsmalloc import (
    FREE_END,
    NO_ZSPAGE,
    OBJ_ALLOCATED_TAG,
    OBJ_TAG_BITS,
    Pool,
    SizeClass,
    ZsPage,
    decode_handle,
)
from .format import (
    EXTENT_BLOCKS,
    POINTERS_PER_BLOCK,
    RECORD_BLOB,
    RECORD_META,
    RECORDS_PER_BLOCK,
    Slot,
    decode_pointers,
    decode_records,
    decode_table,
    entries_per_block,
)
from .image import Image

# Past this many problems the rest are counted, not listed.
MAX_PROBLEMS = 100


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    more: int = 0

    def add(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more += 1

    def result(self) -> list[str]:
        if self.more:
            return self.problems + [f"... and {self.more} more problems"]
        return self.problems


def check_opened(image: Image, *, data: bool = False) -> list[str]:
    """Problems found in an open device image, in words; [] when it is clean.

    The store opens the device (``store.check_image``): this module reads what
    it is given and never opens a file itself.
    """
    report = Report()
    try:
        _check(image, report, data)
    except ZramError as exc:
        report.add(exc.detail or str(exc))
    return report.result()


def device_state(zram: Zram) -> dict[str, object]:
    """Everything that defines a device's committed state, as plain data (tests compare these)."""
    pool = zram.pool
    state: dict[str, object] = {
        "config": {f.name: copy.deepcopy(getattr(zram.config, f.name)) for f in fields(zram.config)},
        "stats": {f.name: getattr(zram.stats, f.name) for f in fields(zram.stats)},
        "table": sorted(zram.table.items()),
    }
    if pool is not None:
        state["pool"] = (pool.pages_allocated, pool.pages_compacted, pool.frames.frames_in_use)
        state["classes"] = [
            (c.objs_allocated, c.objs_inuse, list(c.heads), list(c.zspages)) for c in pool.classes
        ]
        state["zspages"] = sorted((k, repr(z)) for k, z in pool.zspages.items())
    return state


@dataclass(frozen=True)
class Usage:
    """Where an image's blocks go (for figures: metadata bytes per page and per zspage)."""

    pages: int
    """Written pages (page-table entries)."""
    zspages: int
    frames: int
    table_blocks: int
    """Page-table leaves and the pointer blocks above them."""
    record_blocks: int
    """Zspage-record leaves and the pointer blocks above them."""
    fixed_blocks: int
    """Header and class area."""


def image_usage(image: Image) -> Usage:
    """Count an open image's blocks by role (walks both trees: O(metadata))."""
    h = image.header
    report = Report()
    owners: dict[int, str] = {}
    table = sum(1 for _ in _walk(image, report, "table", h.table_roots, h.table_depth, owners))
    records = sum(1 for _ in _walk(image, report, "records", h.zsmap_roots, h.zsmap_depth, owners))
    pointers_table = sum(1 for w in owners.values() if w == "table") - table
    pointers_records = sum(1 for w in owners.values() if w == "records") - records
    pool = image.zram.pool
    return Usage(
        pages=h.table_entries,
        zspages=h.zspage_count,
        frames=pool.pages_allocated if pool else 0,
        table_blocks=table + pointers_table,
        record_blocks=records + pointers_records,
        fixed_blocks=1 + len([b for b in image._loaded if b]),
    )


# --- the walk ----------------------------------------------------------------------


def _walk(
    image: Image, report: Report, what: str, roots: list[int], depth: int, owners: dict[int, str]
) -> Iterator[tuple[int, int]]:
    """(leaf number, block) of every leaf of a tree whose pointer blocks pass their checks."""
    limit = image.state.extent_count * EXTENT_BLOCKS

    def visit(height: int, index: int, block: int) -> Iterator[tuple[int, int]]:
        if block in owners:
            report.add(f"block {block} is used twice ({owners[block]} and {what})")
            return
        owners[block] = what
        if height == 0:
            yield index, block
            return
        try:
            children = decode_pointers(block, image.file.read(block), limit)
        except ZramError as exc:
            report.add(str(exc.detail))
            return
        for slot, child in enumerate(children):
            if child:
                yield from visit(height - 1, index * POINTERS_PER_BLOCK + slot, child)

    for top, root in enumerate(roots):
        if root:
            yield from visit(depth, top, root)


def _records(image: Image, pool: Pool | None, report: Report, owners: dict[int, str]) -> dict[int, Slot]:
    """Every non-free extent record, by extent."""
    h = image.header
    classes = pool.classes if pool else []
    huge = [c.huge for c in classes]
    objs = [c.objs_per_zspage for c in classes]
    ngroups = pool.fullness.ngroups if pool else 0
    out: dict[int, Slot] = {}
    for n, block in _walk(image, report, "the zspage-record tree", h.zsmap_roots, h.zsmap_depth, owners):
        try:
            slots = decode_records(block, image.file.read(block), n * RECORDS_PER_BLOCK, huge, objs, ngroups)
        except ZramError as exc:
            report.add(str(exc.detail))
            continue
        for i, s in enumerate(slots):
            if s:
                out[n * RECORDS_PER_BLOCK + i] = s
    return out


def _entries(image: Image, report: Report, owners: dict[int, str]) -> dict[int, Entry]:
    h = image.header
    out: dict[int, Entry] = {}
    tree = _walk(image, report, "the page-table tree", h.table_roots, h.table_depth, owners)
    for n, block in tree:
        try:
            entries = decode_table(block, image.file.read(block), image.state.extent_count, h.version)
        except ZramError as exc:
            report.add(str(exc.detail))
            continue
        per = entries_per_block(h.version)
        for i, e in enumerate(entries):
            if e is not None:
                out[n * per + i] = e
    return out


def _check(image: Image, report: Report, data: bool) -> None:
    zram = image.zram
    pool = zram.pool
    h = image.header
    owners: dict[int, str] = {}
    records = _records(image, pool, report, owners)
    entries = _entries(image, report, owners)
    if report.problems:
        report.add("allocator checks skipped: the image's metadata blocks are damaged")
        return
    _check_extents(image, records, owners, report)
    _check_blobs(image, records, report)
    _check_table(zram, entries, report)
    _check_backing(zram, entries, report)
    if pool is None:  # blobs (a backing_dev set before init) and the records naming them may exist
        if entries or any(isinstance(s, ZsPage) for s in records.values()):
            report.add("an uninitialised device (disksize 0) holds zspages or pages")
        return
    zspages = {e * EXTENT_BLOCKS: z for e, z in records.items() if isinstance(z, ZsPage)}
    if len(zspages) != h.zspage_count:
        report.add(f"the header counts {h.zspage_count} zspages, the records hold {len(zspages)}")
    _check_pool(pool, zspages, report)
    _check_objects(image, pool, zspages, entries, report)
    if data:
        for index in sorted(entries):
            try:
                zram.read(index * PAGE_SIZE, PAGE_SIZE)
            except ZramError as exc:
                report.add(f"page {index} cannot be read: {exc.detail or exc.strerror}")


def _check_extents(image: Image, records: dict[int, Slot], owners: dict[int, str], report: Report) -> None:
    st = image.state
    for e in records:
        if e == 0 or e >= st.extent_count:
            report.add(f"extent {e} has a record but lies outside extents 1..{st.extent_count - 1}")
    for e in range(1, min(st.free_hint, st.extent_count)):
        if e not in records:
            report.add(f"extent {e} is free but below the header's free_hint {st.free_hint}")
    if st.meta_extent and records.get(st.meta_extent) != RECORD_META:
        report.add(f"the metadata extent being filled ({st.meta_extent}) is not recorded as metadata")
    for block, what in sorted(owners.items()):
        e = block // EXTENT_BLOCKS
        if records.get(e) != RECORD_META:
            report.add(f"block {block} of {what} is not in a metadata extent")
        elif e == st.meta_extent and block % EXTENT_BLOCKS >= st.meta_used:
            report.add(f"block {block} of {what} is past the used part of the metadata extent")


def _check_blobs(image: Image, records: dict[int, Slot], report: Report) -> None:
    """Every blob extent belongs to one of the header's blobs (opening read and checked each)."""
    held = {e for blob in image.blobs.values() for e in blob.extents}
    for e, s in sorted(records.items()):
        if s == RECORD_BLOB and e not in held:
            report.add(f"extent {e} is recorded as a blob extent but no setting's blob is in it")


def _check_backing(zram: Zram, entries: dict[int, Entry], report: Report) -> None:
    """Written-back pages: bd_count, and each block in the backing file (in range, held by one
    page, its CRC the page's)."""
    wb = {index: (handle, crc) for index, (flags, handle, crc, _) in entries.items() if flags & ZRAM_WB}
    if len(wb) != zram.stats.bd_count:
        report.add(f"bd_count is {zram.stats.bd_count} but {len(wb)} pages are written back")
    if not wb:
        return
    bdev = zram.bdev
    if bdev is None:
        report.add(f"{len(wb)} pages are written back but the device has no backing_dev")
        return
    try:
        nr_pages = bdev.nr_pages
    except OSError as exc:
        detail = exc.detail if isinstance(exc, ZramError) else exc.strerror
        report.add(f"{len(wb)} pages are written back to a backing file that cannot be used: {detail}")
        return
    owner: dict[int, int] = {}
    for index, (blk, crc) in sorted(wb.items()):
        if not 1 <= blk < nr_pages:
            where = f"outside 1..{nr_pages - 1} of {bdev.path}"
            report.add(f"page {index} is written back to block {blk}, {where}")
            continue
        if blk in owner:
            report.add(f"pages {owner[blk]} and {index} are written back to the same block {blk}")
            continue
        owner[blk] = index
        try:
            page = bdev.read_block(blk)
        except OSError as exc:
            report.add(f"page {index}: block {blk} of {bdev.path} cannot be read: {exc.strerror}")
            continue
        if crc32(page) != crc:
            report.add(f"page {index}: block {blk} of {bdev.path} fails its checksum")


def _check_table(zram: Zram, entries: dict[int, Entry], report: Report) -> None:
    st = zram.stats
    prof = zram.profile
    pages = zram.config.disksize // PAGE_SIZE
    same = sum(1 for f, _, _, _ in entries.values() if f & ZRAM_SAME)
    huge = sum(1 for f, _, _, _ in entries.values() if f & ZRAM_HUGE)
    size = sum(f & ZRAM_SIZE_MASK for f, _, _, _ in entries.values() if not f & (ZRAM_SAME | ZRAM_WB))
    stored = len(entries) if prof.same_counts_stored else len(entries) - same
    beyond = [i for i in entries if i >= pages]
    if beyond:
        report.add(f"{len(beyond)} pages are stored past the end of the device (first: page {min(beyond)})")
    if len(entries) != len(zram.table):
        report.add(f"the header counts {len(zram.table)} written pages, the page table holds {len(entries)}")
    for name, want, have in (
        ("pages_stored", stored, st.pages_stored),
        ("same_pages", same, st.same_pages),
        ("huge_pages", huge, st.huge_pages),
        ("compr_data_size", size, st.compr_data_size),
    ):
        if want != have:
            report.add(f"{name} is {have} but the page table says {want}")


def _check_pool(pool: Pool, zspages: dict[int, ZsPage], report: Report) -> None:
    fullness = pool.fullness
    by_class: dict[int, list[ZsPage]] = {}
    for z in zspages.values():
        by_class.setdefault(z.cls, []).append(z)
    pages = 0
    for pos, cls in enumerate(pool.classes):
        mine = by_class.get(pos, [])
        name = f"class {cls.index} (size {cls.size})"
        pages += len(mine) * cls.pages_per_zspage
        if len(mine) * cls.objs_per_zspage != cls.objs_allocated:
            report.add(f"{name}: objs_allocated is {cls.objs_allocated} for {len(mine)} zspages")
        inuse = sum(z.inuse for z in mine)
        if inuse != cls.objs_inuse:
            report.add(f"{name}: objs_inuse is {cls.objs_inuse} but its zspages hold {inuse}")
        groups = Counter(z.fullness for z in mine)
        for g in range(fullness.ngroups):
            if groups.get(g, 0) != cls.zspages[g]:
                report.add(
                    f"{name}: {cls.zspages[g]} zspages counted in group {fullness.names[g]}, "
                    f"{groups.get(g, 0)} found"
                )
        for z in mine:
            want = fullness.group(z.inuse, cls.objs_per_zspage)
            if z.fullness != want:
                report.add(f"{name}: zspage at frame {z.first} is in group {z.fullness}, should be {want}")
            elif want == fullness.empty:
                report.add(f"{name}: zspage at frame {z.first} is empty but was not freed")
        _check_lists(pool, pos, name, zspages, report)
    if pages != pool.pages_allocated or pages != pool.frames.frames_in_use:
        report.add(
            f"pages_allocated is {pool.pages_allocated} ({pool.frames.frames_in_use} frames in use) "
            f"but the zspages hold {pages} pages"
        )


def _check_lists(pool: Pool, pos: int, name: str, zspages: dict[int, ZsPage], report: Report) -> None:
    fullness = pool.fullness
    cls = pool.classes[pos]
    for li, g in enumerate(fullness.listed):
        seen: set[int] = set()
        prev = NO_ZSPAGE
        cur = cls.heads[li]
        while cur != NO_ZSPAGE:
            z = zspages.get(cur)
            if z is None or z.cls != pos or cur in seen:
                report.add(f"{name}: list {fullness.names[g]} is broken at frame {cur}")
                break
            seen.add(cur)
            if z.fullness != g or z.prev != prev:
                report.add(f"{name}: zspage at frame {cur} is mislinked on list {fullness.names[g]}")
            prev, cur = cur, z.next
        if len(seen) != cls.zspages[g]:
            report.add(f"{name}: list {fullness.names[g]} has {len(seen)} zspages, counted {cls.zspages[g]}")


def _word_reader(image: Image) -> Callable[[int], bytes]:
    cache: dict[int, bytes] = {}

    def frame(n: int) -> bytes:
        if n not in cache:
            if len(cache) > 256:
                cache.clear()
            cache[n] = image.file.read(n)
        return cache[n]

    return frame


def _check_objects(
    image: Image, pool: Pool, zspages: dict[int, ZsPage], entries: dict[int, Entry], report: Report
) -> None:
    """Entries against zspages, and each zspage's slots (free chain, owners) against the entries."""
    frame = _word_reader(image)
    hsize = pool.profile.handle_size
    owner_of: dict[tuple[int, int], int] = {}
    slots_of: dict[int, list[tuple[int, int]]] = {}
    for index, (flags, handle, _, _) in entries.items():
        if flags & (ZRAM_SAME | ZRAM_WB):
            continue
        first, idx = decode_handle(handle)
        z = zspages.get(first)
        size = flags & ZRAM_SIZE_MASK
        if z is None:
            report.add(f"page {index} points at frame {first}, which holds no zspage")
            continue
        cls = pool.classes[z.cls]
        if pool.class_for(size + (0 if cls.huge else hsize)) is not cls or idx >= cls.objs_per_zspage:
            report.add(f"page {index}: a {size}-byte object does not fit slot {idx} of class {cls.index}")
            continue
        if (first, idx) in owner_of:
            report.add(f"pages {owner_of[first, idx]} and {index} share one object")
        owner_of[first, idx] = index
        slots_of.setdefault(first, []).append((idx, index))
    used = Counter(first for first, _ in owner_of)
    for first, z in sorted(zspages.items()):
        cls = pool.classes[z.cls]
        if used[first] != z.inuse:
            report.add(f"zspage at frame {first}: inuse is {z.inuse}, {used[first]} pages point into it")
        if cls.huge:
            want = owner_of.get((first, 0), -1)
            if z.inuse and z.owner != want:
                report.add(f"huge zspage at frame {first} names page {z.owner} as its owner, not {want}")
            continue

        def word(idx: int, first: int = first, cls: SizeClass = cls) -> int:
            off = idx * cls.size
            at = off % PAGE_SIZE
            return int.from_bytes(frame(first + (off >> PAGE_SHIFT))[at : at + 8], "little")

        free: set[int] = set()
        cur = z.freeobj
        while cur != FREE_END:
            if cur >= cls.objs_per_zspage or cur in free or (first, cur) in owner_of:
                report.add(f"zspage at frame {first}: its free chain is broken at slot {cur}")
                break
            free.add(cur)
            link = word(cur)
            if link & OBJ_ALLOCATED_TAG:
                report.add(f"zspage at frame {first}: free slot {cur} is tagged allocated")
                break
            cur = link >> OBJ_TAG_BITS
        if len(free) != cls.objs_per_zspage - z.inuse:
            want = cls.objs_per_zspage - z.inuse
            report.add(f"zspage at frame {first}: {len(free)} free slots chained, {want} free")
        if hsize:
            for idx, index in slots_of.get(first, []):
                if word(idx) != index << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG:
                    report.add(f"zspage at frame {first}: slot {idx}'s handle does not name page {index}")
