"""Our 6.18 engine against the machine's real zram0 (Linux 6.18), counter for counter.

For each algorithm (lzo, lz4) a set of seeded candidate pages is written to the
kernel once; each page's kernel object size is its compr_data_size delta.  The
pages whose size our backend agrees on form the page set.  Scenarios built
from it (fills over many size classes, overwrites across same/normal/huge,
discards, compaction after fragmenting discards, random mixes: thousands of
page writes) run on both, and every mm_stat and io_stat field must be equal
after every step.  On zram0 directly (``kernel_zram0``): the text of every
readable attribute and the errno of every bad write, before and after init,
and writes past ``mem_limit`` (which fail, count once, and lose nothing).
Skipped where there is no usable zram0.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import struct
import subprocess
from collections.abc import Callable

import pytest
from kernel import (
    DEV,
    PAGE,
    SYS,
    Compact,
    Discard,
    KernelUnavailable,
    Op,
    Write,
    agreeing_pages,
    candidate_pages,
    engine_device,
    first_difference,
    kernel_zram0,
    read_kernel_counters,
    require_kernel,
    run_engine,
    run_oracle,
)
from test_statemachine import check_invariants

from zramctl.errors import ZramError
from zramctl.kernel import sysfs
from zramctl.kernel.profiles import MODERN
from zramctl.kernel.zram_drv import Zram
from zramctl.kernel.zsmalloc import Pool

pytestmark = pytest.mark.kernel

ALGORITHMS = ("lzo", "lz4")
DISK_PAGES = (64 << 20) // PAGE
CANDIDATES = 3000
HUGE = PAGE


class PageSet:
    """Pages whose object size the kernel and our backend agree on, by size and by class."""

    def __init__(self, by_size: dict[int, list[bytes]]) -> None:
        pool = Pool(MODERN)
        self.by_size = by_size
        self.by_class: dict[int, list[bytes]] = {}
        for size, pages in sorted(by_size.items()):
            cls = pool.class_for(size + MODERN.handle_size)
            self.by_class.setdefault(cls.size, []).extend(pages)
        self.normal = [p for s, ps in sorted(by_size.items()) if s < HUGE for p in ps]
        self.huge = by_size.get(HUGE, [])
        self.classes = sorted(self.by_class)

    def pick(self, rng: random.Random) -> bytes:
        """Mostly compressible pages, some same-filled and some huge ones."""
        r = rng.random()
        if r < 0.06:
            return same_page(rng)
        if r < 0.12 and self.huge:
            return rng.choice(self.huge)
        if r < 0.14:
            return rng.randbytes(PAGE)  # random bytes: huge on both sides
        return rng.choice(self.normal)

    def of_class(self, rng: random.Random, size: int) -> bytes:
        return rng.choice(self.by_class[size])


def same_page(rng: random.Random) -> bytes:
    """A same-filled page: zeros, one byte repeated, or one 8-byte word repeated."""
    kind = rng.randrange(3)
    if kind == 0:
        return bytes(PAGE)
    if kind == 1:
        return bytes([rng.randrange(1, 256)]) * PAGE
    return struct.pack("<Q", rng.getrandbits(64)) * (PAGE // 8)


@pytest.fixture(scope="module", params=ALGORITHMS)
def pageset(request) -> tuple[str, PageSet]:
    require_kernel()
    algorithm = request.param
    try:
        by_size = agreeing_pages(candidate_pages(CANDIDATES, seed=2024), algorithm)
    except KernelUnavailable as exc:
        pytest.skip(str(exc))
    return algorithm, PageSet(by_size)


# --------------------------------------------------------------------------
# Scenarios: each returns the ops of one oracle run


def scenario_fill(rng: random.Random, ps: PageSet) -> list[Op]:
    """Sequential single-page writes cycling through every class, then multi-page writes."""
    ops: list[Op] = []
    index = 0
    for n in range(1500):
        ops.append(Write(index * PAGE, ps.of_class(rng, ps.classes[n % len(ps.classes)])))
        index += 1
    for _ in range(60):
        count = rng.randint(2, 16)
        ops.append(Write(index * PAGE, b"".join(ps.pick(rng) for _ in range(count))))
        index += count
    return ops


def scenario_overwrite(rng: random.Random, ps: PageSet) -> list[Op]:
    """Fill 600 pages, then overwrite them with pages of other sizes, same-filled and huge ones."""
    ops: list[Op] = [Write(i * PAGE, ps.pick(rng)) for i in range(600)]
    last: dict[int, bytes] = {}
    for _ in range(1500):
        index = rng.randrange(640)
        r = rng.random()
        if r < 0.1 and index in last:
            page = last[index]  # the same bytes again
        elif r < 0.2:
            page = same_page(rng)
        elif r < 0.3:
            page = rng.choice(ps.huge) if ps.huge else rng.randbytes(PAGE)
        else:
            page = ps.pick(rng)
        last[index] = page
        ops.append(Write(index * PAGE, page))
    return ops


def scenario_compact(rng: random.Random, ps: PageSet) -> list[Op]:
    """Fill a few classes densely, fragment them with discards, compact, refill, compact again."""
    few = rng.sample([c for c in ps.classes if c < HUGE], 8)
    ops: list[Op] = []
    n = 1400
    for i in range(n):
        ops.append(Write(i * PAGE, ps.of_class(rng, rng.choice(few))))
    for _ in range(350):  # single pages and ranges, some over unwritten pages
        start = rng.randrange(n + 50)
        length = 1 if rng.random() < 0.6 else rng.randint(2, 24)
        ops.append(Discard(start * PAGE, min(length, DISK_PAGES - start) * PAGE))
    ops.append(Compact())
    ops.append(Compact())  # nothing left to do: pages_compacted must not move
    for _ in range(500):  # refill holes: freed slots are reused LIFO, fullest zspage first
        ops.append(Write(rng.randrange(n) * PAGE, ps.of_class(rng, rng.choice(few))))
    for _ in range(200):
        ops.append(Discard(rng.randrange(n) * PAGE, PAGE * rng.randint(1, 4)))
    ops.append(Compact())
    ops.append(Discard(0, (n // 2) * PAGE))
    ops.append(Compact())
    ops.append(Discard(0, DISK_PAGES * PAGE))
    ops.append(Compact())
    return ops


def scenario_mixed(rng: random.Random, ps: PageSet) -> list[Op]:
    """Random writes (single and multi-page), discards and compactions over 4096 pages."""
    ops: list[Op] = []
    span = 4096
    for _ in range(2200):
        r = rng.random()
        index = rng.randrange(span)
        if r < 0.6:
            ops.append(Write(index * PAGE, ps.pick(rng)))
        elif r < 0.75:
            count = rng.randint(2, 12)
            ops.append(Write(index * PAGE, b"".join(ps.pick(rng) for _ in range(count))))
        elif r < 0.97:
            ops.append(Discard(index * PAGE, PAGE * rng.randint(1, 32)))
        else:
            ops.append(Compact())
    return ops


SCENARIOS: dict[str, Callable[[random.Random, PageSet], list[Op]]] = {
    "fill": scenario_fill,
    "overwrite": scenario_overwrite,
    "compact": scenario_compact,
    "mixed": scenario_mixed,
}


def page_writes(ops: list[Op]) -> int:
    return sum(len(op.data) // PAGE for op in ops if isinstance(op, Write))


# --------------------------------------------------------------------------
# Tests


def test_page_set_covers_the_classes(pageset):
    """Enough agreeing pages to exercise the allocator: most classes, the huge one, small ones."""
    algorithm, ps = pageset
    assert len(ps.normal) > 1000, algorithm
    assert len(ps.classes) >= 100, f"{algorithm}: only {len(ps.classes)} classes"
    assert HUGE in ps.by_class and min(ps.by_size) < 200


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_counter_matches_the_kernel(pageset, name):
    algorithm, ps = pageset
    rng = random.Random(f"{name}-{algorithm}")
    ops = SCENARIOS[name](rng, ps)
    try:
        kernel = run_oracle(ops, algorithm)
    except KernelUnavailable as exc:
        pytest.skip(str(exc))
    device = engine_device(algorithm)
    ours = run_engine(ops, algorithm, device=device)
    problem = first_difference(ours, kernel)
    assert problem is None, f"{algorithm}/{name}: {problem}"
    # The scenario did something worth comparing.
    assert page_writes(ops) >= 1500
    final = kernel[-1].mm
    if name == "compact":
        assert final["pages_compacted"] > 0
        assert final["orig_data_size"] == 0 and final["mem_used_total"] == 0
    if name == "overwrite":
        assert final["same_pages"] > 0 and final["huge_pages"] > 0
    check_invariants(device)
    # And our bytes are right: every page reads back as last written (or zeros).
    model: dict[int, bytes] = {}
    for op in ops:
        if isinstance(op, Write):
            for k in range(len(op.data) // PAGE):
                model[op.offset // PAGE + k] = op.data[k * PAGE : (k + 1) * PAGE]
        elif isinstance(op, Discard):
            for k in range(op.offset // PAGE, (op.offset + op.length) // PAGE):
                model.pop(k, None)
    for index, page in model.items():
        assert device.read(index * PAGE, PAGE) == page, f"page {index}"


def test_kernel_zram0_sets_up_and_always_resets():
    """The helper other tests (util-linux parity) use: locked, set up, reset even on error."""
    require_kernel()
    try:
        with kernel_zram0("lz4", 1 << 20) as sysdir:
            assert (sysdir / "disksize").read_text() == f"{1 << 20}\n"
            assert "[lz4]" in (sysdir / "comp_algorithm").read_text()
            mm, io = read_kernel_counters(sysdir)
            assert len(mm) == 9 and len(io) == 4 and mm[0] == 0
            raise RuntimeError("the test body fails")
    except KernelUnavailable as exc:
        pytest.skip(str(exc))
    except RuntimeError:
        pass
    assert (SYS / "disksize").read_text() == "0\n"
    with kernel_zram0(setup=False) as sysdir:
        assert (sysdir / "disksize").read_text() == "0\n"
    assert (SYS / "disksize").read_text() == "0\n"


def test_oracle_and_engine_steps_have_the_same_shape():
    require_kernel()
    ops = [Write(0, b"x" * 10), Write(PAGE, bytes(PAGE)), Discard(0, 2 * PAGE), Compact()]
    try:
        kernel = run_oracle(ops, "lzo", disksize=1 << 20)
    except KernelUnavailable as exc:
        pytest.skip(str(exc))
    ours = run_engine(ops, "lzo", disksize=1 << 20)
    assert [s.op for s in kernel] == [s.op for s in ours] == ["w:0:10", "w:4096:4096", "d:0:8192", "c"]
    assert first_difference(ours, kernel) is None
    assert kernel[1].mm["same_pages"] == 1 and kernel[2].io["notify_free"] == 2


# --------------------------------------------------------------------------
# Attributes and mem_limit, on zram0 directly (kernel_zram0)


def _put(name: str, value: str) -> int:
    """Write a zram0 attribute: 0, or the errno."""
    try:
        with open(SYS / name, "w") as f:
            f.write(value)
    except OSError as exc:
        return exc.errno
    return 0


def _get(name: str) -> str | int:
    try:
        return (SYS / name).read_text()
    except OSError as exc:
        return exc.errno


def _ours_put(z, name: str, value: str) -> int:
    try:
        sysfs.store(z, name, value)
    except ZramError as exc:
        return exc.errno
    return 0


def _ours_get(z, name: str) -> str | int:
    try:
        return sysfs.show(z, name)
    except ZramError as exc:
        return exc.errno


TEXTS = ("mm_stat", "io_stat", "debug_stat", "disksize", "initstate")
# (attribute, value) writes whose result (0 or errno) must be the kernel's, before and after init.
WRITES_UNINIT = [
    ("compact", "1"),
    ("mem_used_max", "0"),
    ("disksize", "0"),
    ("disksize", "junk"),
    ("comp_algorithm", "x" * 128),
    ("comp_algorithm", "x" * 127),
    ("reset", "0"),
    ("reset", "x"),
    ("mem_limit", "lots"),
    ("mem_limit", "4097"),
    ("mm_stat", "1"),
    ("io_stat", "1"),
    ("initstate", "1"),
    ("comp_algorithm", "lz4"),
    ("comp_algorithm", "lzo\n"),
]
WRITES_INIT = [
    ("disksize", "2M"),
    ("comp_algorithm", "lz4"),
    ("comp_algorithm", "nope"),
    ("mem_used_max", "5"),
    ("mem_used_max", "x"),
    ("mem_used_max", "0"),
    ("mem_limit", "1M"),
    ("mm_stat", "1"),
    ("compact", "1"),
]
WRITE_ONLY_NAMES = ("reset", "compact", "mem_limit", "mem_used_max", "algorithm_params")


def test_attribute_texts_and_errnos_match_the_kernel():
    require_kernel()
    z = Zram()
    try:
        with kernel_zram0(setup=False):
            for name in TEXTS:
                assert _ours_get(z, name) == _get(name), name
            for name in WRITE_ONLY_NAMES:
                assert _ours_get(z, name) == _get(name) == errno.EACCES, name
            for name, value in WRITES_UNINIT:
                assert _ours_put(z, name, value) == _put(name, value), (name, value)
                for text in TEXTS:
                    assert _ours_get(z, text) == _get(text), (name, value, text)
            assert _ours_put(z, "disksize", "4097") == _put("disksize", "4097") == 0
            for name, value in WRITES_INIT:
                assert _ours_put(z, name, value) == _put(name, value), (name, value)
                for text in TEXTS:
                    assert _ours_get(z, text) == _get(text), (name, value, text)
            ours, theirs = sysfs.show(z, "comp_algorithm"), _get("comp_algorithm")
            assert "[lzo] " in ours and "[lzo] " in theirs and ours.endswith(" \n") and theirs.endswith(" \n")
            assert _ours_put(z, "reset", "1\n") == _put("reset", "1\n") == 0
            for text in TEXTS:
                assert _ours_get(z, text) == _get(text), ("after reset", text)
    except KernelUnavailable as exc:
        pytest.skip(str(exc))


class _Direct:
    """O_DIRECT page I/O on /dev/zram0 from an aligned buffer, as the oracle does it."""

    def __init__(self) -> None:
        self.fd = os.open(DEV, os.O_RDWR | os.O_DIRECT)
        self.buf = mmap.mmap(-1, 16 * PAGE)

    def write(self, offset: int, data: bytes) -> bool:
        self.buf[: len(data)] = data
        try:
            os.pwritev(self.fd, [memoryview(self.buf)[: len(data)]], offset)
        except OSError as exc:
            assert exc.errno == errno.EIO
            return False
        return True

    def read(self, offset: int, length: int) -> bytes:
        assert os.preadv(self.fd, [memoryview(self.buf)[:length]], offset) == length
        return self.buf[:length]

    def close(self) -> None:
        os.close(self.fd)
        self.buf.close()


def test_mem_limit_matches_the_kernel(pageset):
    """Writes past mem_limit fail, count once per request, lose nothing; texts stay equal."""
    algorithm, ps = pageset
    rng = random.Random(f"mem_limit-{algorithm}")
    z = engine_device(algorithm, 1 << 20)
    model: dict[int, bytes] = {}
    failures = 0
    try:
        with kernel_zram0(algorithm, 1 << 20):
            dev = _Direct()
            try:

                def both_put(name: str, value: str) -> None:
                    assert _ours_put(z, name, value) == _put(name, value) == 0

                def check(what: str) -> None:
                    for text in ("mm_stat", "io_stat"):
                        assert sysfs.show(z, text) == _get(text), (what, text)

                def write(index: int, pages: list[bytes]) -> None:
                    nonlocal failures
                    data = b"".join(pages)
                    ok = dev.write(index * PAGE, data)
                    try:
                        z.write(index * PAGE, data)
                        done = len(data)
                    except ZramError as exc:
                        assert exc.errno == errno.ENOMEM
                        done = exc.done
                    assert ok == (done == len(data)), f"write of {len(pages)} pages at {index}"
                    failures += not ok
                    for k in range(done // PAGE):
                        model[index + k] = pages[k]
                    check(f"write {index}+{len(pages)}")

                both_put("mem_limit", "64K")
                for _ in range(300):
                    index = rng.randrange(200)
                    count = 1 if rng.random() < 0.7 else rng.randint(2, 4)
                    write(index, [ps.pick(rng) for _ in range(count)])
                    r = rng.random()
                    if r < 0.05:
                        both_put("mem_used_max", "0")
                        check("mem_used_max")
                    elif r < 0.15:
                        start = rng.randrange(200)
                        length = rng.randint(1, 8)
                        subprocess.run(
                            ["blkdiscard", "-o", str(start * PAGE), "-l", str(length * PAGE), str(DEV)],
                            check=True,
                        )
                        z.discard(start * PAGE, length * PAGE)
                        for k in range(start, start + length):
                            model.pop(k, None)
                        check("discard")
                    elif r < 0.2:
                        both_put("mem_limit", f"{rng.randint(8, 40) * 4}K")
                    elif r < 0.22:
                        both_put("compact", "1")
                        check("compact")
                for index in range(200):
                    expected = model.get(index, bytes(PAGE))
                    assert dev.read(index * PAGE, PAGE) == expected == z.read(index * PAGE, PAGE), index
            finally:
                dev.close()
    except KernelUnavailable as exc:
        pytest.skip(str(exc))
    assert failures > 20 and len(model) > 10
