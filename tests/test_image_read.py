"""The compiled read path over an image (``_zsmalloc.read_entries``) against the Python one.

An image's device keeps the Python pool (its frames and records are untrusted, checked as they
are used); its reads go through ``Zram._read_leaves``, which reads a table leaf's entries in C
and hands back any page it cannot read for the Python path to read, or to fail on.  Here two
images get the same writes and the same reads, one with the compiled path and one without
(``TableMap.run`` taken away): every read must give the same bytes or the same error, count the
same, and leave the same image behind, including the access times a 6.18 read records, with
damaged objects, missing zspages, written-back pages, and writes between reads.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from zramctl.kernel._zsmalloc import Listed

from zramctl.errors import ZramError
from zramctl.image.format import decode_header
from zramctl.image.maps import TableMap
from zramctl.kernel import _zsmalloc, sysfs
from zramctl.kernel import zram_drv as zram_drv_mod
from zramctl.kernel.compiled_pool import CompiledPool
from zramctl.kernel.profiles import PAGE_SIZE
from zramctl.kernel.zcomp import DECODER_LZ4, DECODER_LZO
from zramctl.kernel.zram_drv import ZRAM_IDLE, ZRAM_SAME, Zram, ZramConfig
from zramctl.kernel.zsmalloc import READ_CACHE_ZSPAGES
from zramctl.store import Store, check_image

PAGE = PAGE_SIZE
SANITIZING = bool(os.environ.get("ZRAMCTL_SANITIZE"))
PAGES = 700  # more than two table leaves


def corpus(seed: int) -> bytes:
    """Pages of every kind: compressible, same-filled, zero, incompressible (huge)."""
    rnd = random.Random(seed)
    out = []
    for i in range(PAGES):
        kind = i % 7
        if kind == 0:
            out.append(bytes([i % 251]) * PAGE)
        elif kind == 1:
            out.append(rnd.randbytes(PAGE))
        else:
            out.append((rnd.randbytes(rnd.randrange(50, 2500)) + bytes(PAGE))[:PAGE])
    return b"".join(out)


def new_store(root: Path, profile: str, algorithm: str) -> Store:
    store = Store(root)
    store.hot_add()
    with store.open(0, write=True) as h:
        sysfs.store(h.zram, "compat", profile)
        if profile != "3.11":  # (the 2013 driver has lzo only, and no comp_algorithm)
            sysfs.store(h.zram, "comp_algorithm", algorithm)
        sysfs.store(h.zram, "disksize", str((PAGES + 40) * PAGE))
    return store


def outcome(fn: Callable[[], object]) -> object:
    try:
        return ("ok", fn())
    except ZramError as exc:
        return ("error", exc.errno, str(exc), exc.done)


class Listing:
    """A ``list_entries`` result that notes the threads its ``decode`` is called on."""

    def __init__(self, listed: Listed, threads: set[str]) -> None:
        self.listed, self.threads = listed, threads

    @property
    def stop(self) -> int:
        return self.listed.stop

    def decode(self) -> tuple[int, int] | None:
        self.threads.add(threading.current_thread().name)
        return self.listed.decode()


class Twins:
    """Two images given the same operations: ``fast`` reads through read_entries, ``ref`` not."""

    def __init__(self, tmp_path: Path, profile: str, algorithm: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stores = [new_store(tmp_path / name, profile, algorithm) for name in ("fast", "ref")]
        self.monkeypatch = monkeypatch
        self.calls = 0
        self.now = 1_800_000_000
        """What the devices' clocks say (the access times reads set)."""
        self.python_reads = 0
        """Pages the fast twin read the Python way (handed back, or read where nothing was compiled)."""
        real, real_list = zram_drv_mod.read_entries, zram_drv_mod.list_entries

        self.threads: set[str] = set()
        """The threads that decoded a leaf's pages (or were given them to)."""

        def counting(*args: object) -> tuple[int, int]:
            self.calls += 1
            self.threads.add(threading.current_thread().name)
            return real(*args)

        def listing(*args: object) -> Listing:
            self.calls += 1
            return Listing(real_list(*args), self.threads)

        monkeypatch.setattr(zram_drv_mod, "read_entries", counting)
        monkeypatch.setattr(zram_drv_mod, "list_entries", listing)

    def each(self, fn: Callable[..., object], write: bool = True) -> list[object]:
        """fn(zram) on both, in one open each (the ref's table without ``run``); the outcomes."""
        out = []
        for n, store in enumerate(self.stores):
            with self.monkeypatch.context() as m:
                if n == 1:
                    m.setattr(TableMap, "run", None)
                else:
                    real_entry = zram_drv_mod.Zram._read_entry

                    def counted(z, index, entry, real_entry=real_entry):
                        self.python_reads += 1
                        return real_entry(z, index, entry)

                    m.setattr(zram_drv_mod.Zram, "_read_entry", counted)
                with store.open(0, write=write) as h:
                    h.zram.clock = lambda: self.now
                    out.append(outcome(lambda h=h: fn(h.zram)))
                    if write:
                        h.commit()
        return out

    def same(self, fn: Callable[..., object], write: bool = True) -> object:
        calls = self.calls
        fast, ref = self.each(fn, write)
        assert fast == ref
        return fast, self.calls - calls

    def images_equal(self, clean: bool = True) -> None:
        """Block for block the same image, but for each image's own random id in the header."""
        images = [Path(s.image_path(0)).read_bytes() for s in self.stores]
        headers = [dataclasses.replace(decode_header(data[:PAGE]), image_id=b"") for data in images]
        assert headers[0] == headers[1] and images[0][PAGE:] == images[1][PAGE:]
        for store in self.stores:
            assert clean is False or check_image((store, 0), data=True) == []


@pytest.mark.parametrize("profile,algorithm", [("6.18", "lzo-rle"), ("6.18", "lz4"), ("3.11", "lzo"),
                                               ("6.18", "zstd")])
def test_reads_are_the_python_paths(tmp_path, monkeypatch, profile, algorithm):
    t = Twins(tmp_path, profile, algorithm, monkeypatch)
    data = corpus(1)
    t.same(lambda z: z.write(3 * PAGE, data))
    whole = (PAGES + 40) * PAGE
    got, calls = t.same(lambda z: z.read(0, whole), write=True)
    assert got == ("ok", bytes(3 * PAGE) + data + bytes(37 * PAGE)) and calls > 0 and t.python_reads == 0
    spans = ((0, PAGE), (5 * PAGE + 17, 3 * PAGE), (PAGE * 300, PAGE * 300), (whole - PAGE, PAGE))
    for offset, length in spans:
        t.same(lambda z, o=offset, n=length: z.read(o, n))
        t.same(lambda z, o=offset, n=length: (z.read_into(o, buf := bytearray(n)), bytes(buf))[1])
    t.same(lambda z: (z.stats.num_reads, z.stats.failed_reads, dict(z.table)))
    t.images_equal()


def test_each_leaf_is_looked_up_as_it_comes_to_be_listed(tmp_path, monkeypatch):
    """On several CPUs a leaf's entries are looked up (a table leaf decoded) just before it is
    listed, so that the threads decode the leaves listed before it meanwhile.  Before, a call
    looked all its leaves up first while the threads waited: 12 ms of a 256 MiB read."""
    monkeypatch.setattr(zram_drv_mod, "usable_cpus", lambda: 2)
    store = new_store(tmp_path, "6.18", "lz4")
    with store.open(0, write=True) as h:
        h.zram.write(0, corpus(5))
        h.commit()
    events: list[str] = []
    real_run, real_list = TableMap.run, zram_drv_mod.list_entries

    def run(table, index):
        events.append("run")
        return real_run(table, index)

    def listing(*args):
        events.append("list")
        return real_list(*args)

    monkeypatch.setattr(TableMap, "run", run)
    monkeypatch.setattr(zram_drv_mod, "list_entries", listing)
    with store.open(0, write=False) as h:
        assert h.zram.read(0, PAGES * PAGE) == corpus(5)
    leaves = -(-PAGES // 255)
    # (the first leaf is looked up once more, to see whether the call spans several)
    assert events == ["run"] + ["run", "list"] * leaves


@pytest.mark.parametrize("cpus", [1, 3])
def test_leaves_are_read_on_every_cpu_with_the_same_result(tmp_path, monkeypatch, cpus):
    """A read of many leaves decodes them on as many threads as there are CPUs: the same bytes,
    counters, access times and image as one after another; also with a cache of two table
    leaves, which drops leaves while a read still holds their entries, and with damage (the
    pages before it get their access times, those after it not)."""
    from zramctl.image import maps

    monkeypatch.setattr(zram_drv_mod, "usable_cpus", lambda: cpus)
    for cache in (maps.LEAF_CACHE, 2):
        monkeypatch.setattr(maps, "LEAF_CACHE", cache)
        t = Twins(tmp_path / str(cache), "6.18", "lz4", monkeypatch)
        data = corpus(7)
        t.same(lambda z, data=data: z.write(0, data))
        got, _ = t.same(lambda z: z.read(0, PAGES * PAGE))
        assert got == ("ok", data) and t.python_reads == 0
        assert any(name.startswith("zram-read") for name in t.threads) == (cpus > 1)
        t.same(lambda z: z.read(PAGE * 3, PAGE * 600))  # the same second: no access time changes
        t.images_equal()
        t.same(lambda z: damage_object(z, 400))
        t.now += 60
        got, _ = t.same(lambda z: z.read(0, PAGES * PAGE))
        assert got[:2] == ("error", errno.EIO) and got[3] == 400 * PAGE
        t.same(lambda z: (z.stats.num_reads, z.stats.failed_reads, dict(z.table)))
        t.images_equal(clean=False)


def test_writes_between_reads_are_seen(tmp_path, monkeypatch):
    """Within one open: read, overwrite, discard, compact, read again: never a stale zspage."""
    t = Twins(tmp_path, "6.18", "lzo-rle", monkeypatch)
    data, other = corpus(2), corpus(3)

    def steps(z):
        z.write(0, data)
        seen = [z.read(0, PAGES * PAGE)]
        z.write(PAGE * 10, other[: PAGE * 200])
        seen.append(z.read(0, PAGES * PAGE))
        z.discard(PAGE * 50, PAGE * 300)
        z.compact()
        seen.append(z.read(0, PAGES * PAGE))
        return seen

    (status, seen), _ = t.same(steps)
    assert status == "ok" and t.python_reads == 0  # (a stale zspage would fail its CRC: handed back)
    assert seen[1] == data[: PAGE * 10] + other[: PAGE * 200] + data[PAGE * 210 :]
    t.images_equal()


def test_an_object_written_into_a_zspage_read_before_is_read_anew(tmp_path, monkeypatch):
    """A zspage already read (kept described in the pool's read cache) gets a new object, and
    loses one, with no zspage made or freed: the next read must see its new bytes, not hand the
    page back on a stale copy that fails its CRC."""
    t = Twins(tmp_path, "6.18", "lzo-rle", monkeypatch)
    rnd = random.Random(6)
    small = [(rnd.randbytes(60) + bytes(PAGE))[:PAGE] for _ in range(12)]  # one class, one zspage

    def steps(z):
        z.write(0, b"".join(small))
        before = z.pool.pages_allocated
        seen = [z.read(0, 12 * PAGE)]
        z.write(5 * PAGE, small[11])
        seen.append(z.read(0, 12 * PAGE))
        return seen, z.pool.pages_allocated == before

    (status, (seen, same_zspages)), _ = t.same(steps)
    assert status == "ok" and same_zspages and seen[1][5 * PAGE : 6 * PAGE] == small[11]
    assert t.python_reads == 0


def damage_object(z, index: int, at: int = 1) -> None:
    """Flip a bit inside page ``index``'s object (its header left alone)."""
    handle = z.table[index][1]
    pool = z.pool
    cls = pool.classes[pool.zspages[handle >> 11].cls]
    off = (handle & 0x7FF) * cls.size + (0 if cls.huge else 8) + at
    pool.frames.mutable((handle >> 11) + off // PAGE)[off % PAGE] ^= 0x40


def test_damage_fails_alike(tmp_path, monkeypatch):
    """A bit flipped in an object: EIO at the same page, the same bytes counted before it; a
    table entry naming no zspage, or a slot past the zspage's end: the same EUCLEAN words."""
    t = Twins(tmp_path, "6.18", "lz4", monkeypatch)
    t.same(lambda z: z.write(0, corpus(4)))
    victim = 100 + next(i for i in range(100, PAGES) if i % 7 not in (0,))
    t.same(lambda z: damage_object(z, victim))
    got, _ = t.same(lambda z: z.read(0, PAGES * PAGE))
    assert got[:2] == ("error", errno.EIO) and got[3] == victim * PAGE
    t.same(lambda z: z.read((victim + 1) * PAGE, 50 * PAGE))
    t.same(lambda z: (z.stats.num_reads, z.stats.failed_reads))

    def bad_handle(z, shift: int) -> None:
        flags, handle, crc, ac = z.table[victim + 2]
        z.table[victim + 2] = (flags, handle + shift, crc, ac)

    for shift in (1 << 11 << 3, 2000):  # a frame holding no zspage; a slot past the last
        t.same(lambda z, s=shift: bad_handle(z, s))
        got, _ = t.same(lambda z: z.read((victim + 1) * PAGE, 4 * PAGE))
        assert got[0] == "error" and got[3] == PAGE
        t.same(lambda z, s=shift: bad_handle(z, -s))


def test_a_huge_read_keeps_its_cache_bounded(tmp_path, monkeypatch):
    """Many more zspages than READ_CACHE_ZSPAGES: every page still right, the cache never larger
    than its bound and one call's pages."""
    import zramctl.kernel.zsmalloc as zs

    monkeypatch.setattr(zs, "READ_CACHE_ZSPAGES", 16)
    t = Twins(tmp_path, "6.18", "lzo-rle", monkeypatch)
    data = corpus(5)
    t.same(lambda z: z.write(0, data))
    sizes = []

    def read_watching(z):
        out = bytearray(PAGES * PAGE)
        for off in range(0, len(out), 64 * PAGE):
            z.read_into(off, memoryview(out)[off : off + 64 * PAGE])
            sizes.append(len(z.pool._read_cache))
        return bytes(out)

    got, _ = t.same(read_watching)
    assert got == ("ok", data) and max(sizes) <= 16 + 64
    assert READ_CACHE_ZSPAGES >= 1024


def test_read_entries_refuses_what_it_cannot_use():
    """Arguments no caller passes: an exception, never a crash or a stray write."""
    out = bytearray(2 * PAGE)
    entry = (100, 1 << 11, 0, 0)

    def call(entries, start=0, buf=out, zspage=lambda first: None, cache=None):
        return _zsmalloc.read_entries(entries, start, buf, (0,), zspage, {} if cache is None else cache,
                                      lambda b: 0)

    for bad in (lambda: call([entry]), lambda: call([entry, entry], 1), lambda: call([entry, entry], -1),
                lambda: call((entry, entry)), lambda: call([entry, entry], buf=bytearray(PAGE + 1)),
                lambda: call([(1, 2), entry]), lambda: call([entry, entry], zspage=lambda f: (1, 2))):
        with pytest.raises((ValueError, TypeError, OverflowError)):
            bad()
    # a zspage that lies about its geometry: the object must lie inside the bytes it gives
    for geometry in ((4096, 2047, 4096, 0, b"x" * 10), (1 << 40, 2, 4096, 0, bytes(PAGE)),
                     (16, 2047, 4096, 1 << 40, bytes(PAGE)), (-16, 2047, 4096, 0, bytes(PAGE))):
        assert call([entry, None], zspage=lambda f, g=geometry: g)[:2] == (0, 1)
    assert call(None) == (2, 0) and out == bytes(2 * PAGE)
    for args in (((entry,), 0, 1, 5), ([entry], 1, 1, 5), ([entry], -1, 1, 5), ([entry], 0, 2, 5),
                 ([entry], 0, -1, 5), ([(1, 2)], 0, 1, 5), ([entry], 0, 1, "now")):
        with pytest.raises((ValueError, TypeError, OverflowError)):
            _zsmalloc.access_entries(*args)
    entries = [entry, None, (ZRAM_IDLE | 7, 1, 2, 5), (7, 1, 2, 5)]
    assert _zsmalloc.access_entries(entries, 0, 4, 5) == 2
    assert entries == [(100, 1 << 11, 0, 5), None, (7, 1, 2, 5), (7, 1, 2, 5)]


def test_the_entries_made_in_c_are_not_left_to_the_garbage_collector():
    """A table entry of four ints can make no cycle: the entries a leaf decodes to, and those an
    access or a compiled store makes, are untracked from the start, so that a read of N pages
    does not hand the collector N tuples to scan (that cost 4-7 ms of a 256 MiB read).  One
    that holds anything but ints stays tracked.  The entries of a leaf with one access time
    share its int (258 leaves decode in 8.6 ms instead of 12.4 with both)."""
    from zramctl.image import format as fmt

    leaf = fmt.decode_table(9, fmt.encode_table(9, [(100, 8 << 11, 7, 3), (ZRAM_SAME, 5, 0, 3)]), 100)
    made = [e for e in leaf if e is not None]
    assert len(made) == 2 and not any(gc.is_tracked(e) for e in made)
    assert made[0][3] is made[1][3]  # one access time, one int (a leaf's entries mostly share it)
    entries = [(100, 1 << 11, 0, 0), (101, 1 << 11, 0, 0), (102, 1 << 11, [], 0)]
    assert _zsmalloc.access_entries(entries, 0, 3, 5) == 3
    assert not gc.is_tracked(entries[0]) and not gc.is_tracked(entries[1])
    assert entries[2] == (102, 1 << 11, [], 5) and gc.is_tracked(entries[2])  # (a list could be a cycle)
    zram = Zram(ZramConfig(disksize=1 << 20))
    assert isinstance(zram.pool, CompiledPool)
    zram.write(0, random.Random(3).randbytes(8 * PAGE))
    assert len(zram.table) == 8 and not any(gc.is_tracked(e) for e in zram.table.values())


def test_a_listing_holds_what_it_decodes_from_and_into_until_it_has():
    """list_entries' result keeps its buffer (it cannot be resized or freed under a decoding
    thread) and the zspages' bytes until it has decoded; then it lets both go, and answers the
    same again."""
    import sys

    from zramctl.kernel._kcomp import lz4_compress  # type: ignore[attr-defined]

    page = bytes(range(256)) * 16
    comp = lz4_compress(page)
    zspage = (PAGE, 1, PAGE, 0, comp + bytes(PAGE - len(comp)))
    alone = sys.getrefcount(zspage)
    entries = [(len(comp), 1 << 11, 7, 0), None]
    out = bytearray(2 * PAGE)
    cache: dict[int, object] = {}
    listed = _zsmalloc.list_entries(entries, 0, out, (DECODER_LZ4,), lambda f: zspage, cache, lambda b: 7)
    cache.clear()
    assert sys.getrefcount(zspage) == alone + 1 and listed.stop == 0
    with pytest.raises(BufferError):
        out.append(0)
    assert listed.decode() == (2, 0) and out == page + bytes(PAGE)
    assert sys.getrefcount(zspage) == alone
    out.append(0)  # let go
    assert listed.decode() == (2, 0)


# Small numbers (sizes, slots, offsets that fit) and any 64-bit one.
WORD = st.one_of(st.integers(-64, 5000), st.integers(-(2**63), 2**63 - 1))
HANDLE = st.one_of(st.integers(0, 1 << 14), st.integers(-(2**63), 2**63 - 1))
CRC = st.one_of(st.just(7), st.integers(0, 2**32))  # 7: what the test's crc32 gives any bytes
ENTRY = st.tuples(st.integers(0, 2**64 - 1), HANDLE, CRC, st.integers(0, 2**40))


@settings(max_examples=300 if not SANITIZING else 100, deadline=None)
@given(
    st.lists(st.one_of(st.none(), ENTRY), min_size=1, max_size=6),
    st.lists(st.one_of(st.none(), st.tuples(WORD, WORD, WORD, WORD, st.binary(max_size=3 * PAGE))),
             min_size=1, max_size=4),
    st.booleans(),
)
def test_arbitrary_entries_and_zspages_are_read_or_refused_never_a_crash(entries, zspages, accessed):
    """Entries no driver wrote and zspage descriptions no pool made (any sizes, any offsets, any
    bytes): each page is read, handed back or refused with an exception; nothing is written
    outside the buffer given, and the list keeps its length."""
    guard = 64
    buf = bytearray(b"\xa5" * guard + bytes(len(entries) * PAGE) + b"\x5a" * guard)
    out = memoryview(buf)[guard : guard + len(entries) * PAGE]
    lst = list(entries)

    def describe(first: int) -> object:
        return zspages[first % len(zspages)]

    decompress = (DECODER_LZ4, lambda b: bytes(PAGE), None, DECODER_LZO)
    # the same in two steps, into a buffer of its own: the same result, the same bytes
    apart = bytearray(len(entries) * PAGE)
    try:
        listed = _zsmalloc.list_entries(list(entries), 0, apart, decompress, describe, {}, lambda b: 7)
        in_steps: object = listed.decode()
        assert listed.decode() == in_steps
    except (TypeError, OverflowError, ValueError) as exc:
        in_steps = type(exc)
    try:
        done, stop = _zsmalloc.read_entries(lst, 0, out, decompress, describe, {}, lambda b: 7)
        assert in_steps == (done, stop) and apart[: done * PAGE] == out[: done * PAGE]
        assert 0 <= done <= len(entries)
        if accessed:  # what the driver does next to the pages read
            assert 0 <= _zsmalloc.access_entries(lst, 0, done, 5) <= done
    except (TypeError, OverflowError, ValueError) as exc:
        assert in_steps is type(exc)
    try:
        assert 0 <= _zsmalloc.access_entries(lst, 1, len(lst) - 1, 9) <= len(lst) - 1
    except (TypeError, OverflowError, ValueError):
        pass
    assert buf[:guard] == b"\xa5" * guard and buf[-guard:] == b"\x5a" * guard and len(lst) == len(entries)
