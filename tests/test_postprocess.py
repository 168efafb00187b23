"""Post-processing on a 6.18 device (docs/kernel-facts.md, "Post-processing (6.18)"): idle
marking by age, writeback to a backing device, recompression with secondary algorithms,
algorithm parameters per priority, and block_state; each attribute's text and errnos.

Expected figures are counted from the slots a test made and from the compressors run
directly, never read back from the counters under test.
"""

from __future__ import annotations

import errno
import random
import re
import zlib
from dataclasses import dataclass, field

import pytest
import zstandard

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
)
from zramctl.kernel.zsmalloc import Pool

PAGE = PAGE_SIZE
T0 = 1_700_000_000
HUGE_CLASS_SIZE = 3625  # zs_huge_class_size() with CONFIG_ZSMALLOC_CHAIN_SIZE 8 (kernel-facts)
POOL = Pool(MODERN)


class Clock:
    """An injected clock: whole seconds, moved by the test."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Dev:
    z: Zram
    bd: MemoryBackingDev
    clock: Clock
    pages: dict[int, bytes] = field(default_factory=dict)
    """What each page should read as (unwritten pages read as zeros)."""

    def write(self, index: int, page: bytes) -> None:
        self.z.write(index * PAGE, page)
        self.pages[index] = page

    def check_content(self) -> None:
        nr = self.z.config.disksize // PAGE
        want = b"".join(self.pages.get(i, bytes(PAGE)) for i in range(nr))
        assert self.z.read(0, nr * PAGE) == want


def make_dev(
    *,
    size: str = "1M",
    bd_pages: int = 64,
    primary: str = "lzo-rle",
    recomp: tuple[str, ...] = (),
    writeback_bd: bool = True,
) -> Dev:
    clock = Clock()
    bd = MemoryBackingDev(bd_pages, "/srv/backing.img")
    z = Zram(ZramConfig(comp_algorithm=primary), backing=Backing(open_bdev=lambda path: bd))
    z.clock = clock
    if writeback_bd:
        sysfs.store(z, "backing_dev", "/srv/backing.img")
    for prio, name in enumerate(recomp, 1):
        sysfs.store(z, "recomp_algorithm", f"algo={name} priority={prio}")
    sysfs.store(z, "disksize", size)
    return Dev(z, bd, clock)


def page_of(kind: str, rng: random.Random) -> bytes:
    """random: huge for every algorithm; a16: huge for lzo-rle, about half a page for zstd;
    a8: about 3.3 KiB for lzo-rle, 1.8 KiB for zstd; text: small; zero, word: same-filled."""
    if kind == "random":
        return rng.randbytes(PAGE)
    if kind in ("a8", "a16"):
        alphabet = int(kind[1:])
        return bytes(rng.randrange(alphabet) for _ in range(PAGE))
    if kind == "text":
        words = [rng.randbytes(rng.randint(2, 6)) for _ in range(20)]
        return b"".join(rng.choice(words) for _ in range(PAGE))[:PAGE]
    if kind == "zero":
        return bytes(PAGE)
    if kind == "word":
        return rng.randbytes(8) * (PAGE // 8)
    raise AssertionError(kind)


def stored_size(page: bytes, algorithm: str = "lzo-rle") -> int:
    """The object size a 6.18 write stores for ``page``: PAGE for a huge one."""
    n = len(get_backend(algorithm).compress(page))
    return PAGE if n >= HUGE_CLASS_SIZE else n


def prio_of(flags: int) -> int:
    return flags >> ZRAM_COMP_PRIORITY_SHIFT & 3


def mm(z: Zram) -> list[int]:
    return [int(x) for x in sysfs.show(z, "mm_stat").split()]


def bd_stat(z: Zram) -> tuple[int, int, int]:
    count, reads, writes = (int(x) for x in sysfs.show(z, "bd_stat").split())
    return count, reads, writes


def table_counts(z: Zram) -> dict[str, int]:
    """Everything mm_stat and bd_stat should say, counted from the slots."""
    out = dict(stored=0, compr=0, huge=0, same=0, wb=0, idle=0)
    for flags, _, _, _ in z.table.values():
        out["stored"] += 1
        out["same"] += bool(flags & ZRAM_SAME)
        out["wb"] += bool(flags & ZRAM_WB)
        out["huge"] += bool(flags & ZRAM_HUGE)
        out["idle"] += bool(flags & ZRAM_IDLE)
        if not flags & (ZRAM_SAME | ZRAM_WB):
            out["compr"] += flags & ZRAM_SIZE_MASK
    return out


def check_counters_match_table(z: Zram, bd: MemoryBackingDev | None = None) -> None:
    t = table_counts(z)
    m = mm(z)
    assert m[0] == t["stored"] * PAGE
    assert m[1] == t["compr"]
    assert m[5] == t["same"]
    assert m[7] == t["huge"] <= m[8]
    assert bd_stat(z)[0] == t["wb"]
    assert z.idle_pages() == t["idle"]
    if bd is not None:
        assert bd.used == t["wb"]
        blocks = sorted(e[1] for e in z.table.values() if e[0] & ZRAM_WB)
        assert len(blocks) == len(set(blocks)) and all(1 <= b < bd.nr_pages for b in blocks)
    for flags, *_ in z.table.values():
        assert not flags & ZRAM_PP_SLOT  # no pass leaves its marks behind


def errno_of(z: Zram, name: str, value: str | None = None) -> int:
    with pytest.raises(ZramError) as e:
        if value is None:
            sysfs.show(z, name)
        else:
            sysfs.store(z, name, value)
    assert e.value.what == name
    return e.value.errno


def fill(dev: Dev, kinds: list[str], seed: int = 0, first: int = 0) -> None:
    rng = random.Random(seed)
    for i, kind in enumerate(kinds):
        dev.write(first + i, page_of(kind, rng))


# --------------------------------------------------------------------------
# The attributes' texts


def test_texts_of_a_fresh_device():
    z = Zram()
    assert sysfs.show(z, "backing_dev") == "none\n"
    assert sysfs.show(z, "writeback_limit") == "0\n"
    assert sysfs.show(z, "writeback_limit_enable") == "0\n"
    assert sysfs.show(z, "bd_stat") == "       0        0        0\n"
    assert sysfs.show(z, "recomp_algorithm") == ""


def test_recomp_algorithm_lists_each_priority_set():
    z = Zram()
    sysfs.store(z, "recomp_algorithm", "algo=zstd")
    assert sysfs.show(z, "recomp_algorithm") == "#1: lzo-rle lzo lz4 lz4hc [zstd] deflate \n"
    sysfs.store(z, "recomp_algorithm", "priority=3 algo=lz4\n")
    sysfs.store(z, "recomp_algorithm", 'algo="deflate" priority=1')  # replaces priority 1
    assert sysfs.show(z, "recomp_algorithm") == (
        "#1: lzo-rle lzo lz4 lz4hc zstd [deflate] \n#3: lzo-rle lzo [lz4] lz4hc zstd deflate \n"
    )
    assert z.config.recomp_algorithms == ["deflate", None, "lz4"]


def test_writeback_limit_texts():
    z = Zram()
    sysfs.store(z, "writeback_limit", "42\n")
    sysfs.store(z, "writeback_limit_enable", "7")  # any non-zero is on
    assert sysfs.show(z, "writeback_limit") == "42\n"
    assert sysfs.show(z, "writeback_limit_enable") == "1\n"
    sysfs.store(z, "writeback_limit_enable", "0")
    assert sysfs.show(z, "writeback_limit_enable") == "0\n"


def test_backing_dev_text_and_replacement_before_init():
    opened: list[MemoryBackingDev] = []

    def open_bdev(path: str) -> MemoryBackingDev:
        opened.append(MemoryBackingDev(8, "/abs/" + path))
        return opened[-1]

    z = Zram(backing=Backing(open_bdev=open_bdev))
    sysfs.store(z, "backing_dev", "a.img\n")  # one trailing newline is dropped
    assert sysfs.show(z, "backing_dev") == "/abs/a.img\n"
    sysfs.store(z, "backing_dev", "b.img")  # before init it may be replaced: the old one is closed
    assert opened[0].closed and not opened[1].closed
    assert sysfs.show(z, "backing_dev") == "/abs/b.img\n" and z.bdev is opened[1]
    sysfs.store(z, "disksize", "1M")
    assert errno_of(z, "backing_dev", "c.img") == errno.EBUSY
    assert len(opened) == 2  # EBUSY comes before any open
    sysfs.store(z, "reset", "1")
    assert opened[1].closed and z.bdev is None
    assert sysfs.show(z, "backing_dev") == "none\n"


def test_block_state_lines():
    dev = make_dev(recomp=("zstd",))
    rng = random.Random(1)
    dev.write(0, page_of("text", rng))
    dev.write(2, page_of("zero", rng))
    dev.clock.now += 7
    dev.write(5, page_of("random", rng))
    dev.write(6, page_of("a16", rng))
    z = dev.z
    assert sysfs.show(z, "block_state") == (
        f"{0:12d} {T0:12d}.000000 ......\n"
        f"{2:12d} {T0:12d}.000000 s.....\n"
        f"{5:12d} {T0 + 7:12d}.000000 ..h...\n"
        f"{6:12d} {T0 + 7:12d}.000000 ..h...\n"
    )
    sysfs.store(z, "idle", "all")
    sysfs.store(z, "recompress", "type=huge")  # 6 gets zstd (r, ac_time 0); 5 cannot (n)
    sysfs.store(z, "writeback", "page_index=0")
    assert sysfs.show(z, "block_state") == (
        f"{0:12d} {0:12d}.000000 .w....\n"
        f"{2:12d} {T0:12d}.000000 s.....\n"
        f"{5:12d} {T0 + 7:12d}.000000 ..h..n\n"
        f"{6:12d} {0:12d}.000000 ....r.\n"
    )
    for line in sysfs.show(z, "block_state").splitlines(keepends=True):
        assert re.fullmatch(r" {0,11}\d+ {1,12}\d+\.\d{6} [s.][w.][h.][i.][r.][n.]\n", line)


# --------------------------------------------------------------------------
# errnos, by attribute and state


@pytest.fixture
def states():
    """A device in each state a store can meet: not set up; set up without a backing
    device; set up with one and a secondary algorithm (256 pages)."""

    def make(state: str) -> Zram:
        if state == "uninit":
            z = Zram(backing=Backing(open_bdev=lambda p: MemoryBackingDev(8, p)))
            z.clock = Clock()
            return z
        if state == "init":
            return make_dev(writeback_bd=False).z
        return make_dev(recomp=("zstd",)).z

    return make


ERRNOS = [
    # idle: the parse first, then the init check
    ("idle", "all", "uninit", errno.EINVAL),
    ("idle", "5", "uninit", errno.EINVAL),
    ("idle", "abc", "init", errno.EINVAL),
    ("idle", "-1", "init", errno.EINVAL),
    ("idle", "", "init", errno.EINVAL),
    ("idle", "\n", "init", errno.EINVAL),
    ("idle", "ALL", "init", errno.EINVAL),
    ("idle", "all\n\n", "init", errno.EINVAL),
    ("idle", "08", "init", errno.EINVAL),  # base 0: a leading 0 is octal
    ("idle", "0x", "init", errno.EINVAL),
    ("idle", "5 ", "init", errno.EINVAL),
    ("idle", "99999999999999999999", "init", errno.EINVAL),  # overflow
    ("idle", "all", "init", 0),
    ("idle", "all\n", "init", 0),
    ("idle", "5", "init", 0),
    ("idle", "+5\n", "init", 0),
    ("idle", "0x1f", "init", 0),
    ("idle", "010", "init", 0),
    # backing_dev
    ("backing_dev", "/x.img", "init", errno.EBUSY),
    ("backing_dev", "/x.img", "uninit", 0),
    # writeback: init, then the backing device, then the parse
    ("writeback", "idle", "uninit", errno.EINVAL),
    ("writeback", "idle", "init", errno.ENODEV),
    ("writeback", "bogus", "init", errno.ENODEV),
    ("writeback", "bogus", "bd", errno.EINVAL),
    ("writeback", "type=bogus", "bd", errno.EINVAL),
    ("writeback", "type=", "bd", errno.EINVAL),  # a token with an empty value is a mode name: "type"
    ("writeback", "IDLE", "bd", errno.EINVAL),
    ("writeback", "page_index=abc", "bd", errno.EINVAL),
    ("writeback", "page_index=-1", "bd", errno.EINVAL),
    ("writeback", "page_index=256", "bd", errno.ERANGE),
    ("writeback", "page_index=99999999999999999999999", "bd", errno.ERANGE),
    ("writeback", "page_indexes=5", "bd", errno.EINVAL),
    ("writeback", "page_indexes=a-3", "bd", errno.EINVAL),
    ("writeback", "page_indexes=3-b", "bd", errno.EINVAL),
    ("writeback", "page_indexes=5-3", "bd", errno.ERANGE),
    ("writeback", "page_indexes=256-300", "bd", errno.ERANGE),
    ("writeback", "page_indexes=1-256", "bd", errno.ERANGE),
    ("writeback", "page_index=1 bogus", "bd", errno.EINVAL),
    ("writeback", "idle bogus", "bd", 0),  # a mode ends the parse
    ("writeback", "type=huge page_index=abc", "bd", 0),
    ("writeback", "", "bd", 0),
    ("writeback", "foo=1 bar=2", "bd", 0),
    ("writeback", "idle=", "bd", 0),
    ("writeback", "huge_idle", "bd", 0),
    ("writeback", "incompressible\n", "bd", 0),
    ("writeback", "  type=huge  ", "bd", 0),
    ("writeback", "page_index=255", "bd", 0),
    ("writeback", "page_indexes=0-255 page_index=3", "bd", 0),
    # writeback_limit(_enable): any kstrtoull failure is EINVAL
    ("writeback_limit", "abc", "uninit", errno.EINVAL),
    ("writeback_limit", "-1", "uninit", errno.EINVAL),
    ("writeback_limit", "0x10", "uninit", errno.EINVAL),  # base 10
    ("writeback_limit", "99999999999999999999", "uninit", errno.EINVAL),
    ("writeback_limit", "18446744073709551615\n", "init", 0),
    ("writeback_limit_enable", "yes", "uninit", errno.EINVAL),
    ("writeback_limit_enable", "", "init", errno.EINVAL),
    ("writeback_limit_enable", "1", "init", 0),
    # recomp_algorithm: values, algo, priority, name length, name, then EBUSY
    ("recomp_algorithm", "", "uninit", errno.EINVAL),
    ("recomp_algorithm", "algo", "uninit", errno.EINVAL),
    ("recomp_algorithm", "algo=", "uninit", errno.EINVAL),
    ("recomp_algorithm", "priority=1", "uninit", errno.EINVAL),
    ("recomp_algorithm", "algo=zstd priority=0", "uninit", errno.EINVAL),
    ("recomp_algorithm", "algo=zstd priority=4", "uninit", errno.EINVAL),
    ("recomp_algorithm", "algo=zstd priority=x", "uninit", errno.EINVAL),
    ("recomp_algorithm", "algo=zstd priority=99999999999", "uninit", errno.ERANGE),
    ("recomp_algorithm", "algo=" + "x" * 128, "uninit", errno.E2BIG),
    ("recomp_algorithm", "algo=" + "x" * 127, "uninit", errno.EINVAL),
    ("recomp_algorithm", "algo=842", "uninit", errno.EINVAL),
    ("recomp_algorithm", "algo=nope", "init", errno.EINVAL),
    ("recomp_algorithm", "algo=zstd priority=4", "init", errno.EINVAL),
    ("recomp_algorithm", "algo=zstd", "init", errno.EBUSY),
    ("recomp_algorithm", "algo=lzo-rle priority=3 foo=1", "uninit", 0),
    # recompress: the parse, the threshold, the init check, then the priorities
    ("recompress", "type", "uninit", errno.EINVAL),
    ("recompress", "max_pages=", "bd", errno.EINVAL),
    ("recompress", "max_pages=x", "bd", errno.EINVAL),
    ("recompress", "max_pages=99999999999999999999", "bd", errno.ERANGE),
    ("recompress", "threshold=4294967296", "bd", errno.ERANGE),
    ("recompress", "priority=-1", "bd", errno.EINVAL),
    ("recompress", "", "uninit", errno.EINVAL),
    ("recompress", "", "init", errno.EINVAL),  # no secondary algorithm
    ("recompress", "threshold=3625", "bd", errno.EINVAL),
    ("recompress", "algo=lz4", "bd", errno.EINVAL),
    ("recompress", "algo=lzo-rle", "bd", errno.EINVAL),  # the primary is not searched
    ("recompress", "priority=2", "bd", errno.EINVAL),
    ("recompress", "priority=2 algo=zstd", "bd", errno.EINVAL),  # the search starts at 2
    ("recompress", "", "bd", 0),
    ("recompress", "threshold=3624", "bd", 0),
    ("recompress", "type=bogus", "bd", 0),  # ignored
    ("recompress", "priority=0", "bd", 0),  # means 1
    ("recompress", "algo=zstd max_pages=0 foo=bar", "bd", 0),
    # algorithm_params: every token needs a value; numbers; the priority; the dictionary
    ("algorithm_params", "level=3", "uninit", 0),
    ("algorithm_params", "priority=0 level=3", "uninit", 0),
    ("algorithm_params", "algo=lzo-rle level=1", "uninit", 0),
    ("algorithm_params", "priority=0 level=5 algo=lzo-rle", "uninit", 0),
    ("algorithm_params", "foo=1", "uninit", 0),
    ("algorithm_params", "deflate.winbits=9", "uninit", 0),
    ("algorithm_params", "\n", "uninit", 0),
    ("algorithm_params", "", "uninit", 0),
    ("algorithm_params", 'level="3"', "uninit", 0),
    ("algorithm_params", "priority=3 level=3", "uninit", 0),  # MULTI_COMP: four priorities
    ("algorithm_params", "algo=zstd level=3", "bd", 0),  # zstd is priority 1 there
    ("algorithm_params", "level=3", "bd", 0),  # no EBUSY in 6.18
    ("algorithm_params", "priority=4 level=3", "uninit", errno.EINVAL),
    ("algorithm_params", "priority=-1 level=3", "uninit", errno.EINVAL),
    ("algorithm_params", "algo=lz4 level=1", "uninit", errno.EINVAL),
    ("algorithm_params", "level=", "uninit", errno.EINVAL),
    ("algorithm_params", "level", "uninit", errno.EINVAL),
    ("algorithm_params", "level=abc", "uninit", errno.EINVAL),
    ("algorithm_params", "level=-+3", "uninit", errno.EINVAL),
    ("algorithm_params", "level=2147483648", "uninit", errno.ERANGE),
    ("algorithm_params", "deflate.winbits=x", "uninit", errno.EINVAL),
    ("algorithm_params", "dict=/nonexistent", "uninit", errno.EINVAL),  # no read_file hook
    ("algorithm_params", "priority=1 level=3", "bd", 0),
    ("algorithm_params", "priority=1 level=3", "init", 0),
    ("block_state", None, "uninit", errno.EINVAL),
]


@pytest.mark.parametrize(("name", "value", "state", "code"), ERRNOS)
def test_errno(states, name, value, state, code):
    z = states(state)
    if code:
        assert errno_of(z, name, value) == code
    else:
        sysfs.store(z, name, value)


NEW_ATTRIBUTES = (
    "idle",
    "backing_dev",
    "writeback",
    "writeback_limit",
    "writeback_limit_enable",
    "bd_stat",
    "recomp_algorithm",
    "recompress",
    "algorithm_params",
    "block_state",
)


@pytest.mark.parametrize("name", NEW_ATTRIBUTES)
def test_a_3_11_device_has_none_of_them(name):
    z = Zram(ZramConfig(compat="3.11"), backing=Backing(open_bdev=lambda p: MemoryBackingDev(8, p)))
    sysfs.store(z, "disksize", "1M")
    assert errno_of(z, name) == errno.ENOENT
    assert errno_of(z, name, "all") == errno.ENOENT


def test_a_3_11_device_keeps_no_access_time_and_no_flags():
    z = Zram(ZramConfig(compat="3.11"))
    z.clock = Clock()
    sysfs.store(z, "disksize", "1M")
    rng = random.Random(3)
    z.write(0, page_of("text", rng) + page_of("random", rng) + bytes(PAGE))
    z.read(0, 3 * PAGE)
    assert [e[3] for e in z.table.values()] == [0, 0, 0]
    for method, args in ((z.mark_idle, (None,)), (z.writeback_check, ()), (z.block_state, ())):
        with pytest.raises(ZramError) as e:
            method(*args)
        assert e.value.errno == errno.ENOENT


def test_algorithm_params_dictionary_is_read_through_the_hook():
    files = {"/d/dict": b"zram dictionary " * 64, "/d/empty": b""}

    def read_file(path: str) -> bytes:
        try:
            return files[path]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "No such file", path) from None

    z = Zram(backing=Backing(read_file=read_file))
    sysfs.store(z, "algorithm_params", "level=7")
    assert errno_of(z, "algorithm_params", "dict=/d/missing level=3") == errno.EINVAL
    assert z.config.params[0].level is None  # reset first, and left reset
    assert errno_of(z, "algorithm_params", "dict=/d/empty") == errno.EINVAL
    sysfs.store(z, "algorithm_params", "dict=/d/dict level=5 priority=2")
    p = z.config.params[2]
    assert (p.dict_data, p.level, p.deflate_winbits) == (files["/d/dict"], 5, None)
    sysfs.store(z, "algorithm_params", "priority=2 deflate.winbits=-12")  # replaces all of prio 2
    p = z.config.params[2]
    assert (p.dict_data, p.level, p.deflate_winbits) == (None, None, -12)


# --------------------------------------------------------------------------
# idle


def test_idle_by_age_marks_older_slots_and_clears_younger_ones():
    dev = make_dev()
    z = dev.z
    rng = random.Random(4)
    for i in range(6):  # page i written at T0 + 10 i; pages 4 and 5 are same-filled
        dev.clock.now = T0 + 10 * i
        dev.write(i, page_of("zero" if i >= 4 else "text", rng))
    dev.clock.now = T0 + 100

    def idle() -> list[int]:
        return sorted(i for i, e in z.table.items() if e[0] & ZRAM_IDLE)

    sysfs.store(z, "idle", "75")  # cutoff T0 + 25: pages 0..2 (ac_time strictly before it)
    assert idle() == [0, 1, 2] and z.idle_pages() == 3
    sysfs.store(z, "idle", "90")  # cutoff T0 + 10: page 1 (T0 + 10) is not older: cleared
    assert idle() == [0]
    sysfs.store(z, "idle", "100")  # cutoff T0: nothing is strictly older
    assert idle() == []
    sysfs.store(z, "idle", "0")  # cutoff now: everything not same-filled
    assert idle() == [0, 1, 2, 3]
    sysfs.store(z, "idle", "5000000000")  # a cutoff before the epoch clears every mark
    assert idle() == []
    sysfs.store(z, "idle", "10000000000")  # 10**19 ns is negative as a ktime: a cutoff ahead
    assert idle() == [0, 1, 2, 3]
    sysfs.store(z, "idle", "all")
    assert idle() == [0, 1, 2, 3]
    # A read and a write are accesses: IDLE goes, ac_time is now.
    dev.clock.now = T0 + 200
    assert z.read(PAGE, 10) == dev.pages[1][:10]
    dev.write(2, page_of("text", rng))
    assert idle() == [0, 3]
    assert z.table[1][3] == z.table[2][3] == T0 + 200 and z.table[0][3] == T0
    sysfs.store(z, "idle", "150")  # cutoff T0 + 50
    assert idle() == [0, 3]


def test_idle_age_times_nsec_wraps_as_in_the_kernel():
    """age * NSEC_PER_SEC is a u64 product made a signed ktime: 18446744074 s wraps to +0.29 s,
    9223372037 s to a negative time (a cutoff ahead of now); 9223372036 s stays a large one."""
    dev = make_dev()
    dev.write(0, page_of("text", random.Random(0)))
    dev.clock.now = T0 + 1
    sysfs.store(dev.z, "idle", "18446744074")  # cutoff now - 0.29 s: T0 is older
    assert dev.z.idle_pages() == 1
    sysfs.store(dev.z, "idle", "9223372036")  # cutoff long before the epoch
    assert dev.z.idle_pages() == 0
    sysfs.store(dev.z, "idle", "9223372037")  # cutoff about 584 years ahead
    assert dev.z.idle_pages() == 1
    dev.clock.now = T0
    sysfs.store(dev.z, "idle", "18446744074")  # cutoff T0 - 0.29 s: not older
    assert dev.z.idle_pages() == 0


# --------------------------------------------------------------------------
# writeback

MIXED = ["random", "text", "zero", "a16", "a8", "word", "text", "random", "a8", "text"]


def writeback_expectation(z: Zram, queued: list[int]) -> list[int]:
    """The order a post-processing pass takes the slots ``queued`` (in that order, perhaps
    twice): 64-byte size buckets, largest first; within a bucket the last queued first; a
    slot met again has lost PP_SLOT and is skipped."""
    buckets: dict[int, list[int]] = {}
    for i in queued:
        buckets.setdefault((z.table[i][0] & ZRAM_SIZE_MASK) // 64, []).append(i)
    order: list[int] = []
    for b in sorted(buckets, reverse=True):
        for i in reversed(buckets[b]):
            if i not in order:
                order.append(i)
    return order


FILTERS = {
    "all": lambda f: True,
    "idle": lambda f: f & ZRAM_IDLE,
    "huge": lambda f: f & ZRAM_HUGE,
    "huge_idle": lambda f: f & ZRAM_HUGE and f & ZRAM_IDLE,
    "incompressible": lambda f: f & ZRAM_INCOMPRESSIBLE,
}
WHOLE = 256  # pages of a 1 MiB device


@pytest.mark.parametrize(
    ("command", "scans"),
    [
        ("idle", [("idle", 0, WHOLE)]),
        ("huge", [("huge", 0, WHOLE)]),
        ("huge_idle", [("huge_idle", 0, WHOLE)]),
        ("type=idle", [("idle", 0, WHOLE)]),
        ("type=huge_idle page_indexes=0-3", [("huge_idle", 0, WHOLE)]),  # type= ends the parse
        ("incompressible", [("incompressible", 0, WHOLE)]),
        ("page_index=4", [("all", 4, 5)]),
        ("page_index=2", [("all", 2, 3)]),  # same-filled: never written back
        ("page_index=4 page_index=11 page_index=1", [("all", 4, 5), ("all", 11, 12), ("all", 1, 2)]),
        ("page_indexes=3-12", [("all", 3, 13)]),
        ("page_indexes=0-1 page_indexes=10-19", [("all", 0, 2), ("all", 10, 20)]),
        ("page_indexes=10-14 idle", [("all", 10, 15), ("idle", 10, 15)]),  # the mode scans [10, 15)
        ("page_indexes=1-9 type=idle", [("all", 1, 10), ("idle", 1, 10)]),
        ("page_index=13 huge", [("all", 13, 14), ("huge", 13, 14)]),
        ("foo=1", []),
    ],
)
def test_writeback_modes(command, scans):
    dev = make_dev(recomp=("zstd",))
    z = dev.z
    fill(dev, MIXED * 2, seed=5)
    sysfs.store(z, "idle", "all")
    sysfs.store(z, "recompress", "type=huge max_pages=2")  # two huge random pages: INCOMPRESSIBLE
    dev.clock.now += 5
    z.read(7 * PAGE, PAGE)  # page 7 (huge, incompressible) is no longer idle
    before = dict(z.table)
    queued = [
        i
        for name, lo, hi in scans
        for i in range(lo, hi)
        if i in before and not before[i][0] & (ZRAM_SAME | ZRAM_WB) and FILTERS[name](before[i][0])
    ]
    order = writeback_expectation(z, queued)
    chosen = set(order)
    mm_before, bd_before = mm(z), bd_stat(z)
    assert bd_before == (0, 0, 0)

    sysfs.store(z, "writeback", command)

    n = len(chosen)
    for blk, i in enumerate(order, 1):  # the lowest free block each time
        flags, handle, crc, ac_time = z.table[i]
        assert (flags, handle, ac_time) == (ZRAM_WB, blk, 0)
        assert crc == zlib.crc32(dev.pages[i]) and dev.bd.blocks[blk] == dev.pages[i]
    for i, entry in z.table.items():
        if i not in chosen:
            assert entry == before[i]
    freed = sum(before[i][0] & ZRAM_SIZE_MASK for i in chosen)
    huge = sum(bool(before[i][0] & ZRAM_HUGE) for i in chosen)
    m = mm(z)
    assert m[0] == mm_before[0]  # orig_data_size: the pages are still stored
    assert m[1] == mm_before[1] - freed
    assert m[5] == mm_before[5]
    assert m[7] == mm_before[7] - huge and m[8] == mm_before[8]
    assert m[3:5] == mm_before[3:5]
    assert bd_stat(z) == (n, 0, n) and dev.bd.used == n
    check_counters_match_table(z, dev.bd)
    dev.check_content()  # every page, the written-back ones through the backing device
    assert bd_stat(z) == (n, n, n)
    for i in chosen:
        assert z.table[i][3] == dev.clock.now  # read: accessed


def test_overwrite_and_discard_free_the_block_and_the_lowest_is_reused():
    dev = make_dev()
    z = dev.z
    fill(dev, ["text"] * 6, seed=6)
    sysfs.store(z, "writeback", "page_indexes=0-5")
    blocks = {i: z.table[i][1] for i in range(6)}
    assert sorted(blocks.values()) == [1, 2, 3, 4, 5, 6]
    rng = random.Random(7)
    dev.write(2, page_of("text", rng))  # overwrite: its block is free again
    z.discard(4 * PAGE, PAGE)  # discard: likewise
    dev.pages.pop(4)
    assert bd_stat(z)[0] == 4 and dev.bd.used == 4
    assert mm(z)[0] == 5 * PAGE and z.stats.notify_free == 1
    check_counters_match_table(z, dev.bd)
    sysfs.store(z, "writeback", "page_index=2")
    assert z.table[2][1] == min(blocks[2], blocks[4])
    dev.write(3, bytes(PAGE))  # overwritten by a same-filled page
    assert bd_stat(z)[0] == 4 and z.table[3][0] == ZRAM_SAME
    check_counters_match_table(z, dev.bd)
    dev.check_content()


def test_a_partial_write_to_a_written_back_page_reads_it_from_the_backing_device():
    dev = make_dev()
    z = dev.z
    fill(dev, ["text"], seed=8)
    sysfs.store(z, "writeback", "page_index=0")
    z.write(100, b"patch")
    dev.pages[0] = dev.pages[0][:100] + b"patch" + dev.pages[0][105:]
    assert bd_stat(z) == (0, 1, 1)  # read once (the merge), then freed by the overwrite
    dev.check_content()


def test_writeback_limit():
    dev = make_dev()
    z = dev.z
    fill(dev, ["text", "a8", "random", "text", "a16"], seed=9)
    sysfs.store(z, "idle", "all")
    sysfs.store(z, "writeback_limit", "3")  # not enabled: no effect, and left alone
    sysfs.store(z, "writeback", "page_index=0")
    assert sysfs.show(z, "writeback_limit") == "3\n" and bd_stat(z) == (1, 0, 1)
    sysfs.store(z, "writeback_limit_enable", "1")
    sysfs.store(z, "writeback_limit", "0")
    assert errno_of(z, "writeback", "idle") == errno.EIO
    assert bd_stat(z) == (1, 0, 1) and z.idle_pages() == 4  # nothing written, marks intact
    sysfs.store(z, "writeback", "page_indexes=0-0")  # no candidate: the limit never bites
    sysfs.store(z, "writeback_limit", "2")
    order = writeback_expectation(z, [1, 2, 3, 4])
    assert errno_of(z, "writeback", "idle") == errno.EIO
    assert sysfs.show(z, "writeback_limit") == "0\n"
    assert sorted(i for i, e in z.table.items() if e[0] & ZRAM_WB) == sorted([0, *order[:2]])
    assert bd_stat(z) == (3, 0, 3)
    check_counters_match_table(z, dev.bd)
    sysfs.store(z, "reset", "1")  # the budget lives in struct zram: reset keeps it
    assert sysfs.show(z, "writeback_limit_enable") == "1\n" and sysfs.show(z, "writeback_limit") == "0\n"


def test_enospc_on_a_full_backing_device():
    dev = make_dev(bd_pages=4)  # blocks 1..3
    z = dev.z
    fill(dev, ["text", "a8", "random", "text", "a16"], seed=10)
    order = writeback_expectation(z, [0, 1, 2, 3, 4])
    assert errno_of(z, "writeback", "page_indexes=0-4") == errno.ENOSPC
    assert sorted(i for i, e in z.table.items() if e[0] & ZRAM_WB) == sorted(order[:3])
    assert bd_stat(z) == (3, 0, 3) and dev.bd.used == 3
    check_counters_match_table(z, dev.bd)
    dev.check_content()
    z.discard(order[0] * PAGE, PAGE)
    dev.pages.pop(order[0])
    sysfs.store(z, "writeback", f"page_index={order[3]}")
    assert z.table[order[3]][:2] == (ZRAM_WB, 1)
    check_counters_match_table(z, dev.bd)


class FailingBackingDev(MemoryBackingDev):
    def __init__(self, nr_pages: int, bad: set[int]) -> None:
        super().__init__(nr_pages)
        self.bad = bad

    def write_block(self, blk: int, page: bytes) -> None:
        if blk in self.bad:
            self.bad.discard(blk)  # fails once
            raise OSError(errno.EIO, "Input/output error")
        super().write_block(blk, page)


def test_a_failed_block_write_keeps_the_block_for_the_next_page_and_is_reported():
    bd = FailingBackingDev(16, {1})
    z = Zram(backing=Backing(open_bdev=lambda p: bd))
    sysfs.store(z, "backing_dev", "x")
    sysfs.store(z, "disksize", "1M")
    rng = random.Random(11)
    pages = [page_of("text", rng) for _ in range(3)]
    z.write(0, b"".join(pages))
    order = writeback_expectation(z, [0, 1, 2])
    assert errno_of(z, "writeback", "page_indexes=0-2") == errno.EIO
    assert order[0] not in {i for i, e in z.table.items() if e[0] & ZRAM_WB}
    assert z.table[order[1]][:2] == (ZRAM_WB, 1) and z.table[order[2]][:2] == (ZRAM_WB, 2)
    assert bd_stat(z) == (2, 0, 2) and bd.used == 2
    assert z.read(0, 3 * PAGE) == b"".join(pages)


def test_a_damaged_backing_block_is_eio_never_data():
    dev = make_dev()
    z = dev.z
    fill(dev, ["text", "text"], seed=12)
    sysfs.store(z, "writeback", "page_index=1")
    blk = z.table[1][1]
    dev.bd.blocks[blk] = bytes(PAGE)
    with pytest.raises(ZramError) as e:
        z.read(0, 2 * PAGE)
    assert e.value.errno == errno.EIO and e.value.done == PAGE
    assert z.stats.failed_reads == 1 and bd_stat(z) == (1, 1, 1)
    assert z.table[0][3] == dev.clock.now  # the page before the failure was accessed


# --------------------------------------------------------------------------
# recompress


def test_recompress_huge_pages_with_zstd_behind_lzo_rle():
    dev = make_dev(recomp=("zstd",))
    z = dev.z
    kinds = ["a16", "random", "a16", "text", "zero", "a8", "random", "a16"]
    fill(dev, kinds, seed=13)
    dev.clock.now += 30
    huge = [i for i, k in enumerate(kinds) if k in ("random", "a16")]
    assert all(z.table[i][0] & ZRAM_HUGE for i in huge)
    zstd_size = {i: len(zstandard.ZstdCompressor(level=3).compress(dev.pages[i])) for i in huge}
    better = [i for i in huge if POOL.class_for(zstd_size[i]).index < POOL.class_for(PAGE).index]
    assert sorted(better) == [0, 2, 7]
    before_table = dict(z.table)
    m0 = mm(z)

    sysfs.store(z, "recompress", "type=huge")

    for i in better:
        flags, _, _, ac_time = z.table[i]
        assert flags == zstd_size[i] | 1 << ZRAM_COMP_PRIORITY_SHIFT and ac_time == 0
    for i in set(huge) - set(better):  # zstd is the last algorithm: incompressible
        assert z.table[i][0] == before_table[i][0] | ZRAM_INCOMPRESSIBLE
    for i in set(z.table) - set(huge):
        assert z.table[i] == before_table[i]
    m = mm(z)
    assert m[0] == m0[0] and m[5] == m0[5]
    assert m[1] == m0[1] - len(better) * PAGE + sum(zstd_size[i] for i in better)
    assert m[7] == m0[7] - len(better) and m[8] == m0[8]  # huge_pages_since never falls
    assert m[4] == m0[4]  # mem_used_max: only writes move it
    check_counters_match_table(z)
    dev.check_content()
    # Again: priority-1 objects and incompressible ones are no candidates; nothing changes.
    after = dict(z.table)
    sysfs.store(z, "recompress", "type=huge")
    assert dict(z.table) == after
    # Without a type every object is a candidate: the text (3) and a8 (5) pages too.
    rest = {i: len(zstandard.ZstdCompressor(level=3).compress(dev.pages[i])) for i in (3, 5)}
    sysfs.store(z, "recompress", "")
    for i, n in rest.items():
        old = after[i][0] & ZRAM_SIZE_MASK
        if POOL.class_for(n).index < POOL.class_for(old).index:
            assert z.table[i][0] == n | 1 << ZRAM_COMP_PRIORITY_SHIFT
        else:
            assert z.table[i][0] == after[i][0] | ZRAM_INCOMPRESSIBLE
    check_counters_match_table(z)
    dev.check_content()


def test_recompress_success_needs_a_smaller_class_and_the_threshold():
    dev = make_dev(recomp=("zstd",))
    z = dev.z
    fill(dev, ["a8", "text", "a8", "a16"], seed=14)
    sizes = {i: z.table[i][0] & ZRAM_SIZE_MASK for i in range(4)}
    zs = {i: len(zstandard.ZstdCompressor(level=3).compress(dev.pages[i])) for i in range(4)}
    # threshold=3000: only objects of at least 3000 bytes are tried, and they succeed only
    # below 3000 bytes; max_pages counts the tried ones only.
    tried = [i for i in range(4) if sizes[i] >= 3000]
    assert tried == [0, 2, 3]
    done = writeback_expectation(z, tried)  # the same order as writeback's
    sysfs.store(z, "recompress", "threshold=3000 max_pages=2")
    for i in range(4):
        prio = prio_of(z.table[i][0])
        ok = i in done[:2] and zs[i] < 3000 and POOL.class_for(zs[i]).index < POOL.class_for(sizes[i]).index
        assert prio == (1 if ok else 0), i
    check_counters_match_table(z)
    dev.check_content()


def test_incompressible_only_when_the_last_active_algorithm_failed():
    dev = make_dev(recomp=("lzo", "lz4"))  # neither helps a random page
    z = dev.z
    fill(dev, ["random", "random"], seed=15)
    sysfs.store(z, "recompress", "priority=1")  # only lzo: lz4 remains, so no mark
    assert all(not e[0] & ZRAM_INCOMPRESSIBLE for e in z.table.values())
    sysfs.store(z, "recompress", "algo=lz4")
    assert all(e[0] & ZRAM_INCOMPRESSIBLE for e in z.table.values())
    sysfs.store(z, "writeback", "incompressible")
    assert bd_stat(z) == (2, 0, 2)
    dev.check_content()


def test_recompress_idle_clears_idle_whatever_the_outcome():
    dev = make_dev(recomp=("zstd",))
    z = dev.z
    fill(dev, ["random", "a16", "text"], seed=16)
    sysfs.store(z, "idle", "all")
    sysfs.store(z, "recompress", "type=huge_idle")
    assert [bool(z.table[i][0] & ZRAM_IDLE) for i in range(3)] == [False, False, True]
    assert z.idle_pages() == 1


def test_recompress_with_a_secondary_level_and_a_gap_in_the_priorities():
    dev = make_dev(recomp=())
    z = dev.z
    sysfs.store(z, "reset", "1")
    sysfs.store(z, "backing_dev", "/srv/backing.img")
    sysfs.store(z, "recomp_algorithm", "algo=zstd priority=1")
    sysfs.store(z, "recomp_algorithm", "algo=deflate priority=3")
    sysfs.store(z, "algorithm_params", "algo=zstd level=19")
    sysfs.store(z, "disksize", "1M")
    fill(dev, ["a16", "a16"], seed=17)
    sysfs.store(z, "recompress", "")
    level19 = zstandard.ZstdCompressor(level=19)
    for i in range(2):
        assert z.table[i][0] & ZRAM_SIZE_MASK == len(level19.compress(dev.pages[i]))
    # Priority 3 is never tried with priority 2 unset (num_active_comps is 2).
    assert errno_of(z, "recompress", "algo=deflate") == errno.EINVAL
    dev.check_content()


# --------------------------------------------------------------------------
# algorithm_params at init


def test_params_apply_at_init_and_reset_forgets_them():
    rng = random.Random(18)
    pages = [page_of("text", rng) for _ in range(4)]
    dictionary = b"".join(pages[:2])
    z = Zram(ZramConfig(comp_algorithm="zstd"), backing=Backing(read_file=lambda p: dictionary))
    sysfs.store(z, "algorithm_params", "level=9 dict=/dict")
    sysfs.store(z, "disksize", "1M")
    z.write(0, b"".join(pages))
    zdict = zstandard.ZstdCompressionDict(dictionary)
    cctx = zstandard.ZstdCompressor(level=9, dict_data=zdict, write_content_size=True)
    assert [z.table[i][0] & ZRAM_SIZE_MASK for i in range(4)] == [len(cctx.compress(p)) for p in pages]
    assert z.read(0, 4 * PAGE) == b"".join(pages)
    sysfs.store(z, "algorithm_params", "level=1")  # set up: nothing changes
    z.write(4 * PAGE, pages[3])
    assert z.table[4][0] == z.table[3][0]
    sysfs.store(z, "reset", "1")
    assert z.config.params == ZramConfig().params
    assert z.config.comp_algorithm == "lzo-rle"


def test_deflate_winbits_go_to_zlib_as_they_are():
    page = page_of("text", random.Random(19))
    for winbits, wbits in ((None, -11), (-9, -9), (12, 12)):
        z = Zram(ZramConfig(comp_algorithm="deflate"))
        if winbits is not None:
            sysfs.store(z, "algorithm_params", f"deflate.winbits={winbits}")
        sysfs.store(z, "disksize", "1M")
        z.write(0, page)
        c = zlib.compressobj(6, zlib.DEFLATED, wbits, 9)
        assert z.table[0][0] & ZRAM_SIZE_MASK == len(c.compress(page) + c.flush())
        assert z.read(0, PAGE) == page


@pytest.mark.parametrize("params", ["deflate.winbits=8", "deflate.winbits=16", "level=10"])
def test_a_refused_parameter_fails_disksize_and_is_forgotten(params):
    z = Zram(ZramConfig(comp_algorithm="lzo-rle"))
    sysfs.store(z, "recomp_algorithm", "algo=deflate")
    sysfs.store(z, "algorithm_params", "algo=deflate " + params)
    assert errno_of(z, "disksize", "1M") == errno.EINVAL
    assert not z.initialized
    assert z.config.params == ZramConfig().params  # zram_destroy_comps
    assert z.config.recomp_algorithms == [None, None, None]
    sysfs.store(z, "disksize", "1M")


# --------------------------------------------------------------------------
# A zram-generator-like session


def test_zram_generator_scenario():
    """lzo-rle primary, zstd secondary; fill with mixed pages; idle all; recompress huge pages;
    write the idle ones back.  Every counter at each step from the slots written."""
    dev = make_dev(size="4M", bd_pages=256, recomp=("zstd",))
    z = dev.z
    rng = random.Random(20)
    kinds = [rng.choice(["random", "a16", "a8", "text", "text", "zero", "word"]) for _ in range(160)]
    fill(dev, kinds, seed=21)

    lzo = {i: stored_size(dev.pages[i]) for i, k in enumerate(kinds) if k not in ("zero", "word")}
    same = [i for i, k in enumerate(kinds) if k in ("zero", "word")]
    huge = sorted(i for i, n in lzo.items() if n == PAGE)
    assert len(same) + len(lzo) == 160 and huge
    m = mm(z)
    assert m[0] == 160 * PAGE and m[1] == sum(lzo.values()) and m[5] == len(same)
    assert m[7] == m[8] == len(huge) and bd_stat(z) == (0, 0, 0)
    assert z.stats.num_writes == 160

    # idle all: every slot that holds an object.
    dev.clock.now += 3600
    sysfs.store(z, "idle", "all")
    assert z.idle_pages() == len(lzo)

    # recompress type=huge: zstd where it reaches a smaller class, else INCOMPRESSIBLE.
    zstd = {i: len(zstandard.ZstdCompressor(level=3).compress(dev.pages[i])) for i in huge}
    ok = [i for i in huge if POOL.class_for(zstd[i]).index < POOL.class_for(PAGE).index]
    assert ok and len(ok) < len(huge)
    sysfs.store(z, "recompress", "type=huge")
    m = mm(z)
    compr = sum(lzo.values()) - len(ok) * PAGE + sum(zstd[i] for i in ok)
    assert m[0] == 160 * PAGE and m[1] == compr and m[5] == len(same)
    assert m[7] == len(huge) - len(ok) and m[8] == len(huge)
    assert z.idle_pages() == len(lzo) - len(huge)  # recompress touched every huge slot
    assert sum(bool(e[0] & ZRAM_INCOMPRESSIBLE) for e in z.table.values()) == len(huge) - len(ok)

    # writeback idle: the slots still idle, i.e. every object that was not huge.
    idle = sorted(i for i in lzo if i not in huge)
    sysfs.store(z, "writeback", "idle")
    m = mm(z)
    assert m[0] == 160 * PAGE and m[5] == len(same)
    assert m[1] == compr - sum(lzo[i] for i in idle)
    assert m[7] == len(huge) - len(ok) and m[8] == len(huge)
    assert bd_stat(z) == (len(idle), 0, len(idle)) and z.idle_pages() == 0
    check_counters_match_table(z, dev.bd)

    # Everything reads back; the written-back pages come from the backing device.
    dev.check_content()
    assert bd_stat(z) == (len(idle), len(idle), len(idle))
    assert z.stats.failed_reads == 0


def test_lz4_takes_a_level_written_while_up_at_once():
    """backend_lz4 reads params->level at every compression (this machine's 6.18 shows it):
    a level written while the device is up applies to the next write; others wait for init."""
    rng = random.Random(22)
    page = page_of("text", rng)
    z = Zram(ZramConfig(comp_algorithm="lz4"))
    sysfs.store(z, "recomp_algorithm", "algo=zstd")
    sysfs.store(z, "disksize", "1M")
    z.write(0, page)
    sysfs.store(z, "algorithm_params", "level=9")
    z.write(PAGE, page)
    sysfs.store(z, "algorithm_params", "foo=1")  # resets the level: the default again
    z.write(2 * PAGE, page)
    sizes = [z.table[i][0] & ZRAM_SIZE_MASK for i in range(3)]
    assert sizes == [len(get_backend("lz4", level).compress(page)) for level in (None, 9, None)]
    assert sizes[1] != sizes[0]
    sysfs.store(z, "algorithm_params", "algo=zstd level=19")  # zstd fixed its level at init
    assert z.config.params[1].level is None
    assert z.read(0, 3 * PAGE) == page * 3


def test_memory_backing_dev_gives_the_lowest_free_block_and_never_block_0():
    bd = MemoryBackingDev(5)
    assert [bd.alloc_block() for _ in range(5)] == [1, 2, 3, 4, None]
    bd.free_block(3)
    bd.free_block(1)
    assert bd.used == 2
    assert [bd.alloc_block(), bd.alloc_block(), bd.alloc_block()] == [1, 3, None]
    with pytest.raises(ValueError):
        bd.free_block(0)
    bd.free_block(2)
    with pytest.raises(ValueError):
        bd.free_block(2)
    with pytest.raises(OSError):
        bd.read_block(2)


@pytest.mark.parametrize("algorithm", ["lz4", "lz4hc"])
def test_an_lz4_dictionary_is_used_both_ways(algorithm):
    """lz4/lz4hc with dict= : the lz4 package's block API with the dictionary (close to the
    kernel's LZ4_loadDict + *_continue, not byte-exact), and every page reads back."""
    import lz4.block

    rng = random.Random(23)
    pages = [page_of("text", rng) for _ in range(3)]
    dictionary = pages[0][:2048] + pages[1][:2048]
    z = Zram(ZramConfig(comp_algorithm=algorithm), backing=Backing(read_file=lambda p: dictionary))
    sysfs.store(z, "algorithm_params", "dict=/d")
    sysfs.store(z, "disksize", "1M")
    z.write(0, b"".join(pages))
    mode = {"mode": "high_compression", "compression": 9} if algorithm == "lz4hc" else {}
    want = [len(lz4.block.compress(p, store_size=False, dict=dictionary, **mode)) for p in pages]
    assert [z.table[i][0] & ZRAM_SIZE_MASK for i in range(3)] == want
    assert want != [len(lz4.block.compress(p, store_size=False, **mode)) for p in pages]
    assert z.read(0, 3 * PAGE) == b"".join(pages)


def test_writeback_skips_a_slot_it_cannot_read_and_keeps_the_block():
    dev = make_dev()
    z = dev.z
    fill(dev, ["text", "text"], seed=24)
    flags, handle, crc, ac_time = z.table[1]
    z.table[1] = (flags, handle, crc ^ 1, ac_time)  # the object no longer matches its checksum
    order = writeback_expectation(z, [0, 1])
    sysfs.store(z, "writeback", "page_indexes=0-1")  # the kernel skips what it cannot read
    assert z.table[1] == (flags, handle, crc ^ 1, ac_time)
    assert z.table[0][:2] == (ZRAM_WB, 1) and bd_stat(z) == (1, 0, 1)
    assert order[0] == 1  # page 1 came first, failed, and left block 1 to page 0
    assert z.stats.failed_reads == 0  # a pass is no read
