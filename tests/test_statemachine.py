"""A hypothesis state machine: random writes, overwrites, discards, reads, compactions and
mem_limit changes at random offsets and lengths, on both profiles and several algorithms,
against a plain bytearray; on 6.18 also idle marking (all, or by age on a fake clock),
writeback to a small in-memory backing device (every mode, with and without a limit) and
recompression with a secondary algorithm.  After every step the device must hold the
model's bytes, its counters must agree with its page table, and the allocator must keep
its invariants (``check_invariants``).

Runs are derandomized (the same examples every time, ~30 s in all); set
ZRAMCTL_EXPLORE=1 to let hypothesis look for new ones."""

from __future__ import annotations

import errno
import functools
import os
import random
from dataclasses import fields

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zramctl.errors import ZramError
from zramctl.kernel import sysfs
from zramctl.kernel.profiles import MODERN, PAGE_SIZE
from zramctl.kernel.zcomp import get_backend
from zramctl.kernel.zram_drv import (
    ZRAM_COMP_PRIORITY_SHIFT,
    ZRAM_HUGE,
    ZRAM_IDLE,
    ZRAM_INCOMPRESSIBLE,
    ZRAM_PP_SLOT,
    ZRAM_SAME,
    ZRAM_SIZE_MASK,
    ZRAM_WB,
    Backing,
    MemoryBackingDev,
    Zram,
    ZramConfig,
    ZramStats,
)
from zramctl.kernel.zsmalloc import FREE_END, NO_ZSPAGE, OBJ_ALLOCATED_TAG, OBJ_TAG_BITS, Pool, decode_handle

PAGE = PAGE_SIZE
PAGES = 64
SIZE = PAGES * PAGE


# --------------------------------------------------------------------------
# Invariants (also usable on any device a test has built)


def check_invariants(z: Zram) -> None:
    """Everything that must hold between operations, checked from the page table down."""
    st_ = z.stats
    prof = z.profile
    pool = z.pool
    assert pool is not None
    for f in fields(ZramStats):
        assert getattr(st_, f.name) >= 0, f.name
    assert pool.pages_allocated >= 0 and pool.pages_compacted >= 0

    # The page table against the counters.
    objects: dict[int, dict[int, tuple[int, int, int]]] = {}  # first frame -> idx -> (page, size, flags)
    same = huge = compr = bad = good = 0
    blocks: list[int] = []
    now = z.clock()
    for index, (flags, handle, _, ac_time) in z.table.items():
        assert 0 <= index < z.config.disksize // PAGE
        assert not flags & ZRAM_PP_SLOT, "a post-processing pass left its mark"
        assert 0 <= ac_time <= now
        if not prof.post_processing:
            assert ac_time == 0 and flags & ~(ZRAM_SIZE_MASK | ZRAM_SAME | ZRAM_HUGE) == 0
        if flags & ZRAM_WB:
            assert flags == ZRAM_WB and handle >= 1, "a written-back slot is only WB, its block >= 1"
            blocks.append(handle)
            continue
        if flags & ZRAM_SAME:
            same += 1
            assert flags == ZRAM_SAME
            if not prof.same_word:
                assert handle == 0
            continue
        size = flags & ZRAM_SIZE_MASK
        assert 0 < size <= PAGE
        compr += size
        huge += bool(flags & ZRAM_HUGE)
        bad += size > prof.max_zpage_size
        good += size <= PAGE // 2
        first, idx = decode_handle(handle)
        assert first in pool.zspages, f"page {index}: handle into no zspage"
        slots = objects.setdefault(first, {})
        assert idx not in slots, f"pages {slots.get(idx)} and {index} share a slot"
        slots[idx] = (index, size, flags)
    assert st_.bd_count == len(blocks) == len(set(blocks)), "two slots share a backing block"
    if z.bdev is not None:
        # An image's backing file keeps the blocks freed since its last commit taken until the
        # next one (the commit still names them); an in-memory one gives them back at once.
        if isinstance(z.bdev, MemoryBackingDev):
            assert z.bdev.used == len(blocks)
        else:
            assert z.bdev.used >= len(blocks)
        assert all(b < z.bdev.nr_pages for b in blocks)
    assert st_.same_pages == same
    assert st_.pages_stored == len(z.table) - (0 if prof.same_counts_stored else same)
    assert st_.compr_data_size == compr
    assert st_.huge_pages == huge <= st_.huge_pages_since
    if not prof.huge_by_class:
        assert (st_.bad_compress, st_.good_compress) == (bad, good)
        assert huge == 0

    # Every zspage: its objects, its free chain, its bytes.
    frames_seen: set[int] = set()
    per_class: dict[int, list] = {}
    for first, zspage in pool.zspages.items():
        assert zspage.first == first
        cls = pool.classes[zspage.cls]
        per_class.setdefault(id(cls), []).append(zspage)
        span = range(first, first + cls.pages_per_zspage)
        assert frames_seen.isdisjoint(span), "two zspages share a frame"
        frames_seen.update(span)
        slots = objects.get(first, {})
        assert zspage.inuse == len(slots) > 0, "an empty zspage was kept, or inuse is wrong"
        free, nxt = [], zspage.freeobj
        while nxt != FREE_END:
            assert 0 <= nxt < cls.objs_per_zspage and len(free) < cls.objs_per_zspage
            free.append(nxt)
            word = pool._read_word(cls, first, nxt)
            assert word & OBJ_ALLOCATED_TAG == 0, "a free slot is tagged allocated"
            nxt = word >> OBJ_TAG_BITS
        assert len(free) == len(set(free)) == cls.objs_per_zspage - zspage.inuse
        assert set(free).isdisjoint(slots), "a slot is both free and allocated"
        header = 0 if cls.huge else prof.handle_size
        ranges = []
        for idx, (index, size, flags) in slots.items():
            assert header + size <= cls.size, "an object is larger than its slot"
            if flags & ZRAM_HUGE:
                assert cls.huge and size == PAGE
            start = idx * cls.size + header
            ranges.append((start, start + size))
            if cls.huge:
                assert zspage.owner == index
            elif prof.handle_size:
                word = pool._read_word(cls, first, idx)
                assert word == index << OBJ_TAG_BITS | OBJ_ALLOCATED_TAG, "handle header names another page"
        ranges.sort()
        for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
            assert end <= start, "object bytes overlap"
        assert not ranges or ranges[-1][1] <= cls.pages_per_zspage * PAGE

    # Frames: in use = sum over zspages = pages_allocated.
    assert pool.frames.frames_in_use == len(frames_seen) == pool.pages_allocated
    assert z.mem_used_pages() == pool.pages_allocated
    if prof.mem_limit:
        assert st_.max_used_pages >= 0

    # Classes: counts, fullness groups and the lists.
    fullness = pool.fullness
    for cls in pool.classes:
        zspages = per_class.get(id(cls), [])
        assert cls.objs_inuse == sum(zp.inuse for zp in zspages)
        assert cls.objs_allocated == len(zspages) * cls.objs_per_zspage
        for zp in zspages:
            assert zp.fullness == fullness.group(zp.inuse, cls.objs_per_zspage)
        for g in range(fullness.ngroups):
            assert cls.zspages[g] == sum(zp.fullness == g for zp in zspages), (cls.size, g)
        assert cls.zspages[fullness.empty] == 0
        for li, g in enumerate(fullness.listed):
            walked, prev, cur = [], NO_ZSPAGE, cls.heads[li]
            while cur != NO_ZSPAGE:
                zp = pool.zspages[cur]
                assert zp.prev == prev and zp.fullness == g and pool.classes[zp.cls] is cls
                walked.append(cur)
                assert len(walked) <= len(zspages)
                prev, cur = cur, zp.next
            assert sorted(walked) == sorted(zp.first for zp in zspages if zp.fullness == g)


# --------------------------------------------------------------------------
# Page contents


KINDS = ("zero", "byte", "word", "text", "random", "sized", "sized", "sized")
# Classes with few objects per zspage, so that a small device fragments them and
# compaction has work: 816/1/5 1024/1/4 1360/1/3 2048/1/2 2720/2/3 3072/3/4 3632/8/9.
TARGET_CLASSES = (48, 816, 1024, 1360, 2048, 2720, 3072, 3632)


@functools.cache
def prefix_lengths(algorithm: str) -> dict[int, list[int]]:
    """For pages of n random bytes then zeros: the n that land in each modern class."""
    backend = get_backend(algorithm)
    pool = Pool(MODERN)
    head = random.Random(0).randbytes(PAGE)
    by_class: dict[int, list[int]] = {}
    for n in range(0, PAGE, 2):
        size = len(backend.compress(head[:n] + bytes(PAGE - n)))
        cls = PAGE if size >= pool.huge_class_size else pool.class_for(size + MODERN.handle_size).size
        by_class.setdefault(cls, []).append(n)
    return {t: by_class[min(by_class, key=lambda c: abs(c - t))] for t in TARGET_CLASSES}


def make_page(kind: str, rng: random.Random, algorithm: str) -> bytes:
    if kind == "zero":
        return bytes(PAGE)
    if kind == "byte":
        return bytes([rng.randrange(256)]) * PAGE
    if kind == "word":
        return rng.randbytes(8) * (PAGE // 8)
    if kind == "text":
        words = [rng.randbytes(rng.randint(2, 7)) for _ in range(rng.randint(2, 60))]
        return b"".join(rng.choice(words) for _ in range(PAGE // 2))[:PAGE].ljust(PAGE, b"\0")
    if kind == "random":
        return rng.randbytes(PAGE)
    # "sized": a random prefix then zeros, so objects gather in a few classes
    n = rng.choice(prefix_lengths(algorithm)[rng.choice(TARGET_CLASSES)])
    return rng.randbytes(n) + bytes(PAGE - n)


def make_data(kind: str, seed: int, length: int, algorithm: str) -> bytes:
    rng = random.Random(seed)
    pages = -(-length // PAGE) + 1
    return b"".join(make_page(kind, rng, algorithm) for _ in range(pages))[:length]


def pages_touched(offset: int, length: int) -> int:
    return 0 if length <= 0 else (offset + length - 1) // PAGE - offset // PAGE + 1


# --------------------------------------------------------------------------
# The machine


BD_PAGES = 10
"""Blocks of the machine's backing device (9 usable): small, so that it fills up."""
T0 = 1_700_000_000


class ZramMachine(RuleBasedStateMachine):
    compat = "6.18"
    algorithm = "lzo"
    secondary = "zstd"

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.bd = MemoryBackingDev(BD_PAGES)
        self.z = Zram(
            ZramConfig(compat=self.compat, comp_algorithm=self.algorithm),
            backing=Backing(open_bdev=lambda path: self.bd),
        )
        self.z.clock = lambda: self.now
        if self.modern:
            sysfs.store(self.z, "backing_dev", "/backing")
            sysfs.store(self.z, "recomp_algorithm", f"algo={self.secondary}")
        self.z.init(SIZE)
        self.model = bytearray(SIZE)
        self.num_reads = self.num_writes = self.notify_free = self.failed_writes = 0
        self.compacted = 0
        self.bd_reads = self.bd_writes = 0
        self.recompressed = False
        """A recompression allocated: 6.18 checks neither mem_limit nor mem_used_max then."""

    def _wb_pages(self, first: int, end: int) -> int:
        """Written-back pages among ``first <= i < end``: what reading them counts in bd_reads."""
        return sum(1 for i in range(first, end) if self.z.table.get(i, (0,))[0] & ZRAM_WB)

    @property
    def modern(self) -> bool:
        return self.z.profile.compaction

    def _write(self, offset: int, data: bytes) -> None:
        # A piece that covers part of a written-back page reads it back first (bd_reads).
        partial = []
        pos = 0
        while pos < len(data):
            index, in_page = divmod(offset + pos, PAGE)
            n = min(PAGE - in_page, len(data) - pos)
            if n != PAGE and self._wb_pages(index, index + 1):
                partial.append(pos)
            pos += n
        try:
            self.z.write(offset, data)
            done = len(data)
        except ZramError as exc:
            assert exc.errno == errno.ENOMEM, exc
            assert self.z.config.limit_pages
            done = exc.done
            self.failed_writes += 1
            self.num_writes += 1  # the page that failed was a request too
        self.model[offset : offset + done] = data[:done]
        self.num_writes += pages_touched(offset, done)
        self.bd_reads += sum(1 for pos in partial if pos <= done)

    @rule(
        index=st.integers(0, PAGES - 1),
        count=st.integers(1, 4),
        kind=st.sampled_from(KINDS),
        seed=st.integers(0, 2**32 - 1),
    )
    def write_pages(self, index, count, kind, seed):
        count = min(count, PAGES - index)
        self._write(index * PAGE, make_data(kind, seed, count * PAGE, self.algorithm))

    @rule(
        index=st.integers(0, PAGES - 1),
        count=st.integers(4, 16),
        cls_size=st.sampled_from(TARGET_CLASSES[1:5]),
        seed=st.integers(0, 2**32 - 1),
    )
    def fill_class(self, index, count, cls_size, seed):
        """A run of pages of one small class: many zspages for discards to fragment."""
        count = min(count, PAGES - index)
        rng = random.Random(seed)
        lengths = prefix_lengths(self.algorithm)[cls_size]
        data = b"".join(rng.randbytes(n) + bytes(PAGE - n) for n in rng.choices(lengths, k=count))
        self._write(index * PAGE, data)

    @rule(
        offset=st.integers(0, SIZE - 1),
        length=st.integers(1, 3 * PAGE),
        kind=st.sampled_from(KINDS),
        seed=st.integers(0, 2**32 - 1),
    )
    def write_bytes(self, offset, length, kind, seed):
        length = min(length, SIZE - offset)
        self._write(offset, make_data(kind, seed, length, self.algorithm))

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(0, 6 * PAGE))
    def read(self, offset, length):
        """A re-read: an access, which on 6.18 clears IDLE and sets ac_time."""
        length = min(length, SIZE - offset)
        if length:
            self.bd_reads += self._wb_pages(offset // PAGE, (offset + length - 1) // PAGE + 1)
        assert self.z.read(offset, length) == self.model[offset : offset + length]
        self.num_reads += pages_touched(offset, length)
        if self.modern and length:
            for i in range(offset // PAGE, (offset + length - 1) // PAGE + 1):
                entry = self.z.table.get(i)
                assert entry is None or (entry[3] == self.now and not entry[0] & ZRAM_IDLE)

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(0, 8 * PAGE), aligned=st.booleans())
    def discard(self, offset, length, aligned):
        if aligned:
            offset -= offset % PAGE
            length -= length % PAGE
        length = min(length, SIZE - offset)
        first = -(-offset // PAGE)
        end = (offset + length) // PAGE
        whole = max(0, end - first)
        assert self.z.discard(offset, length) == whole
        self.model[first * PAGE : first * PAGE + whole * PAGE] = bytes(whole * PAGE)
        self.notify_free += whole

    @rule(index=st.integers(0, PAGES - 1), count=st.integers(2, 24), stride=st.integers(2, 4))
    def fragment(self, index, count, stride):
        """Discard every ``stride``-th page: holes in many zspages at once."""
        for page in range(index, min(PAGES, index + count * stride), stride):
            assert self.z.discard(page * PAGE, PAGE) == 1
            self.model[page * PAGE : (page + 1) * PAGE] = bytes(PAGE)
            self.notify_free += 1

    @precondition(lambda self: self.modern)
    @rule()
    def compact(self):
        before = self.z.pool.pages_allocated
        freed = self.z.compact()
        assert freed == before - self.z.pool.pages_allocated
        self.compacted += freed
        assert self.z.pool.zs_compact() == 0  # a second pass has nothing to do

    @precondition(lambda self: not self.modern)
    @rule()
    def compact_is_missing(self):
        try:
            self.z.compact()
        except ZramError as exc:
            assert exc.errno == errno.ENOENT
        else:
            raise AssertionError("3.11 has no compaction")

    @precondition(lambda self: self.modern)
    @rule(extra=st.integers(-4, 12))
    def set_mem_limit(self, extra):
        limit = 0 if extra < 0 else self.z.pool.pages_allocated + extra
        sysfs.store(self.z, "mem_limit", str(limit * PAGE))

    @precondition(lambda self: self.modern)
    @rule()
    def reset_mem_used_max(self):
        sysfs.store(self.z, "mem_used_max", "0")
        assert self.z.stats.max_used_pages == self.z.pool.pages_allocated

    # --- post-processing (6.18) ---

    @precondition(lambda self: self.modern)
    @rule(seconds=st.integers(0, 120))
    def tick(self, seconds):
        self.now += seconds

    @precondition(lambda self: self.modern)
    @rule(age=st.one_of(st.none(), st.integers(0, 400)))
    def mark_idle(self, age):
        """idle = all, or an age: exactly the objects accessed more than ``age`` s ago are idle."""
        sysfs.store(self.z, "idle", "all" if age is None else str(age))
        for flags, _, _, ac_time in self.z.table.values():
            if flags & (ZRAM_SAME | ZRAM_WB):
                assert not flags & ZRAM_IDLE
            else:
                assert bool(flags & ZRAM_IDLE) == (age is None or ac_time < self.now - age)

    @precondition(lambda self: self.modern)
    @rule(
        mode=st.sampled_from(["idle", "huge", "huge_idle", "incompressible", "range", "range"]),
        lo=st.integers(0, PAGES - 1),
        span=st.integers(0, 16),
        limit=st.one_of(st.none(), st.integers(0, 6)),
    )
    def writeback(self, mode, lo, span, limit):
        z = self.z
        hi = min(PAGES - 1, lo + span)
        flag = {"idle": ZRAM_IDLE, "huge": ZRAM_HUGE, "incompressible": ZRAM_INCOMPRESSIBLE}
        want = {"range": 0, "huge_idle": ZRAM_HUGE | ZRAM_IDLE}.get(mode, flag.get(mode, 0))
        candidates = [
            i
            for i, (f, *_) in z.table.items()
            if not f & (ZRAM_SAME | ZRAM_WB) and f & want == want and (mode != "range" or lo <= i <= hi)
        ]
        sysfs.store(z, "writeback_limit_enable", "0" if limit is None else "1")
        if limit is not None:
            sysfs.store(z, "writeback_limit", str(limit))
        free = self.bd.nr_pages - 1 - self.bd.used
        budget = len(candidates) if limit is None else limit
        expect = min(len(candidates), budget, free)
        code = 0
        if expect < len(candidates):
            code = errno.EIO if limit is not None and expect == limit else errno.ENOSPC
        before = z.stats.bd_writes
        try:
            sysfs.store(z, "writeback", f"page_indexes={lo}-{hi}" if mode == "range" else f"type={mode}")
        except ZramError as exc:
            assert exc.errno == code, exc
        else:
            assert code == 0
        assert z.stats.bd_writes - before == expect
        self.bd_writes += expect
        written = [i for i in candidates if z.table[i][0] & ZRAM_WB]
        assert len(written) == expect
        if limit is not None:
            assert z.config.writeback_limit == limit - expect

    @precondition(lambda self: self.modern)
    @rule(
        mode=st.sampled_from(["", "type=idle", "type=huge", "type=huge_idle"]),
        max_pages=st.one_of(st.none(), st.integers(0, 8)),
    )
    def recompress(self, mode, max_pages):
        z = self.z
        before = dict(z.table)
        arg = mode + ("" if max_pages is None else f" max_pages={max_pages}")
        sysfs.store(z, "recompress", arg)
        changed = 0
        for i, (flags, handle, crc, ac_time) in z.table.items():
            old = before[i]
            if (flags, handle, crc, ac_time) == old:
                continue
            changed += 1
            assert not old[0] & (ZRAM_SAME | ZRAM_WB | ZRAM_INCOMPRESSIBLE)
            if flags >> ZRAM_COMP_PRIORITY_SHIFT & 3:  # recompressed: smaller, ac_time 0, no flag
                assert flags == flags & ZRAM_SIZE_MASK | 1 << ZRAM_COMP_PRIORITY_SHIFT and ac_time == 0
                assert flags & ZRAM_SIZE_MASK < old[0] & ZRAM_SIZE_MASK
            else:  # tried: IDLE cleared, perhaps INCOMPRESSIBLE (the secondary is the last algorithm)
                assert flags & ~ZRAM_INCOMPRESSIBLE == old[0] & ~ZRAM_IDLE and ac_time == old[3]
        if max_pages is not None:
            assert changed <= max_pages
        self.recompressed |= any(e[0] >> ZRAM_COMP_PRIORITY_SHIFT & 3 for e in z.table.values())

    @invariant()
    def device_matches_model(self):
        z = self.z
        before = dict(z.table)
        self.bd_reads += self._wb_pages(0, PAGES)
        assert z.read(0, SIZE) == self.model
        self.num_reads += PAGES
        z.table.clear()  # this check is no access: the slots keep their access times and marks
        z.table.update(before)
        check_invariants(z)
        st_ = z.stats
        assert (st_.bd_reads, st_.bd_writes) == (self.bd_reads, self.bd_writes)
        assert (st_.num_reads, st_.num_writes) == (self.num_reads, self.num_writes)
        assert (st_.notify_free, st_.failed_writes, st_.failed_reads) == (
            self.notify_free,
            self.failed_writes,
            0,
        )
        assert z.pool.pages_compacted == self.compacted
        if self.modern and not self.recompressed:
            limit = z.config.limit_pages
            assert not limit or z.pool.pages_allocated <= max(limit, st_.max_used_pages)
            assert st_.max_used_pages >= z.pool.pages_allocated or st_.max_used_pages == 0


def machine_test(compat: str, algorithm: str, examples: int, secondary: str = "zstd"):
    machine = type(
        f"Machine_{compat.replace('.', '_')}_{algorithm}",
        (ZramMachine,),
        {"compat": compat, "algorithm": algorithm, "secondary": secondary},
    )
    machine.TestCase.settings = machine_settings(examples, 40)
    return machine.TestCase


def machine_settings(examples: int, steps: int) -> settings:
    """A state machine's run: derandomized (ZRAMCTL_EXPLORE=1 lets hypothesis look for new
    examples), no database, no deadline."""
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=not os.environ.get("ZRAMCTL_EXPLORE"),
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


TestModernLzo = machine_test("6.18", "lzo", 150)
TestModernLz4 = machine_test("6.18", "lz4", 80)
TestModernZstd = machine_test("6.18", "zstd", 40, secondary="deflate")
TestModernDeflate = machine_test("6.18", "deflate", 30)
TestLegacyLzo = machine_test("3.11", "lzo", 120)
