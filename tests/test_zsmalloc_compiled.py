"""The compiled pool (``_zsmalloc.c`` through ``compiled_pool.py``) against the Python reference.

Two devices, one with each pool, get the same operations: writes of every kind of page at
any offset (partial pages, same-filled, huge, incompressible), overwrites, discards, reads,
compaction, mem_limit, reset, and on 6.18 idle marking, writeback and recompression; and
damage to a stored object.  After every step everything must be equal: what each call
returned or raised, the counters, the page table, every class's statistics and list heads,
every zspage's record, and every frame, byte for byte (``assert_same``).

Then the same on real data (``tools/make-corpus mixed``), and the compiled module's own
interface on arguments no caller should pass: an error, never a crash or a stray write.
``make sanitize`` runs this file under AddressSanitizer and UBSan.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_statemachine import KINDS, check_invariants, machine_settings, make_data

from zramctl.errors import ZramError, ZsError
from zramctl.kernel import _zsmalloc, sysfs
from zramctl.kernel.compiled_pool import CompiledPool, geometry
from zramctl.kernel.profiles import PAGE_SIZE, PROFILES, get_profile
from zramctl.kernel.zcomp import DECODER_LZ4, DECODER_LZO
from zramctl.kernel.zram_drv import Backing, MemoryBackingDev, Zram, ZramConfig
from zramctl.kernel.zsmalloc import Pool

PAGE = PAGE_SIZE
PAGES = 48
SIZE = PAGES * PAGE
SANITIZING = bool(os.environ.get("ZRAMCTL_SANITIZE"))


def frames_of(z: Zram) -> dict[int, bytes]:
    """Every zspage's frames, by first frame, from either pool."""
    pool = z.pool
    assert pool is not None
    if isinstance(pool, CompiledPool):
        return {first: pool.zspage_bytes(first) for first in pool.zspages}
    out = {}
    for first, zspage in pool.zspages.items():
        pages = pool.classes[zspage.cls].pages_per_zspage
        out[first] = b"".join(bytes(pool.frames.view(first + k)) for k in range(pages))
    return out


def assert_same(fast: Zram, ref: Zram) -> None:
    """The two devices are one: counters, table, classes, zspage records and frames."""
    assert isinstance(fast.pool, CompiledPool) and type(ref.pool) is Pool
    assert asdict(fast.stats) == asdict(ref.stats)
    assert fast.config == ref.config
    assert dict(fast.table) == dict(ref.table)
    a, b = fast.pool, ref.pool
    assert (a.pages_allocated, a.pages_compacted) == (b.pages_allocated, b.pages_compacted)
    assert [(c.objs_allocated, c.objs_inuse, list(c.heads), list(c.zspages)) for c in a.classes] == [
        (c.objs_allocated, c.objs_inuse, list(c.heads), list(c.zspages)) for c in b.classes
    ]
    assert a.zspages == dict(b.zspages)
    assert frames_of(fast) == frames_of(ref)


def outcome(fn: Callable[[Zram], object], z: Zram) -> object:
    """What ``fn(z)`` returned, or the error it raised (its type, errno and how much was done)."""
    try:
        return ("ok", fn(z))
    except ZramError as exc:
        return ("error", exc.errno, exc.what, exc.done)


class TwinMachine(RuleBasedStateMachine):
    compat = "6.18"
    algorithm = "lzo-rle"

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_700_000_000
        self.devices: list[Zram] = []
        for compiled in (True, False):
            # a backing device of 8 blocks, new at every set-up (reset lets the last one go whole)
            z = Zram(ZramConfig(compat=self.compat, comp_algorithm=self.algorithm),
                     backing=Backing(open_bdev=lambda path: MemoryBackingDev(8)), compiled=compiled)
            z.clock = lambda: self.now
            self.devices.append(z)
        self.both(self.set_up)

    @property
    def modern(self) -> bool:
        return get_profile(self.compat).post_processing

    def set_up(self, z: Zram) -> None:
        if self.modern:
            sysfs.store(z, "backing_dev", "/backing")
            sysfs.store(z, "recomp_algorithm", "algo=zstd")
        z.init(SIZE)

    def both(self, fn: Callable[[Zram], object]) -> object:
        fast, ref = (outcome(fn, z) for z in self.devices)
        assert fast == ref
        return fast

    @rule(index=st.integers(0, PAGES - 1), count=st.integers(1, 12), kind=st.sampled_from(KINDS),
          seed=st.integers(0, 2**32 - 1))
    def write_pages(self, index, count, kind, seed):
        data = make_data(kind, seed, min(count, PAGES - index) * PAGE, "lzo")
        self.both(lambda z: z.write(index * PAGE, data))

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(1, 5 * PAGE), kind=st.sampled_from(KINDS),
          seed=st.integers(0, 2**32 - 1))
    def write_bytes(self, offset, length, kind, seed):
        data = make_data(kind, seed, min(length, SIZE - offset), "lzo")
        self.both(lambda z: z.write(offset, data))

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(0, 8 * PAGE))
    def read(self, offset, length):
        self.both(lambda z: z.read(offset, min(length, SIZE - offset)))

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(0, 8 * PAGE))
    def discard(self, offset, length):
        self.both(lambda z: z.discard(offset, min(length, SIZE - offset)))

    @rule()
    def compact(self):
        self.both(lambda z: z.compact())

    @rule(extra=st.integers(-2, 10))
    def set_mem_limit(self, extra):
        limit = max(0, self.devices[1].pool.pages_allocated + extra)
        self.both(lambda z: sysfs.store(z, "mem_limit", str(limit * PAGE)))

    @rule()
    def reset(self):
        self.both(lambda z: (sysfs.store(z, "reset", "1"), self.set_up(z)))

    @rule(seconds=st.integers(0, 100), age=st.one_of(st.none(), st.integers(0, 200)))
    def mark_idle(self, seconds, age):
        self.now += seconds
        if self.modern:
            self.both(lambda z: sysfs.store(z, "idle", "all" if age is None else str(age)))

    @rule(mode=st.sampled_from(["idle", "huge", "huge_idle", "incompressible"]))
    def writeback(self, mode):
        if self.modern:
            self.both(lambda z: sysfs.store(z, "writeback", mode))

    @rule(mode=st.sampled_from(["type=idle", "type=huge", ""]))
    def recompress(self, mode):
        if self.modern:
            self.both(lambda z: sysfs.store(z, "recompress", mode or "max_pages=5"))

    @rule(index=st.integers(0, PAGES - 1), at=st.integers(0, 64))
    def damage(self, index, at):
        """The same byte of the same stored object flipped in both: the reads must fail alike."""
        entries = [z.table.get(index) for z in self.devices]
        flags, handle, _, _ = entries[0] or (0, 0, 0, 0)
        if entries[0] is None or flags & ((1 << 13) | (1 << 15)):  # unwritten, same-filled, written back
            return
        for z in self.devices:
            pool = z.pool
            first = handle >> 11
            cls = pool.classes[pool.zspages[first].cls]
            off = (handle & 0x7FF) * cls.size + (0 if cls.huge else z.profile.handle_size)
            off += min(at, (flags & 0x1FFF) - 1)
            pool.frames.mutable(first + off // PAGE)[off % PAGE] ^= 0x5A
        self.both(lambda z: z.read(index * PAGE, PAGE))

    @invariant()
    def the_same(self):
        fast, ref = self.devices
        assert_same(fast, ref)
        check_invariants(fast)


def twin_test(compat: str, algorithm: str, examples: int):
    machine = type(f"Twin_{compat.replace('.', '_')}_{algorithm}".replace("-", "_"), (TwinMachine,),
                   {"compat": compat, "algorithm": algorithm})
    # under make sanitize the C code is what is watched: a few examples cover its paths
    machine.TestCase.settings = machine_settings(examples // (10 if SANITIZING else 1), 30)
    return machine.TestCase


TestTwinModernLzoRle = twin_test("6.18", "lzo-rle", 80)
TestTwinModernLz4 = twin_test("6.18", "lz4", 40)
TestTwinModernZstd = twin_test("6.18", "zstd", 20)
TestTwinLegacyLzo = twin_test("3.11", "lzo", 60)


# --------------------------------------------------------------------------
# Real data


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> bytes:
    from kernel import MAKE_CORPUS, make_corpus

    if not MAKE_CORPUS.exists():
        pytest.skip("tools/make-corpus is missing")
    size = (2 if SANITIZING else 8) << 20
    path = tmp_path_factory.mktemp("corpus") / "mixed"
    if SANITIZING:  # the corpus maker is a plain process: not under the sanitizers' preload
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONPATH")}
        subprocess.run([sys.executable, str(MAKE_CORPUS), "mixed", str(size), str(path)], env=env,
                       check=True, capture_output=True)
        return path.read_bytes()
    return make_corpus("mixed", size, path).read_bytes()


@pytest.mark.parametrize("compat", PROFILES)
@pytest.mark.parametrize("algorithm", ["lzo-rle", "lz4", "zstd"])
def test_real_data_the_same(mixed, compat, algorithm):
    """Real pages written in 1 MiB calls, overwritten shifted by an odd offset, partly discarded,
    compacted and read back: both pools equal throughout, and the bytes those written."""
    devices = []
    for compiled in (True, False):
        z = Zram(ZramConfig(compat=compat, comp_algorithm=algorithm), compiled=compiled)
        z.clock = lambda: 1_700_000_000
        z.init(len(mixed) + PAGE)
        for off in range(0, len(mixed), 1 << 20):
            z.write(off, mixed[off : off + (1 << 20)])
        devices.append(z)
    fast, ref = devices
    assert_same(fast, ref)
    assert fast.read(0, len(mixed)) == mixed == ref.read(0, len(mixed))
    for z in devices:
        z.write(PAGE + 123, mixed[: len(mixed) // 3])
        z.discard(len(mixed) // 2, len(mixed) // 4)
        if z.profile.compaction:
            z.compact()
    assert_same(fast, ref)
    assert fast.read(0, len(mixed)) == ref.read(0, len(mixed))
    assert_same(fast, ref)


def test_streams_do_not_change_the_compiled_result(mixed):
    """-t 4 against -t 1 on the compiled pool: the same state (streams compress; storing is in order)."""
    devices = []
    for streams in (1, 4):
        z = Zram(ZramConfig(max_comp_streams=streams))
        z.clock = lambda: 1_700_000_000
        z.init(len(mixed))
        z.write(0, mixed)
        devices.append(z)
    a, b = devices
    assert asdict(a.stats) == asdict(b.stats) and dict(a.table) == dict(b.table)
    assert frames_of(a) == frames_of(b)


def test_a_device_in_memory_gets_the_compiled_pool_and_an_image_never_does():
    assert isinstance(Zram(ZramConfig(disksize=SIZE)).pool, CompiledPool)
    assert type(Zram(ZramConfig(disksize=SIZE), compiled=False).pool) is Pool
    assert not Pool(get_profile("6.18")).untrusted and not CompiledPool(get_profile("6.18")).untrusted


# --------------------------------------------------------------------------
# The module's interface: errors, never crashes


def compiled(compat: str = "6.18") -> CompiledPool:
    return CompiledPool(get_profile(compat))


def test_bad_handles_and_lengths_are_errors():
    pool = compiled()
    h = pool.zs_malloc(100, 7)
    for bad in (-1, 0x7FF, h + 5000, 1 << 40, h | 0x7FF):
        with pytest.raises(_zsmalloc.ZsError):
            pool.zs_free(bad)
        with pytest.raises(_zsmalloc.ZsError):
            pool.zs_obj_read(bad, 10)
        with pytest.raises(_zsmalloc.ZsError):
            pool.zs_obj_write(bad, b"x")
    with pytest.raises(_zsmalloc.ZsError):
        pool.zs_obj_write(h, bytes(5000))  # larger than its slot
    with pytest.raises(_zsmalloc.ZsError):
        pool.zs_obj_read(h, 5000)
    with pytest.raises(_zsmalloc.ZsError):
        pool.zs_obj_read(h, -1)
    for size in (0, -5, PAGE + 1):
        with pytest.raises(ZsError):
            pool.zs_malloc(size, 1)
        with pytest.raises(ValueError):
            pool.c.zs_malloc(size, 1)
    with pytest.raises(IndexError):
        pool.c.zspage_write(h >> 11, PAGE * 8, b"x")
    with pytest.raises(IndexError):
        pool.c.zspage_write(h >> 11, -1, b"x")
    with pytest.raises(KeyError):
        pool.c.zspage_bytes(999)
    pool.zs_free(h)
    with pytest.raises(_zsmalloc.ZsError):
        pool.zs_free(h)  # its zspage is gone


def test_bad_geometry_is_refused():
    ref = Pool(get_profile("6.18"))
    good = {**geometry(ref), "relocate": None, "crc32": lambda b: 0}
    _zsmalloc.Pool(**good)
    bad = [
        {"classes": [(0, 4097, 1, 1, 1)]},
        {"classes": [(0, 32, 1, 200, 0)]},  # 200 objects of 32 bytes do not fit a page
        {"class_of_size": [0] * 10},
        {"class_of_size": [0] * (PAGE + 9)},  # every size in the smallest class
        {"groups": ref._groups[:-1]},
        {"list_index": [99] * 12},
        {"empty": 40},
        {"handle_size": 99},
        {"listed": (0,)},  # a group without a list
    ]
    for change in bad:
        with pytest.raises((ValueError, TypeError)):
            _zsmalloc.Pool(**{**good, **change})


def test_store_and_read_refuse_what_they_cannot_use():
    pool = compiled()
    table: dict = {}
    with pytest.raises(ValueError):
        pool.c.store_pages(table, 0, bytes(100), [b"x"], 0, 3072, 3000, 0, 0, 0)  # not whole pages
    with pytest.raises(ValueError):
        pool.c.store_pages(table, 0, bytes(PAGE * 2), [b"x"], 0, 3072, 3000, 0, 0, 0)  # one comp short
    with pytest.raises(TypeError):
        pool.c.store_pages([], 0, bytes(PAGE), [b"x"], 0, 3072, 3000, 0, 0, 0)
    table[0] = "not an entry"
    with pytest.raises(TypeError):
        pool.c.store_pages(table, 0, random.Random(1).randbytes(PAGE), [b"abc"], 0, 3072, 3000, 0, 0, 0)
    with pytest.raises(TypeError):
        pool.c.read_pages(table, 0, bytearray(PAGE), (None,), False, 0)
    table[0] = (100, 12345 << 11, 0, 0)  # an object in no zspage
    with pytest.raises(_zsmalloc.ZsError):
        pool.c.read_pages(table, 0, bytearray(PAGE), (None,), False, 0)
    with pytest.raises(ValueError):
        pool.c.read_pages({}, 0, bytearray(100), (None,), False, 0)
    # A page it cannot decompress (no decompressor, or one that fails) is handed back, unread.
    h = pool.zs_malloc(3, 0)
    pool.zs_obj_write(h, b"abc")
    from zramctl.crc import crc32

    table = {0: (3, h, crc32(b"abc"), 0)}
    for decompress in ((None,), (lambda b: b"short",), (lambda b: 1 / 0,), (2,), (77,)):
        assert pool.c.read_pages(table, 0, bytearray(2 * PAGE), decompress, False, 0) == (0, 1)
    table = {0: (3, h, 999, 0)}  # a checksum that fails: handed back for the caller's EIO
    assert pool.c.read_pages(table, 0, bytearray(PAGE), (lambda b: bytes(PAGE),), False, 0) == (0, 1)


def test_a_damaged_object_reads_as_eio_through_the_compiled_path():
    z = Zram(ZramConfig(comp_algorithm="lz4"))
    z.init(4 * PAGE)
    page = b"".join(b"zram %d " % i for i in range(600))[:PAGE]
    z.write(0, page * 3)
    flags, handle, _, _ = z.table[1]
    off = (handle & 0x7FF) * z.pool.classes[z.pool.zspages[handle >> 11].cls].size + 8 + 3
    z.pool.frames.mutable((handle >> 11) + off // PAGE)[off % PAGE] ^= 1
    with pytest.raises(ZramError) as e:
        z.read(0, 3 * PAGE)
    assert e.value.errno == errno.EIO and e.value.done == PAGE
    assert z.stats.failed_reads == 1 and z.read(2 * PAGE, PAGE) == page


def test_a_pool_never_initialised_refuses_every_method():
    pool = _zsmalloc.Pool.__new__(_zsmalloc.Pool)
    calls = [
        lambda: pool.zs_malloc(10, 1), lambda: pool.zs_free(0), lambda: pool.zs_obj_write(0, b"x"),
        lambda: pool.zs_obj_read(0, 1), pool.zs_compact, pool.destroy, lambda: pool.class_stats(0),
        pool.zspages, lambda: pool.zspage_bytes(0), lambda: pool.zspage_write(0, 0, b"x"),
        lambda: pool.store_pages({}, 0, bytes(PAGE), [b"x"], 0, 3072, 3000, 0, 0, 0),
        lambda: pool.read_pages({}, 0, bytearray(PAGE), (None,), False, 0),
    ]
    for call in calls:
        with pytest.raises(RuntimeError):
            call()


@settings(max_examples=300 if not SANITIZING else 100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**32),
                          st.integers(0, 2**40)), min_size=1, max_size=6),
       st.booleans())
def test_arbitrary_entries_are_read_or_refused_never_a_crash(entries, accessed):
    """Entries no driver wrote (any flags, any handle, into real zspages or not): read_pages reads
    them, hands them back, or raises; store_pages over them frees what they name or raises."""
    pool = compiled()
    handles = [pool.zs_malloc(n, i) for i, n in enumerate((10, 100, 3000, PAGE))]
    for h in handles:
        pool.zs_obj_write(h, b"\x11" * 8)
    table = {i: (flags, handles[handle % 4] if handle % 3 == 0 else handle, crc, ac)
             for i, (flags, handle, crc, ac) in enumerate(entries)}
    out = bytearray(len(entries) * PAGE)
    decompress = (DECODER_LZ4, lambda b: bytes(PAGE), None, DECODER_LZO)
    try:
        pool.c.read_pages(table, 0, out, decompress, accessed, 5)
    except (_zsmalloc.ZsError, TypeError, OverflowError, ValueError):
        pass
    pages = random.Random(len(entries)).randbytes(len(entries) * PAGE)
    try:
        pool.c.store_pages(table, 0, pages, [b"abc"] * len(entries), 31, 3072, 3000, 0, 0, 7)
    except (_zsmalloc.ZsError, TypeError, OverflowError, ValueError):
        pass


@pytest.mark.parametrize("compiled_pool", [True, False])
def test_read_into_reads_what_read_returns(compiled_pool):
    """read_into (what zramctl read uses) against read: the same bytes, counters and errors, aligned
    (straight into the caller's buffer) or not, through either pool."""
    z = Zram(ZramConfig(comp_algorithm="lz4"), compiled=compiled_pool)
    z.init(16 * PAGE)
    data = make_data("text", 1, 12 * PAGE, "lz4") + make_data("word", 2, 2 * PAGE, "lz4")
    z.write(PAGE, data)
    for offset, length in ((0, 16 * PAGE), (PAGE, 4 * PAGE), (100, 5000), (3 * PAGE + 7, PAGE)):
        before = z.stats.num_reads
        want = z.read(offset, length)
        counted = z.stats.num_reads - before
        out = bytearray(length)
        z.read_into(offset, out)
        assert bytes(out) == want and z.stats.num_reads - before == 2 * counted
    handle = z.table[3][1]  # damage page 3's object: both fail alike, counting what came before
    off = (handle & 0x7FF) * z.pool.classes[z.pool.zspages[handle >> 11].cls].size + 8 + 1
    z.pool.frames.mutable((handle >> 11) + off // PAGE)[off % PAGE] ^= 0x40
    errors = []
    for read in (lambda: z.read(PAGE, 4 * PAGE), lambda: z.read_into(PAGE, bytearray(4 * PAGE))):
        with pytest.raises(ZramError) as e:
            read()
        errors.append((e.value.errno, e.value.done))
    assert errors == [(errno.EIO, 2 * PAGE)] * 2
    with pytest.raises(ZramError):
        z.read_into(15 * PAGE, bytearray(2 * PAGE))  # past the end: EINVAL, nothing read
