"""The compiled store path over an image's pool (``_zsmalloc.store_entries``) against the Python.

Two images get the same operations, one device writing through the compiled path
(``Zram.compiled``, as every command does) and one storing every page the Python way
(``compiled = False``): runs of pages of every kind, long enough to cross table leaves and fill
zspages (new ones, list moves, same-filled and huge pages, overwrites), partial pages,
discards, compaction, mem_limit, commits, reopening, and damage to a zspage record that the
writes then meet.  After every step everything must be equal: what each call returned or
raised, the counters, the page table, every class's statistics and list heads, every zspage's
record; after every commit, the two image files, byte for byte but for the image's identity.

Then the same on real data (``tools/make-corpus mixed``), and the compiled function's own
interface on arguments no caller should pass: an error, never a crash or a stray write.
``make sanitize`` runs this file under AddressSanitizer and UBSan.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_statemachine import KINDS, machine_settings, make_data, make_page
from test_zsmalloc_compiled import SANITIZING, mixed  # noqa: F401 - mixed: the real-data fixture, shared

from zramctl.crc import crc32
from zramctl.errors import ZramError
from zramctl.image.check import device_state
from zramctl.image.format import decode_header
from zramctl.kernel import _zsmalloc, sysfs
from zramctl.kernel.compiled_pool import profile_bits
from zramctl.kernel.profiles import PAGE_SIZE, PROFILES
from zramctl.kernel.zram_drv import Zram
from zramctl.kernel.zsmalloc import FREE_END
from zramctl.store import DeviceHandle, Store

PAGE = PAGE_SIZE
PAGES = 700
"""Pages of the twins: a little under three table leaves (255 entries each)."""
SIZE = PAGES * PAGE
RECORD_FIELDS = ("cls", "inuse", "freeobj", "fullness", "prev", "next")


def outcome(fn: Callable[[DeviceHandle], object], h: DeviceHandle) -> object:
    """What ``fn(h)`` returned, or the error it raised (its errno, what failed and how much was done)."""
    try:
        return ("ok", fn(h))
    except ZramError as exc:
        return ("error", exc.errno, exc.what, exc.done)


def same_images(a: Path, b: Path) -> None:
    """Two image files, equal byte for byte but for the header's image_id (random at creation)."""
    x, y = a.read_bytes(), b.read_bytes()
    assert len(x) == len(y)
    hx, hy = decode_header(x[:4096]), decode_header(y[:4096])
    assert dataclasses.replace(hx, image_id=hy.image_id) == hy
    assert x[4096:] == y[4096:]


class ImageTwins(RuleBasedStateMachine):
    compat = "6.18"
    algorithm = "lzo-rle"

    def __init__(self) -> None:
        super().__init__()
        self.roots = [Path(tempfile.mkdtemp(prefix="zram-twin-")) for _ in range(2)]
        self.stores = [Store(root) for root in self.roots]
        for store in self.stores:
            store.hot_add()
            with store.open(0, write=True) as h:
                sysfs.store(h.zram, "compat", self.compat)
                if self.compat != "3.11":  # (the 2013 driver has lzo only)
                    sysfs.store(h.zram, "comp_algorithm", self.algorithm)
                sysfs.store(h.zram, "disksize", str(SIZE))
        self.handles: list[DeviceHandle] = []
        self._open()

    def _open(self) -> None:
        self.handles = [store.open(0, write=True) for store in self.stores]
        for h in self.handles:
            h.zram.clock = lambda: 1_700_000_000
        self.handles[1].zram.compiled = False  # the reference: every page the Python way

    @property
    def devices(self) -> list[Zram]:
        return [h.zram for h in self.handles]

    def both(self, fn: Callable[[DeviceHandle], object]) -> object:
        fast, ref = (outcome(fn, h) for h in self.handles)
        assert fast == ref
        return fast

    @rule(index=st.integers(0, PAGES - 1), count=st.integers(1, 400), kind=st.sampled_from(KINDS),
          seed=st.integers(0, 2**32 - 1))  # fmt: skip
    def write_pages(self, index, count, kind, seed):
        data = make_data(kind, seed, min(count, PAGES - index) * PAGE, self.algorithm)
        self.both(lambda h: h.zram.write(index * PAGE, data))

    @rule(index=st.integers(0, PAGES - 1), count=st.integers(200, PAGES), seed=st.integers(0, 2**32 - 1))
    def fill(self, index, count, seed):
        """A long run of pages of every kind mixed, as real data comes: zspages of many classes
        made, filled and moved from list to list, table leaves crossed."""
        rng = random.Random(seed)
        count = min(count, PAGES - index)
        data = b"".join(make_page(rng.choice(KINDS), rng, self.algorithm) for _ in range(count))
        self.both(lambda h: h.zram.write(index * PAGE, data))

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(1, 40 * PAGE), kind=st.sampled_from(KINDS),
          seed=st.integers(0, 2**32 - 1))  # fmt: skip
    def write_bytes(self, offset, length, kind, seed):
        data = make_data(kind, seed, min(length, SIZE - offset), self.algorithm)
        self.both(lambda h: h.zram.write(offset, data))

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(0, 200 * PAGE))
    def discard(self, offset, length):
        self.both(lambda h: h.zram.discard(offset, min(length, SIZE - offset)))

    @rule()
    def compact(self):
        if self.devices[0].profile.compaction:
            self.both(lambda h: h.zram.compact())

    @rule(extra=st.integers(-4, 40))
    def set_mem_limit(self, extra):
        limit = max(0, self.devices[1].pool.pages_allocated + extra)
        self.both(lambda h: sysfs.store(h.zram, "mem_limit", str(limit * PAGE)))

    @rule()
    def reset_mem_used_max(self):
        self.both(lambda h: sysfs.store(h.zram, "mem_used_max", "0"))

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(0, 300 * PAGE))
    def read(self, offset, length):
        self.both(lambda h: h.zram.read(offset, min(length, SIZE - offset)))

    @rule()
    def commit(self):
        if self.both(lambda h: h.commit())[0] == "ok":
            same_images(*(store.image_path(0) for store in self.stores))

    @rule()
    def reopen(self):
        committed = self.both(lambda h: h.commit())[0] == "ok"
        for h in self.handles:
            h.close()
        self._open()
        if committed:
            same_images(*(store.image_path(0) for store in self.stores))

    @rule(nth=st.integers(0, 10_000), field=st.sampled_from(RECORD_FIELDS), value=st.integers(-2, 300),
          index=st.integers(0, PAGES - 1), count=st.integers(1, 300), kind=st.sampled_from(KINDS),
          seed=st.integers(0, 2**32 - 1))  # fmt: skip
    def write_into_damage(self, nth, field, value, index, count, kind, seed):
        """The same field of the same zspage record set to the same value in both (a value a
        record can hold: a corrupt image's), then a write: it must meet the damage alike.  The
        damaged state is then dropped, as a command that failed drops it: closed uncommitted."""
        pool = self.devices[0].pool
        firsts = sorted(pool.zspages)
        if not firsts:
            return
        first = firsts[nth % len(firsts)]
        # only what decode_records takes from an image (zram-image(5), ZSPAGE RECORD)
        classes, z = pool.classes, pool.zspages[first]
        n = classes[z.cls].objs_per_zspage
        if field == "cls":
            need = z.inuse if z.freeobj == FREE_END else max(z.inuse, z.freeobj + 1)
            huge = classes[z.cls].huge
            fits = [pos for pos, c in enumerate(classes) if c.huge == huge and c.objs_per_zspage >= need]
            value = fits[value % len(fits)]
        elif field == "fullness":
            value = -1 if value < 0 else value % pool.fullness.ngroups
        elif field == "inuse":
            value = abs(value) % (n + 1)
        elif field == "freeobj":
            value = FREE_END if value < 0 else value % n
        elif classes[z.cls].huge:  # prev, next: a huge zspage keeps its owner there
            return
        else:
            value = -1 if value < 0 else value * 8
        for z in self.devices:
            setattr(z.pool.zspages[first], field, value)
        self.write_pages(index, count, kind, seed)
        self.the_same()
        for h in self.handles:
            h.close()
        self._open()

    @invariant()
    def the_same(self):
        fast, ref = (device_state(z) for z in self.devices)
        assert fast == ref

    def teardown(self) -> None:
        for h in self.handles:
            h.close()
        for root in self.roots:
            shutil.rmtree(root, ignore_errors=True)


def twins(compat: str, algorithm: str, examples: int):
    machine = type(f"Twins_{compat.replace('.', '_')}_{algorithm}".replace("-", "_"), (ImageTwins,),
                   {"compat": compat, "algorithm": algorithm})  # fmt: skip
    machine.TestCase.settings = machine_settings(examples // (5 if SANITIZING else 1), 25)
    return machine.TestCase


TestImageTwinsModernLzoRle = twins("6.18", "lzo-rle", 60)
TestImageTwinsModernLz4 = twins("6.18", "lz4", 30)
TestImageTwinsLegacyLzo = twins("3.11", "lzo", 40)


# --------------------------------------------------------------------------
# Real data


@pytest.mark.parametrize("compat", PROFILES)
def test_real_data_the_same_image(mixed, compat, tmp_path):  # noqa: F811
    """Real pages written in 1 MiB calls with commits between, overwritten shifted by an odd
    offset, partly discarded and compacted: the two images equal throughout, byte for byte."""
    stores = [Store(tmp_path / name) for name in ("fast", "ref")]
    for store in stores:
        store.root.mkdir()
        store.hot_add()
        with store.open(0, write=True) as h:
            sysfs.store(h.zram, "compat", compat)
            sysfs.store(h.zram, "disksize", str(len(mixed) + PAGE))
    handles = [store.open(0, write=True) for store in stores]
    try:
        handles[1].zram.compiled = False
        for h in handles:
            h.zram.clock = lambda: 1_700_000_000
            for off in range(0, len(mixed), 1 << 20):
                h.zram.write(off, mixed[off : off + (1 << 20)])
                h.commit()
        assert device_state(handles[0].zram) == device_state(handles[1].zram)
        same_images(*(store.image_path(0) for store in stores))
        for h in handles:
            h.zram.write(PAGE + 123, mixed[: len(mixed) // 3])
            h.zram.discard(len(mixed) // 2, len(mixed) // 4)
            if h.zram.profile.compaction:
                h.zram.compact()
            h.zram.write(len(mixed) // 2, mixed[: len(mixed) // 4])
            h.commit()
        assert device_state(handles[0].zram) == device_state(handles[1].zram)
        same_images(*(store.image_path(0) for store in stores))
        assert handles[0].zram.read(0, len(mixed)) == handles[1].zram.read(0, len(mixed))
    finally:
        for h in handles:
            h.close()


def test_an_image_write_goes_through_the_compiled_path(tmp_path, monkeypatch):
    """Whole pages of a write into an image are stored by store_entries, not one by one."""
    from zramctl.kernel import zram_drv

    calls = []
    real = zram_drv.store_entries
    monkeypatch.setattr(zram_drv, "store_entries", lambda *a: calls.append(len(a[3]) // PAGE) or real(*a))
    store = Store(tmp_path)
    store.hot_add()
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "disksize", str(SIZE))
        data = make_data("text", 1, 300 * PAGE, "lzo-rle")
        h.zram.write(0, data)
        assert h.zram.read(0, len(data)) == data
    assert sum(calls) >= 290


# --------------------------------------------------------------------------
# The function itself, on arguments no caller should pass


def test_store_entries_refuses_what_no_caller_passes(tmp_path):
    store = Store(tmp_path)
    store.hot_add()
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "disksize", str(SIZE))
        h.zram.write(0, make_data("text", 2, 4 * PAGE, "lzo-rle"))
        pool = h.zram.pool
        geo = pool.store_geometry()
        entries = [None] * 255
        page = bytes(range(256)) * 16
        comp = h.zram.backend.compress(page)
        bits = profile_bits(h.zram.profile)
        freed: list[int] = []

        def call(entries=entries, start=0, pages=page, comps=None, geometry=geo, counts=None, limit=0):
            counts = [0] * _zsmalloc.STORE_COUNTS if counts is None else counts
            return _zsmalloc.store_entries(entries, start, 10, pages, [comp] if comps is None else comps,
                                           geometry, {}, pool.frames, bits, 3072, 3072, limit, 0, 0,
                                           crc32, freed.append, counts)  # fmt: skip

        with pytest.raises(ValueError):
            call(pages=page[:-1])  # not whole pages
        with pytest.raises(ValueError):
            call(comps=[])  # a compression short
        with pytest.raises(ValueError):
            call(start=255)  # no slot for the page
        with pytest.raises(ValueError):
            call(start=-1)
        with pytest.raises(ValueError):
            call(counts=[0])
        with pytest.raises(ValueError):
            call(geometry=geo[:5])
        with pytest.raises(TypeError):
            call(entries=tuple(entries))
        # a geometry that is not what it must be: every page handed back, nothing changed
        broken = (list(range(10)), [("x", 1, 2, 3, False)], [], [], (0,), 12, 8, {}, set(), pool)
        counts = [0] * _zsmalloc.STORE_COUNTS
        assert call(geometry=broken, counts=counts) == _zsmalloc.HANDBACK
        assert counts[0] == 0 and entries[0] is None
        # a slot in use, and a compression that is no bytes: handed back
        assert call(entries=[(1, 2, 3, 4)] + [None] * 254) == _zsmalloc.HANDBACK
        assert call(comps=[ValueError("x")]) == _zsmalloc.HANDBACK
        assert call(comps=[b""]) == _zsmalloc.HANDBACK
        # a mem_limit that the pool is over already: handed back (the Python way refuses it)
        assert call(limit=1) == _zsmalloc.HANDBACK
        assert entries == [None] * 255 and freed == []
        # a slot written back: handed back, nothing freed
        assert call(entries=[(1 << 15, 2, 3, 4)] + [None] * 254) == _zsmalloc.HANDBACK and freed == []


class FuzzZsPage:
    """A record as the compiled path reads and changes it, with any values."""

    __slots__ = ("first", "cls", "inuse", "freeobj", "fullness", "prev", "next", "owner")

    def __init__(self, values: tuple[int, ...]) -> None:
        for name, v in zip(self.__slots__, values, strict=True):
            setattr(self, name, v)


class FuzzClass:
    __slots__ = ("heads", "zspages", "objs_inuse")

    def __init__(self, heads: list[int], counted: list[int], inuse: int) -> None:
        self.heads, self.zspages, self.objs_inuse = heads, counted, inuse


class FuzzFrames:
    """Frames lent in place, some of which ``mutable`` opens (any length), or fails to."""

    def __init__(self, in_place: dict[int, bytearray], opens: dict[int, int]) -> None:
        self.in_place, self._opens = in_place, opens

    def mutable(self, frame: int) -> memoryview:
        if frame not in self._opens:
            raise ZramError(117, "write", "no such frame")
        self.in_place[frame] = bytearray(self._opens[frame])
        return memoryview(self.in_place[frame])


class FuzzPool:
    """A pool whose _alloc_zspage gives any record, or fails."""

    def __init__(self, made: tuple[int, ...] | None, allocated: int) -> None:
        self.made, self.pages_allocated = made, allocated

    def _alloc_zspage(self, cls: FuzzClass) -> FuzzZsPage:
        if self.made is None:
            raise ZramError(27, "write", "no room")
        return FuzzZsPage(self.made)


ANY = st.one_of(st.integers(-3, 40), st.integers(-(2**63), 2**63 - 1))
RECORD = st.tuples(*[st.one_of(st.sampled_from([0, 8, 16, 2**41]), ANY) for _ in range(8)])


@settings(max_examples=400 if not SANITIZING else 150, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.just((1, 2, 3, 4))), min_size=1, max_size=4),
    st.lists(st.one_of(st.binary(min_size=1, max_size=5000), st.none()), min_size=4, max_size=4),
    st.tuples(st.integers(1, 5000), st.integers(1, 20), st.integers(1, 3000), st.booleans()),
    st.lists(ANY, min_size=1, max_size=12),
    st.dictionaries(st.sampled_from([0, 8, 16, 24, 2**41, -1, -5]), RECORD, max_size=4),
    st.dictionaries(st.integers(-2, 40), st.integers(4090, 4100), max_size=24),
    st.dictionaries(st.integers(-2, 40), st.integers(4090, 4100), max_size=24),
    st.one_of(st.none(), RECORD),
    st.integers(0, 31),
    st.integers(0, 64),
)
def test_arbitrary_pools_are_stored_into_or_refused_never_a_crash(
    entries, comps, geo, heads, records, frames, opens, made, profile, limit
):
    """A pool, records, lists and frames no allocator made (any sizes, any links, frames of any
    length, a new zspage of any shape): each page is stored, handed back or refused with an
    exception; nothing is written outside the frames, and the lists keep their lengths."""
    size, ppz, objs, huge = geo
    cls = FuzzClass(list(heads), [0] * 12, 0)
    geometry = (
        [0] * 5000, [(cls, size, ppz, objs, huge)], [[g % 14 for g in range(objs + 2)]],
        list(range(-1, 11)), (9, 3, 0), 12, 8,
        {k: FuzzZsPage(v) for k, v in records.items()}, set(records) | {8}, FuzzPool(made, 3),
    )  # fmt: skip
    in_place = {n: bytearray(length) for n, length in frames.items()}  # (make sanitize watches their ends)
    pages = random.Random(len(entries)).randbytes(len(entries) * PAGE)
    counts = [0] * _zsmalloc.STORE_COUNTS
    lst = list(entries)

    def free_page(index: int) -> None:  # zram_free_page, as the driver's: the slot emptied, or a failure
        if index % 3 == 2:
            raise ZramError(117, "write", "damaged")
        lst[index - 3] = None

    try:
        stop = _zsmalloc.store_entries(lst, 0, 3, pages, comps[: len(entries)] + [None] * 4, geometry, {},
                                       FuzzFrames(in_place, opens), profile, 3000, 3000, limit, 0, 0, crc32,
                                       free_page, counts)  # fmt: skip
        assert stop in (_zsmalloc.DONE, _zsmalloc.HANDBACK, _zsmalloc.FAILED)
        assert 0 <= counts[0] <= len(entries)
    except (TypeError, OverflowError, ValueError, RuntimeError, IndexError):
        pass
    assert len(lst) == len(entries) and len(cls.heads) == len(heads)
    lent = {**opens, **frames}  # (a frame lent already is never opened again)
    assert all(len(in_place[n]) == lent[n] for n in in_place)
